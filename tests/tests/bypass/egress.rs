//! Every way out that is not redirected TCP: DNS goes through the gateway's
//! resolver and is judged by name; other UDP, ICMP "ping" sockets and other
//! socket types are refused. A real dnsmasq on 127.0.0.70 is the server the
//! agents ask; real `dig` (UDP and TCP) and Python sockets are the agents.
use std::process::Command;

use interlock_tests::{dns::Dnsmasq, gateway::shipped};

use super::*;

const EPERM: u64 = 1;
const RESOLVER: &str = "127.0.0.70";
const RECORDS: &[(&str, &str)] = &[
    ("allowed.test", "127.0.0.71"),
    ("other.test", "127.0.0.72"),
    ("tunnel.test", "127.0.0.73"),
];

const DNS_POLICY: &str = r#"
@id("allowed-connect")
permit (principal, action == Interlock::Action::"connect", resource == Interlock::Target::"allowed");
"#;

/// A gateway with the shipped base policy (names of reachable targets
/// resolve, nothing else) and one reachable target, `allowed.test`.
fn dns_gateway(cg: &TestCgroup) -> Gateway {
    Gateway::start(
        cg,
        GatewayOptions {
            extra_toml: vec![
                format!(
                    "[[agents]]\nname = \"resolver-agent\"\ncgroup = \"{}\"\n",
                    cg.relative()
                ),
                "[[targets]]\nname = \"allowed\"\nhosts = [\"allowed.test\", \"*.allowed.test\"]\nports = \"80\"\n"
                    .into(),
            ],
            policies: Some(vec![
                ("base.cedar".into(), shipped("base.cedar")),
                ("dns.cedar".into(), DNS_POLICY.into()),
            ]),
            ..Default::default()
        },
    )
}

fn dig(cg: &TestCgroup, args: &[&str]) -> String {
    let server = format!("@{RESOLVER}");
    let mut all = vec![server.as_str(), "+time=2", "+tries=1"];
    all.extend_from_slice(args);
    let out = Client::agent(cg).run("dig", &all);
    format!("{}{}", out.stdout, out.stderr)
}

fn status_of(dig_output: &str) -> &str {
    dig_output
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("(no answer)")
}

#[test]
fn an_agents_dns_is_judged_by_name_and_answered_as_directly() {
    let dns = Dnsmasq::start(RESOLVER, RECORDS);
    let cg = TestCgroup::new(&unique("dns"));
    let gw = dns_gateway(&cg);
    // Allowed: the same answer as directly, over UDP and TCP, and it
    // appears to come from the server the agent asked.
    let direct = Command::new("dig")
        .args([&format!("@{RESOLVER}"), "+short", "api.allowed.test"])
        .output()
        .unwrap();
    for transport in ["+notcp", "+tcp"] {
        let out = dig(&cg, &[transport, "api.allowed.test", "A"]);
        assert_eq!(status_of(&out), "NOERROR", "{transport}: {out}");
        assert!(out.contains("127.0.0.71"), "{transport}: {out}");
        assert!(out.contains(&format!("SERVER: {RESOLVER}#53")), "{transport}: {out}");
        let short = dig(&cg, &[transport, "+short", "api.allowed.test"]);
        assert_eq!(short.trim(), String::from_utf8_lossy(&direct.stdout).trim());
    }
    // Not a reachable target's name: refused by the gateway, never asked.
    for transport in ["+notcp", "+tcp"] {
        let out = dig(&cg, &[transport, "secret.other.test", "A"]);
        assert_eq!(status_of(&out), "REFUSED", "{transport}: {out}");
    }
    assert_eq!(dns.queries_for("secret.other.test"), 0);
    let ev = gw.events().wait("dns_query", |e| {
        e["name"] == "api.allowed.test" && e["transport"] == "udp"
    });
    assert_eq!(ev["decision"]["outcome"], "allow", "{ev}");
    assert_eq!(ev["agent"], "resolver-agent");
    assert_eq!(ev["answers"][0]["data"], "127.0.0.71", "{ev}");
    assert_eq!(ev["server"], format!("{RESOLVER}:53"));
    let ev = gw.events().wait("dns_query", |e| e["name"] == "secret.other.test");
    assert_eq!(ev["decision"]["outcome"], "deny", "{ev}");
    assert_eq!(ev["rcode"], "REFUSED", "{ev}");
    // glibc's resolver through /etc/resolv.conf, in a private mount
    // namespace that names the test's server (the client is root here only
    // to make that namespace; it is an agent all the same).
    let resolv = std::env::temp_dir().join(unique("resolv.conf"));
    std::fs::write(
        &resolv,
        format!("nameserver {RESOLVER}\noptions attempts:1 timeout:2\n"),
    )
    .unwrap();
    let script = format!(
        "mount --bind {} /etc/resolv.conf && getent ahostsv4 www.allowed.test; echo rc=$?; getent ahostsv4 www.other.test; echo rc=$?",
        resolv.display()
    );
    let out = Client::new(&cg).run("unshare", &["--mount", "--", "sh", "-c", &script]);
    let _ = std::fs::remove_file(&resolv);
    assert!(out.stdout.contains("127.0.0.71"), "{out:?}");
    assert!(
        out.stdout.trim_end().ends_with("rc=2"),
        "www.other.test must not resolve: {out:?}"
    );
    assert_eq!(dns.queries_for("www.other.test"), 0);
    // Each lookup's socket leaves no record behind once it is closed (a
    // resolver opens one per lookup; left, they would crowd out live ones).
    let tracked = || gw.status().unwrap()["tracked_sockets"].as_u64().unwrap();
    let before = tracked();
    for _ in 0..10 {
        dig(&cg, &["+short", "api.allowed.test"]);
    }
    assert!(
        interlock_tests::wait_for(5, || (tracked() <= before).then_some(())).is_some(),
        "records of closed UDP sockets kept: {} before, {} after",
        before,
        tracked()
    );
}

