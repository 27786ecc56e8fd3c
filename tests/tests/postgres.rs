//! The PostgreSQL gateway against a real server: agents log in without the
//! password, statements are judged by policy, results are masked, cancels
//! reach the right backend, bad input ends only its own session.
use interlock_tests::{
    gateway::{shipped, ALLOW_ALL},
    postgres::{PgServer, APP_PASSWORD},
    unique, Client, ClientResult, Gateway, GatewayOptions, TestCgroup,
};
use serde_json::Value;

#[path = "postgres/fidelity.rs"]
mod fidelity;

const MASKING: [&str; 3] = [
    "detectors = [\"credit_card\"]",
    "columns = [ { column = \"customers.email\", style = \"partial\" },",
    "  { column = \"*.ssn\", style = \"full\" } ]",
];

struct Setup {
    cg: TestCgroup,
    pg: PgServer,
    gw: Gateway,
}

fn setup(tag: &str, ip: &str, postgres: &[&str], policies: Option<Vec<(String, String)>>) -> Setup {
    let cg = TestCgroup::new(&unique(tag));
    let pg = PgServer::start(ip);
    pg.shop();
    let gw = Gateway::start(
        &cg,
        GatewayOptions {
            // Held statements (DDL under the shipped policy) wait briefly.
            extra_toml: vec![pg.target(postgres), "[review]\ntimeout = \"2s\"\n".into()],
            policies,
            ..Default::default()
        },
    );
    Setup { cg, pg, gw }
}

/// Runs a Python script (with psycopg) in the test cgroup; `sys.argv[1]` is the DSN.
fn python(s: &Setup, script: &str) -> ClientResult {
    let r = Client::new(&s.cg).run("python3", &["-c", script, &s.pg.agent_dsn()]);
    assert!(
        r.success,
        "client failed:\n{}\n{}\n--- server log ---\n{}",
        r.stdout,
        r.stderr,
        s.pg.log()
    );
    r
}

fn statements(s: &Setup) -> Vec<Value> {
    s.gw.events()
        .all()
        .into_iter()
        .filter(|e| e["event"] == "sql_statement")
        .collect()
}

fn wait_statement(s: &Setup, pred: impl Fn(&Value) -> bool) -> Value {
    interlock_tests::wait_for(10, || statements(s).into_iter().find(|e| pred(e)))
        .unwrap_or_else(|| panic!("no matching statement event; events:\n{:#?}", s.gw.events().all()))
}

