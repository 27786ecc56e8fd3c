//! A real `interlock run` process with its own config, port, pins and state.
use std::{
    fs,
    net::{Ipv6Addr, SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
};

use crate::{cgroup, events::Events, unique, wait_for, TestCgroup};

/// How to configure a test gateway.
#[derive(Default, Clone)]
pub struct GatewayOptions {
    /// Extra lines for the `[listener]` table.
    pub listener: Vec<String>,
    /// Extra lines for the `[intercept]` table.
    pub intercept: Vec<String>,
    /// Replaces the default `cgroups = [<test cgroup>]` line.
    pub cgroups_line: Option<String>,
    /// `[[rules]]` as (name, cidr, ports, action).
    pub rules: Vec<(String, String, String, String)>,
    /// Run the gateway process itself inside this cgroup.
    pub gateway_cgroup: Option<PathBuf>,
    /// Raw TOML appended to the config (e.g. `[[agents]]`, `[[targets]]`).
    pub extra_toml: Vec<String>,
    /// Policy files (name, text) written next to the shipped schema. `None`
    /// means one policy that permits everything, so tests about other
    /// stages are not decided by policy.
    pub policies: Option<Vec<(String, String)>>,
    /// `RUST_LOG` for the gateway; `None` means `info,gateway=debug` (tests
    /// want the per-connection lines when something fails).
    pub log_filter: Option<String>,
    /// Names the gateway's own resolver knows, as (name, address): the
    /// gateway runs in a mount namespace of its own where /etc/hosts holds
    /// these (and localhost) and /etc/resolv.conf names only 127.0.0.1, so
    /// no test ever sends a DNS query off the machine.
    pub hosts: Vec<(String, String)>,
}

/// The policy tests use when they are not about policy.
pub const ALLOW_ALL: &str = "@id(\"test-allow-all\")\npermit (principal, action, resource);\n";

/// The schema shipped in `policies/`.
pub fn shipped(file: &str) -> String {
    fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies").join(file))
        .expect("shipped policy file")
}

/// A running (or stopped) gateway; cleaned up on drop.
pub struct Gateway {
    dir: PathBuf,
    config: PathBuf,
    /// Listener port.
    pub port: u16,
    /// Pin directory on bpffs.
    pub pin_dir: PathBuf,
    child: Option<Child>,
    gateway_cgroup: Option<PathBuf>,
    starts: u32,
    log_filter: Option<String>,
}

/// Mounts bpffs at /sys/fs/bpf on the host if it is not mounted yet (what
/// the gateway would do itself, outside a namespace of its own).
fn ensure_bpffs() {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf") && l.contains(" bpf "))
    {
        return;
    }
    let out = Command::new("mount")
        .args(["-t", "bpf", "bpf", "/sys/fs/bpf"])
        .output()
        .expect("run mount");
    assert!(
        out.status.success(),
        "mount bpffs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes the gateway's own /etc/hosts and /etc/resolv.conf into `dir`.
fn write_resolver_files(dir: &Path, hosts: &[(String, String)]) {
    let mut text = "127.0.0.1 localhost\n::1 localhost\n".to_owned();
    for (name, addr) in hosts {
        text += &format!("{addr} {name}\n");
    }
    fs::write(dir.join("hosts"), text).unwrap();
    fs::write(
        dir.join("resolv.conf"),
        "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
    )
    .unwrap();
}

/// The interlock binary under test.
pub fn binary() -> PathBuf {
    let bin = std::env::var_os("INTERLOCK_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/interlock"));
    assert!(
        bin.exists(),
        "interlock binary not found at {} (run through `cargo xtask test`)",
        bin.display()
    );
    bin
}

fn free_port() -> u16 {
    for _ in 0..50 {
        let v4 = TcpListener::bind("127.0.0.1:0").expect("bind probe");
        let port = v4.local_addr().unwrap().port();
        if TcpListener::bind(SocketAddr::from((Ipv6Addr::LOCALHOST, port))).is_ok() {
            return port;
        }
    }
    panic!("no free port on both loopbacks");
}

impl Gateway {
    /// Writes a config for `cg` and starts the gateway, waiting until it serves.
    pub fn start(cg: &TestCgroup, opts: GatewayOptions) -> Self {
        crate::require_root();
        let name = unique("gw");
        let dir = std::env::temp_dir().join(&name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let pin_dir = PathBuf::from("/sys/fs/bpf").join(&name);
        let mut toml = format!("[listener]\nport = {port}\n");
        for line in &opts.listener {
            toml += line;
            toml.push('\n');
        }
        if !opts.listener.iter().any(|l| l.starts_with("drain_timeout")) {
            // A test that stops its gateway with a client still connected
            // waits this long, not the default ten seconds.
            toml += "drain_timeout = \"2s\"\n";
        }
        toml += "\n[intercept]\n";
        toml += &opts
            .cgroups_line
            .clone()
            .unwrap_or_else(|| format!("cgroups = [\"{}\"]", cg.path().display()));
        toml += "\npass_loopback = false\n";
        for line in &opts.intercept {
            toml += line;
            toml.push('\n');
        }
        toml += &format!(
            "\n[paths]\nstate_dir = \"{0}/state\"\nrun_dir = \"{0}/run\"\npin_dir = \"{1}\"\n",
            dir.display(),
            pin_dir.display()
        );
        let policy_dir = dir.join("policies");
        fs::create_dir_all(&policy_dir).unwrap();
        fs::write(
            policy_dir.join("interlock.cedarschema"),
            shipped("interlock.cedarschema"),
        )
        .unwrap();
        let policies = opts
            .policies
            .clone()
            .unwrap_or_else(|| vec![("allow-all.cedar".into(), ALLOW_ALL.into())]);
        for (name, text) in &policies {
            fs::write(policy_dir.join(name), text).unwrap();
        }
        toml += &format!("\n[policy]\ndir = \"{}\"\n", policy_dir.display());
        for extra in &opts.extra_toml {
            toml += "\n";
            toml += extra;
            toml += "\n";
        }
        for (n, c, p, a) in &opts.rules {
            toml += &format!("\n[[rules]]\nname = \"{n}\"\ncidr = \"{c}\"\nports = \"{p}\"\naction = \"{a}\"\n");
        }
        let config = dir.join("interlock.toml");
        fs::write(&config, toml).unwrap();
        write_resolver_files(&dir, &opts.hosts);
        let mut gw = Self {
            dir,
            config,
            port,
            pin_dir,
            child: None,
            gateway_cgroup: opts.gateway_cgroup,
            starts: 0,
            log_filter: opts.log_filter,
        };
        gw.spawn();
        gw
    }

    /// Starts the gateway process (again) and waits until its control socket answers.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "gateway already running");
        // The gateway's mount namespace must share the host's bpffs, or its
        // pins would vanish with it (and a restarted gateway could not adopt them).
        ensure_bpffs();
        self.starts += 1;
        let log = fs::File::create(self.dir.join(format!("gateway-{}.log", self.starts))).unwrap();
        // Its own mount namespace, where the resolver files are the test's.
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "slave", "--", "sh", "-c"])
            .arg("mount --bind \"$0\" /etc/resolv.conf && mount --bind \"$1\" /etc/hosts && shift && exec \"$@\"")
            .arg(self.dir.join("resolv.conf"))
            .arg(self.dir.join("hosts"))
            .arg(binary())
            .arg("--config")
            .arg(&self.config)
            .arg("run");
        cmd.stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
        cmd.env("RUST_LOG", self.log_filter.as_deref().unwrap_or("info,gateway=debug"));
        if let Some(cg) = &self.gateway_cgroup {
            cgroup::enter(&mut cmd, cg);
        }
        self.child = Some(cmd.spawn().expect("spawn interlock run"));
        let ready = wait_for(20, || {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("gateway exited at start ({status}):\n{}", self.log());
            }
            self.status().filter(|s| s["pid"].is_u64())
        });
        assert!(ready.is_some(), "gateway did not become ready:\n{}", self.log());
    }

    /// The gateway's pid, if running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, no cleanup: the pins stay, as after a crash.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("gateway not running");
        // SAFETY: plain kill(2) on our child.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        c.wait().expect("wait gateway")
    }

    /// Runs an `interlock` subcommand against this gateway's config.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(binary())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("run interlock cli")
    }

    /// Runs an `interlock` subcommand as another user (uid and gid `uid`,
    /// or `gid` when given), as a member of an admin group would.
    pub fn cli_as(&self, uid: u32, gid: u32, args: &[&str]) -> Output {
        use std::os::unix::process::CommandExt;
        Command::new(binary())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .uid(uid)
            .gid(gid)
            .output()
            .expect("run interlock cli")
    }

    /// `interlock status --json`, if the daemon answers.
    pub fn status(&self) -> Option<serde_json::Value> {
        let out = self.cli(&["status", "--json"]);
        if !out.status.success() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v.get("pid").is_some().then_some(v)
    }

    /// Adds a runtime rule, asserting success.
    pub fn add_rule(&self, name: &str, cidr: &str, ports: &str, action: &str) {
        let out = self.cli(&[
            "rules", "add", name, "--cidr", cidr, "--ports", ports, "--action", action,
        ]);
        assert!(
            out.status.success(),
            "rules add failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The event log.
    pub fn events(&self) -> Events {
        Events::new(self.dir.join("state/events.jsonl"))
    }

    /// The config file path.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The gateway's state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// The policy directory the gateway watches.
    pub fn policy_dir(&self) -> PathBuf {
        self.dir.join("policies")
    }

    /// Everything the gateway logged so far.
    pub fn log(&self) -> String {
        (1..=self.starts)
            .map(|n| fs::read_to_string(self.dir.join(format!("gateway-{n}.log"))).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill9();
        let out = self.cli(&["detach"]);
        if !out.status.success() {
            eprintln!("warning: detach failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let _ = fs::remove_dir_all(&self.pin_dir);
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- gateway log (last lines) ---");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
