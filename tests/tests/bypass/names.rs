//! A name the agent chose (TLS SNI, HTTP Host, HTTP/2 :authority) decides a
//! target only when it is bound to the connection's original address, and
//! every request's name must agree with the SNI and the target: the
//! credential never follows an agent-chosen name.
use interlock_tests::{unique, Client, Gateway, GatewayOptions, TestCgroup, Upstream};
use serde_json::json;

use super::{get, status, Https, API_IP, HOST};

/// Only the target `db` may be reached.
fn only_db() -> Vec<(String, String)> {
    vec![(
        "p.cedar".into(),
        "@id(\"db-only\")\npermit (principal, action, resource == Interlock::Target::\"db\");\n".into(),
    )]
}

#[test]
fn a_declared_name_sent_to_another_address_is_judged_by_the_address() {
    let cg = TestCgroup::new(&unique("forgedname"));
    let db = Upstream::start("127.0.0.2");
    let elsewhere = Upstream::start("127.0.0.3");
    // Both listen on ports of their own; the target covers both ports.
    let (lo, hi) = {
        let (a, b) = (db.addr.port(), elsewhere.addr.port());
        (a.min(b), a.max(b))
    };
    let gw = Gateway::start(
        &cg,
        GatewayOptions {
            extra_toml: vec![format!(
                "[[targets]]\nname = \"db\"\nhosts = [\"db.internal\"]\nports = \"{lo}-{hi}\"\nprotocol = \"tcp\"\n"
            )],
            policies: Some(only_db()),
            // The gateway's resolver says where db.internal is.
            hosts: vec![("db.internal".into(), "127.0.0.2".into())],
            ..Default::default()
        },
    );
    let agent = |up: &Upstream, extra: serde_json::Value| {
        let mut spec = json!({"op": "exchange", "host": up.addr.ip().to_string(), "port": up.addr.port()});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        Client::agent(&cg).net(spec).json()
    };
    // The name with its own address: bound through the resolver, allowed.
    let out = agent(&db, json!({"send": get("/", "db.internal")}));
    assert_eq!(status(&out), 200, "{out}");
    gw.events()
        .wait_connection(|e| e["target"] == "db" && e["decision"]["outcome"] == "allow");
    // The same name, by Host or by SNI, to an undeclared address: denied.
    agent(&elsewhere, json!({"send": get("/", "db.internal")}));
    agent(&elsewhere, json!({"tls": {"sni": "db.internal"}}));
    assert!(
        elsewhere.peers().is_empty(),
        "an undeclared address was reached by naming a target"
    );
    // Both events, once the mirror has them (it trails the store).
    let denied = || -> Vec<_> {
        let all = gw.events().connections().into_iter();
        all.filter(|e| e["target"] == elsewhere.dst()).collect()
    };
    let both = interlock_tests::wait_for(10, || Some(denied()).filter(|d| d.len() >= 2));
    let denied = both.unwrap_or_else(|| panic!("not two refusals: {:#?}", denied()));
    assert_eq!(denied.len(), 2, "{denied:#?}");
    assert!(denied.iter().all(|e| e["decision"]["outcome"] == "deny"), "{denied:#?}");
}

#[test]
fn a_plaintext_target_named_by_host_is_not_forwarded_elsewhere() {
    let cg = TestCgroup::new(&unique("forgedhost"));
    let _real = Upstream::start("127.0.0.2");
    let elsewhere = Upstream::start("127.0.0.3");
    let gw = Gateway::start(
        &cg,
        GatewayOptions {
            extra_toml: vec![
                "[[targets]]\nname = \"db\"\nhosts = [\"api.internal\"]\ncidrs = [\"127.0.0.2/32\"]\nprotocol = \"http\"\n".into(),
            ],
            policies: Some(only_db()),
            ..Default::default()
        },
    );
    let spec = json!({"op": "exchange", "host": "127.0.0.3", "port": elsewhere.addr.port(), "send": get("/x", "api.internal")});
    let out = Client::agent(&cg).net(spec).json();
    assert_ne!(status(&out), 200, "{out}");
    assert!(
        elsewhere.peers().is_empty(),
        "the request went to an undeclared address"
    );
    let ev = gw.events().wait_connection(|e| e["target"] == elsewhere.dst());
    assert_eq!(ev["decision"]["outcome"], "deny", "{ev}");
}

#[test]
fn the_credential_never_goes_with_another_host() {
    let s = Https::start("forgedauthority", Vec::new());
    // HTTP/1.1: the SNI names the API, the Host header another site.
    let forged = get("/v1/models", "evil.example");
    let out = s.exchange(Some(HOST), json!({"send": forged}));
    assert_eq!(status(&out), 421, "{out}");
    // An absolute request target naming another site.
    let absolute = format!("GET https://evil.example/v1/models HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n");
    let out = s.exchange(Some(HOST), json!({"send": absolute}));
    assert_eq!(status(&out), 421, "{out}");
    // HTTP/2: curl sends the Host header as :authority.
    let resolve = format!("{HOST}:443:{API_IP}");
    let r = Client::agent(&s.cg).run(
        "curl",
        &[
            "-sS",
            "-k",
            "--http2",
            "--max-time",
            "10",
            "--resolve",
            &resolve,
            "-H",
            "Host: evil.example",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("https://{HOST}/v1/models"),
        ],
    );
    assert_eq!(r.stdout, "421", "{} {}", r.stdout, r.stderr);
    let events = s.gw.events();
    let misdirected = interlock_tests::wait_for(10, || {
        let all: Vec<_> = events
            .all()
            .into_iter()
            .filter(|e| e["event"] == "http_exchange" && e["status"] == 421)
            .collect();
        (all.len() == 3).then_some(all)
    })
    .unwrap_or_else(|| panic!("{:#?}", events.all()));
    for ev in misdirected {
        assert_eq!(ev["credential_injected"], false, "{ev}");
        assert_eq!(ev["decision"]["outcome"], "deny", "{ev}");
    }
    // A TLS SNI the target does not declare: refused before any request.
    let out = s.exchange(Some("evil.example"), json!({"send": get("/v1/models", "evil.example")}));
    assert_eq!(out["ok"], false, "{out}");
    let ev = events.wait_connection(|e| e["outcome"]["kind"] == "refused");
    let reason = ev["outcome"]["reason"].as_str().unwrap();
    assert!(reason.contains("evil.example is not a host of target api"), "{reason}");
}
