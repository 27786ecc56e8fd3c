//! A session through the gateway behaves as a direct one (#20): the agent
//! sees its real backend pid, text in another client_encoding is read, empty
//! queries and the everyday statements the parser cannot read (MOVE,
//! DEFERRABLE transactions, DO blocks) get their answers, with psycopg
//! (libpq's protocol) and asyncpg (the extended protocol only).
use interlock_tests::{
    gateway::{shipped, ALLOW_ALL},
    Client,
};
use serde_json::Value;

use super::{python, setup, statements, wait_statement, Setup};

/// asyncpg's DSN for the test's server (the gateway ignores the password).
fn asyncpg_dsn(s: &Setup) -> String {
    format!(
        "postgresql://agent:not-the-real-one@{}:{}/shop",
        s.pg.addr.ip(),
        s.pg.addr.port()
    )
}

fn json_line(out: &str) -> Value {
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn the_agent_sees_its_real_backend_pid_in_notifications_and_can_terminate_it() {
    let s = setup(
        "pgpid",
        "127.0.0.80",
        &[],
        Some(vec![("allow.cedar".into(), ALLOW_ALL.into())]),
    );
    let script = r#"
import sys, json, psycopg
dsn = sys.argv[1]
out = {}
a = psycopg.connect(dsn, autocommit=True)
out["info_pid"] = a.info.backend_pid
out["server_pid"] = a.execute("SELECT pg_backend_pid()").fetchone()[0]
a.execute("LISTEN ch")
a.execute("NOTIFY ch, 'hello'")
n = next(a.notifies(timeout=5, stop_after=1))
out["notify_pid"] = n.pid
b = psycopg.connect(dsn, autocommit=True)
out["seen"] = b.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [a.info.backend_pid]).fetchone()[0]
out["terminated"] = b.execute("SELECT pg_terminate_backend(%s)", [a.info.backend_pid]).fetchone()[0]
try:
    a.execute("SELECT 1")
    out["after"] = "still alive"
except psycopg.Error as e:
    out["after"] = e.sqlstate or type(e).__name__
print(json.dumps(out))
"#;
    let got = json_line(&python(&s, script).stdout);
    assert_eq!(got["info_pid"], got["server_pid"], "{got}");
    assert_eq!(got["notify_pid"], got["server_pid"], "{got}");
    assert_eq!(got["seen"], 1, "{got}");
    assert_eq!(got["terminated"], true, "{got}");
    // The server's own FATAL reached the agent: its session is gone.
    assert_ne!(got["after"], "still alive", "{got}");

    // asyncpg speaks the extended protocol only; its pid and its
    // notifications' agree with the server too.
    let script = r#"
import sys, json, asyncio, asyncpg
async def main():
    conn = await asyncpg.connect(sys.argv[1], ssl=False)
    got = asyncio.get_running_loop().create_future()
    await conn.add_listener("ch", lambda c, pid, ch, payload: got.set_result(pid))
    await conn.execute("NOTIFY ch, 'x'")
    out = {"server_pid": conn.get_server_pid(),
           "backend_pid": await conn.fetchval("SELECT pg_backend_pid()"),
           "notify_pid": await asyncio.wait_for(got, 5)}
    await conn.close()
    print(json.dumps(out))
asyncio.run(main())
"#;
    let r = Client::new(&s.cg).run("python3", &["-c", script, &asyncpg_dsn(&s)]);
    assert!(r.success, "asyncpg failed:\n{}\n{}", r.stdout, r.stderr);
    let got = json_line(&r.stdout);
    assert_eq!(got["server_pid"], got["backend_pid"], "{got}");
    assert_eq!(got["notify_pid"], got["backend_pid"], "{got}");
}

#[test]
fn a_latin9_session_is_read_in_latin9_and_its_bytes_reach_the_server_unchanged() {
    let s = setup(
        "pglatin9",
        "127.0.0.81",
        &[],
        Some(vec![("allow.cedar".into(), ALLOW_ALL.into())]),
    );
    let script = r#"
import sys, json, psycopg
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    conn.execute("SET client_encoding TO latin9")
    literal = conn.execute("SELECT '€ and é' AS t").fetchone()[0]
    bound = conn.execute("SELECT %s::text || ' ok'", ["€"]).fetchone()[0]
    server = conn.execute("SELECT convert_to('€', 'UTF8') = '\\xe282ac'::bytea").fetchone()[0]
    # A result column named in latin9 (its RowDescription is not UTF-8).
    named = conn.execute('SELECT 1 AS "tö€"').description[0].name
    print(json.dumps({"literal": literal, "bound": bound, "server": server, "named": named}))
"#;
    let got = json_line(&python(&s, script).stdout);
    assert_eq!(got["literal"], "€ and é");
    assert_eq!(got["bound"], "€ ok");
    assert_eq!(got["server"], true, "the server read the agent's latin9 bytes as '€'");
    assert_eq!(got["named"], "tö€");
    // The trail has the text as the server read it.
    let ev = wait_statement(&s, |e| e["sql"].as_str().is_some_and(|q| q.contains("AS t")));
    assert_eq!(ev["sql"], "SELECT '€ and é' AS t");
    assert_eq!(ev["kind"], "select");
    assert_eq!(ev["outcome"], "ok");
}