#[test]
fn names_the_operator_lists_resolve_and_refusals_can_be_nxdomain() {
    let dns = Dnsmasq::start(RESOLVER, RECORDS);
    let cg = TestCgroup::new(&unique("dnslist"));
    let gw = Gateway::start(
        &cg,
        GatewayOptions {
            extra_toml: vec![
                format!("[[agents]]\nname = \"lister\"\ncgroup = \"{}\"\n", cg.relative()),
                "[dns]\nnames = [\"*.tunnel.test\"]\nrefuse_with = \"nxdomain\"\n".into(),
            ],
            policies: Some(vec![("base.cedar".into(), shipped("base.cedar"))]),
            ..Default::default()
        },
    );
    let out = dig(&cg, &["pkg.tunnel.test"]);
    assert_eq!(status_of(&out), "NOERROR", "{out}");
    assert!(out.contains("127.0.0.73"), "{out}");
    let out = dig(&cg, &["pkg.other.test"]);
    assert_eq!(status_of(&out), "NXDOMAIN", "{out}");
    let ev = gw.events().wait("dns_query", |e| e["name"] == "pkg.other.test");
    assert_eq!(ev["rcode"], "NXDOMAIN", "{ev}");
    assert_eq!(ev["decision"]["outcome"], "deny", "{ev}");
    assert_eq!(dns.queries_for("pkg.other.test"), 0);
    let ev = gw.events().wait("dns_query", |e| e["name"] == "pkg.tunnel.test");
    assert_eq!(ev["decision"]["policies"][0], "base-dns-reachable-targets", "{ev}");
}

#[test]
fn a_tunnel_through_dns_names_is_refused_and_audited() {
    let dns = Dnsmasq::start(RESOLVER, RECORDS);
    let cg = TestCgroup::new(&unique("dnstun"));
    let gw = Gateway::start(
        &cg,
        GatewayOptions {
            // Everything permitted: only the guards stand in the way.
            extra_toml: vec!["[dns]\nnames_per_domain = 5\n".into()],
            ..Default::default()
        },
    );
    let chunk = "nbswy3dpeb3w64tmmq2gkzlsnfxgk4tbnrsgk3dp";
    let name = format!("{chunk}.x.tunnel.test");
    let out = dig(&cg, &[&name, "TXT"]);
    assert_eq!(status_of(&out), "REFUSED", "{out}");
    assert_eq!(dns.queries_for(&name), 0);
    let ev = gw.events().wait("dns_query", |e| e["name"] == name.as_str());
    assert_eq!(ev["guard"], "label_entropy", "{ev}");
    assert_eq!(ev["decision"]["outcome"], "deny");
    // Many short distinct names under one domain: the sixth is refused.
    for i in 0..5 {
        let out = dig(&cg, &[&format!("c{i}.tunnel.test")]);
        assert_eq!(status_of(&out), "NOERROR", "c{i}: {out}");
    }
    let out = dig(&cg, &["c5.tunnel.test"]);
    assert_eq!(status_of(&out), "REFUSED", "{out}");
    assert_eq!(dns.queries_for("c5.tunnel.test"), 0);
}

