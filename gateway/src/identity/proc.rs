//! Reading /proc/<pid>.
use std::{fs, io, path::PathBuf};

use super::{container_of, systemd_unit_of, ProcessInfo};

/// The fields of /proc/<pid>/stat the gateway uses.
pub(super) struct Stat {
    pub(super) ppid: u32,
    pub(super) start_ticks: u64,
}

impl Stat {
    pub(super) fn read(pid: u32) -> io::Result<Self> {
        let text = fs::read_to_string(format!("/proc/{pid}/stat"))?;
        Self::parse(&text).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unparsable /proc stat"))
    }

    /// `comm` may contain spaces and parentheses, so fields are counted from
    /// the last ')'. After it: state(3) ppid(4) ... starttime(22).
    fn parse(text: &str) -> Option<Self> {
        let rest = &text[text.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        Some(Self {
            ppid: fields.get(1)?.parse().ok()?,
            start_ticks: fields.get(19)?.parse().ok()?,
        })
    }

    /// Start time in nanoseconds since boot (CLOCK_BOOTTIME), rounded down.
    pub(super) fn start_ns(&self) -> u64 {
        let hz = clock_ticks();
        self.start_ticks.saturating_mul(1_000_000_000 / hz)
    }
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as u64
    } else {
        100
    }
}

/// Reads everything but the stat fields; unreadable parts are left empty.
pub(super) fn read_info(pid: u32, stat: &Stat) -> ProcessInfo {
    let base = PathBuf::from(format!("/proc/{pid}"));
    let exe = fs::read_link(base.join("exe")).ok();
    let cmdline = fs::read(base.join("cmdline"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default();
    let cgroup = fs::read_to_string(base.join("cgroup"))
        .ok()
        .and_then(|text| cgroup_v2_path(&text));
    let container = cgroup.as_deref().and_then(container_of);
    let systemd_unit = cgroup.as_deref().and_then(systemd_unit_of);
    ProcessInfo {
        start_ticks: stat.start_ticks,
        exe,
        cmdline,
        ppid: stat.ppid,
        cgroup,
        container,
        systemd_unit,
    }
}

/// The unified-hierarchy line of /proc/<pid>/cgroup (`0::/path`).
pub(super) fn cgroup_v2_path(text: &str) -> Option<String> {
    text.lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(|p| p.trim_end().to_owned())
}

/// (uid, user name, process facts) of a live process read from /proc alone,
/// for matching a parent process against agent definitions.
pub(super) fn read_process(pid: u32) -> Option<(u32, Option<String>, ProcessInfo)> {
    let stat = Stat::read(pid).ok()?;
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|u| u.parse().ok())?;
    Some((uid, user_name(uid), read_info(pid, &stat)))
}

/// `comm` of a live process.
pub(super) fn comm(pid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|c| c.trim_end().to_owned())
}

/// Real gid of a live process.
pub(super) fn gid(pid: u32) -> Option<u32> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Gid:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|g| g.parse().ok())
}

/// A NUL-padded kernel string.
pub(super) fn c_string(raw: &[u8]) -> String {
    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// The user name of a uid, from the system's user database.
pub(super) fn user_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_and_parens_in_comm() {
        let text = "1234 (we ird) (x)) S 77 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 100 18446744073709551615";
        let stat = Stat::parse(text).unwrap();
        assert_eq!(stat.ppid, 77);
        assert_eq!(stat.start_ticks, 98765);
    }

    #[test]
    fn unified_cgroup_line_is_picked_on_hybrid_hosts() {
        let text = "12:pids:/user.slice\n1:name=systemd:/user.slice/x.scope\n0::/interlock.agents\n";
        assert_eq!(cgroup_v2_path(text).as_deref(), Some("/interlock.agents"));
    }

    #[test]
    fn own_process_reads() {
        let stat = Stat::read(std::process::id()).unwrap();
        let info = read_info(std::process::id(), &stat);
        assert!(info.exe.is_some());
        assert!(!info.cmdline.is_empty());
        assert_eq!(info.ppid, std::os::unix::process::parent_id());
    }
}
