//! cgroup/sendmsg4 and cgroup/sendmsg6: every unconnected UDP send of an
//! agent takes the connect hooks' decision (`connect::try_addr4/6`): DNS to
//! the gateway's resolver, a `udp` rule's `pass`, or EPERM.
//!
//! cgroup/recvmsg4 and cgroup/recvmsg6: an answer from the gateway's
//! resolver is reported as coming from the server the agent asked, so its
//! resolver accepts it (the redirect stays invisible, as getpeername's does).
//!
//! sendmsg FAILS CLOSED (see `connect`). recvmsg FAILS OPEN, harmlessly:
//! without a record the real sender, the gateway, is reported.
use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};
use gateway_common::{ConnRecord, FAMILY_V4, SLOT_DNS};

use crate::{
    connect::{mapped_marker, read_ip6, try_addr4, try_addr6},
    getpeername,
    maps::settings,
    verdict_of,
};

/// recvmsg hooks must always return 1.
const OK: i32 = 1;

#[cgroup_sock_addr(sendmsg4)]
pub fn interlock_sendmsg4(ctx: SockAddrContext) -> i32 {
    verdict_of(try_addr4(&ctx))
}

#[cgroup_sock_addr(sendmsg6)]
pub fn interlock_sendmsg6(ctx: SockAddrContext) -> i32 {
    verdict_of(try_addr6(&ctx))
}

/// The DNS record of the receiving socket: the destination of its latest
/// query. An unconnected socket that asks two servers at once may see the
/// second one's address on the first answer (the hook cannot read the
/// message id); resolvers that connect their sockets, as glibc's and dig's
/// do, never can.
#[inline(always)]
fn dns_record(ctx: &SockAddrContext) -> Option<&'static ConnRecord> {
    getpeername::record(ctx).filter(|r| r.rule_slot == SLOT_DNS)
}

#[cgroup_sock_addr(recvmsg4)]
pub fn interlock_recvmsg4(ctx: SockAddrContext) -> i32 {
    try_recvmsg4(&ctx);
    OK
}

fn try_recvmsg4(ctx: &SockAddrContext) -> Option<()> {
    let settings = settings()?;
    let sa = ctx.sock_addr;
    // SAFETY: user_ip4/user_port hold the sender in recvmsg4.
    let (ip, port) = unsafe { ((*sa).user_ip4, u16::from_be((*sa).user_port as u16)) };
    if ip != settings.proxy_ip4 || port != settings.proxy_port {
        return None;
    }
    let rec = dns_record(ctx).filter(|r| r.orig_family == FAMILY_V4)?;
    getpeername::report_orig4(sa, rec);
    Some(())
}

#[cgroup_sock_addr(recvmsg6)]
pub fn interlock_recvmsg6(ctx: SockAddrContext) -> i32 {
    try_recvmsg6(&ctx);
    OK
}

fn try_recvmsg6(ctx: &SockAddrContext) -> Option<()> {
    let settings = settings()?;
    let sa = ctx.sock_addr;
    // SAFETY: user_port holds the sender's port in recvmsg6.
    let port = unsafe { u16::from_be((*sa).user_port as u16) };
    let words = read_ip6(sa);
    let from_proxy_v4 = words[0] == 0 && words[1] == 0 && words[2] == mapped_marker() && words[3] == settings.proxy_ip4;
    if port != settings.proxy_port || !(from_proxy_v4 || words == settings.proxy_ip6) {
        return None;
    }
    getpeername::report_orig6(sa, dns_record(ctx)?);
    Some(())
}
