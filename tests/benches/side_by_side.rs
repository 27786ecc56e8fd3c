//! Interlock side by side with a direct connection and the proxies a user
//! would pick instead (haproxy, nginx, pgbouncer), in one run: contenders
//! interleaved round by round so machine drift hits all alike; results as
//! ratios and added latency. Bounded: a few rounds of a few seconds each.
//! Needs root (Interlock is measured with its real eBPF redirect).
use std::{process::Command, time::Duration};

use interlock_tests::{postgres::PgServer, unique, Client, Gateway, GatewayOptions, TestCgroup};
use serde_json::{json, Value};

#[path = "side_by_side/peers.rs"]
mod peers;
#[path = "side_by_side/report.rs"]
mod report;

/// One measurement.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// Requests (or transactions) per second.
    pub rate: f64,
    /// Median latency, microseconds.
    pub p50_us: f64,
    /// 99th percentile latency, microseconds (wrk only).
    pub p99_us: f64,
    /// Requests completed.
    pub count: f64,
}

fn micros(text: &str) -> f64 {
    let t = text.trim();
    let (num, scale) = if let Some(v) = t.strip_suffix("us") {
        (v, 1.0)
    } else if let Some(v) = t.strip_suffix("ms") {
        (v, 1_000.0)
    } else if let Some(v) = t.strip_suffix('s') {
        (v, 1_000_000.0)
    } else {
        (t, 1.0)
    };
    num.parse::<f64>().unwrap_or(f64::NAN) * scale
}

/// Reads wrk's `--latency` report.
fn parse_wrk(out: &str) -> Sample {
    let mut s = Sample::default();
    for line in out.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => s.p50_us = micros(v),
            ["99%", v] => s.p99_us = micros(v),
            ["Requests/sec:", v] => s.rate = v.parse().unwrap_or(0.0),
            [n, "requests", "in", ..] => s.count = n.parse().unwrap_or(0.0),
            _ => {}
        }
    }
    s
}

/// Reads pgbench's summary.
fn parse_pgbench(out: &str) -> Sample {
    let mut s = Sample::default();
    for line in out.lines() {
        if let Some(v) = line.strip_prefix("tps = ") {
            s.rate = v.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0.0);
        }
        if let Some(v) = line.strip_prefix("latency average = ") {
            s.p50_us = micros(&v.replace(' ', ""));
        }
        if let Some(v) = line.strip_prefix("number of transactions actually processed: ") {
            s.count = v.split('/').next().and_then(|n| n.parse().ok()).unwrap_or(0.0);
        }
    }
    s
}

/// Where a contender's client runs: outside any agent cgroup, or as an agent.
enum Via<'a> {
    Plain,
    Agent(&'a TestCgroup),
}

