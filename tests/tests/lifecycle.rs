//! Fail-closed lifecycle: a dead gateway leaves agents refused, a restart
//! re-adopts the pins, detach is explicit and logged, the listener refuses
//! direct dials, and the gateway's own upstream traffic never loops.
use std::{
    io::{Read, Write},
    net::TcpStream,
    process::Command,
    time::Duration,
};

use interlock_tests::{gateway::binary, unique, Client, Gateway, GatewayOptions, TestCgroup, Upstream};
use serde_json::{json, Value};

const ECONNREFUSED: u64 = 111;

fn tcp(cg: &TestCgroup, host: &str, port: u16) -> (Value, u32) {
    let r = Client::new(cg).net(json!({"op": "tcp", "host": host, "port": port}));
    (r.json(), r.pid)
}

/// Program ids attached to a cgroup, as bpftool (not the gateway) reports them.
/// Programs the gateway attaches to each cgroup (gateway's
/// `kernel::attach::PROGRAMS`): sock_create, sock_release, connect4/6,
/// getpeername4/6, sendmsg4/6, recvmsg4/6, the cgroup_skb egress hook and sock_ops.
const CGROUP_PROGRAMS: usize = 12;

fn attached_programs(cg: &TestCgroup) -> Vec<String> {
    let out = Command::new("bpftool")
        .args(["cgroup", "show"])
        .arg(cg.path())
        .output()
        .expect("bpftool");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[test]
fn killed_gateway_refuses_agents_and_restart_readopts_pins() {
    let cg = TestCgroup::new(&unique("kill"));
    let up = Upstream::start("127.0.0.2");
    let mut gw = Gateway::start(&cg, GatewayOptions::default());
    assert_eq!(tcp(&cg, "127.0.0.2", up.addr.port()).0["ok"], true);
    let before = attached_programs(&cg);
    assert_eq!(before.len(), CGROUP_PROGRAMS, "{before:?}");

    gw.kill9();
    // The hooks are still pinned: agents are refused, never let through.
    assert_eq!(attached_programs(&cg), before);
    let (out, _) = tcp(&cg, "127.0.0.2", up.addr.port());
    assert_eq!(out["ok"], false);
    assert_eq!(out["errno"], ECONNREFUSED, "{out}");
    assert_eq!(up.peers().len(), 1, "a connection bypassed the dead gateway");
    let offline = gw.cli(&["status"]);
    assert!(String::from_utf8_lossy(&offline.stdout).contains("NOT RUNNING"));

    gw.spawn();
    let after = attached_programs(&cg);
    assert_eq!(after.len(), CGROUP_PROGRAMS, "old links were not replaced: {after:?}");
    assert!(
        after.iter().all(|id| !before.contains(id)),
        "restart kept old programs: {before:?} -> {after:?}"
    );
    let (out, pid) = tcp(&cg, "127.0.0.2", up.addr.port());
    assert_eq!(out["ok"], true, "{out}");
    gw.events().for_dst_pid(&up.dst(), pid);
}

#[test]
fn detach_is_explicit_and_recorded() {
    let cg = TestCgroup::new(&unique("detach"));
    let up = Upstream::start("127.0.0.2");
    let mut gw = Gateway::start(&cg, GatewayOptions::default());
    gw.kill9();
    let out = gw.cli(&["detach"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("detached"),
        "detach was not logged"
    );
    assert!(attached_programs(&cg).is_empty());
    let (out, _) = tcp(&cg, "127.0.0.2", up.addr.port());
    assert_eq!(out["ok"], true, "{out}");
    let local_port = out["local"][1].as_u64().unwrap() as u16;
    assert!(up.peers().iter().any(|p| p.port() == local_port));
    let events = gw.events().all();
    let detached = events
        .iter()
        .find(|e| e["event"] == "detached")
        .expect("no detached event");
    assert!(detached["removed"].as_array().unwrap().len() >= 7);
}

#[test]
fn direct_dial_to_the_listener_is_refused() {
    let cg = TestCgroup::new(&unique("direct"));
    let gw = Gateway::start(&cg, GatewayOptions::default());
    // From outside any agent cgroup: no kernel record exists.
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).expect("listener accepts the TCP handshake");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(b"GET / HTTP/1.1\r\n\r\n");
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf);
    assert!(
        matches!(n, Ok(0) | Err(_)),
        "the listener answered a direct dial: {n:?}"
    );
    // From inside the agent cgroup, dialling the listener itself is no better.
    let (out, _) = tcp(&cg, "127.0.0.1", gw.port);
    assert_ne!(out["received"], "ping", "{out}");
    // The event log is written a batch at a time, behind the audit journal.
    let refused = || -> Vec<Value> {
        gw.events()
            .connections()
            .into_iter()
            .filter(|e| e["outcome"]["kind"] == "refused")
            .collect()
    };
    let refused = interlock_tests::wait_for(10, || Some(refused()).filter(|r| r.len() >= 2))
        .unwrap_or_else(|| panic!("{:#?}", refused()));
    assert!(refused[0]["outcome"]["reason"]
        .as_str()
        .unwrap()
        .contains("no kernel record"));
}

