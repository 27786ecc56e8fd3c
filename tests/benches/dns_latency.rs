//! What the gateway's resolver adds to an agent's DNS (#21; aim: at most
//! 30 µs at p50). A real dnsmasq on 127.0.0.90 answers; the same bounded
//! resolver loop (`dns_loop`: UDP, one query outstanding) asks it directly
//! and as an agent, for names asked again and again (the gateway answers
//! from its cache) and for names never asked before (every query goes
//! upstream) (through the kernel redirect, the guards, policy, the
//! forward, the name binding and the audit trail), in alternating rounds.
//! Then dnsperf (Debian) at full load, both ways, for the rate and the
//! gateway's CPU per query. Everything shares the machine's cores; the
//! gateway's CPU is read from /proc. Bounded: a few rounds of a few thousand
//! queries. Needs root. Output: JSON at BENCH_OUTPUT (and a summary line).
use std::{process::Command, time::Duration};

use interlock_tests::{
    cpu_seconds, dns::Dnsmasq, gateway::shipped, unique, Client, ClientResult, Gateway, GatewayOptions, TestCgroup,
};
use serde_json::{json, Value};

const SERVER: &str = "127.0.0.90:53";
const NAMES: [&str; 8] = [
    "api.bench.test",
    "db.bench.test",
    "files.bench.test",
    "auth.bench.test",
    "a.bench.test",
    "b.bench.test",
    "c.bench.test",
    "d.bench.test",
];

const POLICY: &str = r#"
@id("bench-dns")
permit (principal, action == Interlock::Action::"dns_query", resource);
"#;

