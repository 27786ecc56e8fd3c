//! Relay behaviour: half-close, idle timeout, upstream failures, and no
//! kernel records left behind.
use interlock_tests::{unique, wait_for, Client, Gateway, GatewayOptions, TestCgroup, Upstream};
use serde_json::json;

#[test]
fn half_close_reaches_the_upstream_and_the_answer_comes_back() {
    let cg = TestCgroup::new(&unique("halfclose"));
    let up = Upstream::start_counting("127.0.0.2");
    let gw = Gateway::start(&cg, GatewayOptions::default());
    let r = Client::new(&cg)
        .net(json!({"op": "tcp", "host": "127.0.0.2", "port": up.addr.port(), "send": "x".repeat(100_000)}));
    let out = r.json();
    assert_eq!(out["ok"], true, "{out}");
    assert_eq!(out["received"], "got 100000 bytes");
    let ev = gw.events().for_dst_pid(&up.dst(), r.pid);
    assert_eq!(ev["bytes_up"], 100_000);
    assert_eq!(ev["outcome"]["kind"], "closed");
}

#[test]
fn idle_connections_are_closed_after_the_idle_timeout() {
    let cg = TestCgroup::new(&unique("idle"));
    let up = Upstream::start_counting("127.0.0.2");
    let gw = Gateway::start(
        &cg,
        GatewayOptions {
            listener: vec!["idle_timeout = \"1s\"".into()],
            ..Default::default()
        },
    );
    // The client would wait 20 s; the gateway closes the silent connection first.
    let r = Client::new(&cg).net(json!({"op": "idle", "host": "127.0.0.2", "port": up.addr.port(), "wait": 20}));
    let out = r.json();
    assert_eq!(out["ok"], true, "{out}");
    assert_eq!(out["closed"], true, "{out}");
    let ev = gw.events().for_dst_pid(&up.dst(), r.pid);
    assert_eq!(ev["outcome"]["kind"], "idle_timeout");
}

#[test]
fn unreachable_upstream_resets_the_agent_and_is_recorded() {
    let cg = TestCgroup::new(&unique("noupstream"));
    let gw = Gateway::start(&cg, GatewayOptions::default());
    // Nothing listens on 127.0.0.2:<this port>.
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let r = Client::new(&cg).net(json!({"op": "tcp", "host": "127.0.0.2", "port": port}));
    let out = r.json();
    assert_ne!(out["received"], "ping", "{out}");
    let ev = gw.events().for_dst_pid(&format!("127.0.0.2:{port}"), r.pid);
    assert_eq!(ev["outcome"]["kind"], "upstream_connect_failed", "{ev}");
    assert!(ev["outcome"]["error"].as_str().unwrap().contains("refused"), "{ev}");
}

#[test]
fn kernel_records_are_removed_when_connections_close() {
    let cg = TestCgroup::new(&unique("noleak"));
    let up = Upstream::start("127.0.0.2");
    let gw = Gateway::start(&cg, GatewayOptions::default());
    let r = Client::new(&cg)
        .net(json!({"op": "many", "host": "127.0.0.2", "port": up.addr.port(), "count": 32, "size": 1024}));
    assert_eq!(r.json()["ok"], true);
    let clean = wait_for(10, || {
        let s = gw.status()?;
        (s["tracked_sockets"] == 0 && s["pending_handoffs"] == 0 && s["connections"].as_array()?.is_empty())
            .then_some(())
    });
    assert!(clean.is_some(), "kernel records leaked: {:#}", gw.status().unwrap());
}
