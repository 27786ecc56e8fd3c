//! cgroup/sendmsg4 and cgroup/sendmsg6 (and the UDP branch of connect4/6):
//! refuse UDP to port 443 from agents, so QUIC clients fall back to TCP,
//! which the gateway sees. All other UDP, DNS included, passes.
//!
//! Revoked processes may send no UDP at all.
//!
//! FAILS CLOSED for agents: without settings every agent send is refused.
use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};
use gateway_common::SLOT_QUIC;

use crate::{
    maps::{count, settings, Counter},
    revoke, select, verdict_of, ALLOW, DENY,
};

const QUIC_PORT: u16 = 443;

/// Verdict for a UDP destination port of an agent.
#[inline(always)]
pub(crate) fn verdict(port: u16) -> i32 {
    if port == QUIC_PORT {
        count(SLOT_QUIC, Counter::Denied);
        DENY
    } else {
        ALLOW
    }
}

#[cgroup_sock_addr(sendmsg4)]
pub fn interlock_sendmsg4(ctx: SockAddrContext) -> i32 {
    verdict_of(try_sendmsg(&ctx))
}

#[cgroup_sock_addr(sendmsg6)]
pub fn interlock_sendmsg6(ctx: SockAddrContext) -> i32 {
    verdict_of(try_sendmsg(&ctx))
}

fn try_sendmsg(ctx: &SockAddrContext) -> Result<i32, ()> {
    let settings = settings().ok_or(())?;
    if revoke::is_revoked(settings) {
        return Ok(DENY);
    }
    if !select::is_agent(settings) {
        return Ok(ALLOW);
    }
    // SAFETY: user_port is readable in sendmsg hooks.
    let port = unsafe { u16::from_be((*ctx.sock_addr).user_port as u16) };
    Ok(verdict(port))
}