fn run(via: &Via<'_>, program: &str, args: &[String], env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let (ok, out, err) = match via {
        Via::Plain => {
            let o = cmd.output().expect("run bench client");
            (
                o.status.success(),
                String::from_utf8_lossy(&o.stdout).into_owned(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        }
        Via::Agent(cg) => {
            let r = Client::new(*cg).run_cmd(cmd);
            (r.success, r.stdout, r.stderr)
        }
    };
    assert!(ok, "{program} {args:?} failed: {err}\n{out}");
    out
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    interlock_tests::require_root();
    for tool in [
        "/usr/sbin/nginx",
        "/usr/sbin/haproxy",
        "/usr/sbin/pgbouncer",
        "/usr/bin/wrk",
    ] {
        assert!(
            peers::installed(tool),
            "{tool} is missing: run `cargo xtask bench`, which installs it"
        );
    }
    let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| v == "1");
    let rounds = if quick { 2 } else { 5 };
    let secs = if quick { 3 } else { 8 };
    let origin = peers::origin("127.0.0.60");
    let haproxy = peers::haproxy("127.0.0.61", origin.addr);
    let nginx = peers::nginx_proxy("127.0.0.62", origin.addr);
    let pg = PgServer::start("127.0.0.64");
    pg.shop();
    let direct_pg = format!(
        "host={} port={} dbname=shop user=app password={}",
        pg.addr.ip(),
        pg.addr.port(),
        interlock_tests::postgres::APP_PASSWORD
    );
    run(
        &Via::Plain,
        "pgbench",
        &["-i".into(), "-s".into(), "2".into(), "-q".into(), direct_pg.clone()],
        &[],
    );
    let bouncer = peers::pgbouncer(
        "127.0.0.65",
        pg.addr,
        interlock_tests::postgres::APP_PASSWORD,
        "session",
    );
    let cg = TestCgroup::new(&unique("bench-sbs"));
    let web = format!(
        "[[targets]]\nname = \"origin\"\ncidrs = [\"{}/32\"]\nprotocol = \"http\"\n",
        origin.addr.ip()
    );
    let gw = Gateway::start(
        &cg,
        GatewayOptions {
            // BENCH_BODY_CAP sets [audit] body_cap (0: no HTTP body events).
            extra_toml: vec![
                web,
                pg.target(&[]),
                std::env::var("BENCH_BODY_CAP")
                    .map(|c| format!("[audit]\nbody_cap = {c}\n"))
                    .unwrap_or_default(),
            ],
            ..Default::default()
        },
    );
    let gw_pid = gw.pid().expect("gateway running");
    let mut results: Vec<Value> = Vec::new();
    let mut interlock_cpu = (0.0, 0.0);
    let http = [
        ("HTTP/1.1 keep-alive, 1 KB", "/1k", false, 32),
        ("HTTP/1.1 keep-alive, 64 KB", "/64k", false, 32),
        ("HTTP/1.1 new connection per request, 1 KB", "/1k", true, 8),
    ];
    // BENCH_ONLY=text runs only the scenarios whose names contain it.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    // BENCH_CONTENDERS=a,b runs only those contenders (a profiling loop).
    let picked = std::env::var("BENCH_CONTENDERS").unwrap_or_default();
    let wanted = |name: &str| picked.is_empty() || picked.split(',').any(|p| p == name);
    for (scenario, path, close, conns) in http {
        if !scenario.contains(&only) {
            continue;
        }
        for round in 0..rounds {
            let contenders: [(&str, std::net::SocketAddr, Via<'_>); 4] = [
                ("direct", origin.addr, Via::Plain),
                ("haproxy", haproxy.addr, Via::Plain),
                ("nginx", nginx.addr, Via::Plain),
                ("interlock", origin.addr, Via::Agent(&cg)),
            ];
            for (name, addr, via) in contenders {
                if !wanted(name) {
                    continue;
                }
                let mut args: Vec<String> = vec![
                    "-t2".into(),
                    format!("-c{conns}"),
                    format!("-d{secs}s"),
                    "--latency".into(),
                ];
                if close {
                    args.extend(["-H".into(), "Connection: close".into()]);
                }
                args.push(format!("http://{addr}{path}"));
                let cpu0 = cpu_seconds(gw_pid);
                let s = parse_wrk(&run(&via, "wrk", &args, &[]));
                if name == "interlock" {
                    interlock_cpu.0 += cpu_seconds(gw_pid) - cpu0;
                    interlock_cpu.1 += s.count;
                }
                eprintln!(
                    "{scenario} round {round} {name}: {:.0}/s p50 {:.0}us p99 {:.0}us",
                    s.rate, s.p50_us, s.p99_us
                );
                results.push(json!({"scenario": scenario, "contender": name, "round": round,
                    "rate": s.rate, "p50_us": s.p50_us, "p99_us": s.p99_us, "count": s.count}));
            }
        }
    }
    for (mode, clients) in [("simple", 8), ("prepared", 8), ("simple", 1), ("simple", 32)] {
        let scenario = format!("pgbench -S -M {mode}, {clients} clients");
        if !scenario.contains(&only) {
            continue;
        }
        for round in 0..rounds {
            let agent_dsn = pg.agent_dsn();
            let bouncer_dsn = format!(
                "host={} port={} dbname=shop user=agent",
                bouncer.addr.ip(),
                bouncer.addr.port()
            );
            let contenders: [(&str, &str, Via<'_>); 3] = [
                ("direct", &direct_pg, Via::Plain),
                ("pgbouncer-session", &bouncer_dsn, Via::Plain),
                ("interlock", &agent_dsn, Via::Agent(&cg)),
            ];
            for (name, dsn, via) in contenders {
                if !wanted(name) {
                    continue;
                }
                let args: Vec<String> = vec![
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
                    (*dsn).to_owned(),
                ];
                let s = parse_pgbench(&run(&via, "pgbench", &args, &[]));
                eprintln!(
                    "{scenario} round {round} {name}: {:.0} tps, latency {:.0}us",
                    s.rate, s.p50_us
                );
                results.push(json!({"scenario": scenario, "contender": name, "round": round,
                    "rate": s.rate, "p50_us": s.p50_us, "p99_us": null, "count": s.count}));
            }
        }
    }
    let cpu_per_request_us = if interlock_cpu.1 > 0.0 {
        interlock_cpu.0 / interlock_cpu.1 * 1e6
    } else {
        0.0
    };
    let summary = json!({
        "quick": quick,
        "rounds": rounds,
        "seconds_per_run": secs,
        "gateway_cpu_us_per_http_request": cpu_per_request_us,
        "gateway_peak_rss_kib": peak_rss_kib(gw_pid),
        "samples": results,
    });
    let out_dir =
        std::env::var("BENCH_DIR").map_or_else(|_| std::path::PathBuf::from("bench"), std::path::PathBuf::from);
    std::fs::create_dir_all(&out_dir).unwrap();
    std::fs::write(
        out_dir.join("side_by_side.json"),
        serde_json::to_string_pretty(&summary).unwrap(),
    )
    .unwrap();
    let md = report::markdown(&summary);
    std::fs::write(out_dir.join("REPORT.md"), &md).unwrap();
    println!("{md}");
    if let Ok(secs) = std::env::var("BENCH_HOLD").map(|v| v.parse::<u64>().unwrap_or(0)) {
        // Keep everything up for a profiler: `perf record -p <gateway pid>`.
        eprintln!("holding {secs} s; gateway pid {gw_pid}");
        std::thread::sleep(Duration::from_secs(secs));
    }
}
