//! Agents' TCP connections are redirected through the gateway, with the
//! caller's identity, and the redirect is invisible to them.
use interlock_tests::{server::HTTP_BODY, unique, Client, Gateway, GatewayOptions, TestCgroup, Upstream};
use serde_json::json;

#[test]
fn curl_over_ipv4_is_redirected_with_identity() {
    let cg = TestCgroup::new(&unique("curl4"));
    let gw = Gateway::start(&cg, GatewayOptions::default());
    let up = Upstream::start("127.0.0.2");
    let url = format!("http://{}/", up.dst());
    let r = Client::new(&cg).run(
        "curl",
        &["-sS", "--max-time", "10", "-w", "\n%{remote_ip}:%{remote_port}", &url],
    );
    assert!(r.success, "curl failed: {}", r.stderr);
    // The agent got the upstream's answer and believes it talked to the upstream.
    assert!(r.stdout.starts_with(HTTP_BODY), "{}", r.stdout);
    assert!(r.stdout.ends_with(&up.dst()), "curl saw another peer: {}", r.stdout);
    // The upstream saw the gateway, not curl's socket.
    let ev = gw.events().for_dst_pid(&up.dst(), r.pid);
    let id = &ev["identity"];
    assert_eq!(id["uid"], 0);
    assert_eq!(id["user"], "root");
    assert_eq!(id["comm"], "curl");
    assert_eq!(id["cgroup_id"], cg.id());
    assert_eq!(id["process"]["exe"], "/usr/bin/curl");
    assert_eq!(id["process"]["cgroup"], cg.relative());
    assert_eq!(id["process"]["cmdline"][0], "curl");
    assert_eq!(id["process"]["ppid"], std::process::id());
    assert_eq!(ev["outcome"]["kind"], "closed");
    assert!(ev["bytes_up"].as_u64().unwrap() > 0 && ev["bytes_down"].as_u64().unwrap() > HTTP_BODY.len() as u64);
    let peers = up.peers();
    assert_eq!(peers.len(), 1);
    assert_ne!(
        peers[0].port(),
        ev["peer"]
            .as_str()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .parse::<u16>()
            .unwrap()
    );
}

#[test]
fn python_over_ipv4_and_ipv6_sees_the_original_peer() {
    let cg = TestCgroup::new(&unique("py46"));
    let gw = Gateway::start(&cg, GatewayOptions::default());
    for (ip, family) in [("127.0.0.3", "v4"), ("::1", "v6")] {
        let up = Upstream::start(ip);
        let host = up.addr.ip().to_string();
        let r = Client::new(&cg).net(
            json!({"op": "tcp", "family": family, "host": host, "port": up.addr.port(), "send": "hello interlock"}),
        );
        let out = r.json();
        assert_eq!(out["ok"], true, "{out}");
        assert_eq!(out["received"], "hello interlock");
        // getpeername() reports the original destination, not the listener.
        assert_eq!(out["peer"][0], host, "{out}");
        assert_eq!(out["peer"][1], up.addr.port());
        let ev = gw.events().for_dst_pid(&up.dst(), r.pid);
        assert!(
            ev["identity"]["process"]["exe"].as_str().unwrap().contains("python3"),
            "{ev}"
        );
        assert_eq!(ev["identity"]["process"]["cgroup"], cg.relative());
        // The upstream's peer is the gateway, not the agent's socket.
        let local_port = out["local"][1].as_u64().unwrap() as u16;
        assert!(up.peers().iter().all(|p| p.port() != local_port));
    }
}

#[test]
fn httpx_client_is_redirected() {
    let cg = TestCgroup::new(&unique("httpx"));
    let gw = Gateway::start(&cg, GatewayOptions::default());
    let up = Upstream::start("127.0.0.4");
    let r = Client::new(&cg).net(json!({"op": "httpx", "url": format!("http://{}/", up.dst())}));
    let out = r.json();
    assert_eq!(out["ok"], true, "{out} {}", r.stderr);
    assert_eq!(out["status"], 200);
    assert_eq!(out["body"], HTTP_BODY);
    gw.events().for_dst_pid(&up.dst(), r.pid);
}

#[test]
fn identity_records_a_non_root_uid() {
    let cg = TestCgroup::new(&unique("uid"));
    let gw = Gateway::start(&cg, GatewayOptions::default());
    let up = Upstream::start("127.0.0.2");
    let r = Client::new(&cg)
        .as_uid(65534)
        .net(json!({"op": "tcp", "host": "127.0.0.2", "port": up.addr.port()}));
    assert_eq!(r.json()["ok"], true, "{}", r.stderr);
    let ev = gw.events().for_dst_pid(&up.dst(), r.pid);
    assert_eq!(ev["identity"]["uid"], 65534);
    assert_eq!(ev["identity"]["gid"], 65534);
    assert_eq!(ev["identity"]["user"], "nobody");
}

#[test]
fn uid_selection_intercepts_only_the_selected_user() {
    let cg = TestCgroup::new(&unique("uidsel"));
    // Hooks attach at the test cgroup (the uid scope); only uid 65534 is an agent.
    let opts = GatewayOptions {
        cgroups_line: Some("cgroups = []".into()),
        intercept: vec![format!("uids = [65534]\nuid_scope = \"{}\"", cg.path().display())],
        ..Default::default()
    };
    let gw = Gateway::start(&cg, opts);
    let up = Upstream::start("127.0.0.2");
    let spec = json!({"op": "tcp", "host": "127.0.0.2", "port": up.addr.port()});
    let agent = Client::new(&cg).as_uid(65534).net(spec.clone());
    assert_eq!(agent.json()["ok"], true);
    gw.events().for_dst_pid(&up.dst(), agent.pid);
    let other = Client::new(&cg).net(spec);
    let out = other.json();
    assert_eq!(out["ok"], true);
    // Not an agent: the upstream saw the client's own socket.
    let local_port = out["local"][1].as_u64().unwrap() as u16;
    assert!(
        up.peers().iter().any(|p| p.port() == local_port),
        "root's connection was redirected"
    );
    assert!(gw
        .events()
        .connections()
        .iter()
        .all(|e| e["identity"]["pid"] != other.pid));
}
