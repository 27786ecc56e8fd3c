//! NAT REDIRECT rules (iptables, nat table, OUTPUT chain) for the tests and
//! benches of the non-eBPF way in. Each rule is scoped to one test cgroup and
//! one loopback destination, and deleted when dropped (also on failure).
use std::process::Command;

use crate::TestCgroup;

/// An iptables REDIRECT rule for one cgroup's connections to one loopback
/// destination; deleted when dropped.
pub struct NatRule(Vec<String>);

impl NatRule {
    /// Adds: `cg`'s connections to `dst` go to `to_port` on loopback.
    pub fn add(cg: &TestCgroup, dst: &std::net::SocketAddr, to_port: u16) -> Self {
        assert!(dst.ip().is_loopback(), "NAT rules only for loopback destinations");
        let spec: Vec<String> = [
            "-p",
            "tcp",
            "-d",
            &format!("{}/32", dst.ip()),
            "--dport",
            &dst.port().to_string(),
            "-m",
            "cgroup",
            "--path",
            &cg.relative(),
            "-j",
            "REDIRECT",
            "--to-ports",
            &to_port.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let rule = Self(spec);
        rule.iptables("-A");
        rule
    }

    fn iptables(&self, op: &str) {
        let out = Command::new("iptables")
            .args(["-w", "-t", "nat", op, "OUTPUT"])
            .args(&self.0)
            .output()
            .expect("run iptables (installed by `cargo xtask test`)");
        assert!(
            out.status.success() || op == "-D",
            "iptables {op}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for NatRule {
    fn drop(&mut self) {
        self.iptables("-D");
    }
}
