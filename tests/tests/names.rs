//! Names for every protocol (#21): the answers the gateway's resolver
//! passes to an agent bind the addresses to the names for that agent, so a
//! PostgreSQL target declared by host name alone works, and a target can
//! demand that its address was resolved rather than typed in. Answers from
//! a server the operator does not trust bind nothing.
//!
//! Real parts: dnsmasq on 127.0.0.81 (trusted) and 127.0.0.83 (the agent's
//! own), a PostgreSQL cluster on 127.0.0.82, glibc's resolver (through
//! `/etc/resolv.conf` in a private mount namespace) under Python's
//! `getaddrinfo` and psycopg, run as `nobody`.
use std::os::unix::fs::PermissionsExt;

use interlock_tests::{
    dns::Dnsmasq, gateway::shipped, postgres::PgServer, unique, Client, Gateway, GatewayOptions, TestCgroup, Upstream,
};
use serde_json::{json, Value};

const TRUSTED: &str = "127.0.0.81";
const DB_IP: &str = "127.0.0.82";
const ROGUE: &str = "127.0.0.83";
const ROGUE_ANSWER: &str = "127.0.0.84";
const DB_NAME: &str = "db.shop.test";

const POLICY: &str = r#"
@id("shop-db-all")
permit (principal, action, resource == Interlock::Target::"shop-db");
"#;

