//! The audit trail: every kind of event from real traffic lands in the
//! store, searches return exactly what matches, verification catches each
//! kind of tampering, acknowledged events survive kill -9, and a failing
//! store makes the gateway refuse work until it recovers.
use std::process::Command;

use interlock_tests::{
    gateway::{shipped, ALLOW_ALL},
    postgres::PgServer,
    unique, wait_for, Client, Gateway, GatewayOptions, TestCgroup, Upstream,
};
use serde_json::Value;

#[path = "audit/tamper.rs"]
mod tamper;

fn web_target(up: &Upstream) -> String {
    format!(
        "[[targets]]\nname = \"web\"\ncidrs = [\"{}/32\"]\nprotocol = \"http\"\n",
        up.addr.ip()
    )
}

/// `interlock audit search --json` with extra arguments.
fn search(gw: &Gateway, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["audit", "search", "--json"];
    all.extend_from_slice(args);
    let out = gw.cli(&all);
    assert!(
        out.status.success(),
        "audit search failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect()
}

fn ids(events: &[Value]) -> Vec<i64> {
    events.iter().map(|e| e["id"].as_i64().unwrap()).collect()
}

fn curl(cg: &TestCgroup, url: &str) -> String {
    let r = Client::new(cg).curl(url, 10);
    r.stdout + &r.stderr
}

#[test]
fn events_from_real_traffic_land_in_the_store_and_searches_match_exactly() {
    let cg = TestCgroup::new(&unique("auditall"));
    let web = Upstream::start("127.0.0.40");
    let pg = PgServer::start("127.0.0.41");
    pg.shop();
    let policies = vec![
        ("allow.cedar".to_owned(), ALLOW_ALL.to_owned()),
        ("db.cedar".to_owned(), shipped("read-only-db.cedar")),
    ];
    let gw = Gateway::start(
        &cg,
        GatewayOptions {
            extra_toml: vec![web_target(&web), pg.target(&[])],
            policies: Some(policies),
            ..Default::default()
        },
    );
    assert!(curl(&cg, &format!("http://{}/hello", web.addr)).ends_with("200"));
    let script = r#"
import sys, psycopg
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    conn.execute("SELECT count(*) FROM items")
    try:
        conn.execute("DELETE FROM items")
    except psycopg.Error:
        pass
"#;
    let py = Client::new(&cg).run("python3", &["-c", script, &pg.agent_dsn()]);
    assert!(py.success, "{}", py.stderr);
    let grant = gw.cli(&[
        "grant",
        "--agent",
        "unknown",
        "--target",
        "web",
        "--for",
        "10m",
        "--reason",
        "audit test",
    ]);
    assert!(grant.status.success(), "{}", String::from_utf8_lossy(&grant.stderr));
    let revoke = gw.cli(&["revoke", "--uid", "65534", "--reason", "audit test"]);
    assert!(revoke.status.success(), "{}", String::from_utf8_lossy(&revoke.stderr));
    let kinds = [
        "gateway_started",
        "connection",
        "http_exchange",
        "sql_statement",
        "pg_session",
        "grant",
        "revocation",
    ];
    let all = wait_for(10, || {
        let all = search(&gw, &[]);
        kinds
            .iter()
            .all(|k| all.iter().any(|e| e["event"] == *k && e["seq"].as_i64().is_some()))
            .then_some(all)
    })
    .unwrap_or_else(|| panic!("not every kind arrived: {:#?}", search(&gw, &[])));
    // Each filter returns exactly the events that match it.
    let denied_sql = all
        .iter()
        .find(|e| e["event"] == "sql_statement" && e["decision"]["outcome"] == "deny")
        .expect("the denied DELETE");
    let pid = denied_sql["identity"]["pid"].as_i64().unwrap();
    let pid_s = pid.to_string();
    let middle = all[all.len() / 2]["time"].as_str().unwrap().to_owned();
    let curl_exe = all
        .iter()
        .find(|e| e["event"] == "http_exchange")
        .and_then(|e| e["identity"]["process"]["exe"].as_str())
        .expect("curl's exchange")
        .to_owned();
    type Pred = Box<dyn Fn(&Value) -> bool>;
    let cases: Vec<(Vec<&str>, Pred)> = vec![
        (
            vec!["--kind", "sql_statement"],
            Box::new(|e| e["event"] == "sql_statement"),
        ),
        (
            vec!["--decision", "deny"],
            Box::new(|e| e["decision"]["outcome"] == "deny"),
        ),
        (
            vec!["--policy", "no-unbounded-writes"],
            Box::new(|e| {
                e["decision"]["policies"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|x| x == "no-unbounded-writes"))
            }),
        ),
        (
            vec!["--target", "web"],
            Box::new(|e| e["target"] == "web" || e["target"]["name"] == "web"),
        ),
        (vec!["--pid", &pid_s], Box::new(move |e| e["identity"]["pid"] == pid)),
        (vec!["--agent", "unknown"], Box::new(|e| e["agent"] == "unknown")),
        (
            vec!["--text", "DELETE FROM items"],
            Box::new(|e| e.to_string().contains("DELETE FROM items")),
        ),
        (
            vec!["--since", &middle],
            Box::new({
                let m = middle.clone();
                move |e| e["time"].as_str().unwrap() >= m.as_str()
            }),
        ),
        (
            vec!["--exe", &curl_exe, "--kind", "http_exchange"],
            Box::new({
                let exe = curl_exe.clone();
                move |e| e["identity"]["process"]["exe"] == exe.as_str() && e["event"] == "http_exchange"
            }),
        ),
    ];
    for (args, pred) in cases {
        let expected: Vec<i64> = ids(&all.iter().filter(|e| pred(e)).cloned().collect::<Vec<_>>());
        assert!(!expected.is_empty(), "{args:?} matches nothing in {all:#?}");
        assert_eq!(ids(&search(&gw, &args)), expected, "{args:?}");
    }
    // The other ways of reading it.
    let out = gw.cli(&["audit", "export", "--format", "cef", "--kind", "sql_statement"]);
    let cef = String::from_utf8_lossy(&out.stdout);
    assert!(cef.lines().all(|l| l.starts_with("CEF:0|Interlock|gateway|")), "{cef}");
    assert!(
        cef.contains("act=deny") && cef.contains("cs1=no-unbounded-writes"),
        "{cef}"
    );
    let out = gw.cli(&["audit", "show", &denied_sql["id"].to_string()]);
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["sql"], "DELETE FROM items");
    assert!(shown["hash"].as_str().unwrap().len() == 64);
    let out = gw.cli(&["audit", "tail", "-n", "3"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);
    // tail -f prints what arrives after it started.
    let mut follow = Command::new(interlock_tests::gateway::binary())
        .arg("--config")
        .arg(gw.config_path())
        .args(["audit", "tail", "-f", "-n", "0", "--json", "--kind", "http_exchange"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    assert!(curl(&cg, &format!("http://{}/followed", web.addr)).ends_with("200"));
    let line = rx.recv_timeout(std::time::Duration::from_secs(10));
    let _ = follow.kill();
    let _ = follow.wait();
    let line = line.expect("tail -f printed nothing");
    assert!(line.contains("/followed"), "{line}");
    let out = gw.cli(&["audit", "verify"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn events_acknowledged_before_kill_9_are_in_the_store_after_restart() {
    let cg = TestCgroup::new(&unique("auditkill"));
    let web = Upstream::start("127.0.0.43");
    let mut gw = Gateway::start(
        &cg,
        GatewayOptions {
            extra_toml: vec![web_target(&web)],
            ..Default::default()
        },
    );
    // Bounded load: at most 20000 requests or 30 s, and it stops at the first failure.
    let script = r#"
import sys, time, httpx
deadline = time.time() + 30
with httpx.Client(timeout=5) as c:
    for i in range(20000):
        if time.time() > deadline:
            break
        try:
            r = c.get(f"{sys.argv[1]}/load/{i}")
        except Exception:
            break
        if r.status_code != 200:
            break
        print(i, flush=True)
"#;
    let mut cmd = Command::new("python3");
    cmd.args(["-c", script, &format!("http://{}", web.addr)])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let client = std::thread::spawn({
        let cg_client = Client::new(&cg);
        move || cg_client.run_cmd(cmd)
    });
    std::thread::sleep(std::time::Duration::from_millis(1500));
    gw.kill9();
    let r = client.join().unwrap();
    let acknowledged: Vec<String> = r.stdout.lines().map(|i| format!("/load/{i}")).collect();
    assert!(acknowledged.len() > 10, "too little load: {} {}", r.stdout, r.stderr);
    gw.spawn();
    // More than search's default 1,000 results on a fast machine.
    let stored: std::collections::HashSet<String> = search(&gw, &["--kind", "http_exchange", "--limit", "100000"])
        .iter()
        .filter_map(|e| e["path"].as_str().map(str::to_owned))
        .collect();
    let missing: Vec<&String> = acknowledged.iter().filter(|p| !stored.contains(*p)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged exchanges missing: {missing:?}",
        missing.len()
    );
    let out = gw.cli(&["audit", "verify"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A small tmpfs, unmounted on drop.
struct SmallFs(std::path::PathBuf);

impl SmallFs {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(unique("auditfs"));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "interlock-test", dir.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(ok.success(), "mount tmpfs");
        Self(dir)
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_full_store_makes_the_gateway_refuse_until_it_has_room_again() {
    let cg = TestCgroup::new(&unique("auditfull"));
    let web = Upstream::start("127.0.0.44");
    let fs = SmallFs::new();
    let gw = Gateway::start(
        &cg,
        GatewayOptions {
            extra_toml: vec![
                web_target(&web),
                format!("[audit]\npath = \"{}\"\n", fs.0.join("audit.db").display()),
            ],
            ..Default::default()
        },
    );
    let url = format!("http://{}/x", web.addr);
    assert!(curl(&cg, &url).ends_with("200"));
    // Fill the file system.
    let _ = Command::new("dd")
        .args([
            "if=/dev/zero",
            &format!("of={}", fs.0.join("filler").display()),
            "bs=4k",
        ])
        .stderr(std::process::Stdio::null())
        .status();
    // Requests are journaled before they are answered, so the store's
    // failure shows at its next write: within a few requests the gateway
    // refuses, and whatever it served meanwhile reaches the store later.
    let (mut served, refused) = until_refused(&cg, &url, "full");
    assert!(
        refused.contains("audit trail is unavailable")
            || refused.contains("Connection reset")
            || refused.contains("Couldn't connect")
            || refused.contains("refused"),
        "{refused}"
    );
    // The store can come back for a moment while the disk is still full (a
    // write it rolled back freed its pages): a request served then must be
    // stored like the rest, and the next failing write refuses again.
    let mut refused_again = false;
    for i in 0..5 {
        let path = format!("/x-again-{i}");
        let again = curl(&cg, &format!("{url}-again-{i}"));
        if !again.ends_with("200") {
            refused_again = true;
            break;
        }
        served.push(path);
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(refused_again, "served five more requests with the disk full");
    assert!(gw.log().contains("audit store failing"), "{}", gw.log());
    std::fs::remove_file(fs.0.join("filler")).unwrap();
    let back = wait_for(15, || curl(&cg, &url).ends_with("200").then_some(()));
    assert!(back.is_some(), "the gateway did not recover:\n{}", gw.log());
    assert!(gw.log().contains("audit store is back"), "{}", gw.log());
    assert_stored(&gw, &served);
}

/// Requests `url-full-N` until one is refused (at most 20); returns the
/// paths served before that and the refusal.
fn until_refused(cg: &TestCgroup, url: &str, tag: &str) -> (Vec<String>, String) {
    let mut served = Vec::new();
    for i in 0..20 {
        let path = format!("{url}-{tag}-{i}");
        let out = curl(cg, &path);
        if !out.ends_with("200") {
            return (served, out);
        }
        served.push(path.rsplit_once('/').map(|(_, p)| format!("/{p}")).unwrap_or_default());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("still served 20 requests after the audit store failed");
}

/// Every path in `paths` has its exchange event in the store (eventually).
fn assert_stored(gw: &Gateway, paths: &[String]) {
    let all = wait_for(15, || {
        let stored: Vec<String> = search(gw, &["--kind", "http_exchange"])
            .iter()
            .filter_map(|e| e["path"].as_str().map(str::to_owned))
            .collect();
        paths.iter().all(|p| stored.contains(p)).then_some(())
    });
    assert!(all.is_some(), "served while failing but not stored: {paths:?}");
}

#[test]
fn two_gateways_write_one_postgresql_store_and_it_verifies() {
    use std::os::unix::fs::PermissionsExt;
    let pg = PgServer::start("127.0.0.45");
    pg.psql("postgres", "CREATE ROLE auditor LOGIN PASSWORD 'audit-pw'");
    pg.psql("postgres", "CREATE DATABASE audit OWNER auditor");
    let dir = std::env::temp_dir().join(unique("auditpg"));
    std::fs::create_dir_all(&dir).unwrap();
    let pw = dir.join("pw");
    std::fs::write(&pw, "audit-pw").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let audit = format!(
        "[audit]\nbackend = \"postgres\"\ncheckpoint_every = 3\ncheckpoint_interval = \"1s\"\n[audit.postgres]\nhost = \"{}\"\nport = {}\ndbname = \"audit\"\nuser = \"auditor\"\npassword_file = \"{}\"\ntls = \"disable\"\n",
        pg.addr.ip(),
        pg.addr.port(),
        pw.display()
    );
    let web = Upstream::start("127.0.0.46");
    // The same server also holds a database agents reach through the gateways.
    pg.shop();
    let (cg1, cg2) = (
        TestCgroup::new(&unique("auditpg1")),
        TestCgroup::new(&unique("auditpg2")),
    );
    let opts = || GatewayOptions {
        extra_toml: vec![web_target(&web), pg.target(&[]), audit.clone()],
        ..Default::default()
    };
    let (gw1, gw2) = (Gateway::start(&cg1, opts()), Gateway::start(&cg2, opts()));
    let url = format!("http://{}/fleet", web.addr);
    std::thread::scope(|s| {
        for cg in [&cg1, &cg2] {
            let url = url.clone();
            s.spawn(move || {
                for _ in 0..6 {
                    assert!(curl(cg, &url).ends_with("200"));
                }
            });
        }
    });
    let all = wait_for(10, || {
        let all = search(&gw1, &["--kind", "http_exchange"]);
        (all.len() == 12).then_some(all)
    })
    .unwrap_or_else(|| panic!("{:#?}", search(&gw1, &[])));
    let instances: std::collections::HashSet<&str> = all.iter().filter_map(|e| e["instance"].as_str()).collect();
    assert_eq!(instances.len(), 2, "{instances:?}");
    // SQL through the gateway lands in the PostgreSQL store as well.
    let mut psql = Command::new("psql");
    psql.arg(pg.agent_dsn())
        .args(["-w", "-tAc", "SELECT count(*) FROM items"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let r = Client::new(&cg1).run_cmd(psql);
    assert_eq!(r.stdout.trim(), "10", "{}", r.stderr);
    let sql = wait_for(10, || search(&gw1, &["--kind", "sql_statement"]).into_iter().next()).expect("sql event");
    assert_eq!(sql["sql"], "SELECT count(*) FROM items");
    assert_eq!(sql["rows_returned"], 1);
    assert!(wait_for(10, || (!search(&gw2, &["--kind", "pg_session"]).is_empty())
        .then_some(()))
    .is_some());
    let key1 = gw1.state_dir().join("audit-signing.pub");
    let key2 = gw2.state_dir().join("audit-signing.pub");
    let verify_both = || {
        gw1.cli(&[
            "audit",
            "verify",
            "--key",
            key1.to_str().unwrap(),
            "--key",
            key2.to_str().unwrap(),
        ])
    };
    // From gw1's host, gw2's newest records are covered once gw2 has signed
    // them (within its 1 s checkpoint interval).
    let verified = wait_for(10, || verify_both().status.success().then_some(()));
    let out = verify_both();
    assert!(
        verified.is_some(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Without the other gateway's key its checkpoints are not trusted.
    let out = gw1.cli(&["audit", "verify", "--key", key1.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not trusted"));
    // The store goes down: new requests are refused; it comes back: served again.
    pg.stop();
    let (served, _refused) = until_refused(&cg1, &url, "down");
    pg.start_again();
    let back = wait_for(20, || curl(&cg1, &url).ends_with("200").then_some(()));
    assert!(back.is_some(), "no recovery:\n{}", gw1.log());
    assert_stored(&gw1, &served);
    // Tampering in the shared store is caught too.
    pg.psql("audit", "UPDATE interlock_audit_events SET body = replace(body, '/fleet', '/other') WHERE id = (SELECT min(id) FROM interlock_audit_events WHERE kind = 'http_exchange')");
    let out = gw1.cli(&[
        "audit",
        "verify",
        "--key",
        key1.to_str().unwrap(),
        "--key",
        key2.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("modified"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A plain HTTP server on `ip` that answers every POST with the body it got.
struct EchoServer {
    _server: interlock_tests::python::PyServer,
    addr: std::net::SocketAddr,
}

impl EchoServer {
    fn start(ip: &str) -> Self {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/post_server.py");
        let server = interlock_tests::python::PyServer::start(script.to_str().unwrap(), &[ip]);
        let addr = format!("{ip}:{}", server.port()).parse().unwrap();
        Self { _server: server, addr }
    }
}

#[test]
fn bodies_are_kept_capped_and_masked_originals_only_sealed() {
    let cg = TestCgroup::new(&unique("auditbody"));
    let echo = EchoServer::start("127.0.0.47");
    let config = format!(
        "[[targets]]\nname = \"echo\"\ncidrs = [\"{}/32\"]\nprotocol = \"http\"\n\
         [[masking.rules]]\nname = \"keep-emails\"\ndetectors = [\"email\"]\nkeep_original = true\n\
         [audit]\nbody_cap = 64\n",
        echo.addr.ip()
    );
    let policy = "@id(\"echo\")\n@mask(\"keep-emails\")\npermit (principal, action, resource);\n";
    let gw = Gateway::start(
        &cg,
        GatewayOptions {
            extra_toml: vec![config],
            policies: Some(vec![("p.cedar".into(), policy.into())]),
            ..Default::default()
        },
    );
    let long_tail = "x".repeat(200);
    let body = format!("{{\"prompt\": \"mail jane.doe@example.com now\", \"pad\": \"{long_tail}\"}}");
    // From a file: the agent's command line (which the trail records) must not hold it.
    let body_file = gw.state_dir().join("../prompt.json");
    std::fs::write(&body_file, body).unwrap();
    let data = format!("@{}", body_file.display());
    let r = Client::new(&cg).run(
        "curl",
        &[
            "-sS",
            "--max-time",
            "10",
            "-H",
            "content-type: application/json",
            "-d",
            &data,
            &format!("http://{}/v1/echo", echo.addr),
        ],
    );
    assert!(
        r.stdout.contains("[REDACTED:email]") && !r.stdout.contains("jane.doe"),
        "{} {}",
        r.stdout,
        r.stderr
    );
    let exchange = wait_for(10, || search(&gw, &["--kind", "http_exchange"]).into_iter().next()).expect("exchange");
    let masked = &exchange["masked_request"][0];
    assert_eq!(masked["detector"], "email");
    assert!(masked["sealed"].as_str().is_some_and(|s| s.len() > 40), "{masked}");
    // The echo's whole answer came with its head: the bodies are recorded
    // with the exchange, and no `http_body` event follows.
    assert!(exchange["bodies"].is_object(), "{exchange}");
    let out = gw.cli(&["audit", "show", &exchange["id"].to_string()]);
    let shown: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(shown["masked_request"][0]["original"], "jane.doe@example.com");
    let bodies = &shown["bodies"];
    assert_eq!(bodies["request_body"].as_str().unwrap().len(), 64, "{bodies}");
    assert!(bodies["request_body"].as_str().unwrap().contains("[REDACTED:email]"));
    assert!(bodies["request_bytes"].as_u64().unwrap() > 200);
    assert_eq!(bodies["response_complete"], true);
    // The original is nowhere in plaintext: not in the store, not in the mirror file.
    gw.cli(&["audit", "verify"]);
    for file in ["audit.db", "audit.db-wal", "events.jsonl"] {
        let bytes = std::fs::read(gw.state_dir().join(file)).unwrap_or_default();
        assert!(
            !bytes.windows(8).any(|w| w == b"jane.doe"),
            "{file} holds the original in plaintext"
        );
    }
}

#[test]
fn a_zero_body_cap_keeps_no_bodies() {
    let cg = TestCgroup::new(&unique("auditnobody"));
    let web = Upstream::start("127.0.0.48");
    let gw = Gateway::start(
        &cg,
        GatewayOptions {
            extra_toml: vec![web_target(&web), "[audit]\nbody_cap = 0\n".into()],
            ..Default::default()
        },
    );
    assert!(curl(&cg, &format!("http://{}/nobody", web.addr)).ends_with("200"));
    let exchange = wait_for(10, || search(&gw, &["--kind", "http_exchange"]).into_iter().next());
    let exchange = exchange.expect("exchange event");
    assert_eq!(exchange["path"], "/nobody");
    assert!(exchange["bodies"].is_null(), "{exchange}");
    // The connection's own event comes after the body would have: once it is
    // in, a body event would be too.
    wait_for(10, || {
        (!search(&gw, &["--kind", "connection"]).is_empty()).then_some(())
    })
    .expect("connection event");
    assert!(search(&gw, &["--kind", "http_body"]).is_empty());
}

/// An upstream on `ip` answering each connection's request with a head
/// announcing `body`, then, after `delay`, the body (with no delay, head and
/// body in one write: the whole answer at hand at once).
fn delayed_body_upstream(ip: &str, body: &'static str, delay: std::time::Duration) -> std::net::SocketAddr {
    use std::io::Write;
    let listener = std::net::TcpListener::bind((ip, 0)).expect("upstream listens");
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                if !interlock_tests::server::read_head(&mut conn, &mut Vec::new()) {
                    return;
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                if delay.is_zero() {
                    let _ = conn.write_all(format!("{answer}{body}").as_bytes());
                    return;
                }
                let _ = conn.write_all(answer.as_bytes()).and_then(|()| conn.flush());
                std::thread::sleep(delay);
                let _ = conn.write_all(body.as_bytes());
            });
        }
    });
    addr
}

#[test]
fn a_whole_answer_is_one_event_and_a_late_body_its_own() {
    let cg = TestCgroup::new(&unique("auditsettle"));
    let quick = delayed_body_upstream("127.0.0.73", "all at once", std::time::Duration::ZERO);
    let late = delayed_body_upstream("127.0.0.74", "came later", std::time::Duration::from_millis(400));
    let target = |name: &str, addr: std::net::SocketAddr| {
        format!(
            "[[targets]]\nname = \"{name}\"\ncidrs = [\"{}/32\"]\nprotocol = \"http\"\n",
            addr.ip()
        )
    };
    let gw = Gateway::start(
        &cg,
        GatewayOptions {
            extra_toml: vec![target("quick", quick), target("late", late)],
            ..Default::default()
        },
    );
    assert!(curl(&cg, &format!("http://{quick}/q")).ends_with("200"));
    assert!(curl(&cg, &format!("http://{late}/l")).ends_with("200"));
    let events = gw.events();
    // The whole answer: its bodies in the exchange event, no body event.
    let q = events.wait("http_exchange", |e| e["path"] == "/q");
    assert_eq!(q["bodies"]["response_body"], "all at once", "{q}");
    assert_eq!(q["bodies"]["response_bytes"], 11);
    assert_eq!(q["bodies"]["response_complete"], true);
    // The late body: the head went out before it came, so the exchange
    // event has no bodies and the body event records it when it ended.
    let l = events.wait("http_exchange", |e| e["path"] == "/l");
    assert!(l["bodies"].is_null(), "{l}");
    let body = events.wait("http_body", |e| e["path"] == "/l");
    assert_eq!(body["response_body"], "came later");
    assert_eq!(body["exchange"], l["exchange"]);
    // Both connections have ended (their events come last): no body event
    // for the whole answer came after all.
    events.wait("connection", |e| e["target"] == "late");
    events.wait("connection", |e| e["target"] == "quick");
    assert!(
        !events
            .all()
            .iter()
            .any(|e| e["event"] == "http_body" && e["path"] == "/q"),
        "a body event for an exchange that has its bodies"
    );
    // `audit show` finds the bodies either way.
    for (e, text) in [(&q, "all at once"), (&l, "came later")] {
        let found = search(&gw, &["--kind", "http_exchange"])
            .into_iter()
            .find(|s| s["path"] == e["path"])
            .expect("exchange in the store");
        let out = gw.cli(&["audit", "show", &found["id"].to_string()]);
        let shown: Value = serde_json::from_slice(&out.stdout).expect("audit show prints JSON");
        assert_eq!(shown["bodies"]["response_body"], text, "{shown}");
    }
}
