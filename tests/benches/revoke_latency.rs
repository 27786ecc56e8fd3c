//! How long from `interlock revoke` to the agent seeing its live session cut
//! (target: under 100 ms). Real kernel, real gateway, a real client holding a
//! connection in a test cgroup; bounded to a few rounds. Needs root.
use std::{process::Command, time::Duration};

use interlock_tests::{gateway::binary, unique, Client, Gateway, GatewayOptions, TestCgroup, Upstream};
use serde_json::json;

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn main() {
    interlock_tests::require_root();
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let cg = TestCgroup::new(&unique("bench-revoke"));
    let up = Upstream::start_counting("127.0.0.2");
    let gw = Gateway::start(&cg, GatewayOptions::default());
    let mut total = Vec::new();
    for round in 0..rounds {
        let held = Client::new(&cg).spawn_holding(
            "/usr/bin/python3",
            json!({"op": "hold", "host": "127.0.0.2", "port": up.addr.port(), "wait": 20}),
        );
        let live = interlock_tests::wait_for(10, || {
            gw.status()
                .and_then(|s| (!s["connections"].as_array()?.is_empty()).then_some(()))
        });
        assert!(live.is_some(), "no live connection");
        let t0 = monotonic_ns();
        let out = Command::new(binary())
            .arg("--config")
            .arg(gw.config_path())
            .args(["revoke", "--pid", &held.pid().to_string(), "--reason", "bench"])
            .output()
            .expect("revoke");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let report = held.finish();
        let cut_at = report["first"]["at_ns"]
            .as_u64()
            .expect("client reported when the cut was seen");
        let latency = Duration::from_nanos(cut_at.saturating_sub(t0));
        assert_eq!(report["second"]["errno"], 1, "next connect was not refused: {report}");
        println!("round {round}: revoke -> cut seen by the agent in {latency:.2?}");
        total.push(latency);
        let _ = Command::new(binary())
            .arg("--config")
            .arg(gw.config_path())
            .args(["unrevoke", &format!("r-{}", round + 1)])
            .output();
    }
    total.sort();
    let mean = total.iter().sum::<Duration>() / total.len() as u32;
    println!(
        "revoke -> live cut (includes the CLI's own start-up): mean {mean:.2?}, median {:.2?}, max {:.2?} over {} rounds",
        total[total.len() / 2],
        total[total.len() - 1],
        total.len()
    );
    if let Ok(path) = std::env::var("BENCH_OUTPUT") {
        let v = json!({"name": "revoke to live cut", "rounds": total.len(), "mean_ns": mean.as_nanos() as u64,
            "median_ns": total[total.len() / 2].as_nanos() as u64, "max_ns": total[total.len() - 1].as_nanos() as u64});
        let _ = std::fs::write(path, serde_json::to_string_pretty(&v).unwrap_or_default());
    }
}
