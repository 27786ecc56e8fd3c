//! Configuration at start and on reload: bad input is refused with its place,
//! and a bad reload never replaces rules that work.
use std::{fs, process::Command};

use interlock_tests::{gateway::binary, unique, wait_for, Client, Gateway, GatewayOptions, TestCgroup, Upstream};
use serde_json::json;

const EPERM: u64 = 1;

#[test]
fn bad_config_is_refused_with_file_and_line() {
    let dir = std::env::temp_dir().join(unique("badcfg"));
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    fs::write(
        &path,
        "[listener]\nport = 977\n\n[[rules]]\nname = \"x\"\ncidr = \"10.0.0.0/8\"\naction = \"allow\"\n",
    )
    .unwrap();
    let out = Command::new(binary())
        .arg("--config")
        .arg(&path)
        .arg("run")
        .output()
        .unwrap();
    let _ = fs::remove_dir_all(&dir);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:7:", path.display())), "{err}");
    assert!(err.contains("allow"), "{err}");
}

#[test]
fn sighup_reloads_rules_and_a_broken_file_keeps_the_old_ones() {
    let cg = TestCgroup::new(&unique("hup"));
    let up = Upstream::start("127.0.0.2");
    let gw = Gateway::start(&cg, GatewayOptions::default());
    let connect = || {
        Client::new(&cg)
            .net(json!({"op": "tcp", "host": "127.0.0.2", "port": up.addr.port()}))
            .json()
    };
    assert_eq!(connect()["ok"], true);

    let original = fs::read_to_string(gw.config_path()).unwrap();
    let with_deny = format!(
        "{original}\n[[rules]]\nname = \"deny-2\"\ncidr = \"127.0.0.2/32\"\nports = \"{}\"\naction = \"deny\"\n",
        up.addr.port()
    );
    fs::write(gw.config_path(), &with_deny).unwrap();
    hup(&gw);
    assert!(
        wait_for(10, || (connect()["errno"] == EPERM).then_some(())).is_some(),
        "reload did not apply the deny rule"
    );

    // A broken file: the deny rule keeps working and the error names the line.
    fs::write(gw.config_path(), format!("{with_deny}\nbogus = 1\n")).unwrap();
    hup(&gw);
    assert!(
        wait_for(10, || gw.log().contains("keeping the current rules").then_some(())).is_some(),
        "{}",
        gw.log()
    );
    assert_eq!(connect()["errno"], EPERM);
    assert!(gw.log().contains("bogus"));
}

fn hup(gw: &Gateway) {
    // SAFETY: kill(2) on the gateway child.
    unsafe { libc::kill(gw.pid().unwrap() as i32, libc::SIGHUP) };
}

#[test]
fn connection_limit_refuses_extra_connections() {
    let cg = TestCgroup::new(&unique("limit"));
    let up = Upstream::start_counting("127.0.0.2");
    // Two agents, so the global limit (not one agent's share) is what refuses.
    let agents = "[[agents]]\nname = \"a\"\ncmdline = \"\\\"tag\\\": ?\\\"a\\\"\"\n\n[[agents]]\nname = \"b\"\ncmdline = \"\\\"tag\\\": ?\\\"b\\\"\"\n";
    let gw = Gateway::start(
        &cg,
        GatewayOptions {
            listener: vec!["max_connections = 1".into()],
            extra_toml: vec![agents.into()],
            ..Default::default()
        },
    );
    // One silent connection holds the only slot (the counting server waits for EOF).
    let mut holder = Command::new("python3");
    holder.args([
        interlock_tests::client::netclient().to_str().unwrap(),
        &json!({"op": "idle", "tag": "a", "host": "127.0.0.2", "port": up.addr.port(), "wait": 15}).to_string(),
    ]);
    holder.stdout(std::process::Stdio::null());
    cg.enter(&mut holder);
    let mut holder = holder.spawn().unwrap();
    assert!(wait_for(10, || gw
        .status()
        .and_then(|s| (s["connections"].as_array()?.len() == 1).then_some(())))
    .is_some());
    let out = Client::new(&cg)
        .net(json!({"op": "tcp", "tag": "b", "host": "127.0.0.2", "port": up.addr.port()}))
        .json();
    let _ = holder.kill();
    let _ = holder.wait();
    assert_ne!(out["received"], "got 4 bytes", "{out}");
    gw.events()
        .wait_connection(|e| e["outcome"]["reason"] == "connection limit reached");
}
