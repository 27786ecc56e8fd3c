//! `interlock exec` passes no inherited descriptor but stdin, stdout and
//! stderr (and those named with `--keep-fd`): a socket its launcher opened
//! outside the agent cgroup never reaches the agent unhooked.
use std::{io::Read, os::fd::AsRawFd, process::Command, time::Duration};

use interlock_tests::{client::NOBODY, gateway::binary, unique, Gateway, GatewayOptions, TestCgroup, Upstream};

/// Writes to descriptor argv[1] and says whether it could.
const USE_FD: &str = "import json, socket, sys\n\
try:\n    s = socket.socket(fileno=int(sys.argv[1]))\n    s.sendall(b'leak')\n    print(json.dumps({'ok': True}))\n\
except OSError as e:\n    print(json.dumps({'ok': False, 'errno': e.errno}))\n";

#[test]
fn exec_does_not_hand_the_agent_a_socket_opened_outside_its_cgroup() {
    let cg = TestCgroup::new(&unique("fds"));
    let denied = Upstream::start("127.0.0.5");
    let gw = Gateway::start(
        &cg,
        GatewayOptions {
            rules: vec![(
                "deny-it".into(),
                format!("{}/32", denied.addr.ip()),
                denied.addr.port().to_string(),
                "deny".into(),
            )],
            ..Default::default()
        },
    );
    // The launcher's connection, made outside the cgroup (so unhooked), left
    // inheritable for whatever it starts.
    let mut sock = std::net::TcpStream::connect(denied.addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(700))).unwrap();
    let fd = sock.as_raw_fd();
    // SAFETY: clearing FD_CLOEXEC on our own open socket.
    assert_eq!(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) }, 0);
    let run = |keep: bool| {
        let mut cmd = Command::new(binary());
        cmd.arg("--config")
            .arg(gw.config_path())
            .arg("exec")
            .arg("--cgroup")
            .arg(cg.path());
        if keep {
            cmd.args(["--keep-fd", &fd.to_string()]);
        }
        let uid = NOBODY.to_string();
        cmd.args([
            "--",
            "setpriv",
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
        ])
        .args(["/usr/bin/python3", "-c", USE_FD, &fd.to_string()]);
        let out = cmd.output().expect("interlock exec");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let out = run(false);
    assert_eq!(out["ok"], false, "the agent used an inherited socket: {out}");
    assert_eq!(out["errno"], libc::EBADF, "{out}");
    let mut echoed = [0u8; 16];
    assert!(
        sock.read(&mut echoed).is_err(),
        "bytes went out on the inherited socket"
    );
    // Passed on only when the operator says so.
    let out = run(true);
    assert_eq!(out["ok"], true, "{out}");
    let n = sock.read(&mut echoed).unwrap();
    assert_eq!(&echoed[..n], b"leak");
}