fn run(agent: Option<&TestCgroup>, mut cmd: Command) -> ClientResult {
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let what = format!("{cmd:?}");
    let r = match agent {
        Some(cg) => Client::new(cg).run_cmd(cmd),
        None => {
            let o = cmd.output().expect("run");
            ClientResult {
                pid: 0,
                success: o.status.success(),
                stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            }
        }
    };
    assert!(r.success, "{what}: {}\n{}", r.stderr, r.stdout);
    r
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// dnsperf's "Queries per second" and "Average Latency".
fn parse_dnsperf(out: &str) -> (f64, f64, f64) {
    let num = |key: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.trim_end_matches('s').parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (
        num("Queries per second:"),
        num("Average Latency (s):") * 1e6,
        num("Queries completed:"),
    )
}

fn main() {
    interlock_tests::require_root();
    let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| v == "1");
    let rounds = if quick { 2 } else { 5 };
    let count: usize = if quick { 2_000 } else { 5_000 };
    let records: Vec<(&str, &str)> = vec![("bench.test", "127.0.0.91")];
    // Answers live a minute, as real ones do (and may be kept for it).
    let _dns = Dnsmasq::start_with_ttl("127.0.0.90", &records, 60);
    let cg = TestCgroup::new(&unique("bench-dns"));
    let gw = Gateway::start(
        &cg,
        GatewayOptions {
            log_filter: Some("info".into()),
            extra_toml: vec![
                format!("[[agents]]\nname = \"bench\"\ncgroup = \"{}\"\n", cg.relative()),
                // Answers bind names (the real cost), and no rate limit: every
                // bench client is one agent.
                // New names every query in the fresh rounds: no per-domain limit.
                format!("[dns]\ntrusted_servers = [\"{SERVER}\"]\nnames_per_domain = 0\n"),
                "[limits]\nconnection_rate = { per_second = 0, burst = 0 }\nrequest_rate = { per_second = 0, burst = 0 }\n"
                    .into(),
                "[audit]\nmax_records = 300000\n".into(),
            ],
            policies: Some(vec![
                ("base.cedar".into(), shipped("base.cedar")),
                ("bench.cedar".into(), POLICY.into()),
            ]),
            ..Default::default()
        },
    );
    let pid = gw.pid().expect("gateway running");
    std::thread::sleep(Duration::from_millis(300));
    let lp = env!("CARGO_BIN_EXE_dns_loop");
    let looped = |agent: Option<&TestCgroup>, names: &[&str]| -> Value {
        let mut cmd = Command::new(lp);
        cmd.arg(SERVER).arg(count.to_string()).args(names);
        let out = run(agent, cmd);
        serde_json::from_str(out.stdout.trim()).expect("dns_loop json")
    };
    // Names asked again (answered from the gateway's cache within their
    // TTL, as a host's caching resolver would) and names never asked
    // before (every query goes upstream): both against dnsmasq directly.
    let fresh = ["*.bench.test"];
    let mut rows: [Vec<[f64; 5]>; 2] = [vec![], vec![]];
    for round in 0..rounds {
        for (kind, names) in [NAMES.as_slice(), fresh.as_slice()].into_iter().enumerate() {
            let direct = looped(None, names);
            let before = cpu_seconds(pid);
            let through = looped(Some(&cg), names);
            let used = cpu_seconds(pid) - before;
            assert_eq!(through["timeouts"], 0, "{through}");
            assert_eq!(through["refused"], 0, "{through}");
            let n = through["count"].as_f64().unwrap_or(1.0);
            let label = ["repeated names", "new names"][kind];
            println!(
                "round {round} ({label}): direct {direct}\n         gateway {through} (gateway CPU {:.1} µs/query)",
                used / n * 1e6
            );
            let v = |r: &Value, k: &str| r[k].as_f64().unwrap_or(f64::NAN);
            rows[kind].push([
                v(&direct, "p50_us"),
                v(&direct, "p99_us"),
                v(&through, "p50_us"),
                v(&through, "p99_us"),
                used / n * 1e6,
            ]);
        }
    }
    let col = |kind: usize, i: usize| median(rows[kind].iter().map(|r| r[i]).collect());
    // Full load: dnsperf, 2 clients, 20 queries outstanding each.
    let data = std::env::temp_dir().join(unique("dnsperf-queries"));
    std::fs::write(&data, NAMES.iter().map(|n| format!("{n} A\n")).collect::<String>()).expect("queries");
    let secs = if quick { "2" } else { "4" };
    let dnsperf = |agent: Option<&TestCgroup>| {
        let mut cmd = Command::new("dnsperf");
        cmd.args(["-s", "127.0.0.90", "-p", "53", "-d"])
            .arg(&data)
            .args(["-l", secs, "-c", "2", "-q", "20", "-t", "2"]);
        parse_dnsperf(&run(agent, cmd).stdout)
    };
    let load_direct = dnsperf(None);
    let before = cpu_seconds(pid);
    let load_gw = dnsperf(Some(&cg));
    let load_cpu = (cpu_seconds(pid) - before) / load_gw.2 * 1e6;
    let _ = std::fs::remove_file(&data);
    let summary = json!({
        "name": "dns through the gateway",
        "rounds": rounds,
        "queries_per_round": count,
        "direct_p50_us": col(0, 0),
        "direct_p99_us": col(0, 1),
        "gateway_p50_us": col(0, 2),
        "gateway_p99_us": col(0, 3),
        "added_p50_us": col(0, 2) - col(0, 0),
        "added_p99_us": col(0, 3) - col(0, 1),
        "gateway_cpu_us_per_query": col(0, 4),
        "new_names_direct_p50_us": col(1, 0),
        "new_names_direct_p99_us": col(1, 1),
        "new_names_gateway_p50_us": col(1, 2),
        "new_names_gateway_p99_us": col(1, 3),
        "new_names_added_p50_us": col(1, 2) - col(1, 0),
        "new_names_added_p99_us": col(1, 3) - col(1, 1),
        "new_names_gateway_cpu_us_per_query": col(1, 4),
        "dnsperf_direct_qps": load_direct.0,
        "dnsperf_direct_avg_us": load_direct.1,
        "dnsperf_gateway_qps": load_gw.0,
        "dnsperf_gateway_avg_us": load_gw.1,
        "dnsperf_gateway_cpu_us_per_query": load_cpu,
    });
    println!("{}", serde_json::to_string_pretty(&summary).unwrap_or_default());
    if let Ok(path) = std::env::var("BENCH_OUTPUT") {
        let _ = std::fs::write(path, serde_json::to_string_pretty(&summary).unwrap_or_default());
    }
}
