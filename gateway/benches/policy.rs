//! Cost of one policy decision, with criterion: a `connect` with the shipped
//! policies (the subject built every time, and taken from the cache a
//! connection's later requests hit), an `http_request` and an
//! `sql_statement` (with and without classification), and the data path's
//! connect stage with its decision cache.
//! Run with `cargo xtask bench` (or `cargo bench -p gateway --bench policy`).
use std::{hint::black_box, time::SystemTime};

use criterion::{criterion_group, criterion_main, Criterion};
use gateway::{
    identity::{AgentMatcher, Identity},
    policy::{decide, decide_cached, load_embedded, ActionKind, Gate, PolicyStore, Query, SubjectCache, TargetRef},
    sql,
    targets::TargetTable,
    types::{AgentName, OrigDst},
};

fn policy(c: &mut Criterion) {
    let policies = load_embedded().expect("shipped policies load");
    let identity = Identity::unattributed();
    let agent = AgentName("db-reader".into());
    let target = TargetRef {
        name: "analytics-db".into(),
        ip: "10.20.0.5".parse().expect("address"),
        port: 5432,
        host: String::new(),
        protocol: gateway::types::Wire::Tcp,
    };
    let query = |action: &'static ActionKind| Query {
        agent: &agent,
        identity: &identity,
        target: &target,
        action,
        now: SystemTime::now(),
    };
    let connect: &'static ActionKind = Box::leak(Box::new(ActionKind::Connect));
    let http: &'static ActionKind = Box::leak(Box::new(ActionKind::http("POST", "/v1/chat/completions")));
    let statement = "SELECT o.id, u.email FROM orders o JOIN users u ON u.id = o.user_id WHERE o.total > 100";
    let select: &'static ActionKind = Box::leak(Box::new(sql::classify(statement).expect("classifies")));
    let cache = SubjectCache::default();
    let mut g = c.benchmark_group("policy");
    g.bench_function("decide connect, uncached (subject and decision built)", |b| {
        b.iter(|| black_box(decide(&policies, &query(connect))))
    });
    g.bench_function("decide connect, cached", |b| {
        b.iter(|| black_box(decide_cached(&policies, &query(connect), &cache)))
    });
    g.bench_function("decide http_request, cached", |b| {
        b.iter(|| black_box(decide_cached(&policies, &query(http), &cache)))
    });
    g.bench_function("decide sql_statement, cached", |b| {
        b.iter(|| black_box(decide_cached(&policies, &query(select), &cache)))
    });
    g.bench_function("sql classify, parsed", |b| {
        b.iter(|| black_box(sql::classify_uncached(statement)))
    });
    g.bench_function("sql classify, same text again", |b| {
        b.iter(|| black_box(sql::classify(statement)))
    });
    let mut n = 0u64;
    g.bench_function("sql classify, new values in a known statement (sketch)", |b| {
        b.iter(|| {
            n += 1;
            let text =
                format!("SELECT o.id, u.email FROM orders o JOIN users u ON u.id = o.user_id WHERE o.total > {n}");
            black_box(sql::classify(&text))
        })
    });
    // A comment makes the text unplain: no sketch, the shape is tokenised.
    g.bench_function("sql classify, new values in a known statement (shape)", |b| {
        b.iter(|| {
            n += 1;
            let text = format!(
                "SELECT o.id, u.email FROM orders o JOIN users u ON u.id = o.user_id WHERE o.total > {n} -- report"
            );
            black_box(sql::classify(&text))
        })
    });
    // The data path's connect stage: agent naming, target naming, decision,
    // with the decision cache (the shipped policies do not read the context).
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
    let dst = OrigDst("10.20.0.5:5432".parse().expect("address"));
    g.bench_function("gate connect, cached decision", |b| {
        b.iter(|| {
            black_box(gate.connect(
                gate.agent_of(&identity),
                &identity,
                dst,
                &gateway::targets::Judged::default(),
            ))
        })
    });
    g.finish();
}

criterion_group!(benches, policy);
criterion_main!(benches);
