//! Audit write throughput, with criterion: HTTP exchange and body events recorded by
//! 32 concurrent recorders, each waiting (as the data path does) until its
//! event is committed, into the embedded SQLite store and into a real
//! PostgreSQL store (a cluster started for the bench; needs root, as every
//! privileged bench here).
use std::{path::Path, sync::Arc, time::Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gateway::{
    audit::{self, EventSink, HttpBodyEvent, HttpExchangeEvent},
    config::Config,
    identity::{Identity, ProcessInfo},
    policy::{Decision, Ruling},
    types::{AgentName, ConnId},
};

const RECORDERS: u64 = 32;
const EVENTS: u64 = 1024;

/// The caller as the data path records it: a kernel record and what /proc
/// said about the process (an agent run from a virtualenv with arguments).
fn caller() -> Identity {
    let mut identity = Identity::unattributed();
    identity.pid = 4242;
    identity.tid = 4242;
    identity.uid = 1000;
    identity.comm = "python3".into();
    identity.user = Some("agent".into());
    identity.process = Some(Arc::new(ProcessInfo {
        start_ticks: 3_536_478,
        exe: Some("/opt/agents/venv/bin/python3.11".into()),
        cmdline: vec![
            "/opt/agents/venv/bin/python3".into(),
            "-m".into(),
            "support_agent".into(),
            "--config".into(),
            "/etc/agents/support.toml".into(),
        ],
        ppid: 1,
        cgroup: Some("/system.slice/support-agent.service".into()),
        container: None,
        systemd_unit: Some("support-agent.service".into()),
    }));
    identity
}

/// An HTTP exchange's events, as the data path records them: the exchange
/// (even `n`) and its bodies (odd `n`: a 1 KiB JSON response).
fn event(n: u64) -> audit::Event {
    let conn_id = ConnId(n / 16);
    let (agent, target, path) = (
        AgentName("assistant".into()),
        "openai".to_owned(),
        "/v1/chat/completions".to_owned(),
    );
    if n % 2 == 1 {
        return audit::Event::HttpBody(Box::new(HttpBodyEvent {
            time: audit::now(),
            conn_id,
            exchange: n / 2,
            agent,
            identity: caller(),
            target,
            path,
            request_body: r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Where is my order?"}]}"#
                .into(),
            request_bytes: 84,
            response_body: format!(
                r#"{{"id":"chatcmpl-{n}","choices":[{{"message":{{"content":"{}"}}}}]}}"#,
                "x".repeat(960)
            ),
            response_bytes: 1024,
            response_complete: true,
        }));
    }
    audit::Event::HttpExchange(Box::new(HttpExchangeEvent {
        time: audit::now(),
        conn_id,
        agent,
        identity: caller(),
        target,
        method: "POST".into(),
        path,
        exchange: n / 2,
        status: 200,
        decision: Decision {
            outcome: Ruling::Allow,
            policies: vec!["llm-chat".into()],
            reason: "chat completions are allowed".into(),
            mask: vec!["email".into()],
        },
        credential_injected: true,
        masked_request: Vec::new(),
        masked_response: Vec::new(),
        upstream_error: None,
        duration_ms: 3,
        bodies: None,
    }))
}

fn config(dir: &Path, audit: &str) -> Config {
    let text = format!("[paths]\nstate_dir = \"{}\"\n{audit}", dir.display());
    Config::parse(&text, &dir.join("bench.toml")).expect("bench config")
}

/// `recorders` concurrent recorders recording `events` events in all.
fn bench_store(c: &mut Criterion, name: &str, config: Config, recorders: u64, events: u64) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let sink = Arc::new(rt.block_on(EventSink::open(&config)).expect("audit store opens"));
    let mut g = c.benchmark_group("audit");
    g.throughput(Throughput::Elements(events));
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                rt.block_on(async {
                    let tasks: Vec<_> = (0..recorders)
                        .map(|r| {
                            let sink = sink.clone();
                            tokio::spawn(async move {
                                for i in 0..events / recorders {
                                    sink.record(event(r * 1000 + i)).await.expect("recorded");
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.expect("recorder");
                    }
                });
            }
            start.elapsed()
        })
    });
    g.finish();
    rt.block_on(sink.flush()).expect("flushed");
}

fn audit_stores(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(interlock_tests::unique("bench-audit"));
    std::fs::create_dir_all(&dir).expect("bench dir");
    let sqlite = config(&dir.join("sqlite"), "");
    bench_store(c, "events/s, SQLite, 32 recorders", sqlite, RECORDERS, EVENTS);
    // One recorder at a time: the time per event is the acknowledgement latency.
    bench_store(
        c,
        "events/s, SQLite, 1 recorder (latency)",
        config(&dir.join("sqlite-1"), ""),
        1,
        64,
    );
    interlock_tests::require_root();
    let pg = interlock_tests::postgres::PgServer::start("127.0.0.66");
    pg.psql("postgres", "CREATE ROLE auditor LOGIN PASSWORD 'audit-pw'");
    pg.psql("postgres", "CREATE DATABASE audit OWNER auditor");
    let pw = dir.join("pw");
    std::fs::write(&pw, "audit-pw").expect("password file");
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("password file mode");
    let audit = format!(
        "[audit]\nbackend = \"postgres\"\n[audit.postgres]\nhost = \"{}\"\nport = {}\ndbname = \"audit\"\nuser = \"auditor\"\npassword_file = \"{}\"\ntls = \"disable\"\n",
        pg.addr.ip(),
        pg.addr.port(),
        pw.display()
    );
    bench_store(
        c,
        "events/s, PostgreSQL, 32 recorders",
        config(&dir.join("postgres"), &audit),
        RECORDERS,
        EVENTS,
    );
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, audit_stores);
criterion_main!(benches);
