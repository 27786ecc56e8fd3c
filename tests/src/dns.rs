//! A real DNS server for tests: Debian's dnsmasq answering fixed records
//! only (no upstream, no hosts file) on one loopback address, logging every
//! query it gets so tests can tell what reached it.
use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
};

use crate::{unique, wait_for};

/// A running dnsmasq; stopped on drop.
pub struct Dnsmasq {
    child: Child,
    log: PathBuf,
}

impl Dnsmasq {
    /// Starts one on `addr`:53 answering each (domain, address) pair for the
    /// domain and every name under it; the first pair must be answerable
    /// (it is asked to see the server is up).
    pub fn start(addr: &str, records: &[(&str, &str)]) -> Self {
        Self::start_with_ttl(addr, records, 0)
    }

    /// As [`Dnsmasq::start`], its answers with TTL `ttl` (dnsmasq's default
    /// for such records is 0: nothing may keep them).
    pub fn start_with_ttl(addr: &str, records: &[(&str, &str)], ttl: u32) -> Self {
        let log = std::env::temp_dir().join(unique("dnsmasq.log"));
        let mut cmd = Command::new("dnsmasq");
        cmd.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--user=root",
            "--pid-file=",
            &format!("--listen-address={addr}"),
            "--port=53",
            "--log-queries",
            &format!("--log-facility={}", log.display()),
            &format!("--local-ttl={ttl}"),
        ]);
        for (domain, ip) in records {
            cmd.arg(format!("--address=/{domain}/{ip}"));
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start dnsmasq (installed by the project's setup)");
        let (probe, want) = records.first().copied().expect("at least one record");
        let ready = wait_for(10, || {
            Command::new("dig")
                .args([&format!("@{addr}"), "+time=1", "+tries=1", "+short", probe])
                .output()
                .ok()
                .filter(|o| String::from_utf8_lossy(&o.stdout).contains(want))
        });
        // The answer must be this server's: one left over on the address
        // (a killed test run) would answer while this one failed to bind.
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            panic!("dnsmasq on {addr} exited ({status}): {err}");
        }
        assert!(ready.is_some(), "dnsmasq did not answer on {addr}");
        Self { child, log }
    }

    /// Its query log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Queries it received for `name`.
    pub fn queries_for(&self, name: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("query[") && l.contains(&format!(" {name} from")))
            .count()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}
