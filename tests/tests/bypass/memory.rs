//! Large messages at once cannot take the gateway's memory: each message
//! the gateway must hold whole reserves its room in one budget shared by
//! all sessions (`limits.buffer_budget`), and past it a message is refused
//! (SQLSTATE 54000, HTTP 413) instead of being buffered. The bound stated
//! and checked: the gateway's peak RSS grows by at most the budget plus
//! 32 MiB while six agents send 12 MiB statements and six send 7 MiB
//! bodies to be masked, all at once.
use interlock_tests::{postgres::PgServer, python::PyServer, unique, Client, Gateway, GatewayOptions, TestCgroup};
use serde_json::{json, Value};

/// The budget in this test, MiB.
const BUDGET_MIB: u64 = 64;

/// The gateway's peak resident set so far, KiB (VmHWM).
fn peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

fn results(out: &Value) -> Vec<Value> {
    out["results"].as_array().unwrap_or_else(|| panic!("{out}")).clone()
}

#[test]
fn concurrent_large_messages_are_refused_past_the_memory_budget() {
    let pg = PgServer::start("127.0.0.51");
    pg.shop();
    let cg = TestCgroup::new(&unique("budget"));
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/post_server.py");
    let web = PyServer::start(script.to_str().unwrap(), &["127.0.0.52"]);
    let policies = vec![(
        "p.cedar".to_owned(),
        "@id(\"connect\")\npermit (principal, action == Interlock::Action::\"connect\", resource);\n\
         @id(\"sql\")\npermit (principal, action == Interlock::Action::\"sql_statement\", resource);\n\
         @id(\"masked-posts\")\n@mask(\"email\")\npermit (principal, action == Interlock::Action::\"http_request\", resource);\n"
            .to_owned(),
    )];
    let gw = Gateway::start(
        &cg,
        GatewayOptions {
            extra_toml: vec![
                pg.target(&[]),
                "[[targets]]\nname = \"web\"\ncidrs = [\"127.0.0.52/32\"]\nprotocol = \"http\"\n".into(),
                format!("[limits]\nbuffer_budget = \"{BUDGET_MIB}MiB\"\n"),
            ],
            policies: Some(policies),
            ..Default::default()
        },
    );
    let pid = gw.pid().unwrap();
    let before = peak_kib(pid);
    // Six statements of 12 MiB (48 MiB of budget each) held half-sent at once.
    let query = json!({"op": "slow_query", "host": "127.0.0.51", "port": pg.addr.port(), "size": 12 << 20, "hold": 2});
    let post = json!({"op": "slow_post", "host": "127.0.0.52", "port": web.port(), "host_header": "web", "size": 7 << 20, "hold": 2});
    let (sql, http) = std::thread::scope(|s| {
        let sql = s.spawn(|| {
            Client::agent(&cg)
                .net(json!({"op": "parallel", "count": 6, "inner": query}))
                .json()
        });
        let http = s.spawn(|| {
            Client::agent(&cg)
                .net(json!({"op": "parallel", "count": 6, "inner": post}))
                .json()
        });
        (sql.join().unwrap(), http.join().unwrap())
    });
    let (sql, http) = (results(&sql), results(&http));
    let refused_sql = sql.iter().filter(|r| r["code"] == "54000").count();
    let served_sql = sql.iter().filter(|r| r["ok"] == true).count();
    assert!(refused_sql >= 4, "past the budget, statements were buffered: {sql:?}");
    assert_eq!(refused_sql + served_sql, 6, "{sql:?}");
    assert!(sql
        .iter()
        .filter(|r| r["ok"] == true)
        .all(|r| r["length"].as_u64().unwrap() > 12_000_000));
    let refused_http = http.iter().filter(|r| r["status"] == 413).count();
    assert!(refused_http >= 4, "past the budget, bodies were buffered: {http:?}");
    assert!(
        http.iter().all(|r| r["status"] == 413 || r["status"] == 200),
        "{http:?}\n{:#?}",
        gw.events().all()
    );
    let grew_mib = (peak_kib(pid) - before) / 1024;
    assert!(
        grew_mib <= BUDGET_MIB + 32,
        "peak RSS grew {grew_mib} MiB with a {BUDGET_MIB} MiB budget"
    );
    // Refusals say why.
    let ev = gw.events().wait("pg_session", |e| {
        e["outcome"].as_str().is_some_and(|r| r.contains("buffer budget"))
    });
    assert!(ev.to_string().contains("limits.buffer_budget"), "{ev}");
    // With the room given back, a large statement is served again.
    let out = Client::agent(&cg).net(query).json();
    assert_eq!(out["ok"], true, "{out}");
}
