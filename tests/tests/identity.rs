//! Identity is exact even when pids are reused.
use std::{fs, process::Command};

use interlock_tests::{unique, Client, Gateway, GatewayOptions, TestCgroup, Upstream};
use serde_json::json;

#[test]
fn reused_pid_does_not_inherit_the_previous_identity() {
    let cg = TestCgroup::new(&unique("pidreuse"));
    let up = Upstream::start("127.0.0.2");
    let gw = Gateway::start(&cg, GatewayOptions::default());

    // Process A (python) connects and exits; its identity is now cached.
    let a = Client::new(&cg).net(json!({"op": "tcp", "host": "127.0.0.2", "port": up.addr.port()}));
    assert_eq!(a.json()["ok"], true);
    let ev_a = gw.events().for_dst_pid(&up.dst(), a.pid);
    assert!(ev_a["identity"]["process"]["exe"].as_str().unwrap().contains("python3"));

    // Process B (curl) is given the same pid through ns_last_pid.
    let url = format!("http://{}/", up.dst());
    let mut reused = None;
    for _ in 0..50 {
        fs::write("/proc/sys/kernel/ns_last_pid", (a.pid - 1).to_string()).expect("write ns_last_pid (needs root)");
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "10", &url])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let b = Client::new(&cg).run_cmd(cmd);
        if b.pid == a.pid {
            assert!(b.success, "{}", b.stderr);
            reused = Some(b);
            break;
        }
    }
    let b = reused.expect("could not get the kernel to reuse the pid in 50 tries");
    let ev_b = gw
        .events()
        .wait_connection(|e| e["identity"]["pid"] == b.pid && e["identity"]["comm"] == "curl");
    assert_eq!(ev_b["identity"]["process"]["exe"], "/usr/bin/curl");
    assert_eq!(ev_b["identity"]["process"]["cmdline"][0], "curl");
    assert_ne!(
        ev_b["identity"]["process"]["start_ticks"],
        ev_a["identity"]["process"]["start_ticks"]
    );
}