#[test]
fn with_over_limit_policy_a_guarded_name_is_held_for_a_person() {
    let dns = Dnsmasq::start(RESOLVER, RECORDS);
    let cg = TestCgroup::new(&unique("dnsheld"));
    let review = "@id(\"hold-guarded-names\")\n@review\nforbid (principal, action == Interlock::Action::\"dns_query\", resource)\nwhen { context.guard != \"\" };\n";
    let gw = Gateway::start(
        &cg,
        GatewayOptions {
            extra_toml: vec![
                "[dns]\nover_limit = \"policy\"\n".into(),
                "[review]\ntimeout = \"30s\"\n".into(),
            ],
            policies: Some(vec![
                ("allow.cedar".into(), interlock_tests::gateway::ALLOW_ALL.into()),
                ("review.cedar".into(), review.into()),
            ]),
            ..Default::default()
        },
    );
    let name = "nbswy3dpeb3w64tmmq2gkzlsnfxgk4tbnrsgk3dp.x.tunnel.test";
    let agent = {
        let client = Client::agent(&cg);
        let server = format!("@{RESOLVER}");
        std::thread::spawn(move || client.run("dig", &[&server, "+time=25", "+tries=1", name, "A"]))
    };
    let id = interlock_tests::wait_for(15, || {
        let out = gw.cli(&["approvals", "list", "--json"]);
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        list.as_array()?
            .iter()
            .find(|r| r["state"] == "pending")
            .and_then(|r| r["id"].as_str().map(str::to_owned))
    })
    .expect("the guarded name opened no review");
    assert_eq!(dns.queries_for(name), 0, "asked before anyone approved");
    let approve = gw.cli(&["approvals", "approve", &id]);
    assert!(approve.status.success(), "{}", String::from_utf8_lossy(&approve.stderr));
    let out = agent.join().unwrap();
    let text = format!("{}{}", out.stdout, out.stderr);
    assert_eq!(status_of(&text), "NOERROR", "{text}");
    assert!(text.contains("127.0.0.73"), "{text}");
    // dnsmasq's log is written a moment after it answers.
    assert!(
        interlock_tests::wait_for(5, || (dns.queries_for(name) == 1).then_some(())).is_some(),
        "{}",
        dns.log()
    );
    let ev = gw.events().wait("dns_query", |e| e["name"] == name);
    assert_eq!(ev["guard"], "label_entropy", "{ev}");
    assert_eq!(ev["decision"]["outcome"], "allow", "{ev}");
}

#[test]
fn tcp_to_port_53_reaches_only_the_resolver_and_dns_over_tls_is_refused() {
    // Not a DNS server, listening on TCP/53: an agent's bytes never reach
    // it (the gateway's resolver reads them as DNS and finds none).
    let up = Upstream::start_on("127.0.0.74", 53);
    // A listener on 853 (DNS over TLS): names in it could not be read.
    let dot = Upstream::start_on("127.0.0.74", 853);
    let cg = TestCgroup::new(&unique("tcp53"));
    let gw = Gateway::start(&cg, GatewayOptions::default());
    let out = Client::agent(&cg)
        .net(json!({"op": "tcp", "host": "127.0.0.74", "port": 53, "send": "GET / HTTP/1.1\r\nHost: x\r\n\r\n"}))
        .json();
    let _ = out;
    for family in ["v4", "v6"] {
        let host = if family == "v4" {
            "127.0.0.74"
        } else {
            "::ffff:127.0.0.74"
        };
        let out = Client::agent(&cg)
            .net(json!({"op": "tcp", "host": host, "port": 853, "family": family}))
            .json();
        assert_eq!(out["errno"], EPERM, "DNS over TLS ({family}): {out}");
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        up.peers().is_empty(),
        "the TCP/53 listener was reached: {:?}",
        up.peers()
    );
    assert!(dot.peers().is_empty(), "the TCP/853 listener was reached");
    assert_eq!(gw.status().unwrap()["dot_denied"], 2);
}

/// A sysctl set for a test and put back on drop, also when the test fails.
struct Sysctl {
    path: &'static str,
    before: String,
}

impl Sysctl {
    fn set(path: &'static str, value: &str) -> Self {
        let before = std::fs::read_to_string(path).unwrap();
        std::fs::write(path, value).unwrap();
        Self { path, before }
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        let _ = std::fs::write(self.path, self.before.trim());
    }
}