/// Runs `script` with Python as `nobody` in the agent cgroup, with a
/// resolv.conf naming `resolver` bind-mounted in a private mount namespace.
fn agent_python(cg: &TestCgroup, resolver: &str, script: &str, args: &[&str]) -> Value {
    let dir = std::env::temp_dir().join(unique("names"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let resolv = dir.join("resolv.conf");
    std::fs::write(
        &resolv,
        format!("nameserver {resolver}\noptions attempts:1 timeout:3\n"),
    )
    .unwrap();
    let file = dir.join("agent.py");
    std::fs::write(&file, script).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let sh = format!(
        "mount --bind {} /etc/resolv.conf && exec setpriv --reuid=65534 --regid=65534 --clear-groups /usr/bin/python3 {} {}",
        resolv.display(),
        file.display(),
        quoted.join(" ")
    );
    let out = Client::new(cg).run("unshare", &["--mount", "--", "sh", "-c", &sh]);
    let _ = std::fs::remove_dir_all(&dir);
    serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

const CONNECT: &str = r#"
import sys, json, socket, psycopg
host, port, mode = sys.argv[1], sys.argv[2], sys.argv[3]
out = {}
if mode == "name":
    try:
        out["addrs"] = sorted({a[4][0] for a in socket.getaddrinfo(host, int(port), socket.AF_INET, socket.SOCK_STREAM)})
    except socket.gaierror as e:
        out["addrs"] = str(e)
    dsn = f"host={host} port={port}"
else:
    dsn = f"hostaddr={host} port={port}"
try:
    c = psycopg.connect(dsn + " dbname=shop user=agent password=not-the-real-one connect_timeout=10", autocommit=True)
    out["items"] = c.execute("SELECT count(*) FROM items").fetchone()[0]
    c.close()
except psycopg.Error as e:
    out["error"] = str(e)
print(json.dumps(out))
"#;

#[test]
fn a_postgres_target_declared_by_host_name_alone_works_end_to_end() {
    let trusted = Dnsmasq::start(TRUSTED, &[(DB_NAME, DB_IP)]);
    let rogue = Dnsmasq::start(ROGUE, &[(DB_NAME, ROGUE_ANSWER)]);
    let cg = TestCgroup::new(&unique("names"));
    let pg = PgServer::start(DB_IP);
    pg.shop();
    let port = pg.addr.port().to_string();
    let target = pg.target(&[]).replace(
        &format!("cidrs = [\"{DB_IP}/32\"]"),
        &format!("hosts = [\"{DB_NAME}\"]"),
    );
    assert!(!target.contains("cidrs"), "{target}");
    let gw = Gateway::start(
        &cg,
        GatewayOptions {
            extra_toml: vec![
                format!("[[agents]]\nname = \"shop-agent\"\ncgroup = \"{}\"\n", cg.relative()),
                target,
                format!("[dns]\ntrusted_servers = [\"{TRUSTED}:53\"]\n"),
            ],
            policies: Some(vec![
                ("base.cedar".into(), shipped("base.cedar")),
                ("shop.cedar".into(), POLICY.into()),
            ]),
            ..Default::default()
        },
    );

    // A hard-coded address, never resolved: not the target (it declares
    // no networks), so judged by the address, and refused.
    let got = agent_python(&cg, TRUSTED, CONNECT, &[DB_IP, &port, "addr"]);
    assert!(got.get("items").is_none(), "{got}");
    let refused = gw.events().wait("connection", |e| e["decision"]["outcome"] == "deny");
    assert_eq!(refused["target"], format!("{DB_IP}:{port}"), "{refused}");

    // By name: getaddrinfo answers as the server does, and psycopg reaches
    // the database as the target, the gateway logging in for it.
    let got = agent_python(&cg, TRUSTED, CONNECT, &[DB_NAME, &port, "name"]);
    assert_eq!(got["addrs"], json!([DB_IP]), "{got}");
    assert_eq!(got["items"], 10, "{got}");
    let asked = |d: &Dnsmasq| interlock_tests::wait_for(5, || (d.queries_for(DB_NAME) >= 1).then_some(())).is_some();
    assert!(asked(&trusted), "{}", trusted.log());
    let ev = gw
        .events()
        .wait("dns_query", |e| e["name"] == DB_NAME && e["bound"] == 1);
    assert_eq!(ev["agent"], "shop-agent", "{ev}");
    let session = gw.events().wait("pg_session", |e| e["target"] == "shop-db");
    assert_eq!(session["agent"], "shop-agent", "{session}");

    // The names behind the address, for operators.
    let names = gw.cli(&["names", "--json"]);
    let names: Value = serde_json::from_slice(&names.stdout).unwrap();
    assert!(
        names
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["name"] == DB_NAME && b["ip"] == DB_IP && b["agent"] == "shop-agent"),
        "{names}"
    );
    let status = gw.status().unwrap();
    assert!(status["names_total"].as_u64().unwrap() >= 1, "{status}");
    let explain = gw.cli(&[
        "policy",
        "explain",
        "--agent",
        "shop-agent",
        "--target",
        &format!("{DB_IP}:{port}"),
    ]);
    let text = String::from_utf8_lossy(&explain.stdout);
    assert!(text.contains("target:   shop-db"), "{text}");
    assert!(text.contains(&format!("as name:  {DB_NAME}")), "{text}");
    assert!(text.contains("decision: Allow"), "{text}");

    // The agent's own server gives the target's name to an address of its
    // choosing: the answer reaches the agent but binds nothing, so that
    // address is judged by itself (no target, no credential) and refused.
    let got = agent_python(&cg, ROGUE, CONNECT, &[DB_NAME, &port, "name"]);
    assert_eq!(got["addrs"], json!([ROGUE_ANSWER]), "{got}");
    assert!(got.get("items").is_none(), "{got}");
    assert!(asked(&rogue), "{}", rogue.log());
    let ev = gw.events().wait("dns_query", |e| e["server"] == format!("{ROGUE}:53"));
    assert_eq!(ev["bound"], 0, "{ev}");
    let refused = gw.events().wait("connection", |e| {
        e["decision"]["outcome"] == "deny" && e["target"] == format!("{ROGUE_ANSWER}:{port}")
    });
    assert!(refused["decision"]["reason"].is_string(), "{refused}");
}

#[test]
fn a_target_that_requires_resolution_refuses_hard_coded_addresses() {
    const SVC_IP: &str = "127.0.0.85";
    const SVC_NAME: &str = "svc.shop.test";
    let _dns = Dnsmasq::start(TRUSTED, &[(SVC_NAME, SVC_IP)]);
    let up = Upstream::start(SVC_IP);
    let cg = TestCgroup::new(&unique("mustresolve"));
    let gw = Gateway::start(
        &cg,
        GatewayOptions {
            extra_toml: vec![
                format!("[[agents]]\nname = \"svc-agent\"\ncgroup = \"{}\"\n", cg.relative()),
                format!(
                    "[[targets]]\nname = \"svc\"\ncidrs = [\"{SVC_IP}/32\"]\nhosts = [\"{SVC_NAME}\"]\nrequire_resolution = true\n"
                ),
                format!("[dns]\ntrusted_servers = [\"{TRUSTED}:53\"]\n"),
            ],
            policies: Some(vec![
                ("base.cedar".into(), shipped("base.cedar")),
                (
                    "svc.cedar".into(),
                    "@id(\"svc\")\npermit (principal, action, resource == Interlock::Target::\"svc\");\n".into(),
                ),
            ]),
            ..Default::default()
        },
    );
    let tcp = || {
        Client::agent(&cg)
            .net(json!({"op": "tcp", "host": SVC_IP, "port": up.addr.port(), "family": "v4"}))
            .json()
    };
    // Before any resolution: the policy permits the target, but the
    // address was typed in, so the gateway refuses and says why.
    let before = tcp();
    let refused = gw.events().wait("connection", |e| e["decision"]["outcome"] == "deny");
    assert_eq!(refused["target"], "svc", "{refused} / {before}");
    assert!(
        refused["decision"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("resolve one of its hosts"),
        "{refused}"
    );
    assert!(up.peers().is_empty(), "the upstream was reached");
    let explain = || {
        let dst = format!("{SVC_IP}:{}", up.addr.port());
        let out = gw.cli(&["policy", "explain", "--agent", "svc-agent", "--target", &dst]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = explain();
    assert!(
        text.contains("decision: Deny") && text.contains("resolve one of its hosts"),
        "{text}"
    );
    // The agent resolves the name through the gateway (dig, as nobody):
    // now the same address is the target by name, and reached.
    let out = Client::agent(&cg).run(
        "dig",
        &[&format!("@{TRUSTED}"), "+short", "+time=2", "+tries=1", SVC_NAME],
    );
    assert_eq!(out.stdout.trim(), SVC_IP, "{out:?}");
    let after = tcp();
    assert_eq!(after["ok"], true, "{after}");
    let ok = gw.events().wait("connection", |e| e["decision"]["outcome"] == "allow");
    assert_eq!(ok["target"], "svc", "{ok}");
    let text = explain();
    assert!(text.contains("decision: Allow") && text.contains(SVC_NAME), "{text}");
}
