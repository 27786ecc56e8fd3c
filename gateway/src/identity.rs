//! Who is calling: the kernel's record of the connect(), completed from /proc.
//!
//! The kernel record (pid, uid, cgroup, comm, time of connect) is taken at
//! connect() and is authoritative. /proc adds the executable, command line,
//! cgroup path, container and unit. /proc is read only if the process there is
//! provably the one that connected (it started before the connect), and the
//! result is cached by (pid, start time) so a reused pid never inherits another
//! process's identity.
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    sync::{Arc, Mutex},
};

use gateway_common::{ConnRecord, FAMILY_V4};
use serde::{Deserialize, Serialize};

use crate::types::{CgroupId, OrigDst, SocketCookie};

mod agents;
mod container;
mod proc;
mod socket;

pub use agents::AgentMatcher;
pub use container::{container_of, systemd_unit_of, Container};
pub use socket::{socket_cookie, OwnerError, OwnerFinder, SocketOwner};

/// Everything known about the process behind a connection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Identity {
    /// Process id (tgid), from the kernel.
    pub pid: u32,
    /// Thread that called connect(), from the kernel.
    pub tid: u32,
    /// Real uid at connect(), from the kernel.
    pub uid: u32,
    /// Real gid at connect(), from the kernel.
    pub gid: u32,
    /// `comm` of the calling thread, from the kernel.
    pub comm: String,
    /// Cgroup id, from the kernel.
    pub cgroup_id: CgroupId,
    /// The agent socket's cookie, from the kernel.
    pub socket_cookie: SocketCookie,
    /// Cookie of the agent's network namespace, from the kernel.
    pub netns_cookie: u64,
    /// User name for `uid`, if it has one.
    pub user: Option<String>,
    /// What /proc said about the process, if it was still the same process.
    pub process: Option<Arc<ProcessInfo>>,
}

impl Identity {
    /// An identity with no process behind it, for decisions about an agent
    /// by name (`policy explain --agent`).
    pub fn unattributed() -> Self {
        Self {
            pid: 0,
            tid: 0,
            uid: 0,
            gid: 0,
            comm: String::new(),
            cgroup_id: CgroupId(0),
            socket_cookie: SocketCookie(0),
            netns_cookie: 0,
            user: None,
            process: None,
        }
    }
}

/// Facts about a process read from /proc.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub struct ProcessInfo {
    /// Start time in clock ticks since boot (with pid, the cache key).
    pub start_ticks: u64,
    /// Resolved executable path.
    pub exe: Option<PathBuf>,
    /// Command line arguments.
    pub cmdline: Vec<String>,
    /// Parent process id.
    pub ppid: u32,
    /// cgroup v2 path, relative to the cgroup2 mount.
    pub cgroup: Option<String>,
    /// Container the process runs in, if any.
    pub container: Option<Container>,
    /// systemd unit, if any.
    pub systemd_unit: Option<String>,
}

/// The identity of a live process from /proc alone (no kernel record), for
/// `policy explain --pid`. Kernel-only fields (tid, cookies) are zero.
pub fn from_pid(pid: u32) -> Option<Identity> {
    let (uid, user, info) = proc::read_process(pid)?;
    let comm = proc::comm(pid).unwrap_or_default();
    let gid = proc::gid(pid).unwrap_or(0);
    Some(Identity {
        pid,
        tid: pid,
        uid,
        gid,
        comm,
        cgroup_id: CgroupId(0),
        socket_cookie: SocketCookie(0),
        netns_cookie: 0,
        user,
        process: Some(Arc::new(info)),
    })
}

/// CLOCK_BOOTTIME now, in nanoseconds (0 if the clock cannot be read).
pub fn boot_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| (t.tv_sec() as u64).saturating_mul(1_000_000_000) + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// Every process id on the host (from /proc).
pub fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// (parent pid, start ticks) of a live process.
pub fn parent_and_start(pid: u32) -> Option<(u32, u64)> {
    proc::Stat::read(pid).ok().map(|s| (s.ppid, s.start_ticks))
}

/// The original destination recorded by the kernel.
pub fn orig_dst(record: &ConnRecord) -> OrigDst {
    let ip = if record.orig_family == FAMILY_V4 {
        let a = &record.orig_addr;
        IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(record.orig_addr))
    };
    OrigDst(SocketAddr::new(ip, record.orig_port))
}

/// Resolves identities, caching /proc reads by (pid, start time) and user
/// names by uid.
#[derive(Default)]
pub struct Resolver {
    cache: Mutex<HashMap<(u32, u64), Arc<ProcessInfo>>>,
    users: Mutex<HashMap<u32, (Option<String>, std::time::Instant)>>,
}

/// How long a uid's user name is trusted before the user database is read
/// again (reading it per connection was ~3% of the gateway's CPU on short
/// connections; a renamed user shows within this time).
const USER_TTL: std::time::Duration = std::time::Duration::from_secs(30);

/// Entries kept before the cache prunes processes that have exited.
const CACHE_LIMIT: usize = 8192;

impl Resolver {
    /// The full identity for a kernel record.
    pub fn resolve(&self, record: &ConnRecord) -> Identity {
        let process = self.process(record);
        Identity {
            pid: record.pid,
            tid: record.tid,
            uid: record.uid,
            gid: record.gid,
            comm: proc::c_string(&record.comm),
            cgroup_id: CgroupId(record.cgroup_id),
            socket_cookie: SocketCookie(record.socket_cookie),
            netns_cookie: record.netns_cookie,
            user: self.user_name(record.uid),
            process,
        }
    }

    fn user_name(&self, uid: u32) -> Option<String> {
        let now = std::time::Instant::now();
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((name, at)) = users.get(&uid) {
            if now.duration_since(*at) < USER_TTL {
                return name.clone();
            }
        }
        let name = proc::user_name(uid);
        if users.len() >= CACHE_LIMIT {
            users.clear();
        }
        users.insert(uid, (name.clone(), now));
        name
    }

    fn process(&self, record: &ConnRecord) -> Option<Arc<ProcessInfo>> {
        let stat = proc::Stat::read(record.pid).ok()?;
        if stat.start_ns() > record.connect_boot_ns {
            // The pid now belongs to a process that started after the connect():
            // the caller is gone and its pid was reused. Report kernel facts only.
            tracing::warn!(pid = record.pid, "caller exited and its pid was reused before lookup");
            return None;
        }
        let key = (record.pid, stat.start_ticks);
        if let Some(hit) = self.lock().get(&key) {
            return Some(hit.clone());
        }
        let info = Arc::new(proc::read_info(record.pid, &stat));
        // Re-check: if the process exited while we read it, what we read may be
        // a newer process's.
        match proc::Stat::read(record.pid) {
            Ok(again) if again.start_ticks == stat.start_ticks => {}
            _ => return None,
        }
        let mut cache = self.lock();
        if cache.len() >= CACHE_LIMIT {
            cache.retain(|(pid, start), _| proc::Stat::read(*pid).is_ok_and(|s| s.start_ticks == *start));
        }
        cache.insert(key, info.clone());
        Some(info)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(u32, u64), Arc<ProcessInfo>>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_are_read_once_per_uid_and_kept() {
        let resolver = Resolver::default();
        assert_eq!(resolver.user_name(0).as_deref(), Some("root"));
        assert_eq!(resolver.user_name(0).as_deref(), Some("root"));
        // A uid with no user is remembered as such too.
        assert_eq!(resolver.user_name(3_999_999_999), None);
        let users = resolver.users.lock().unwrap();
        assert_eq!(users.len(), 2);
        assert!(users[&3_999_999_999].0.is_none());
    }
}