#[test]
fn udp_by_sendmmsg_and_io_uring_is_refused_too() {
    let sink = std::net::UdpSocket::bind("127.0.0.86:0").unwrap();
    sink.set_nonblocking(true).unwrap();
    let to = sink.local_addr().unwrap();
    let cg = TestCgroup::new(&unique("udpways"));
    let outside = TestCgroup::new(&unique("udpwaysctl"));
    let _gw = Gateway::start(&cg, GatewayOptions::default());
    let send = |group: &TestCgroup, how: &str, dst: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_udp_send"));
        cmd.args([how, dst, "exfil"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        Client::agent(group).run_cmd(cmd).json()
    };
    let mapped = format!("[::ffff:{}]:{}", to.ip(), to.port());
    for how in ["sendmmsg", "uring"] {
        for dst in [to.to_string(), mapped.clone()] {
            let out = send(&cg, how, &dst);
            assert_eq!(out["errno"], EPERM, "{how} to {dst}: {out}");
        }
    }
    let mut buf = [0u8; 64];
    assert!(sink.recv_from(&mut buf).is_err(), "an agent's datagram arrived");
    // The same programs outside the agent cgroup do reach it: the refusal
    // above is the hook's.
    for how in ["sendmmsg", "uring"] {
        assert_eq!(send(&outside, how, &to.to_string())["ok"], true, "{how} outside");
    }
    let got = interlock_tests::wait_for(5, || sink.recv_from(&mut buf).ok());
    assert!(got.is_some(), "control datagram did not arrive");
}

#[test]
fn udp_other_than_dns_and_icmp_sockets_are_refused() {
    let cg = TestCgroup::new(&unique("udp"));
    let gw = Gateway::start(&cg, GatewayOptions::default());
    for (family, host) in [("v4", "127.0.0.8"), ("v6", "::1"), ("v6", "::ffff:127.0.0.8")] {
        for connect in [false, true] {
            for port in [443, 9999] {
                let out = Client::agent(&cg)
                    .net(json!({"op": "udp", "family": family, "host": host, "port": port, "connect": connect}))
                    .json();
                assert_eq!(out["errno"], EPERM, "UDP {host}:{port} connect={connect}: {out}");
            }
        }
    }
    let status_before = gw.status().unwrap();
    assert!(status_before["quic_denied"].as_u64().unwrap() >= 6, "{status_before}");
    // Ping sockets for every group, so the refusal below is the hook's, not
    // the sysctl's: a process outside the agent cgroup can open one.
    let (control, ping) = {
        let _range = Sysctl::set("/proc/sys/net/ipv4/ping_group_range", "0 2147483647");
        let outside = TestCgroup::new(&unique("udpctl"));
        let control = Client::agent(&outside).net(json!({"op": "icmp_socket"})).json();
        (control, Client::agent(&cg).net(json!({"op": "icmp_socket"})).json())
    };
    assert_eq!(control["ok"], true, "outside the agent cgroup: {control}");
    assert_eq!(ping["errno"], EPERM, "ICMP datagram socket: {ping}");
    let status = gw.status().unwrap();
    assert!(status["socket_denied"].as_u64().unwrap() >= 1, "{status}");
}

#[test]
fn with_the_gateway_down_dns_fails_closed() {
    let dns = Dnsmasq::start(RESOLVER, RECORDS);
    let cg = TestCgroup::new(&unique("dnsdown"));
    let mut gw = Gateway::start(&cg, GatewayOptions::default());
    assert_eq!(status_of(&dig(&cg, &["up.allowed.test"])), "NOERROR");
    gw.stop();
    let out = dig(&cg, &["down.allowed.test"]);
    assert_eq!(status_of(&out), "(no answer)", "{out}");
    assert_eq!(
        dns.queries_for("down.allowed.test"),
        0,
        "the query left without the gateway"
    );
}

/// `dig +noall +answer` lines: (owner, ttl, data).
fn answer_lines(out: &str) -> Vec<(String, u32, String)> {
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 5 && f[2] == "IN").then(|| (f[0].to_owned(), f[1].parse().unwrap_or(u32::MAX), f[4].to_owned()))
        })
        .collect()
}

