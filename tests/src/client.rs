//! Real client processes run inside a test cgroup.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use serde_json::Value;

use crate::TestCgroup;

/// The Python test client script.
pub fn netclient() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/netclient.py")
}

/// What a client run produced.
#[derive(Debug)]
pub struct ClientResult {
    /// Pid of the client process.
    pub pid: u32,
    /// Exit status success.
    pub success: bool,
    /// Stdout.
    pub stdout: String,
    /// Stderr.
    pub stderr: String,
}

impl ClientResult {
    /// The last stdout line as JSON (the netclient's report).
    pub fn json(&self) -> Value {
        let line = self
            .stdout
            .lines()
            .last()
            .unwrap_or_else(|| panic!("client printed nothing; stderr: {}", self.stderr));
        serde_json::from_str(line).unwrap_or_else(|e| panic!("client output {line:?}: {e}; stderr: {}", self.stderr))
    }
}

/// Builds client commands that run in a cgroup (and optionally as another uid).
pub struct Client<'a> {
    cgroup: &'a TestCgroup,
    uid: Option<u32>,
}

impl<'a> Client<'a> {
    /// Clients in `cgroup`.
    pub fn new(cgroup: &'a TestCgroup) -> Self {
        Self { cgroup, uid: None }
    }

    /// Run as `uid` (and gid `uid`).
    pub fn as_uid(mut self, uid: u32) -> Self {
        self.uid = Some(uid);
        self
    }

    /// Runs a command in the cgroup; bounded by the command's own timeouts.
    pub fn run(&self, program: &str, args: &[&str]) -> ClientResult {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        self.run_cmd(cmd)
    }

    /// Runs a prepared command in the cgroup.
    pub fn run_cmd(&self, mut cmd: Command) -> ClientResult {
        self.cgroup.enter(&mut cmd);
        if let Some(uid) = self.uid {
            // Drop privileges in our own pre_exec, after the cgroup move (std's
            // uid()/gid() would switch before it, and the move needs root).
            use std::os::unix::process::CommandExt;
            // SAFETY: only async-signal-safe libc calls between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(uid) != 0 || libc::setuid(uid) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program()));
        let pid = child.id();
        let out = child.wait_with_output().expect("wait client");
        ClientResult {
            pid,
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs the Python netclient with a JSON spec. Clients under another uid
    /// use Debian's python3 and a world-readable copy of the script, since
    /// root's Python and the checkout may not be readable to them.
    pub fn net(&self, spec: Value) -> ClientResult {
        let script = if self.uid.is_some() { shared_copy() } else { netclient() };
        let python = if self.uid.is_some() {
            "/usr/bin/python3"
        } else {
            "python3"
        };
        self.run(python, &[script.to_str().unwrap(), &spec.to_string()])
    }
}

fn shared_copy() -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::temp_dir().join(format!("interlock-netclient-{}.py", std::process::id()));
    if !path.exists() {
        std::fs::copy(netclient(), &path).expect("copy netclient");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    path
}
