//! Is the caller revoked? Checked by every connect and UDP send hook before
//! anything else (only the gateway's own marked sockets come first): a
//! revoked process reaches nothing, redirected or not, agent or not.
use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_get_current_uid_gid};
use gateway_common::{Settings, SLOT_REVOKED};

use crate::maps::{count, Counter, EXEC_PENDING, REVOKED_CGROUPS, REVOKED_PIDS, REVOKED_UIDS};

/// True when the calling process may not open connections. Counts the refusal.
#[inline(always)]
pub(crate) fn is_revoked(settings: &Settings) -> bool {
    let revoked = check(settings);
    if revoked {
        count(SLOT_REVOKED, Counter::Denied);
    }
    revoked
}

#[inline(always)]
fn check(settings: &Settings) -> bool {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if REVOKED_PIDS.get_ptr(tgid).is_some() {
        return true;
    }
    // A new image not yet checked against exe/agent revocations is held.
    if settings.watch_exec != 0 && EXEC_PENDING.get_ptr(tgid).is_some() {
        return true;
    }
    let uid = bpf_get_current_uid_gid() as u32;
    if REVOKED_UIDS.get_ptr(uid).is_some() {
        return true;
    }
    crate::select::in_cgroup_of(&REVOKED_CGROUPS)
}