/// The shipped read-only rules (select only) with a connect permit for the
/// test's agent, so anything but a SELECT is refused.
fn read_only_with_connect() -> String {
    let connect = "@id(\"test-connect\")\npermit (principal, action == Interlock::Action::\"connect\", resource);\n";
    let rules = shipped("read-only-db.cedar").replace("principal == Interlock::Agent::\"db-reader\"", "principal");
    format!("{connect}\n{rules}")
}

#[test]
fn empty_and_comment_only_queries_get_the_servers_empty_answer_under_a_select_only_policy() {
    let s = setup(
        "pgempty",
        "127.0.0.82",
        &[],
        Some(vec![("db.cedar".into(), read_only_with_connect())]),
    );
    let script = r#"
import sys, json, psycopg
from psycopg import pq
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    out = [pq.ExecStatus(conn.pgconn.exec_(q).status).name for q in (b"", b" ", b";", b"/* ping */", b"-- ping")]
    # The extended protocol: an empty statement prepared and run.
    res = conn.pgconn.exec_params(b"", [])
    out.append(pq.ExecStatus(res.status).name)
    # Not empty, and not a SELECT: refused as before.
    out.append(conn.pgconn.exec_(b"/* */ DELETE FROM items").error_field(pq.DiagnosticField.SQLSTATE).decode())
    print(json.dumps(out))
"#;
    let got = json_line(&python(&s, script).stdout);
    assert_eq!(
        got,
        serde_json::json!([
            "EMPTY_QUERY",
            "EMPTY_QUERY",
            "EMPTY_QUERY",
            "EMPTY_QUERY",
            "EMPTY_QUERY",
            "EMPTY_QUERY",
            "42501"
        ])
    );
    let empty: Vec<Value> = statements(&s).into_iter().filter(|e| e["kind"] == "empty").collect();
    assert_eq!(empty.len(), 6, "{empty:#?}");
    assert!(empty.iter().all(|e| e["decision"]["outcome"] == "allow"), "{empty:#?}");
    assert_eq!(s.pg.psql("shop", "SELECT count(*) FROM items"), "10");
    // A `--` comment ends at a carriage return for the server: what follows
    // it is a statement, judged as any other (the agent is `nobody`).
    let hidden = r#"
import sys, psycopg
from psycopg import pq
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    for q in (b"-- ping\rDELETE FROM items", b"/* ping */ -- x\r\nDELETE FROM items"):
        res = conn.pgconn.exec_(q)
        print(pq.ExecStatus(res.status).name, (res.error_field(pq.DiagnosticField.SQLSTATE) or b"").decode())
"#;
    let r = Client::agent(&s.cg).run("/usr/bin/python3", &["-c", hidden, &s.pg.agent_dsn()]);
    assert!(r.success, "client failed:\n{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        r.stdout.lines().collect::<Vec<_>>(),
        ["FATAL_ERROR 42501", "FATAL_ERROR 42501"]
    );
    assert_eq!(s.pg.psql("shop", "SELECT count(*) FROM items"), "10");
}