#[test]
fn psql_logs_in_with_the_gateways_credential_and_every_query_is_recorded() {
    let s = setup("pgpsql", "127.0.0.12", &[], None);
    let mut cmd = std::process::Command::new("psql");
    cmd.arg(s.pg.agent_dsn())
        .args(["-w", "-tA", "-c", "SELECT current_user, current_database()"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let r = Client::new(&s.cg).run_cmd(cmd);
    assert!(r.success, "psql failed: {}\n{}", r.stderr, s.pg.log());
    assert_eq!(r.stdout.trim(), "app|shop");
    let ev = wait_statement(&s, |e| e["sql"].as_str().is_some_and(|q| q.contains("current_user")));
    assert_eq!(ev["agent"], "unknown");
    assert_eq!(ev["identity"]["comm"], "psql");
    assert_eq!(ev["database"], "shop");
    assert_eq!(ev["user"], "app");
    assert_eq!(ev["kind"], "select");
    assert_eq!(ev["rows_returned"], 1);
    assert_eq!(ev["outcome"], "ok");
    assert_eq!(ev["decision"]["policies"][0], "test-allow-all");
    let sessions: Vec<Value> =
        s.gw.events()
            .all()
            .into_iter()
            .filter(|e| e["event"] == "pg_session")
            .collect();
    let phases: Vec<&str> = sessions.iter().filter_map(|e| e["phase"].as_str()).collect();
    assert!(phases.contains(&"start"), "{sessions:#?}");
    let end = interlock_tests::wait_for(10, || {
        s.gw.events()
            .all()
            .into_iter()
            .find(|e| e["event"] == "pg_session" && e["phase"] == "end")
    })
    .expect("session end event");
    assert_eq!(end["agent_user"], "agent");
    assert!(end["bytes_down"].as_u64().unwrap() > 0);
    assert_eq!(end["statements"], 1);
}

#[test]
fn the_agent_never_sees_the_password_nor_an_authentication_request() {
    let s = setup("pgpw", "127.0.0.14", &[], None);
    // A raw protocol client records every byte the gateway sends it.
    let script = r#"
import socket, struct, sys
dsn = dict(kv.split("=", 1) for kv in sys.argv[1].split())
sock = socket.create_connection((dsn["host"], int(dsn["port"])), timeout=10)
params = b"user\0agent\0database\0shop\0\0"
sock.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
received = b""
def message():
    global received
    head = b""
    while len(head) < 5:
        chunk = sock.recv(5 - len(head)); assert chunk, "closed"; head += chunk
    tag, n = head[:1], struct.unpack("!i", head[1:])[0]
    body = b""
    while len(body) < n - 4:
        chunk = sock.recv(n - 4 - len(body)); assert chunk, "closed"; body += chunk
    received += head + body
    return tag, body
auth = []
while True:
    tag, body = message()
    if tag == b"R":
        auth.append(struct.unpack("!i", body[:4])[0])
    if tag == b"Z":
        break
q = b"SELECT rolpassword IS NOT NULL FROM pg_authid LIMIT 0\0"
sock.sendall(b"Q" + struct.pack("!i", 4 + len(q)) + q)
while message()[0] != b"Z":
    pass
sock.sendall(b"X" + struct.pack("!i", 4))
print(auth)
print(received.hex())
"#;
    let r = python(&s, script);
    let mut lines = r.stdout.lines();
    // Only AuthenticationOk (0): no password, md5 or SASL request.
    assert_eq!(lines.next(), Some("[0]"));
    let received = lines.next().unwrap();
    let secret_hex: String = APP_PASSWORD.bytes().map(|b| format!("{b:02x}")).collect();
    assert!(!received.contains(&secret_hex), "the password reached the agent");
    assert!(!received.contains(&"SCRAM".bytes().map(|b| format!("{b:02x}")).collect::<String>()));
}

#[test]
fn a_denied_delete_gets_42501_and_the_session_and_transaction_go_on() {
    let policies = vec![
        ("allow.cedar".to_owned(), ALLOW_ALL.to_owned()),
        ("db.cedar".to_owned(), shipped("read-only-db.cedar")),
    ];
    let s = setup("pgdeny", "127.0.0.15", &[], Some(policies));
    let script = r#"
import sys, psycopg
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    out = []
    for protocol in ("simple", "extended"):
        cur = conn.cursor() if protocol == "extended" else psycopg.ClientCursor(conn)
        try:
            cur.execute("DELETE FROM items")
            out.append("not denied")
        except psycopg.Error as e:
            out.append(f"{protocol} {e.sqlstate} {e}")
        cur.execute("SELECT count(*) FROM items")
        out.append(f"{protocol} after: {cur.fetchone()[0]}")
    # Inside a transaction the denial aborts it, as any error would.
    conn.autocommit = False
    cur = conn.cursor()
    cur.execute("INSERT INTO items VALUES (100, 'x')")
    try:
        cur.execute("UPDATE items SET label = 'y'")
    except psycopg.Error as e:
        out.append(f"in transaction {e.sqlstate} status={conn.info.transaction_status.name}")
    conn.rollback()
    cur.execute("SELECT count(*) FROM items WHERE id = 100")
    out.append(f"rolled back: {cur.fetchone()[0]}")
    conn.rollback()
    # Pipelined statements: the denied one fails alone, the ones before it run.
    conn.autocommit = True
    try:
        with conn.pipeline():
            conn.execute("INSERT INTO items VALUES (200, 'p')")
            conn.execute("DELETE FROM items")
    except psycopg.Error as e:
        out.append(f"pipeline {e.sqlstate}")
    out.append(f"after pipeline: {conn.execute('SELECT count(*) FROM items').fetchone()[0]}")
print("\n".join(out))
"#;
    let r = python(&s, script);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(lines[0].starts_with("simple 42501"), "{lines:?}");
    assert!(lines[0].contains("no-unbounded-writes"), "{lines:?}");
    assert_eq!(lines[1], "simple after: 10");
    assert!(lines[2].starts_with("extended 42501"), "{lines:?}");
    assert_eq!(lines[3], "extended after: 10");
    assert_eq!(lines[4], "in transaction 42501 status=INERROR");
    assert_eq!(lines[5], "rolled back: 0");
    assert_eq!(lines[6], "pipeline 42501");
    // One Sync closes the pipeline: its implicit transaction rolls back
    // the INSERT with it, exactly as a server-side error would.
    assert_eq!(lines[7], "after pipeline: 10");
    assert_eq!(s.pg.psql("shop", "SELECT count(*) FROM items"), "10");
    let ev = wait_statement(&s, |e| e["sql"] == "DELETE FROM items" && e["protocol"] == "simple");
    assert_eq!(ev["outcome"], "denied");
    assert_eq!(ev["kind"], "delete");
    assert_eq!(ev["decision"]["policies"][0], "no-unbounded-writes");
    // DDL is held for review (refused here when nobody approves in time);
    // unparsable SQL is denied.
    let script = r#"
import sys, psycopg
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    for sql in ("CREATE TABLE t (x int)", "SELEKT 1"):
        try:
            conn.execute(sql)
        except psycopg.Error as e:
            print(e.sqlstate, e.diag.message_primary, "|", e.diag.message_detail)
"#;
    let r = python(&s, script);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(
        lines[0].starts_with("42501") && lines[0].contains("ddl-needs-review"),
        "{lines:?}"
    );
    assert!(lines[0].contains("review timed out"), "{lines:?}");
    assert!(
        lines[1].starts_with("42501") && lines[1].contains("does not parse"),
        "{lines:?}"
    );
}

#[test]
fn masked_columns_and_detected_values_come_back_masked_while_the_table_is_unchanged() {
    let s = setup("pgmask", "127.0.0.16", &MASKING, None);
    let script = r#"
import sys, json, psycopg
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    q = "SELECT id, name, email AS contact, ssn, note, card_no FROM customers ORDER BY id"
    simple = psycopg.ClientCursor(conn).execute(q).fetchall()
    extended = conn.execute(q).fetchall()
    binary = conn.cursor(binary=True).execute(q).fetchall()
    with conn.transaction():
        with conn.cursor(name="server_side") as cur:
            cur.execute(q)
            named = cur.fetchmany(1) + cur.fetchmany(5)
    print(json.dumps({"simple": simple, "extended": extended, "binary": binary, "named": named}, default=str))
"#;
    let r = python(&s, script);
    let got: Value = serde_json::from_str(r.stdout.trim()).unwrap();
    for mode in ["simple", "extended", "binary", "named"] {
        let rows = &got[mode];
        assert_eq!(rows[0][2], "j***@example.com", "{mode}: {rows}");
        assert_eq!(rows[0][3], "[REDACTED]", "{mode}: {rows}");
        assert_eq!(rows[1][3], "[REDACTED]", "{mode}: {rows}");
        assert_eq!(rows[0][1], "Jane Doe", "{mode}: {rows}");
        assert_eq!(rows[0][4], "card [REDACTED:credit_card] on file", "{mode}: {rows}");
        assert_eq!(rows[1][4], "no card", "{mode}: {rows}");
    }
    // A card number in a numeric column keeps its shape (and still parses).
    assert_eq!(got["simple"][0][5], 0);
    assert_eq!(got["extended"][1][5], 42);
    assert_eq!(
        s.pg.psql("shop", "SELECT email, ssn FROM customers WHERE id = 1"),
        "jane.doe@example.com|123-45-6789"
    );
    let ev = wait_statement(&s, |e| e["protocol"] == "simple" && e["kind"] == "select");
    let masked: Vec<String> = ev["masked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["by"].as_str().unwrap().to_owned())
        .collect();
    assert!(masked.contains(&"column customers.email".to_owned()), "{masked:?}");
    assert!(masked.contains(&"column *.ssn".to_owned()), "{masked:?}");
    assert!(masked.contains(&"detector credit_card".to_owned()), "{masked:?}");
    // Values computed from a table with masked columns are masked when they
    // can carry text; errors do not echo the values; COPY TO is refused on
    // a masked table (it has no column description) and allowed elsewhere.
    let script = r#"
import sys, json, psycopg
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    print(json.dumps(conn.execute(
        "SELECT upper(email), count(*) OVER (), row_to_json(c)::text FROM customers c ORDER BY id").fetchone()))
    try:
        conn.execute("SELECT ssn::int FROM customers")
    except psycopg.Error as e:
        print(e.sqlstate, e.diag.message_primary)
    for table in ("customers", "items"):
        try:
            with conn.cursor().copy(f"COPY {table} TO STDOUT") as copy:
                print(table, len(list(copy.rows())))
        except psycopg.Error as e:
            print(table, e.sqlstate, e.diag.message_primary)
"#;
    let r = python(&s, script);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines[0], r#"["[REDACTED]", 2, "[REDACTED]"]"#, "{lines:?}");
    assert_eq!(
        lines[1], r#"22P02 invalid input syntax for type integer: "[REDACTED]""#,
        "{lines:?}"
    );
    assert!(
        lines[2].starts_with("customers 42501") && lines[2].contains("masked columns"),
        "{lines:?}"
    );
    assert_eq!(lines[3], "items 10", "{lines:?}");
}

#[test]
fn tokio_postgres_prepared_statements_get_binary_results_masked() {
    let policies = vec![
        ("allow.cedar".to_owned(), ALLOW_ALL.to_owned()),
        ("db.cedar".to_owned(), shipped("read-only-db.cedar")),
    ];
    let s = setup("pgtokio", "127.0.0.17", &MASKING, Some(policies));
    let r = Client::new(&s.cg).run(env!("CARGO_BIN_EXE_pg_agent"), &[&s.pg.agent_dsn()]);
    assert!(r.success, "pg_agent failed: {}\n{}", r.stderr, s.pg.log());
    let got: Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(got["labels"], serde_json::json!(["item 1", "item 2", "item 3"]));
    assert_eq!(got["emails"][0], "j***@example.com");
    assert_eq!(got["ssns"], serde_json::json!(["[REDACTED]", "[REDACTED]"]));
    assert_eq!(got["denied"], "42501");
    assert_eq!(got["count"], 10);
    assert_eq!(got["empty"], 0);
    assert_eq!(got["after_move"], 5);
    let ev = wait_statement(&s, |e| {
        e["protocol"] == "extended" && e["sql"].as_str().unwrap_or("").contains("$1")
    });
    assert_eq!(ev["params"], serde_json::json!(["<binary, 4 bytes>"]));
    assert_eq!(ev["rows_returned"], 3);
}

#[test]
fn a_cancel_reaches_the_right_backend_and_large_results_stream() {
    let s = setup("pgcancel", "127.0.0.18", &[], None);
    let script = r#"
import sys, threading, time, psycopg
dsn = sys.argv[1]
slow = psycopg.connect(dsn, autocommit=True)
other = psycopg.connect(dsn, autocommit=True)
real_pid = slow.execute("SELECT pg_backend_pid()").fetchone()[0]
# The pid is the server's (notifications and pg_stat_activity name it);
# the secret key with it is the gateway's own.
print("pid is the server's:", slow.info.backend_pid == real_pid)
results = {}
def run(conn, name, sql):
    try:
        conn.execute(sql)
        results[name] = "finished"
    except psycopg.errors.QueryCanceled:
        results[name] = "canceled"
t1 = threading.Thread(target=run, args=(slow, "slow", "SELECT pg_sleep(30)"))
t2 = threading.Thread(target=run, args=(other, "other", "SELECT pg_sleep(2)"))
t1.start(); t2.start()
time.sleep(0.5)
slow.cancel()
t1.join(); t2.join()
print("slow:", results["slow"], "other:", results["other"])
# cancel() returns once the cancel has reached the server (as it does
# direct), so a cancel sent while idle never hits the query sent after it.
hit = 0
for _ in range(20):
    slow.cancel()
    try:
        slow.execute("SELECT pg_sleep(0.02)")
    except psycopg.errors.QueryCanceled:
        hit += 1
print("idle cancels that hit the next query:", hit)
# 10k rows stream: most arrive while the query is still running upstream
# (its last row sleeps), so the gateway cannot be holding the result whole.
cur = slow.cursor()
rows = 0
try:
    for row in cur.stream("SELECT g, repeat('x', 100), CASE WHEN g = 10000 THEN pg_sleep(30) END "
                          "FROM generate_series(1, 10000) g"):
        rows += 1
        if rows == 9000:
            state = other.execute("SELECT state FROM pg_stat_activity WHERE query LIKE '%generate_series(1, 10000)%' "
                                  "AND pid <> pg_backend_pid()").fetchone()[0]
            print("at 9000 rows the query is", state)
            slow.cancel()
except psycopg.errors.QueryCanceled:
    print("stream canceled after", rows >= 9000)
print("still usable:", slow.execute("SELECT 1").fetchone()[0])
# NOTIFY from one session reaches a LISTENing one through the gateway.
slow.execute("LISTEN jobs")
other.execute("NOTIFY jobs, 'ready'")
for n in slow.notifies(timeout=10):
    print("notified:", n.channel, n.payload)
    break
"#;
    let r = python(&s, script);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "pid is the server's: True",
            "slow: canceled other: finished",
            "idle cancels that hit the next query: 0",
            "at 9000 rows the query is active",
            "stream canceled after True",
            "still usable: 1",
            "notified: jobs ready"
        ],
        "{}",
        r.stderr
    );
}

#[test]
fn garbage_and_truncated_messages_end_only_their_own_session() {
    let s = setup("pgjunk", "127.0.0.19", &[], None);
    let script = r#"
import socket, struct, sys, psycopg
dsn = sys.argv[1]
kv = dict(p.split("=", 1) for p in dsn.split())
addr = (kv["host"], int(kv["port"]))
good = psycopg.connect(dsn, autocommit=True)
def started():
    sock = socket.create_connection(addr, timeout=10)
    params = b"user\0agent\0database\0shop\0\0"
    sock.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
    data = b""
    while not data.endswith(b"Z\0\0\0\x05I"):
        chunk = sock.recv(4096); assert chunk; data += chunk
    return sock
def answer(sock):
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk
# GSS encryption is refused with 'N', and the startup goes on in plaintext.
sock = socket.create_connection(addr, timeout=10)
sock.sendall(struct.pack("!ii", 8, 80877104))
print("gss:", sock.recv(1))
params = b"user\0agent\0database\0shop\0\0"
sock.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
print("then startup:", b"Z\0\0\0\x05I" in sock.recv(4096))
sock.close()
# Garbage before the startup message.
sock = socket.create_connection(addr, timeout=10)
sock.sendall(b"this is not postgres at all\r\n")
print("garbage first:", b"08P01" in answer(sock))
# An unknown message type after startup.
sock = started()
sock.sendall(b"W\0\0\0\x04")
print("unknown type:", b"08P01" in answer(sock))
# A length that lies.
sock = started()
sock.sendall(b"Q\0\0\0\x02")
print("bad length:", b"08P01" in answer(sock))
# A truncated message, then the agent hangs up.
sock = started()
sock.sendall(b"Q\0\0\0\x20SELE")
sock.shutdown(socket.SHUT_WR)
print("truncated:", b"08P01" in answer(sock))
print("other session:", good.execute("SELECT 7").fetchone()[0])
"#;
    let r = python(&s, script);
    assert_eq!(
        r.stdout.lines().collect::<Vec<_>>(),
        [
            "gss: b'N'",
            "then startup: True",
            "garbage first: True",
            "unknown type: True",
            "bad length: True",
            "truncated: True",
            "other session: 7"
        ],
        "{}",
        r.stderr
    );
    let errors: Vec<Value> =
        s.gw.events()
            .connections()
            .into_iter()
            .filter(|e| e["outcome"]["kind"] == "error")
            .collect();
    assert!(errors.iter().all(|e| e["outcome"]["side"] == "agent"), "{errors:#?}");
    assert!(errors.len() >= 4, "{errors:#?}");
}

#[test]
fn pgbench_and_psycopg_copy_run_through_the_gateway_with_tls_to_the_agent() {
    let s = setup("pgbench", "127.0.0.20", &["agent_tls = \"terminate\""], None);
    let bench = |args: &[&str]| {
        let mut cmd = std::process::Command::new("pgbench");
        cmd.args(args)
            .args([
                "-h",
                &s.pg.addr.ip().to_string(),
                "-p",
                &s.pg.addr.port().to_string(),
                "-U",
                "agent",
                "shop",
            ])
            .env("PGPASSWORD", "not-the-real-one")
            .env("PGSSLMODE", "require")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let r = Client::new(&s.cg).run_cmd(cmd);
        assert!(r.success, "pgbench {args:?} failed: {}\n{}", r.stderr, s.pg.log());
        r.stdout
    };
    bench(&["-i", "-s", "1", "-q"]);
    for mode in ["simple", "extended", "prepared"] {
        let out = bench(&["-c", "4", "-j", "2", "-t", "25", "-M", mode]);
        assert!(
            out.contains("number of transactions actually processed: 100/100"),
            "{mode}: {out}"
        );
        let out = bench(&["-S", "-c", "2", "-t", "50", "-M", mode]);
        assert!(
            out.contains("number of transactions actually processed: 100/100"),
            "{mode}: {out}"
        );
    }
    let script = r#"
import sys, psycopg
with psycopg.connect(sys.argv[1] + " sslmode=require", autocommit=True) as conn:
    cur = conn.cursor()
    with cur.copy("COPY items (id, label) FROM STDIN") as copy:
        for i in range(50, 60):
            copy.write_row((i, f"copied {i}"))
    with cur.copy("COPY (SELECT id, label FROM items WHERE id >= 50 ORDER BY id) TO STDOUT") as copy:
        rows = list(copy.rows())
    print(len(rows), rows[0])
    print(conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()[0])
"#;
    let r = python(&s, script);
    assert_eq!(
        r.stdout.lines().collect::<Vec<_>>(),
        ["10 ('50', 'copied 50')", "False"]
    );
    let started =
        s.gw.events()
            .all()
            .into_iter()
            .find(|e| e["event"] == "pg_session" && e["phase"] == "start")
            .expect("session event");
    assert_eq!(started["agent_tls"], true);
    let copy = wait_statement(&s, |e| e["sql"].as_str().unwrap_or("").starts_with("COPY items"));
    assert_eq!(copy["kind"], "insert");
    assert_eq!(copy["rows_affected"], 10);
}

#[test]
fn the_upstream_hop_is_verified_tls_with_an_md5_login() {
    let cg = TestCgroup::new(&unique("pgtls"));
    let pg = PgServer::start_tls_md5("127.0.0.21");
    pg.shop();
    let gw = Gateway::start(
        &cg,
        GatewayOptions {
            extra_toml: vec![pg.tls_target(&[])],
            ..Default::default()
        },
    );
    let mut cmd = std::process::Command::new("psql");
    cmd.arg(pg.agent_dsn())
        .args([
            "-w",
            "-tA",
            "-c",
            "SELECT current_user, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let r = Client::new(&cg).run_cmd(cmd);
    assert!(r.success, "psql failed: {}\n{}", r.stderr, pg.log());
    assert_eq!(r.stdout.trim(), "app|t");
    let start = interlock_tests::wait_for(10, || {
        gw.events()
            .all()
            .into_iter()
            .find(|e| e["event"] == "pg_session" && e["phase"] == "start")
    })
    .expect("session start");
    assert_eq!(start["upstream_tls"], true);
    let log = pg.log();
    assert!(log.contains("identity=\"app\" method=md5"), "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("authorized: user=app database=shop") && l.contains("SSL enabled")),
        "{log}"
    );
}

#[test]
fn unparsable_sql_can_be_left_to_policy() {
    let forbid = "@id(\"no-unparsed-ddl\")\nforbid (principal, action == Interlock::Action::\"sql_statement\", resource)\nwhen { context.kind == \"unparsed\" && context.sql like \"*DROP*\" };\n";
    let policies = vec![
        ("allow.cedar".to_owned(), ALLOW_ALL.to_owned()),
        ("unparsed.cedar".to_owned(), forbid.to_owned()),
    ];
    let s = setup("pgunparsed", "127.0.0.22", &["unparsed = \"policy\""], Some(policies));
    let script = r#"
import sys, psycopg
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    for sql in ("SELEKT 1", "SELEKT 1; DROP TABLE items"):
        try:
            conn.execute(sql)
        except psycopg.Error as e:
            print(e.sqlstate)
"#;
    let r = python(&s, script);
    // The first reaches the server (its own syntax error); the second is refused.
    assert_eq!(r.stdout.lines().collect::<Vec<_>>(), ["42601", "42501"]);
    let ev = wait_statement(&s, |e| e["sql"] == "SELEKT 1");
    assert_eq!(ev["kind"], "unparsed");
    assert_eq!(ev["outcome"], "error");
    assert_eq!(s.pg.psql("shop", "SELECT count(*) FROM items"), "10");
}

/// Three sessions one after the other: the second gets the first's server
/// session back, reset; the second ends inside a transaction, so the third
/// logs in anew. Prints what each saw.
const POOL_SCRIPT: &str = r#"
import sys, json, time, psycopg
dsn = sys.argv[1]
out = {}
a = psycopg.connect(dsn, autocommit=True)
out["pid1"] = a.execute("SELECT pg_backend_pid()").fetchone()[0]
a.execute("SET search_path = pg_catalog")
a.execute("CREATE TEMP TABLE scratch (x int)")
a.execute("PREPARE leftover AS SELECT 1")
a.execute("SELECT pg_advisory_lock(42)")
a.close()
time.sleep(0.3)  # close() does not wait for the gateway to see the session end
b = psycopg.connect(dsn, autocommit=True)
out["pid2"] = b.execute("SELECT pg_backend_pid()").fetchone()[0]
out["search_path"] = b.execute("SHOW search_path").fetchone()[0]
out["temp"] = b.execute("SELECT count(*) FROM pg_class WHERE relname = 'scratch'").fetchone()[0]
out["prepared"] = b.execute("SELECT count(*) FROM pg_prepared_statements WHERE name = 'leftover'").fetchone()[0]
out["locks"] = b.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()[0]
b.execute("BEGIN")
b.execute("SELECT 1")
b.close()
time.sleep(0.3)
c = psycopg.connect(dsn, autocommit=True)
out["pid3"] = c.execute("SELECT pg_backend_pid()").fetchone()[0]
out["in_transaction"] = c.execute("SELECT now() <> statement_timestamp()").fetchone()[0]
c.close()
print(json.dumps(out))
"#;

fn session_starts(s: &Setup, count: usize) -> Vec<Value> {
    interlock_tests::wait_for(10, || {
        let starts: Vec<Value> =
            s.gw.events()
                .all()
                .into_iter()
                .filter(|e| e["event"] == "pg_session" && e["phase"] == "start")
                .collect();
        (starts.len() >= count).then_some(starts)
    })
    .unwrap_or_else(|| panic!("fewer than {count} session starts:\n{:#?}", s.gw.events().all()))
}

#[test]
fn a_clean_session_end_leaves_its_server_session_reset_for_the_next_and_nothing_carries_over() {
    let s = setup("pgpool", "127.0.0.23", &[], None);
    let r = python(&s, POOL_SCRIPT);
    let out: Value = serde_json::from_str(r.stdout.trim()).expect("script output");
    assert_eq!(out["pid2"], out["pid1"], "not reused: {out}");
    assert_eq!(out["search_path"], "\"$user\", public", "{out}");
    assert_eq!(out["temp"], 0, "{out}");
    assert_eq!(out["prepared"], 0, "{out}");
    assert_eq!(out["locks"], 0, "{out}");
    // Left inside a transaction: closed, not pooled.
    assert_ne!(out["pid3"], out["pid2"], "{out}");
    assert_eq!(out["in_transaction"], false, "{out}");
    let reused: Vec<Value> = session_starts(&s, 3)
        .iter()
        .map(|e| e["upstream_reused"].clone())
        .collect();
    assert_eq!(reused, [false, true, false].map(Value::Bool));

    // With `pool_idle = "0s"` every session logs in anew.
    drop(s);
    let s = setup("pgnopool", "127.0.0.24", &["pool_idle = \"0s\""], None);
    let r = python(&s, POOL_SCRIPT);
    let out: Value = serde_json::from_str(r.stdout.trim()).expect("script output");
    assert_ne!(out["pid2"], out["pid1"], "reused with pool_idle = 0s: {out}");
    assert!(session_starts(&s, 3).iter().all(|e| e["upstream_reused"] == false));
}
