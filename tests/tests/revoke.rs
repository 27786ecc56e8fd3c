//! Incident response: revocation refuses new connections in the kernel (EPERM)
//! and cuts live sessions, by pid, exe, cgroup, agent or uid, and survives
//! restarts.
use std::{fs, os::unix::fs::PermissionsExt};

use interlock_tests::{unique, wait_for, Client, Gateway, GatewayOptions, TestCgroup, Upstream};
use serde_json::{json, Value};

const EPERM: u64 = 1;
const PYTHON: &str = "/usr/bin/python3";

fn hold_spec(up: &Upstream) -> Value {
    json!({"op": "hold", "host": "127.0.0.2", "port": up.addr.port(), "wait": 20})
}

fn revoke(gw: &Gateway, args: &[&str]) -> String {
    let mut all = vec!["revoke"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--reason", "incident 12"]);
    let out = gw.cli(&all);
    assert!(
        out.status.success(),
        "revoke failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The held connection was cut and the next connect refused in the kernel.
fn assert_cut_then_refused(report: &Value) {
    let first = &report["first"];
    assert!(
        first["closed"] == true || first["ok"] == false,
        "live session not cut: {report}"
    );
    assert_eq!(report["second"]["errno"], EPERM, "next connect not refused: {report}");
}

fn wait_live(gw: &Gateway, n: usize) {
    let ok = wait_for(10, || {
        gw.status()
            .and_then(|s| (s["connections"].as_array()?.len() == n).then_some(()))
    });
    assert!(
        ok.is_some(),
        "expected {n} live connections: {:#}",
        gw.status().unwrap()
    );
}

#[test]
fn revoke_by_pid_cuts_the_session_and_refuses_the_next_connect() {
    let cg = TestCgroup::new(&unique("revpid"));
    let up = Upstream::start_counting("127.0.0.2");
    let gw = Gateway::start(&cg, GatewayOptions::default());
    let held = Client::new(&cg).spawn_holding(PYTHON, hold_spec(&up));
    let bystander = Client::new(&cg).spawn_holding(PYTHON, hold_spec(&up));
    wait_live(&gw, 2);
    let out = revoke(&gw, &["--pid", &held.pid().to_string()]);
    assert!(out.contains("1 live connections cut"), "{out}");
    let pid = held.pid();
    assert_cut_then_refused(&held.finish());
    // The other process is untouched.
    wait_live(&gw, 1);
    drop(bystander);
    let ev = gw
        .events()
        .wait_connection(|e| e["identity"]["pid"] == pid && e["outcome"]["kind"] == "revoked");
    assert!(ev["outcome"]["reason"].as_str().unwrap().contains("r-1"));
    let rev = gw
        .events()
        .all()
        .into_iter()
        .find(|e| e["event"] == "revocation")
        .unwrap();
    assert_eq!(rev["by"], "root (uid 0)");
    assert_eq!(rev["revocation"]["reason"], "incident 12");
    assert_eq!(gw.status().unwrap()["connections"].as_array().unwrap().len(), 0);
}

#[test]
fn revoke_by_exe_covers_running_and_later_processes() {
    let cg = TestCgroup::new(&unique("revexe"));
    let up = Upstream::start_counting("127.0.0.2");
    let gw = Gateway::start(&cg, GatewayOptions::default());
    // A private copy of python, so only this test's processes share the exe.
    let dir = std::env::temp_dir().join(unique("exe"));
    fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("python-suspect");
    fs::copy(fs::canonicalize(PYTHON).unwrap(), &exe).unwrap();
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
    let exe_s = exe.to_str().unwrap();

    let held = Client::new(&cg).spawn_holding(exe_s, hold_spec(&up));
    let other = Client::new(&cg).spawn_holding(PYTHON, hold_spec(&up));
    wait_live(&gw, 2);
    revoke(&gw, &["--exe", exe_s]);
    assert_cut_then_refused(&held.finish());
    wait_live(&gw, 1);
    drop(other);

    // A process started later from the same file is refused from its first connect.
    let spec = json!({"op": "tcp", "host": "127.0.0.2", "port": up.addr.port()});
    let later = Client::new(&cg).run(
        exe_s,
        &[
            interlock_tests::client::netclient().to_str().unwrap(),
            &spec.to_string(),
        ],
    );
    assert_eq!(later.json()["errno"], EPERM, "{}", later.stderr);
    // Other programs still work, and are not held for long after their exec.
    let fine = Client::new(&cg).net(json!({"op": "tcp", "host": "127.0.0.2", "port": up.addr.port(), "send": "x"}));
    assert_eq!(fine.json()["received"], "got 1 bytes", "{}", fine.stderr);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn revoke_by_cgroup_covers_the_cgroup_and_its_children() {
    let cg = TestCgroup::new(&unique("revcg"));
    let up = Upstream::start_counting("127.0.0.2");
    let gw = Gateway::start(&cg, GatewayOptions::default());
    let sub = cg.child("suspect");
    let sub_cg = interlock_tests::cgroup::Sub::new(&sub);
    let held = Client::new(&sub_cg).spawn_holding(PYTHON, hold_spec(&up));
    wait_live(&gw, 1);
    revoke(&gw, &["--cgroup", sub.to_str().unwrap()]);
    assert_cut_then_refused(&held.finish());
    let nested = sub_cg.child("deeper");
    let deeper = interlock_tests::cgroup::Sub::new(&nested);
    let out = Client::new(&deeper)
        .net(json!({"op": "tcp", "host": "127.0.0.2", "port": up.addr.port()}))
        .json();
    assert_eq!(out["errno"], EPERM, "{out}");
    // The parent cgroup is not revoked.
    let ok = Client::new(&cg)
        .net(json!({"op": "tcp", "host": "127.0.0.2", "port": up.addr.port(), "send": "x"}))
        .json();
    assert_eq!(ok["received"], "got 1 bytes", "{ok}");
}

#[test]
fn revoke_by_uid_survives_a_restart_and_unrevoke_lifts_it() {
    let cg = TestCgroup::new(&unique("revuid"));
    let up = Upstream::start("127.0.0.2");
    let mut gw = Gateway::start(&cg, GatewayOptions::default());
    let spec = json!({"op": "tcp", "host": "127.0.0.2", "port": up.addr.port()});
    revoke(&gw, &["--uid", "65534"]);
    assert_eq!(Client::new(&cg).as_uid(65534).net(spec.clone()).json()["errno"], EPERM);
    gw.stop();
    gw.spawn();
    assert_eq!(Client::new(&cg).as_uid(65534).net(spec.clone()).json()["errno"], EPERM);
    assert_eq!(Client::new(&cg).net(spec.clone()).json()["received"], "ping");
    let listed: Value = serde_json::from_slice(&gw.cli(&["revocations", "--json"]).stdout).unwrap();
    assert_eq!(listed[0]["selector"], json!({"by": "uid", "uid": 65534}));
    let out = gw.cli(&["unrevoke", "r-1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(Client::new(&cg).as_uid(65534).net(spec).json()["received"], "ping");
    assert_eq!(gw.status().unwrap()["rules"].as_array().map(|_| ()), Some(()));
}

#[test]
fn revoke_by_agent_applies_to_processes_that_start_later() {
    let cg = TestCgroup::new(&unique("revagent"));
    let up = Upstream::start("127.0.0.2");
    let agents = "[[agents]]\nname = \"alpha\"\ncmdline = \"\\\"tag\\\": ?\\\"alpha\\\"\"\n";
    let gw = Gateway::start(
        &cg,
        GatewayOptions {
            extra_toml: vec![agents.into()],
            ..Default::default()
        },
    );
    let spec = |tag: &str| json!({"op": "tcp", "host": "127.0.0.2", "port": up.addr.port(), "tag": tag});
    assert_eq!(Client::new(&cg).net(spec("alpha")).json()["received"], "ping");
    revoke(&gw, &["--agent", "alpha", "--for", "1h"]);
    assert_eq!(Client::new(&cg).net(spec("alpha")).json()["errno"], EPERM);
    assert_eq!(Client::new(&cg).net(spec("beta")).json()["received"], "ping");
}
