//! The opt-in ways in besides the kernel redirect: a listener dialled
//! explicitly, and a NAT (iptables REDIRECT) rule. Clients run in a cgroup
//! the gateway's programs are not attached to, so no kernel record exists:
//! the caller is found through sock_diag and /proc, and revocations are
//! checked by the gateway.
use std::net::TcpListener;

use interlock_tests::{nat::NatRule, server::HTTP_BODY, unique, Client, Gateway, GatewayOptions, TestCgroup, Upstream};
use serde_json::Value;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn curl(cg: &TestCgroup, url: &str) -> interlock_tests::client::ClientResult {
    Client::new(cg).run("curl", &["-sS", "--max-time", "10", url])
}

/// The caller's identity as /proc and the kernel's socket table give it.
fn assert_identity(ev: &Value, cg: &TestCgroup, pid: u32) {
    let id = &ev["identity"];
    assert_eq!(id["pid"], pid, "{ev:#}");
    assert_eq!(id["uid"], 0);
    assert_eq!(id["comm"], "curl");
    assert_eq!(id["cgroup_id"], cg.id());
    assert!(id["socket_cookie"].as_u64().unwrap() > 0, "{ev:#}");
    assert_eq!(id["process"]["exe"], "/usr/bin/curl");
    assert_eq!(id["process"]["cgroup"], cg.relative());
}

/// Waits (bounded) for a refusal whose reason contains `text`: the event is
/// written as the connection is reset, so possibly after the client saw it.
fn assert_refused(gw: &Gateway, text: &str) {
    let reasons = || -> Vec<String> {
        gw.events()
            .connections()
            .into_iter()
            .filter(|e| e["outcome"]["kind"] == "refused")
            .filter_map(|e| e["outcome"]["reason"].as_str().map(str::to_owned))
            .collect()
    };
    let found = interlock_tests::wait_for(10, || reasons().into_iter().find(|r| r.contains(text)));
    assert!(found.is_some(), "no refusal with {text:?}: {:?}", reasons());
}

#[test]
fn an_explicit_listener_serves_its_destination_with_the_callers_identity_and_honours_revocations() {
    let cg = TestCgroup::new(&unique("explicit"));
    let outside = TestCgroup::new(&unique("explicit-out"));
    let up = Upstream::start("127.0.0.3");
    let port = free_port();
    let gw = Gateway::start(
        &cg,
        GatewayOptions {
            listener: vec![format!(
                "explicit = [{{ listen = \"127.0.0.1:{port}\", destination = \"{}\" }}]",
                up.dst()
            )],
            ..Default::default()
        },
    );
    let r = curl(&outside, &format!("http://127.0.0.1:{port}/"));
    assert!(r.success, "curl failed: {}", r.stderr);
    assert_eq!(r.stdout, HTTP_BODY);
    // Handled as a connection to the destination, by the caller's identity.
    let ev = gw.events().for_dst_pid(&up.dst(), r.pid);
    assert_identity(&ev, &outside, r.pid);
    assert_eq!(up.peers().len(), 1);

    // The kernel never sees these connections; the gateway checks revocations.
    let out = gw.cli(&[
        "revoke",
        "--cgroup",
        outside.path().to_str().unwrap(),
        "--reason",
        "incident 7",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = curl(&outside, &format!("http://127.0.0.1:{port}/"));
    assert!(!r.success, "a revoked caller was served: {}", r.stdout);
    assert_eq!(up.peers().len(), 1, "the revoked caller reached the upstream");
    assert_refused(&gw, "revoked");
}

#[test]
fn a_nat_redirect_is_served_only_when_enabled_and_a_direct_dial_stays_refused() {
    let cg = TestCgroup::new(&unique("nat"));
    let outside = TestCgroup::new(&unique("nat-out"));
    let up = Upstream::start("127.0.0.4");
    let url = format!("http://{}/", up.dst());

    // Off (the default): the redirected connection has no kernel record.
    let gw = Gateway::start(&cg, GatewayOptions::default());
    {
        let _rule = NatRule::add(&outside, &up.addr, gw.port);
        let r = curl(&outside, &url);
        assert!(!r.success, "served without nat_redirect: {}", r.stdout);
        assert!(up.peers().is_empty());
        assert_refused(&gw, "no kernel record");
    }
    drop(gw);

    let gw = Gateway::start(
        &cg,
        GatewayOptions {
            listener: vec!["nat_redirect = true".into()],
            ..Default::default()
        },
    );
    let _rule = NatRule::add(&outside, &up.addr, gw.port);
    let r = curl(&outside, &url);
    assert!(r.success, "curl failed: {}", r.stderr);
    assert_eq!(r.stdout, HTTP_BODY);
    // The original destination came from conntrack; the upstream saw the gateway.
    let ev = gw.events().for_dst_pid(&up.dst(), r.pid);
    assert_identity(&ev, &outside, r.pid);
    assert_eq!(up.peers().len(), 1);

    // Dialling the listener itself is still refused.
    let r = curl(&outside, &format!("http://127.0.0.1:{}/", gw.port));
    assert!(!r.success, "a direct dial was served: {}", r.stdout);
    assert_refused(&gw, "no kernel record");
}

#[test]
fn a_nat_port_of_its_own_takes_the_nat_redirects_and_the_main_port_no_longer_does() {
    let cg = TestCgroup::new(&unique("natport"));
    let outside = TestCgroup::new(&unique("natport-out"));
    let up = Upstream::start("127.0.0.5");
    let url = format!("http://{}/", up.dst());
    let nat_port = free_port();
    let gw = Gateway::start(
        &cg,
        GatewayOptions {
            listener: vec!["nat_redirect = true".into(), format!("nat_port = {nat_port}")],
            ..Default::default()
        },
    );
    {
        let _rule = NatRule::add(&outside, &up.addr, nat_port);
        let r = curl(&outside, &url);
        assert!(r.success, "curl failed: {}", r.stderr);
        assert_eq!(r.stdout, HTTP_BODY);
        let ev = gw.events().for_dst_pid(&up.dst(), r.pid);
        assert_identity(&ev, &outside, r.pid);
        assert_eq!(up.peers().len(), 1);
    }
    // A NAT rule to the main port: that port now takes only kernel redirects.
    let _rule = NatRule::add(&outside, &up.addr, gw.port);
    let r = curl(&outside, &url);
    assert!(!r.success, "the main port served a NAT redirect: {}", r.stdout);
    assert_eq!(up.peers().len(), 1, "the upstream was reached");
    assert_refused(&gw, "no kernel record");
}
