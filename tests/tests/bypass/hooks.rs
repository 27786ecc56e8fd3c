//! The known ways around a connect hook are caught or refused, never passed.
use std::process::Command;

use interlock_tests::{unique, Client, Gateway, GatewayOptions, TestCgroup, Upstream};
use serde_json::json;

const EPERM: u64 = 1;

fn gateway_with_deny(cg: &TestCgroup, denied: &Upstream) -> Gateway {
    let opts = GatewayOptions {
        rules: vec![(
            "deny-target".into(),
            format!("{}/32", denied.addr.ip()),
            denied.addr.port().to_string(),
            "deny".into(),
        )],
        ..Default::default()
    };
    Gateway::start(cg, opts)
}

#[test]
fn ipv4_mapped_ipv6_destination_is_judged_as_ipv4() {
    let cg = TestCgroup::new(&unique("mapped"));
    let denied = Upstream::start("127.0.0.5");
    let open = Upstream::start("127.0.0.2");
    let gw = gateway_with_deny(&cg, &denied);
    let mapped = |ip: &str, port: u16| {
        Client::new(&cg).net(json!({"op": "tcp", "family": "v6", "host": format!("::ffff:{ip}"), "port": port}))
    };
    let out = mapped("127.0.0.5", denied.addr.port()).json();
    assert_eq!(out["errno"], EPERM, "mapped address escaped the IPv4 deny rule: {out}");
    assert!(denied.peers().is_empty());

    let r = mapped("127.0.0.2", open.addr.port());
    let out = r.json();
    assert_eq!(out["ok"], true, "{out}");
    assert_eq!(
        out["peer"][0], "::ffff:127.0.0.2",
        "getpeername6 must show the mapped original"
    );
    let ev = gw.events().for_dst_pid(&open.dst(), r.pid);
    assert_eq!(ev["orig_dst"], open.dst());
}

#[test]
fn tcp_fast_open_is_caught() {
    let cg = TestCgroup::new(&unique("tfo"));
    let denied = Upstream::start("127.0.0.5");
    let open = Upstream::start("127.0.0.2");
    let gw = gateway_with_deny(&cg, &denied);
    let tfo = |up: &Upstream| {
        Client::new(&cg).net(json!({"op": "tcp", "tfo": true, "host": up.addr.ip().to_string(), "port": up.addr.port(), "send": "fast open"}))
    };
    let out = tfo(&denied).json();
    assert_eq!(out["errno"], EPERM, "{out}");
    assert!(denied.peers().is_empty());
    let r = tfo(&open);
    let out = r.json();
    assert_eq!(out["ok"], true, "{out}");
    assert_eq!(out["received"], "fast open");
    gw.events().for_dst_pid(&open.dst(), r.pid);
}

#[test]
fn io_uring_connect_is_caught() {
    let cg = TestCgroup::new(&unique("uring"));
    let denied = Upstream::start("127.0.0.5");
    let open = Upstream::start("127.0.0.2");
    let gw = gateway_with_deny(&cg, &denied);
    let uring = |up: &Upstream| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_uring_connect"));
        cmd.args([up.dst(), "via io_uring".into()])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        Client::new(&cg).run_cmd(cmd)
    };
    let out = uring(&denied).json();
    assert_eq!(out["errno"], EPERM, "{out}");
    assert!(denied.peers().is_empty());
    let r = uring(&open);
    let out = r.json();
    assert_eq!(out["ok"], true, "{out} {}", r.stderr);
    assert_eq!(out["received"], "via io_uring");
    gw.events().for_dst_pid(&open.dst(), r.pid);
}

#[test]
fn children_and_threads_of_an_agent_are_agents() {
    let cg = TestCgroup::new(&unique("family"));
    let denied = Upstream::start("127.0.0.5");
    let open = Upstream::start("127.0.0.2");
    let gw = gateway_with_deny(&cg, &denied);
    let inner = |up: &Upstream| json!({"op": "tcp", "host": up.addr.ip().to_string(), "port": up.addr.port()});

    let r = Client::new(&cg).net(json!({"op": "thread", "inner": inner(&open)}));
    let out = r.json();
    assert_eq!(out["ok"], true, "{out}");
    let ev = gw.events().for_dst_pid(&open.dst(), r.pid);
    assert_eq!(ev["identity"]["tid"], out["tid"], "the calling thread is recorded");
    assert_ne!(ev["identity"]["tid"], ev["identity"]["pid"]);

    let r = Client::new(&cg).net(json!({"op": "fork", "inner": inner(&open)}));
    let out = r.json();
    assert_eq!(out["ok"], true, "{out}");
    let child = out["child_pid"].as_u64().unwrap() as u32;
    let ev = gw.events().for_dst_pid(&open.dst(), child);
    assert_eq!(ev["identity"]["process"]["ppid"], r.pid);

    for op in ["thread", "fork"] {
        let out = Client::new(&cg).net(json!({"op": op, "inner": inner(&denied)})).json();
        assert_eq!(out["errno"], EPERM, "{op}: {out}");
    }
    assert!(denied.peers().is_empty());
}