#[test]
fn gateway_inside_the_agent_cgroup_does_not_loop() {
    let cg = TestCgroup::new(&unique("noloop"));
    let up = Upstream::start("127.0.0.2");
    let opts = GatewayOptions {
        gateway_cgroup: Some(cg.child("gateway")),
        ..Default::default()
    };
    let gw = Gateway::start(&cg, opts);
    let (out, pid) = tcp(&cg, "127.0.0.2", up.addr.port());
    assert_eq!(out["ok"], true, "{out}");
    assert_eq!(out["received"], "ping");
    let ev = gw.events().for_dst_pid(&up.dst(), pid);
    assert_eq!(ev["outcome"]["kind"], "closed");
    // Only the agent's connection went through the gateway; its own upstream
    // connect carried the bypass mark and was not redirected back to itself.
    assert_eq!(gw.events().connections().len(), 1, "{:#?}", gw.events().all());
    assert_eq!(gw.status().unwrap()["default_counts"][0], 1);
}

#[test]
fn exec_runs_a_command_as_an_agent_and_refuses_unwatched_cgroups() {
    let cg = TestCgroup::new(&unique("exec"));
    let up = Upstream::start("127.0.0.2");
    let gw = Gateway::start(&cg, GatewayOptions::default());
    let url = format!("http://{}/", up.dst());
    let child = Command::new(binary())
        .arg("--config")
        .arg(gw.config_path())
        .args(["exec", "--", "curl", "-sS", "--max-time", "10", &url])
        .output()
        .expect("interlock exec");
    assert!(child.status.success(), "{}", String::from_utf8_lossy(&child.stderr));
    let ev = gw.events().wait_connection(|e| e["orig_dst"] == up.dst());
    assert_eq!(ev["identity"]["process"]["exe"], "/usr/bin/curl");
    assert_eq!(ev["identity"]["process"]["cgroup"], cg.relative());

    let elsewhere = TestCgroup::new(&unique("unwatched"));
    let refused = Command::new(binary())
        .arg("--config")
        .arg(gw.config_path())
        .arg("exec")
        .arg("--cgroup")
        .arg(elsewhere.path())
        .args(["--", "true"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("refusing to run the command unintercepted"));
}

#[test]
fn sigterm_leaves_the_pins_in_place() {
    let cg = TestCgroup::new(&unique("term"));
    let up = Upstream::start("127.0.0.2");
    let mut gw = Gateway::start(&cg, GatewayOptions::default());
    assert!(gw.stop().success());
    assert_eq!(attached_programs(&cg).len(), CGROUP_PROGRAMS);
    assert_eq!(tcp(&cg, "127.0.0.2", up.addr.port()).0["errno"], ECONNREFUSED);
    let events = gw.events().all();
    assert_eq!(events.last().unwrap()["event"], "gateway_stopped");
}

#[test]
fn agent_in_its_own_network_namespace_is_refused_not_passed() {
    let cg = TestCgroup::new(&unique("netns"));
    let up = Upstream::start("127.0.0.2");
    let gw = Gateway::start(&cg, GatewayOptions::default());
    // The redirect lands on the namespace's own loopback, where no gateway
    // listens: the connection fails there and never reaches the upstream.
    let script = interlock_tests::client::netclient();
    let spec = json!({"op": "tcp", "host": "127.0.0.2", "port": up.addr.port()}).to_string();
    let mut cmd = Command::new("unshare");
    cmd.args(["--net", "sh", "-c", "ip link set lo up && exec python3 \"$0\" \"$1\""])
        .arg(&script)
        .arg(&spec)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let r = Client::new(&cg).run_cmd(cmd);
    let out = r.json();
    assert_eq!(out["ok"], false, "{out}");
    assert_eq!(out["errno"], ECONNREFUSED, "{out}");
    assert!(up.peers().is_empty());
    assert!(gw.events().connections().is_empty());
}

#[test]
fn status_as_another_user_does_not_claim_the_gateway_is_down() {
    let cg = TestCgroup::new(&unique("statususer"));
    let gw = Gateway::start(&cg, GatewayOptions::default());
    let out = gw.cli_as(65534, 65534, &["status"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(!text.contains("NOT RUNNING"), "{text}");
    assert!(text.contains("cannot use the control socket"), "{text}");
}

#[test]
fn sessions_open_at_sigterm_are_drained_and_each_has_its_event_before_gateway_stopped() {
    let cg = TestCgroup::new(&unique("drain"));
    let up = Upstream::start("127.0.0.2");
    let mut gw = Gateway::start(
        &cg,
        GatewayOptions {
            listener: vec!["drain_timeout = \"3s\"".into()],
            ..Default::default()
        },
    );
    // Two sessions open at SIGTERM: one the agent ends during the drain,
    // one still open when the drain is over.
    let hold = json!({"op": "hold", "host": "127.0.0.2", "port": up.addr.port(), "wait": 30});
    let short = Client::agent(&cg).spawn_holding("/usr/bin/python3", hold.clone());
    let long = Client::agent(&cg).spawn_holding("/usr/bin/python3", hold);
    let (short_pid, long_pid) = (short.pid(), long.pid());
    let (status, during, report) = std::thread::scope(|s| {
        let stopping = s.spawn(|| gw.stop());
        std::thread::sleep(Duration::from_millis(500));
        // Draining: nothing new is accepted, so a new connection fails closed.
        let during = Client::agent(&cg)
            .net(json!({"op": "tcp", "host": "127.0.0.2", "port": up.addr.port()}))
            .json();
        drop(short);
        // Returns once the gateway has closed the long session.
        let report = long.finish();
        (stopping.join().unwrap(), during, report)
    });
    assert!(status.success(), "{}", gw.log());
    assert_eq!(during["errno"], ECONNREFUSED, "accepted while draining: {during}");
    // Closed by the gateway (a reset, as for a revocation), not by the
    // client's own timeout.
    const ECONNRESET: u64 = 104;
    assert!(
        report["first"]["closed"] == true || report["first"]["errno"] == ECONNRESET,
        "{report}"
    );
    assert_eq!(report["second"]["errno"], ECONNREFUSED, "{report}");
    let events = gw.events().all();
    let stopped = events
        .iter()
        .position(|e| e["event"] == "gateway_stopped")
        .unwrap_or_else(|| panic!("no gateway_stopped: {events:#?}"));
    let connection = |pid: u32| {
        events
            .iter()
            .position(|e| e["event"] == "connection" && e["identity"]["pid"] == pid)
            .unwrap_or_else(|| panic!("no connection event for pid {pid}: {events:#?}"))
    };
    let (short_at, long_at) = (connection(short_pid), connection(long_pid));
    assert!(short_at < stopped && long_at < stopped, "{events:#?}");
    assert_eq!(events[short_at]["outcome"]["kind"], "closed", "{:#}", events[short_at]);
    assert_eq!(events[long_at]["outcome"]["kind"], "shutdown", "{:#}", events[long_at]);
    assert!(gw
        .log()
        .contains("closing the sessions still open after the drain timeout"));
}

#[test]
fn an_http2_connection_open_at_sigterm_gets_goaway_and_ends_before_the_drain_timeout() {
    let cg = TestCgroup::new(&unique("goaway"));
    let up = Upstream::start("127.0.0.2");
    let target = "[[targets]]\nname = \"plain\"\ncidrs = [\"127.0.0.2/32\"]\nprotocol = \"http\"\n".to_owned();
    let mut gw = Gateway::start(
        &cg,
        GatewayOptions {
            listener: vec!["drain_timeout = \"20s\"".into()],
            extra_toml: vec![target],
            ..Default::default()
        },
    );
    // One exchange, then the connection stays open between requests (an
    // HTTP/2 connection is never parked, so only GOAWAY ends it early).
    let spec = json!({"op": "h2_hold", "host": "127.0.0.2", "port": up.addr.port(), "path": "/x", "wait": 60});
    let client = Client::agent(&cg).spawn_holding("/usr/bin/python3", spec);
    let pid = client.pid();
    let status = gw.stop();
    let report = client.finish();
    assert!(status.success(), "{}", gw.log());
    assert_eq!(report["status"], 200, "{report}");
    assert_eq!(report["goaway"]["error_code"], 0, "no GOAWAY (NO_ERROR): {report}");
    assert_eq!(report["closed"], true, "{report}");
    assert!(
        !gw.log()
            .contains("closing the sessions still open after the drain timeout"),
        "the connection waited for the drain timeout: {}",
        gw.log()
    );
    let events = gw.events().all();
    let stopped = events.iter().position(|e| e["event"] == "gateway_stopped");
    let connection = events
        .iter()
        .position(|e| e["event"] == "connection" && e["identity"]["pid"] == pid)
        .unwrap_or_else(|| panic!("no connection event: {events:#?}"));
    assert!(stopped.is_some_and(|s| connection < s), "{events:#?}");
    assert_eq!(
        events[connection]["outcome"]["kind"], "closed",
        "{:#}",
        events[connection]
    );
    let exchanges = events
        .iter()
        .filter(|e| e["event"] == "http_exchange" && e["identity"]["pid"] == pid);
    assert_eq!(exchanges.count(), 1, "{events:#?}");
}
