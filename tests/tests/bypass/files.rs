//! The audit trail and the gateway's state are not readable by agents:
//! state and run directories 0700, every file in them 0600, also for an
//! install left more open (fixed on start). A readable mirror is the
//! operator's explicit choice (`audit.mirror_group`).
use std::{
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::Path,
};

use interlock_tests::{unique, Client, Gateway, GatewayOptions, TestCgroup, Upstream};
use serde_json::json;

/// Every directory and file under `dir`, with its mode.
fn modes(dir: &Path) -> Vec<(String, u32, bool)> {
    let mut out = vec![(
        dir.display().to_string(),
        std::fs::metadata(dir).unwrap().mode() & 0o7777,
        true,
    )];
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            out.extend(modes(&entry.path()));
        } else if meta.is_file() {
            out.push((entry.path().display().to_string(), meta.mode() & 0o7777, false));
        }
    }
    out
}

fn assert_private(dir: &Path) {
    for (path, mode, is_dir) in modes(dir) {
        let want = if is_dir { 0o700 } else { 0o600 };
        assert_eq!(mode, want, "{path} is {mode:o}");
    }
}

#[test]
fn an_agent_cannot_read_the_audit_trail_or_the_state() {
    let cg = TestCgroup::new(&unique("private"));
    let up = Upstream::start("127.0.0.2");
    let mut gw = Gateway::start(&cg, GatewayOptions::default());
    let spec = json!({"op": "tcp", "host": "127.0.0.2", "port": up.addr.port(), "send": "secret-in-cmdline"});
    let agent = Client::agent(&cg);
    assert_eq!(agent.net(spec).json()["ok"], true);
    gw.events().wait_connection(|e| e["orig_dst"] == up.dst());
    let state = gw.state_dir();
    for file in ["events.jsonl", "audit.db"] {
        let r = agent.run("cat", &[state.join(file).to_str().unwrap()]);
        assert!(!r.success, "the agent read {file}");
        assert!(r.stderr.contains("Permission denied"), "{}", r.stderr);
    }
    assert!(!agent.run("ls", &[state.to_str().unwrap()]).success);
    assert_private(&state);

    // An install left open by an older version is closed again on start.
    gw.stop();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(state.join("events.jsonl"), std::fs::Permissions::from_mode(0o644)).unwrap();
    gw.spawn();
    assert_private(&state);
    assert!(
        !agent
            .run("cat", &[state.join("events.jsonl").to_str().unwrap()])
            .success
    );
}

#[test]
fn a_readable_mirror_is_the_operators_choice() {
    let cg = TestCgroup::new(&unique("mirror"));
    let up = Upstream::start("127.0.0.2");
    let gw = Gateway::start(
        &cg,
        GatewayOptions {
            extra_toml: vec!["[audit]\nmirror_group = \"65534\"\n".into()],
            ..Default::default()
        },
    );
    let spec = json!({"op": "tcp", "host": "127.0.0.2", "port": up.addr.port()});
    // A member of the mirror's group (here nobody's own group) reads the
    // mirror, and nothing else.
    let reader = Client::agent(&cg);
    assert_eq!(reader.net(spec).json()["ok"], true);
    gw.events().wait_connection(|e| e["orig_dst"] == up.dst());
    let state = gw.state_dir();
    let r = reader.run("cat", &[state.join("events.jsonl").to_str().unwrap()]);
    assert!(r.success && r.stdout.contains(&up.dst()), "{}", r.stderr);
    assert!(!reader.run("cat", &[state.join("audit.db").to_str().unwrap()]).success);
    assert!(
        !reader.run("ls", &[state.to_str().unwrap()]).success,
        "the group may not list the state"
    );
    assert_eq!(
        std::fs::metadata(state.join("events.jsonl")).unwrap().mode() & 0o777,
        0o640
    );
}
