//! Policy decides connections per agent; bad policy files never replace good ones.
use std::{fs, process::Command};

use interlock_tests::{
    gateway::{binary, shipped},
    unique, wait_for, Client, Gateway, GatewayOptions, TestCgroup, Upstream,
};
use serde_json::{json, Value};

const AGENTS: &str = r#"
[[agents]]
name = "alpha"
cmdline = "\"tag\": ?\"alpha\""

[[agents]]
name = "beta"
cmdline = "\"tag\": ?\"beta\""

[[targets]]
name = "svc"
cidrs = ["127.0.0.2/32"]
"#;

const ALPHA_TO_SVC: &str = r#"
@id("alpha-svc")
permit (principal == Interlock::Agent::"alpha", action == Interlock::Action::"connect", resource == Interlock::Target::"svc");
"#;

fn gateway(cg: &TestCgroup, extra: Vec<(String, String)>) -> Gateway {
    let mut policies = vec![
        ("base.cedar".to_owned(), shipped("base.cedar")),
        ("alpha.cedar".to_owned(), ALPHA_TO_SVC.to_owned()),
    ];
    policies.extend(extra);
    Gateway::start(
        cg,
        GatewayOptions {
            extra_toml: vec![AGENTS.into()],
            policies: Some(policies),
            ..Default::default()
        },
    )
}

fn connect(cg: &TestCgroup, up: &Upstream, tag: &str) -> (Value, u32) {
    let r = Client::new(cg).net(json!({"op": "tcp", "host": "127.0.0.2", "port": up.addr.port(), "tag": tag}));
    (r.json(), r.pid)
}

#[test]
fn agents_get_their_own_decisions_for_the_same_target() {
    let cg = TestCgroup::new(&unique("agents"));
    let up = Upstream::start("127.0.0.2");
    let gw = gateway(&cg, Vec::new());

    let (out, pid) = connect(&cg, &up, "alpha");
    assert_eq!(out["received"], "ping", "{out}");
    let ev = gw.events().for_dst_pid(&up.dst(), pid);
    assert_eq!(ev["agent"], "alpha");
    assert_eq!(ev["target"], "svc");
    assert_eq!(ev["decision"]["outcome"], "allow");
    assert_eq!(ev["decision"]["policies"], json!(["alpha-svc"]));

    let (out, pid) = connect(&cg, &up, "beta");
    assert_ne!(out["received"], "ping", "beta got through: {out}");
    let ev = gw.events().for_dst_pid(&up.dst(), pid);
    assert_eq!(ev["agent"], "beta");
    assert_eq!(ev["outcome"]["kind"], "denied");
    assert_eq!(ev["decision"]["outcome"], "deny");
    assert_eq!(ev["decision"]["policies"], json!([]));
    assert!(ev["decision"]["reason"].as_str().unwrap().contains("default deny"));
    assert_eq!(ev["bytes_up"], 0);

    let (out, pid) = connect(&cg, &up, "nobody-in-particular");
    assert_ne!(out["received"], "ping");
    let ev = gw.events().for_dst_pid(&up.dst(), pid);
    assert_eq!(ev["agent"], "unknown");
    assert_eq!(ev["decision"]["policies"], json!(["base-unknown-agents"]));
    // Only alpha's connection reached the upstream.
    assert_eq!(up.peers().len(), 1);
}

#[test]
fn a_broken_policy_file_is_rejected_and_the_old_policy_keeps_serving() {
    let cg = TestCgroup::new(&unique("badpolicy"));
    let up = Upstream::start("127.0.0.2");
    let gw = gateway(&cg, Vec::new());
    assert_eq!(connect(&cg, &up, "alpha").0["received"], "ping");

    fs::write(
        gw.policy_dir().join("beta.cedar"),
        "// beta\npermit (principal, action, resource)\nwhen { principal.nmae == \"beta\" };\n",
    )
    .unwrap();
    let refused = wait_for(10, || {
        gw.events()
            .all()
            .into_iter()
            .find(|e| e["event"] == "policy_reloaded" && !e["error"].is_null())
    })
    .expect("no policy_reloaded event for the broken file");
    let error = refused["error"].as_str().unwrap();
    assert!(error.contains("beta.cedar:3"), "{error}");
    assert!(error.contains("nmae"), "{error}");
    // The shipped base policies and alpha's own.
    let old_set = shipped("base.cedar").matches("@id(").count() + 1;
    assert_eq!(
        refused["policies"], old_set,
        "the old set ({old_set} policies) stays in force"
    );
    assert_eq!(connect(&cg, &up, "alpha").0["received"], "ping");
    assert_ne!(connect(&cg, &up, "beta").0["received"], "ping");

    // Fixed file: picked up by the watcher without a restart.
    fs::write(
        gw.policy_dir().join("beta.cedar"),
        "@id(\"beta-svc\")\npermit (principal == Interlock::Agent::\"beta\", action, resource == Interlock::Target::\"svc\");\n",
    )
    .unwrap();
    let ok = wait_for(10, || (connect(&cg, &up, "beta").0["received"] == "ping").then_some(()));
    assert!(ok.is_some(), "fixed policy was not loaded:\n{}", gw.log());
}

