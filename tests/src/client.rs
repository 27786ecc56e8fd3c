//! Real client processes run inside a test cgroup.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use serde_json::Value;

use crate::cgroup::CgroupDir;

/// The `nobody` user's uid (and group).
pub const NOBODY: u32 = 65534;

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
pub struct Client {
    cgroup: PathBuf,
    uid: Option<u32>,
}

impl Client {
    /// Clients in `cgroup`.
    pub fn new(cgroup: &impl CgroupDir) -> Self {
        Self {
            cgroup: cgroup.dir().to_owned(),
            uid: None,
        }
    }

    /// An unprivileged agent in `cgroup`: uid and gid `nobody`, no
    /// supplementary groups, and so no capabilities (setuid from root to a
    /// non-zero uid clears them).
    pub fn agent(cgroup: &impl CgroupDir) -> Self {
        Self::new(cgroup).as_uid(NOBODY)
    }

    /// Run as `uid` (and gid `uid`).
    pub fn as_uid(mut self, uid: u32) -> Self {
        self.uid = Some(uid);
        self
    }

    /// `curl` for one URL, bounded by `max_time` seconds; stdout ends with a
    /// newline and the HTTP status.
    pub fn curl(&self, url: &str, max_time: u32) -> ClientResult {
        let max_time = max_time.to_string();
        self.run("curl", &["-sS", "--max-time", &max_time, "-w", "\n%{http_code}", url])
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

    /// Starts the netclient in the cgroup with `python` and waits until it
    /// announces a held connection (its first stdout line).
    pub fn spawn_holding(&self, python: &str, spec: Value) -> HeldClient {
        use std::io::BufRead;
        let mut cmd = Command::new(python);
        cmd.arg(shared_copy())
            .arg(spec.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = self.spawn_cmd(cmd);
        let mut out = std::io::BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        out.read_line(&mut line).expect("read client announcement");
        assert!(line.contains("held"), "client did not hold a connection: {line:?}");
        HeldClient { child, out }
    }

    /// Runs a prepared command in the cgroup.
    pub fn run_cmd(&self, cmd: Command) -> ClientResult {
        let child = self.spawn_cmd(cmd);
        let pid = child.id();
        let out = child.wait_with_output().expect("wait client");
        ClientResult {
            pid,
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn spawn_cmd(&self, mut cmd: Command) -> std::process::Child {
        crate::cgroup::enter(&mut cmd, &self.cgroup);
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
        cmd.spawn()
            .unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program()))
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

/// A client holding a connection open.
pub struct HeldClient {
    child: std::process::Child,
    out: std::io::BufReader<std::process::ChildStdout>,
}

impl HeldClient {
    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for its report (bounded by the client's own timeouts).
    pub fn finish(mut self) -> Value {
        use std::io::Read;
        let mut rest = String::new();
        self.out.read_to_string(&mut rest).expect("read client report");
        let _ = self.child.wait();
        serde_json::from_str(rest.lines().last().unwrap_or(""))
            .unwrap_or_else(|e| panic!("client report {rest:?}: {e}"))
    }
}

impl Drop for HeldClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
