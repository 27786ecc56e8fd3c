//! Redirect rules: deny gives EPERM, pass bypasses the gateway, edits apply
//! live, counters count, and UDP/443 is refused so QUIC falls back to TCP.
use interlock_tests::{unique, Client, Gateway, GatewayOptions, TestCgroup, Upstream};
use serde_json::{json, Value};

const EPERM: u64 = 1;

fn tcp(cg: &TestCgroup, host: &str, port: u16) -> (Value, u32) {
    let r = Client::new(cg)
        .net(json!({"op": "tcp", "host": host, "port": port, "family": if host.contains(':') { "v6" } else { "v4" }}));
    (r.json(), r.pid)
}

fn rule_counts(gw: &Gateway, name: &str) -> (u64, u64, u64) {
    let out = gw.cli(&["rules", "list", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rules: Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = rules
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no rule {name} in {rules}"));
    (
        r["redirected"].as_u64().unwrap(),
        r["passed"].as_u64().unwrap(),
        r["denied"].as_u64().unwrap(),
    )
}

#[test]
fn deny_rule_gives_eperm_and_pass_rule_bypasses_the_gateway() {
    let cg = TestCgroup::new(&unique("denypass"));
    let denied = Upstream::start("127.0.0.5");
    let passed = Upstream::start("127.0.0.6");
    let opts = GatewayOptions {
        rules: vec![
            (
                "no-db".into(),
                "127.0.0.5/32".into(),
                denied.addr.port().to_string(),
                "deny".into(),
            ),
            ("direct".into(), "127.0.0.6/32".into(), "1-65535".into(), "pass".into()),
        ],
        ..Default::default()
    };
    let gw = Gateway::start(&cg, opts);
    let (out, _) = tcp(&cg, "127.0.0.5", denied.addr.port());
    assert_eq!(out["ok"], false);
    assert_eq!(out["errno"], EPERM, "{out}");
    assert!(denied.peers().is_empty(), "a denied connection reached the upstream");

    let (out, pid) = tcp(&cg, "127.0.0.6", passed.addr.port());
    assert_eq!(out["ok"], true, "{out}");
    let local_port = out["local"][1].as_u64().unwrap() as u16;
    assert!(
        passed.peers().iter().any(|p| p.port() == local_port),
        "pass rule went through the gateway"
    );
    assert!(gw.events().connections().iter().all(|e| e["identity"]["pid"] != pid));

    assert_eq!(rule_counts(&gw, "no-db"), (0, 0, 1));
    assert_eq!(rule_counts(&gw, "direct"), (0, 1, 0));
}

#[test]
fn rule_edits_take_effect_live_and_persist() {
    let cg = TestCgroup::new(&unique("live"));
    let up = Upstream::start("127.0.0.7");
    let opts = GatewayOptions {
        rules: vec![(
            "from-config".into(),
            "10.255.0.0/16".into(),
            "1-65535".into(),
            "deny".into(),
        )],
        ..Default::default()
    };
    let mut gw = Gateway::start(&cg, opts);
    let port = up.addr.port();
    assert_eq!(tcp(&cg, "127.0.0.7", port).0["ok"], true);

    gw.add_rule("block-7", "127.0.0.7/32", &port.to_string(), "deny");
    assert_eq!(tcp(&cg, "127.0.0.7", port).0["errno"], EPERM);
    // A narrower rule on the same network wins; ports outside it still follow the broader one.
    gw.add_rule("pass-7", "127.0.0.0/24", "1-65535", "pass");
    assert_eq!(tcp(&cg, "127.0.0.7", port).0["errno"], EPERM);

    let dup = gw.cli(&["rules", "add", "block-7", "--cidr", "10.0.0.0/8", "--action", "deny"]);
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));
    let configured = gw.cli(&["rules", "remove", "from-config"]);
    assert!(!configured.status.success());
    assert!(
        String::from_utf8_lossy(&configured.stderr).contains("config file"),
        "{}",
        String::from_utf8_lossy(&configured.stderr)
    );

    // Runtime rules survive a restart.
    gw.stop();
    gw.spawn();
    assert_eq!(tcp(&cg, "127.0.0.7", port).0["errno"], EPERM);

    let out = gw.cli(&["rules", "remove", "block-7"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (after, _) = tcp(&cg, "127.0.0.7", port);
    assert_eq!(after["ok"], true, "{after}");
    // Now the pass rule applies: the upstream sees the client itself.
    let local_port = after["local"][1].as_u64().unwrap() as u16;
    assert!(up.peers().iter().any(|p| p.port() == local_port));
    let changes: Vec<Value> = gw
        .events()
        .all()
        .into_iter()
        .filter(|e| e["event"] == "rules_changed")
        .collect();
    assert_eq!(changes.len(), 3, "{changes:#?}");
}

#[test]
fn ipv6_rules_apply_to_ipv6_destinations() {
    let cg = TestCgroup::new(&unique("v6rules"));
    let up = Upstream::start("::1");
    let gw = Gateway::start(&cg, GatewayOptions::default());
    gw.add_rule("deny-v6", "::1/128", &up.addr.port().to_string(), "deny");
    let (out, _) = tcp(&cg, "::1", up.addr.port());
    assert_eq!(out["errno"], EPERM, "{out}");
    assert_eq!(rule_counts(&gw, "deny-v6"), (0, 0, 1));
}

#[test]
fn quic_is_refused_and_dns_goes_to_the_gateway() {
    let cg = TestCgroup::new(&unique("udp"));
    let gw = Gateway::start(&cg, GatewayOptions::default());
    for (family, host) in [("v4", "127.0.0.8"), ("v6", "::1")] {
        for connect in [false, true] {
            let quic = Client::new(&cg)
                .net(json!({"op": "udp", "family": family, "host": host, "port": 443, "connect": connect}))
                .json();
            assert_eq!(quic["errno"], EPERM, "UDP/443 {family} connect={connect}: {quic}");
            // Port 53 is taken to the gateway's resolver (which refuses a
            // datagram that is not DNS), so the send itself succeeds.
            let dns = Client::new(&cg)
                .net(json!({"op": "udp", "family": family, "host": host, "port": 53, "connect": connect}))
                .json();
            assert_eq!(dns["ok"], true, "UDP/53 {family}: {dns}");
        }
    }
    let status = gw.status().unwrap();
    assert_eq!(status["quic_denied"], 4);
    assert_eq!(status["dns_redirected"], 4, "{status}");
}

#[test]
fn default_deny_refuses_unmatched_destinations() {
    let cg = TestCgroup::new(&unique("defdeny"));
    let up = Upstream::start("127.0.0.9");
    let opts = GatewayOptions {
        intercept: vec!["default_action = \"deny\"".into()],
        ..Default::default()
    };
    let gw = Gateway::start(&cg, opts);
    assert_eq!(tcp(&cg, "127.0.0.9", up.addr.port()).0["errno"], EPERM);
    gw.add_rule("allow-9", "127.0.0.9/32", "1-65535", "redirect");
    let (out, pid) = tcp(&cg, "127.0.0.9", up.addr.port());
    assert_eq!(out["ok"], true, "{out}");
    gw.events().for_dst_pid(&up.dst(), pid);
    let status = gw.status().unwrap();
    assert_eq!(status["default_counts"][2], 1);
}

#[test]
fn a_udp_rule_opens_one_destination_and_counts_it() {
    // An NTP-like server on 127.0.0.87: the one UDP destination a rule opens.
    let ntp = std::net::UdpSocket::bind("127.0.0.87:0").unwrap();
    ntp.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    let port = ntp.local_addr().unwrap().port();
    let other = std::net::UdpSocket::bind("127.0.0.88:0").unwrap();
    other.set_nonblocking(true).unwrap();
    let cg = TestCgroup::new(&unique("udprule"));
    let gw = Gateway::start(
        &cg,
        GatewayOptions {
            extra_toml: vec![format!(
                "[[rules]]\nname = \"ntp\"\ncidr = \"127.0.0.87/32\"\nports = \"{port}\"\nprotocol = \"udp\"\naction = \"pass\"\n"
            )],
            ..Default::default()
        },
    );
    for connect in [false, true] {
        let out = Client::agent(&cg)
            .net(json!({"op": "udp", "host": "127.0.0.87", "port": port, "connect": connect}))
            .json();
        assert_eq!(out["ok"], true, "connect={connect}: {out}");
        let mut buf = [0u8; 8];
        assert!(
            ntp.recv_from(&mut buf).is_ok(),
            "the datagram the rule passes did not arrive"
        );
    }
    // Another port on the same address, and another address: refused.
    let out = Client::agent(&cg)
        .net(json!({"op": "udp", "host": "127.0.0.87", "port": port.wrapping_add(1).max(1), "connect": false}))
        .json();
    assert_eq!(out["errno"], EPERM, "{out}");
    let to = other.local_addr().unwrap();
    let out = Client::agent(&cg)
        .net(json!({"op": "udp", "host": "127.0.0.88", "port": to.port(), "connect": false}))
        .json();
    assert_eq!(out["errno"], EPERM, "{out}");
    assert!(other.recv_from(&mut [0u8; 8]).is_err());
    // A TCP connect to the UDP rule's port is not passed by it: the
    // default (redirect) takes it.
    let _ = tcp(&cg, "127.0.0.87", port);
    assert_eq!(rule_counts(&gw, "ntp"), (0, 2, 0));
    assert_eq!(gw.status().unwrap()["default_counts"][0], 1);
    let list = gw.cli(&["rules", "list"]);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        text.lines().any(|l| l.starts_with("ntp") && l.contains(" udp ")),
        "{text}"
    );
}