#[test]
fn review_is_recorded_and_refused_until_approvals_exist() {
    let cg = TestCgroup::new(&unique("review"));
    let up = Upstream::start("127.0.0.2");
    let review = r#"@id("beta-needs-review") @review @reason("beta needs a person's approval")
permit (principal == Interlock::Agent::"beta", action == Interlock::Action::"connect", resource);"#;
    let gw = gateway(&cg, vec![("review.cedar".into(), review.into())]);
    let (out, pid) = connect(&cg, &up, "beta");
    assert_ne!(out["received"], "ping");
    let ev = gw.events().for_dst_pid(&up.dst(), pid);
    assert_eq!(ev["decision"]["outcome"], "review");
    assert_eq!(ev["decision"]["reason"], "beta needs a person's approval");
    assert_eq!(ev["outcome"]["kind"], "denied");
}

#[test]
fn policy_check_and_explain_from_the_command_line() {
    let cg = TestCgroup::new(&unique("explain"));
    let up = Upstream::start("127.0.0.2");
    let gw = gateway(&cg, Vec::new());
    let cli = |args: &[&str]| {
        Command::new(binary())
            .arg("--config")
            .arg(gw.config_path())
            .args(args)
            .output()
            .unwrap()
    };

    let out = cli(&["policy", "check"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("alpha-svc"));

    let out = cli(&["policy", "explain", "--agent", "alpha", "--target", "svc", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["decision"]["outcome"], "allow");
    assert_eq!(v["decision"]["policies"], json!(["alpha-svc"]));

    // --pid names the process by the configured agents.
    let mut sleeper = Command::new("python3")
        .args(["-c", "import time; time.sleep(30)", "\"tag\": \"beta\""])
        .spawn()
        .unwrap();
    let out = cli(&[
        "policy",
        "explain",
        "--pid",
        &sleeper.id().to_string(),
        "--target",
        &up.dst(),
        "--json",
    ]);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let v: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(v["agent"], "beta");
    assert_eq!(v["target"]["name"], "svc");
    assert_eq!(v["decision"]["outcome"], "deny");

    let bad = std::env::temp_dir().join(unique("badpolicydir"));
    fs::create_dir_all(&bad).unwrap();
    fs::write(bad.join("s.cedarschema"), shipped("interlock.cedarschema")).unwrap();
    fs::write(
        bad.join("x.cedar"),
        "permit (principal, action, resource)\n;\nforbid (principal, action resource);\n",
    )
    .unwrap();
    let out = cli(&["policy", "check", bad.to_str().unwrap()]);
    let _ = fs::remove_dir_all(&bad);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("x.cedar:3"), "{err}");
}

#[test]
fn a_grant_opens_access_survives_a_restart_and_its_expiry_closes_it() {
    let cg = TestCgroup::new(&unique("grant"));
    let up = Upstream::start("127.0.0.2");
    let mut gw = gateway(&cg, Vec::new());
    assert_ne!(connect(&cg, &up, "beta").0["received"], "ping");

    let out = gw.cli(&[
        "grant", "--agent", "beta", "--target", "svc", "--action", "connect", "--for", "4s", "--reason", "ticket 7",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (out, pid) = connect(&cg, &up, "beta");
    assert_eq!(out["received"], "ping", "{out}");
    let ev = gw.events().for_dst_pid(&up.dst(), pid);
    assert_eq!(ev["decision"]["policies"], json!(["grant-g-1"]));
    assert!(ev["decision"]["reason"].as_str().unwrap().contains("ticket 7"));

    // Grants persist across restarts.
    gw.stop();
    gw.spawn();
    let listed: Value = serde_json::from_slice(&gw.cli(&["grants", "--json"]).stdout).unwrap();
    assert_eq!(listed[0]["id"], "g-1");
    assert_eq!(listed[0]["granted_by"], "root (uid 0)");

    // It expires by itself.
    let closed = wait_for(15, || (connect(&cg, &up, "beta").0["received"] != "ping").then_some(()));
    assert!(closed.is_some(), "the grant did not expire");
    let expired = wait_for(5, || {
        gw.events()
            .all()
            .into_iter()
            .find(|e| e["event"] == "grant" && e["change"] == "expired")
    });
    assert!(expired.is_some(), "{:#?}", gw.events().all());
    let listed: Value = serde_json::from_slice(&gw.cli(&["grants", "--json"]).stdout).unwrap();
    assert_eq!(listed, json!([]));
}

#[test]
fn a_grant_can_be_revoked_early() {
    let cg = TestCgroup::new(&unique("ungrant"));
    let up = Upstream::start("127.0.0.2");
    let gw = gateway(&cg, Vec::new());
    let out = gw.cli(&[
        "grant",
        "--agent",
        "beta",
        "--target",
        &up.dst(),
        "--for",
        "10m",
        "--reason",
        "debugging",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A grant on an undeclared ip:port works too (the destination is named svc here, so use its name).
    let out = gw.cli(&[
        "grant",
        "--agent",
        "beta",
        "--target",
        "svc",
        "--for",
        "10m",
        "--reason",
        "debugging",
    ]);
    assert!(out.status.success());
    assert_eq!(connect(&cg, &up, "beta").0["received"], "ping");
    for id in ["g-1", "g-2"] {
        let out = gw.cli(&["grants", "revoke", id]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    assert_ne!(connect(&cg, &up, "beta").0["received"], "ping");
    let bad = gw.cli(&[
        "grant", "--agent", "beta", "--target", "svc", "--for", "30d", "--reason", "x",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("a week"));
}
