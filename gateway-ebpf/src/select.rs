//! Is the calling process an agent?
use aya_ebpf::{
    helpers::{bpf_get_current_uid_gid, generated::bpf_get_current_ancestor_cgroup_id},
    maps::HashMap,
};
use gateway_common::{Settings, MAX_CGROUP_DEPTH, SELECT_ALL_ATTACHED};

use crate::maps::{SELECTED_CGROUPS, SELECTED_UIDS};

/// True when the caller is an agent.
///
/// With `select_all`, the hooks are attached only to agent cgroups, and the
/// kernel runs them by the *socket's* cgroup, so every caller is an agent and
/// moving the task out of the cgroup after socket() does not escape.
/// Otherwise the hooks are attached more widely (e.g. for uid selection) and
/// the task's uid and cgroup ancestry decide.
#[inline(always)]
pub(crate) fn is_agent(settings: &Settings) -> bool {
    if settings.select_all == SELECT_ALL_ATTACHED {
        return true;
    }
    let uid = bpf_get_current_uid_gid() as u32;
    if SELECTED_UIDS.get_ptr(uid).is_some() {
        return true;
    }
    in_cgroup_of(&SELECTED_CGROUPS)
}

/// True when the calling task's cgroup, or one of its ancestors, is a key of `map`.
#[inline(always)]
pub(crate) fn in_cgroup_of<V>(map: &HashMap<u64, V>) -> bool {
    for level in 0..MAX_CGROUP_DEPTH {
        // SAFETY: plain helper call, valid in cgroup sock_addr programs.
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level) };
        if id == 0 {
            break;
        }
        if map.get_ptr(id).is_some() {
            return true;
        }
    }
    false
}