#[test]
fn move_deferrable_transactions_and_do_blocks_are_classified_and_run() {
    // Everything allowed except schema changes, which a DO block counts as.
    let forbid_ddl = "@id(\"no-ddl\")\nforbid (principal, action == Interlock::Action::\"sql_statement\", resource)\nwhen { context.kind == \"ddl\" };\n";
    let policies = vec![
        ("allow.cedar".to_owned(), ALLOW_ALL.to_owned()),
        ("ddl.cedar".to_owned(), forbid_ddl.to_owned()),
    ];
    // The default: what nobody can classify is denied.
    let s = setup("pgmove", "127.0.0.83", &[], Some(policies));
    let script = r#"
import sys, json, psycopg
out = {}
with psycopg.connect(sys.argv[1]) as conn:
    with conn.cursor(name="c", scrollable=True) as cur:
        cur.execute("SELECT generate_series(1, 10)")
        cur.scroll(5)  # MOVE
        out["after_move"] = cur.fetchone()[0]
        cur.scroll(-3)
        out["after_move_back"] = cur.fetchone()[0]
    conn.commit()
    # In a transaction psycopg began: SET TRANSACTION is its first statement.
    conn.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE")
    out["isolation"] = conn.execute("SHOW transaction_isolation").fetchone()[0]
    conn.rollback()
    try:
        conn.execute("DO $$ BEGIN DELETE FROM items; END $$")
        out["do"] = "ran"
    except psycopg.Error as e:
        out["do"] = e.sqlstate
    conn.rollback()
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    conn.execute("BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE")
    out["deferrable"] = conn.execute("SHOW transaction_deferrable").fetchone()[0]
    conn.execute("ROLLBACK")
print(json.dumps(out))
"#;
    let got = json_line(&python(&s, script).stdout);
    assert_eq!(got["after_move"], 6, "{got}");
    assert_eq!(got["after_move_back"], 4, "{got}");
    assert_eq!(got["deferrable"], "on", "{got}");
    assert_eq!(got["isolation"], "serializable", "{got}");
    assert_eq!(got["do"], "42501", "{got}");
    assert_eq!(s.pg.psql("shop", "SELECT count(*) FROM items"), "10");
    let kind_of =
        |prefix: &str| wait_statement(&s, |e| e["sql"].as_str().is_some_and(|q| q.starts_with(prefix)))["kind"].clone();
    assert_eq!(kind_of("MOVE"), "cursor");
    assert_eq!(kind_of("BEGIN ISOLATION"), "transaction");
    assert_eq!(kind_of("SET TRANSACTION"), "transaction");
    assert_eq!(kind_of("DO $$"), "ddl");
}

#[test]
fn a_do_block_runs_where_policy_allows_schema_changes() {
    let s = setup(
        "pgdo",
        "127.0.0.84",
        &[],
        Some(vec![("allow.cedar".into(), ALLOW_ALL.into())]),
    );
    let script = r#"
import sys, psycopg
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    conn.execute("DO $$ BEGIN UPDATE items SET label = label || '!' WHERE id = 1; END $$")
    print(conn.execute("SELECT label FROM items WHERE id = 1").fetchone()[0])
"#;
    assert!(python(&s, script).stdout.trim().ends_with('!'));
}

#[test]
fn a_pooled_session_is_named_in_pg_stat_activity_and_handed_back_with_the_agents_name() {
    let s = setup(
        "pgpoolname",
        "127.0.0.85",
        &[],
        Some(vec![("allow.cedar".into(), ALLOW_ALL.into())]),
    );
    let first = r#"
import sys, psycopg
with psycopg.connect(sys.argv[1] + " application_name=reporter", autocommit=True) as conn:
    print(conn.execute("SELECT pg_backend_pid()").fetchone()[0])
"#;
    let pid = python(&s, first).stdout.trim().to_owned();
    // Seen from outside the gateway while it waits in the pool.
    let idle = interlock_tests::wait_for(10, || {
        let name = s.pg.psql(
            "shop",
            &format!("SELECT application_name FROM pg_stat_activity WHERE pid = {pid}"),
        );
        name.starts_with("interlock: idle in the pool").then_some(name)
    });
    assert!(idle.is_some(), "the pooled backend {pid} is not marked");
    let second = r#"
import sys, json, psycopg
with psycopg.connect(sys.argv[1] + " application_name=reporter", autocommit=True) as conn:
    print(json.dumps([conn.execute("SELECT pg_backend_pid()").fetchone()[0],
                      conn.execute("SHOW application_name").fetchone()[0]]))
"#;
    let got = json_line(&python(&s, second).stdout);
    assert_eq!(got[0].to_string(), pid, "the pooled session was reused");
    assert_eq!(got[1], "reporter");
}

