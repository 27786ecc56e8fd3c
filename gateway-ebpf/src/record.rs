//! The record a redirected connect() leaves for the proxy.
use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::{bpf_get_current_cgroup_id, bpf_get_netns_cookie, bpf_get_socket_cookie, bpf_ktime_get_boot_ns},
    },
    programs::SockAddrContext,
    EbpfContext,
};
use gateway_common::ConnRecord;

use crate::maps::SOCKETS;

/// Stores the caller's identity and original destination under the socket's
/// cookie. An error means the record could not be kept; the caller must then
/// refuse the connect (the proxy would refuse it anyway, but later).
#[inline(always)]
pub(crate) fn store(
    ctx: &SockAddrContext,
    orig_addr: [u8; 16],
    orig_port: u16,
    orig_family: u16,
    rule_slot: u16,
) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    // SAFETY: helper calls valid in cgroup sock_addr programs with their own context.
    let (cookie, netns, cgroup_id, now) = unsafe {
        (
            bpf_get_socket_cookie(ctx.as_ptr()),
            bpf_get_netns_cookie(ctx.as_ptr()),
            bpf_get_current_cgroup_id(),
            bpf_ktime_get_boot_ns(),
        )
    };
    let record = ConnRecord {
        cgroup_id,
        socket_cookie: cookie,
        netns_cookie: netns,
        connect_boot_ns: now,
        orig_addr,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        uid: uid_gid as u32,
        gid: (uid_gid >> 32) as u32,
        orig_port,
        orig_family,
        rule_slot,
        _pad: 0,
    };
    SOCKETS.insert(&cookie, &record, 0).map_err(i64::from)
}
