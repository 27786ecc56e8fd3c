//! PostgreSQL scenarios with pgbench: `-S` closed loop (simple and prepared,
//! 1/8/32 clients), `-C` (a new connection per transaction), and a fixed
//! rate (`-R`), whose per-transaction log gives latency from each
//! transaction's scheduled start (coordinated omission corrected).
use serde_json::{json, Value};

use super::{micros, Bench, Via};

/// One PostgreSQL contender: its name, connection string, how pgbench runs.
pub type Contender<'a> = (&'a str, String, Via<'a>);

/// Reads pgbench's summary.
fn parse_pgbench(out: &str) -> Value {
    let (mut rate, mut avg, mut count) = (0.0, f64::NAN, 0.0);
    for line in out.lines() {
        if let Some(v) = line.strip_prefix("tps = ") {
            rate = v.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0.0);
        }
        if let Some(v) = line.strip_prefix("latency average = ") {
            avg = micros(&v.replace(' ', ""));
        }
        if let Some(v) = line.strip_prefix("number of transactions actually processed: ") {
            count = v.split('/').next().and_then(|n| n.parse().ok()).unwrap_or(0.0);
        }
    }
    // pgbench prints an average, not percentiles, in closed loop.
    json!({"rate": rate, "p50_us": avg, "p99_us": null, "count": count})
}

fn pgbench_args(secs: u32, mode: &str, clients: u32, dsn: &str, extra: &[String]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "-S".into(),
        "-M".into(),
        mode.into(),
        "-c".into(),
        clients.to_string(),
        "-j".into(),
        clients.min(2).to_string(),
        "-T".into(),
        secs.to_string(),
        "-n".into(),
    ];
    args.extend(extra.iter().cloned());
    args.push(dsn.to_owned());
    args
}

/// Closed loop: `-S` at 1/8/32 clients, and `-C`.
pub fn closed_loop(b: &mut Bench, contenders: &[Contender<'_>]) {
    let scenarios: &[(&str, u32, bool)] = if b.callgrind {
        // Counting instructions: one client, so the audit trail's group
        // commit batches alike in every run (with eight, how many events
        // share a commit varies run to run, and so does the count).
        &[("simple", 1, false), ("prepared", 1, false)]
    } else {
        &[
            ("simple", 8, false),
            ("prepared", 8, false),
            ("simple", 1, false),
            ("simple", 32, false),
            ("simple", 8, true),
        ]
    };
    for &(mode, clients, connect) in scenarios {
        let scenario = if connect {
            format!("pgbench -S -C (new connection per transaction), {clients} clients")
        } else {
            format!("pgbench -S -M {mode}, {clients} clients")
        };
        if !b.runs(&scenario) {
            continue;
        }
        for round in 0..b.rounds {
            for (name, dsn, via) in contenders {
                // pgbouncer 1.18 (Debian 12) keeps no prepared statements in transaction mode.
                if !b.wanted(&scenario, name) || (mode == "prepared" && name.contains("transaction")) {
                    continue;
                }
                let extra = if connect { vec!["-C".to_owned()] } else { Vec::new() };
                let args = |secs| pgbench_args(secs, mode, clients, dsn, &extra);
                b.measure(&scenario, name, round, via, "pgbench", args, parse_pgbench);
            }
        }
    }
}

/// Latency percentiles (µs) from pgbench's per-transaction logs under `dir`:
/// each line's time plus its schedule lag (the wait before it could start).
fn logged_latency(dir: &std::path::Path) -> (f64, f64, usize) {
    let mut all: Vec<f64> = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for line in text.lines() {
            let f: Vec<f64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
            if f.len() >= 7 {
                all.push(f[2] + f[6]);
            }
        }
    }
    all.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
    };
    (pct(0.5).unwrap_or(f64::NAN), pct(0.99).unwrap_or(f64::NAN), all.len())
}

/// Fixed rate (`-R`), 8 clients, simple protocol.
pub fn fixed_rate(b: &mut Bench, scenario: &str, rate: f64, contenders: &[Contender<'_>]) {
    if !b.runs(scenario) || !rate.is_finite() || rate < 1.0 {
        return;
    }
    for round in 0..b.rounds_of(scenario) {
        for (name, dsn, via) in contenders {
            if !b.wanted(scenario, name) {
                continue;
            }
            let logs = std::env::temp_dir().join(interlock_tests::unique("pgbench-log"));
            std::fs::create_dir_all(&logs).expect("log dir");
            // The agent cgroup's pgbench runs as root too; the directory is root's.
            let extra = vec![
                "-R".to_owned(),
                format!("{rate:.0}"),
                "-l".to_owned(),
                format!("--log-prefix={}/tx", logs.display()),
            ];
            let args = |secs| pgbench_args(secs, "simple", 8, dsn, &extra);
            b.measure(scenario, name, round, via, "pgbench", args, |out| {
                let mut v = parse_pgbench(out);
                let (p50, p99, n) = logged_latency(&logs);
                // Emptied for the next run of this measurement (callgrind's two).
                let _ = std::fs::remove_dir_all(&logs);
                let _ = std::fs::create_dir_all(&logs);
                v["p50_us"] = json!(p50);
                v["p99_us"] = json!(p99);
                v["count"] = json!(n);
                v
            });
            let _ = std::fs::remove_dir_all(&logs);
        }
    }
}
