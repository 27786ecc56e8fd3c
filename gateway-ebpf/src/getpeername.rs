//! cgroup/getpeername4 and cgroup/getpeername6: a redirected socket reports
//! its original peer, so the redirect is invisible to the agent.
//!
//! FAILS OPEN (harmlessly): without a record the real peer, the gateway's
//! listener, is reported. Nothing is reached that policy did not allow.
use aya_ebpf::{
    bindings::bpf_sock_addr, helpers::generated::bpf_get_socket_cookie, macros::cgroup_sock_addr,
    programs::SockAddrContext, EbpfContext,
};
use gateway_common::{ConnRecord, FAMILY_V4};

use crate::{
    connect::{mapped_marker, write_ip6},
    maps::SOCKETS,
};

/// getpeername hooks must always return 1.
const OK: i32 = 1;

/// The record of the socket the hook runs for, if it has one.
#[inline(always)]
pub(crate) fn record(ctx: &SockAddrContext) -> Option<&'static ConnRecord> {
    // SAFETY: helper valid in sock_addr programs with their own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: LRU values stay valid for the duration of the program.
    unsafe { SOCKETS.get(&cookie) }
}

/// Writes the record's original IPv4 destination into `sa` (getpeername4,
/// and recvmsg4 for the resolver's answers).
#[inline(always)]
pub(crate) fn report_orig4(sa: *mut bpf_sock_addr, rec: &ConnRecord) {
    let ip = u32::from_ne_bytes([rec.orig_addr[0], rec.orig_addr[1], rec.orig_addr[2], rec.orig_addr[3]]);
    // SAFETY: user_ip4/user_port are writable in getpeername4 and recvmsg4.
    unsafe {
        (*sa).user_ip4 = ip;
        (*sa).user_port = u32::from(rec.orig_port.to_be());
    }
}

/// Writes the record's original destination into an IPv6 `sa` (an IPv4
/// one as `::ffff:a.b.c.d`).
#[inline(always)]
pub(crate) fn report_orig6(sa: *mut bpf_sock_addr, rec: &ConnRecord) {
    let a = &rec.orig_addr;
    let word = |i: usize| u32::from_ne_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
    let words = if rec.orig_family == FAMILY_V4 {
        [0, 0, mapped_marker(), word(0)]
    } else {
        [word(0), word(4), word(8), word(12)]
    };
    write_ip6(sa, words);
    // SAFETY: user_port is writable in getpeername6 and recvmsg6.
    unsafe { (*sa).user_port = u32::from(rec.orig_port.to_be()) };
}

#[cgroup_sock_addr(getpeername4)]
pub fn interlock_getpeername4(ctx: SockAddrContext) -> i32 {
    try_getpeername4(&ctx);
    OK
}

fn try_getpeername4(ctx: &SockAddrContext) {
    if let Some(rec) = record(ctx).filter(|r| r.orig_family == FAMILY_V4) {
        report_orig4(ctx.sock_addr, rec);
    }
}

#[cgroup_sock_addr(getpeername6)]
pub fn interlock_getpeername6(ctx: SockAddrContext) -> i32 {
    try_getpeername6(&ctx);
    OK
}

fn try_getpeername6(ctx: &SockAddrContext) {
    if let Some(rec) = record(ctx) {
        report_orig6(ctx.sock_addr, rec);
    }
}
