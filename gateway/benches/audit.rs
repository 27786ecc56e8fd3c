//! Audit write throughput, with criterion: HTTP exchange events recorded by
//! 32 concurrent recorders, each waiting (as the data path does) until its
//! event is committed, into the embedded SQLite store and into a real
//! PostgreSQL store (a cluster started for the bench; needs root, as every
//! privileged bench here).
use std::{path::Path, sync::Arc, time::Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gateway::{
    audit::{self, EventSink, HttpExchangeEvent},
    config::Config,
    identity::Identity,
    policy::{Decision, Outcome},
    types::{AgentName, ConnId},
};

const RECORDERS: u64 = 32;
const EVENTS: u64 = 1024;

fn event(n: u64) -> audit::Event {
    let mut identity = Identity::unattributed();
    identity.pid = 4242;
    identity.comm = "python3".into();
    identity.user = Some("agent".into());
    audit::Event::HttpExchange(Box::new(HttpExchangeEvent {
        time: audit::now(),
        conn_id: ConnId(n / 16),
        agent: AgentName("assistant".into()),
        identity,
        target: "openai".into(),
        method: "POST".into(),
        path: "/v1/chat/completions".into(),
        exchange: n,
        status: 200,
        decision: Decision {
            outcome: Outcome::Allow,
            policies: vec!["llm-chat".into()],
            reason: "chat completions are allowed".into(),
            mask: vec!["email".into()],
        },
        credential_injected: true,
        masked_request: Vec::new(),
        upstream_error: None,
        duration_ms: 3,
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
