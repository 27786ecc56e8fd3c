//! Harness for Interlock's integration tests.
//!
//! Safety rules these helpers enforce:
//! - every test gets its own child cgroup under the cgroup2 mount (never the
//!   root), and only its client processes are moved into it, before exec;
//! - upstream servers listen on 127.x / ::1 only, so nothing leaves the host
//!   even if a redirect failed;
//! - gateways, pins and cgroups are removed on drop, also when a test fails.
//!
//! The tests need root and real BPF: they fail loudly otherwise.
pub mod cgroup;
pub mod client;
pub mod dns;
pub mod events;
pub mod gateway;
pub mod https;
pub mod nat;
pub mod postgres;
pub mod python;
pub mod server;
pub mod sockaddr;

pub use cgroup::TestCgroup;
pub use client::{Client, ClientResult, HeldClient};
pub use events::Events;
pub use gateway::{Gateway, GatewayOptions};
pub use server::Upstream;

/// Panics unless running as root (the tests attach real eBPF programs).
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "integration tests attach eBPF programs and need root; run `cargo xtask test` as root"
    );
}

/// A name unique to this test process and call, for cgroups, pins and ports.
pub fn unique(tag: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("interlock-test-{tag}-{}-{n}", std::process::id())
}

/// Polls `f` every 20 ms until it returns Some or `secs` pass (bounded wait).
pub fn wait_for<T>(secs: u64, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// utime + stime of a process, in seconds (for benches' CPU per request).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}