#[test]
fn a_name_asked_again_is_answered_from_the_agents_cache_and_still_judged_and_audited() {
    let dns = Dnsmasq::start_with_ttl(RESOLVER, RECORDS, 60);
    let cg = TestCgroup::new(&unique("dnscache"));
    let (one, two) = (cg.child("one"), cg.child("two"));
    let gw = Gateway::start(
        &cg,
        GatewayOptions {
            extra_toml: vec![
                format!(
                    "[[agents]]\nname = \"cacher-one\"\ncgroup = \"{}/one\"\n\n[[agents]]\nname = \"cacher-two\"\ncgroup = \"{}/two\"\n",
                    cg.relative(),
                    cg.relative()
                ),
                "[[targets]]\nname = \"allowed\"\nhosts = [\"*.allowed.test\"]\nports = \"80\"\n".into(),
                format!("[dns]\ntrusted_servers = [\"{RESOLVER}:53\"]\n"),
            ],
            policies: Some(vec![
                ("base.cedar".into(), shipped("base.cedar")),
                (
                    "dns.cedar".into(),
                    r#"@id("one-connects")
permit (principal == Interlock::Agent::"cacher-one", action == Interlock::Action::"connect", resource == Interlock::Target::"allowed");"#
                        .into(),
                ),
            ]),
            ..Default::default()
        },
    );
    let (one, two) = (
        interlock_tests::cgroup::Sub::new(&one),
        interlock_tests::cgroup::Sub::new(&two),
    );
    let ask = |cg: &interlock_tests::cgroup::Sub, transport: &str| {
        let server = format!("@{RESOLVER}");
        let out = Client::agent(cg).run(
            "dig",
            &[&server, "+time=2", "+tries=1", transport, "api.allowed.test", "A"],
        );
        format!("{}{}", out.stdout, out.stderr)
    };
    let first = ask(&one, "+notcp");
    assert_eq!(status_of(&first), "NOERROR", "{first}");
    let again = ask(&one, "+notcp");
    assert_eq!(status_of(&again), "NOERROR", "{again}");
    let by_tcp = ask(&one, "+tcp");
    assert_eq!(status_of(&by_tcp), "NOERROR", "{by_tcp}");
    // One trip upstream for the three; the kept answers are the upstream's,
    // their TTL no higher than it said.
    assert_eq!(dns.queries_for("api.allowed.test"), 1, "{}", dns.log());
    let (a, b) = (answer_lines(&first), answer_lines(&again));
    assert_eq!(a.len(), 1, "{first}");
    assert_eq!((&a[0].0, &a[0].2), (&b[0].0, &b[0].2), "{again}");
    assert!(b[0].1 <= a[0].1 && a[0].1 <= 60, "{first}\n{again}");
    assert!(
        by_tcp.contains("127.0.0.71") && by_tcp.contains(&format!("SERVER: {RESOLVER}#53")),
        "{by_tcp}"
    );
    let events = |agent: &str| {
        gw.events()
            .all()
            .into_iter()
            .filter(|e| e["event"] == "dns_query" && e["agent"] == agent && e["name"] == "api.allowed.test")
            .collect::<Vec<_>>()
    };
    assert!(interlock_tests::wait_for(5, || (events("cacher-one").len() == 3).then_some(())).is_some());
    let evs = events("cacher-one");
    let cached: Vec<bool> = evs.iter().map(|e| e["cached"] == true).collect();
    assert_eq!(cached, vec![false, true, true], "{evs:?}");
    for e in &evs {
        // Every answer, kept or not, was judged, binds the name and is
        // recorded with what the agent received.
        assert_eq!(e["decision"]["outcome"], "allow", "{e}");
        assert_eq!(e["decision"]["policies"][0], "base-dns-reachable-targets", "{e}");
        assert_eq!(e["bound"], 1, "{e}");
        assert_eq!(e["upstream"], format!("{RESOLVER}:53"), "{e}");
        assert_eq!(e["answers"][0]["data"], "127.0.0.71", "{e}");
    }
    assert_eq!(evs[2]["transport"], "tcp");
    // Another agent's question is its own: judged for it (refused: it may
    // not reach the target) and never answered from the first one's answers.
    let refused = ask(&two, "+notcp");
    assert_eq!(status_of(&refused), "REFUSED", "{refused}");
    assert_eq!(dns.queries_for("api.allowed.test"), 1);
    let ev = gw.events().wait("dns_query", |e| e["agent"] == "cacher-two");
    assert_eq!(ev["cached"], false, "{ev}");
    assert_eq!(ev["decision"]["outcome"], "deny", "{ev}");
}