#[test]
fn a_database_that_is_down_is_reported_down_not_accepted_then_dropped() {
    let s = setup(
        "pgdown",
        "127.0.0.86",
        &[],
        Some(vec![("allow.cedar".into(), ALLOW_ALL.into())]),
    );
    s.pg.stop();
    let script = r#"
import sys, json, psycopg
try:
    psycopg.connect(sys.argv[1], connect_timeout=5).close()
    print(json.dumps({"connected": True}))
except psycopg.OperationalError as e:
    print(json.dumps({"connected": False, "sqlstate": e.sqlstate, "message": str(e)}))
"#;
    let got = json_line(&python(&s, script).stdout);
    assert_eq!(got["connected"], false, "{got}");
    // The kernel completed the agent's TCP handshake with the gateway's
    // listener; the first thing the agent reads is the upstream's refusal.
    // (libpq keeps no SQLSTATE for an error at connection time.)
    let message = got["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("FATAL") && message.contains("Connection refused"),
        "{got}"
    );
}

/// A pipelined `SET client_encoding TO sjis`, then a Parse whose text is
/// valid UTF-8 (`ā` is C4 81) but in SJIS reads 81 5C as one character, so
/// the backslash the gateway would see escaping the quote is gone for the
/// server: read as UTF-8 it selects a string; read as SJIS, emails.
const SJIS_PIPELINE: &str = r#"
import sys, json, psycopg
out = {}
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    try:
        with conn.pipeline():
            conn.execute("SET client_encoding TO sjis")
            cur = conn.execute(b"SELECT E'\xc4\x81\x5c' , email FROM customers --'")
        out["rows"] = len(cur.fetchall())
    except psycopg.Error as e:
        out["refused"] = e.sqlstate
    conn.execute("SET client_encoding TO utf8")
    # Sent after the answer: read in the encoding the server reported.
    conn.execute("SET client_encoding TO latin9")
    out["after"] = conn.execute("SELECT 'é'").fetchone()[0]
print(json.dumps(out))
"#;

#[test]
fn text_sent_while_client_encoding_may_change_is_refused_unless_it_reads_the_same_in_every_encoding() {
    let forbid = "@id(\"no-customers\")\nforbid (principal, action == Interlock::Action::\"sql_statement\", resource)\nwhen { context.tables_read.contains(\"customers\") };\n";
    let policies = vec![
        ("allow.cedar".to_owned(), ALLOW_ALL.to_owned()),
        ("customers.cedar".to_owned(), forbid.to_owned()),
    ];
    let s = setup("pgsjis", "127.0.0.87", &[], Some(policies));
    // Debian's python and psycopg: the agent is `nobody`, with no capabilities.
    let r = Client::agent(&s.cg).run("/usr/bin/python3", &["-c", SJIS_PIPELINE, &s.pg.agent_dsn()]);
    assert!(r.success, "client failed:\n{}\n{}", r.stdout, r.stderr);
    let got = json_line(&r.stdout);
    assert_eq!(
        got["refused"], "0A000",
        "the customers table was read past the policy: {got}"
    );
    assert_eq!(got["after"], "é", "{got}");
}

#[test]
fn two_phase_commit_strings_reach_the_server_and_passwords_stay_out_of_the_trail() {
    let s = setup(
        "pg2pc",
        "127.0.0.88",
        &[],
        Some(vec![("allow.cedar".into(), ALLOW_ALL.into())]),
    );
    let script = r#"
import sys, json, psycopg
out = {}
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    # Two statements sqlparser cannot read as one string: judged one by one,
    # then the server answers (prepared transactions are off in this cluster).
    try:
        conn.execute("begin; prepare transaction 'tx-1'")
        out["prepare"] = "ok"
    except psycopg.Error as e:
        out["prepare"] = e.sqlstate
    conn.execute("ROLLBACK")
    try:
        conn.execute("CREATE ROLE bob LOGIN PASSWORD 'hunter2'")
    except psycopg.Error as e:
        out["role"] = str(e).splitlines()[0]
print(json.dumps(out))
"#;
    let got = json_line(&python(&s, script).stdout);
    // 55000: the server's "prepared transactions are disabled", not a refusal.
    assert_eq!(got["prepare"], "55000", "{got}");
    assert!(
        got["role"].as_str().is_some_and(|m| m.contains("permission denied")),
        "{got}"
    );
    let ev = wait_statement(&s, |e| e["sql"].as_str().is_some_and(|q| q.starts_with("begin;")));
    assert_eq!(ev["kind"], "transaction", "{ev}");
    let ev = wait_statement(&s, |e| e["sql"].as_str().is_some_and(|q| q.starts_with("CREATE ROLE")));
    assert_eq!(ev["sql"], "CREATE ROLE bob LOGIN PASSWORD '[REDACTED]'", "{ev}");
    // (The agent's own command line is in every event's identity: look at the SQL.)
    assert!(!statements(&s).iter().any(|e| e["sql"].to_string().contains("hunter2")));
}
