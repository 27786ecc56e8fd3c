//! Cost of one policy decision (a `connect` with the shipped policies, and an
//! `sql_statement` with classification), measured over many iterations.
//! Run with `cargo xtask bench` (or `cargo bench -p gateway --bench policy`).
use std::{
    hint::black_box,
    time::{Instant, SystemTime},
};

use gateway::{
    identity::{AgentMatcher, Identity},
    policy::{decide, load_embedded, ActionKind, Gate, PolicyStore, Query, TargetRef},
    sql,
    targets::TargetTable,
    types::{AgentName, OrigDst},
};

fn measure(name: &str, iterations: u32, mut f: impl FnMut()) -> serde_json::Value {
    for _ in 0..iterations / 10 {
        f();
    }
    let mut samples = Vec::with_capacity(iterations as usize);
    let start = Instant::now();
    for _ in 0..iterations {
        let t = Instant::now();
        f();
        samples.push(t.elapsed());
    }
    let total = start.elapsed();
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    let mean = total / iterations;
    println!(
        "{name:<34} mean {mean:>9.2?}  p50 {:>9.2?}  p99 {:>9.2?}  ({iterations} runs)",
        pct(0.5),
        pct(0.99)
    );
    serde_json::json!({
        "name": name,
        "iterations": iterations,
        "mean_ns": mean.as_nanos() as u64,
        "p50_ns": pct(0.5).as_nanos() as u64,
        "p99_ns": pct(0.99).as_nanos() as u64,
    })
}

fn main() {
    let policies = load_embedded().expect("shipped policies load");
    let identity = Identity::unattributed();
    let agent = AgentName("db-reader".into());
    let target = TargetRef {
        name: "analytics-db".into(),
        ip: "10.20.0.5".parse().unwrap(),
        port: 5432,
        host: String::new(),
        protocol: "tcp".into(),
    };
    let connect = ActionKind::Connect;
    let iterations = std::env::var("BENCH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let mut results = Vec::new();
    results.push(measure("policy decide connect (allow)", iterations, || {
        let q = Query {
            agent: &agent,
            identity: &identity,
            target: &target,
            action: &connect,
            now: SystemTime::now(),
        };
        black_box(decide(&policies, &q));
    }));
    let unknown = AgentName("unknown".into());
    results.push(measure("policy decide connect (forbid)", iterations, || {
        let q = Query {
            agent: &unknown,
            identity: &identity,
            target: &target,
            action: &connect,
            now: SystemTime::now(),
        };
        black_box(decide(&policies, &q));
    }));
    let statement = "SELECT o.id, u.email FROM orders o JOIN users u ON u.id = o.user_id WHERE o.total > 100";
    results.push(measure("sql classify", iterations, || {
        black_box(sql::classify(statement).unwrap());
    }));
    let select = sql::classify(statement).unwrap();
    results.push(measure("policy decide sql_statement", iterations, || {
        let q = Query {
            agent: &agent,
            identity: &identity,
            target: &target,
            action: &select,
            now: SystemTime::now(),
        };
        black_box(decide(&policies, &q));
    }));
    // The data path's stage: agent naming, target naming, decision, with the
    // decision cache (the shipped policies do not read the request context).
    let gate = Gate::new(
        PolicyStore::load(
            None,
            gateway::masking::BUILTIN_NAMES
                .iter()
                .map(|n| (*n).to_owned())
                .collect(),
        )
        .expect("shipped policies"),
        AgentMatcher::new(&[]).expect("no agents"),
        TargetTable::default(),
    );
    let dst = OrigDst("10.20.0.5:5432".parse().unwrap());
    results.push(measure("gate connect (cached decision)", iterations, || {
        black_box(gate.connect(&identity, dst, None));
    }));
    if let Ok(path) = std::env::var("BENCH_OUTPUT") {
        let _ = std::fs::write(path, serde_json::to_string_pretty(&results).unwrap_or_default());
    }
}
