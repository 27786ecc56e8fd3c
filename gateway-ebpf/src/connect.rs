//! cgroup/connect4 and cgroup/connect6: send an agent's TCP connect() to the
//! gateway's listener, or refuse it.
//!
//! Revoked processes are refused first, agent or not.
//!
//! FAILS CLOSED: missing settings, a failed record write or an unknown action
//! make connect() fail with EPERM. Only the gateway's own marked sockets and
//! non-agent processes are let through unexamined.
use aya_ebpf::{bindings::bpf_sock_addr, macros::cgroup_sock_addr, programs::SockAddrContext};
use aya_log_ebpf::{info, warn};
use gateway_common::{Action, Settings, FAMILY_V4, FAMILY_V6};

use crate::{
    maps::{count, settings, Counter},
    record, revoke, rules, select, udp, verdict_of, ALLOW, DENY,
};

const SOCK_STREAM: u32 = 1;
const SOCK_DGRAM: u32 = 2;
const IPPROTO_TCP: u32 = 6;

#[cgroup_sock_addr(connect4)]
pub fn interlock_connect4(ctx: SockAddrContext) -> i32 {
    verdict_of(try_connect4(&ctx))
}

#[cgroup_sock_addr(connect6)]
pub fn interlock_connect6(ctx: SockAddrContext) -> i32 {
    verdict_of(try_connect6(&ctx))
}

/// What to do before any rule is consulted.
enum Screen {
    /// Verdict already known (gateway socket, non-agent, UDP, other protocols).
    Done(i32),
    /// An agent's TCP connect: consult the rules.
    Tcp(&'static Settings),
}

#[inline(always)]
fn screen(sa: *mut bpf_sock_addr, port: u16) -> Result<Screen, ()> {
    let settings = settings().ok_or(())?;
    // SAFETY: ctx->sk is always a valid socket pointer in sock_addr programs.
    let mark = unsafe { (*(*sa).__bindgen_anon_1.sk).mark };
    if settings.bypass_mark != 0 && mark == settings.bypass_mark {
        return Ok(Screen::Done(ALLOW));
    }
    if revoke::is_revoked(settings) {
        return Ok(Screen::Done(DENY));
    }
    if !select::is_agent(settings) {
        return Ok(Screen::Done(ALLOW));
    }
    // SAFETY: reading context fields the verifier allows for connect hooks.
    let (sock_type, protocol) = unsafe { ((*sa).type_, (*sa).protocol) };
    match sock_type {
        SOCK_STREAM if protocol == IPPROTO_TCP => Ok(Screen::Tcp(settings)),
        // MPTCP, SCTP and other stream protocols are not proxied: refuse them
        // rather than let them leave unexamined.
        SOCK_STREAM => Ok(Screen::Done(DENY)),
        SOCK_DGRAM => Ok(Screen::Done(udp::verdict(port))),
        _ => Ok(Screen::Done(ALLOW)),
    }
}

fn try_connect4(ctx: &SockAddrContext) -> Result<i32, ()> {
    let sa = ctx.sock_addr;
    // SAFETY: user_port/user_ip4 are readable with 4-byte loads in connect4.
    let (port, ip) = unsafe { (u16::from_be((*sa).user_port as u16), (*sa).user_ip4) };
    let settings = match screen(sa, port)? {
        Screen::Done(verdict) => return Ok(verdict),
        Screen::Tcp(settings) => settings,
    };
    if ip == settings.proxy_ip4 && port == settings.proxy_port {
        // Already aimed at the listener (a second program in the cgroup chain,
        // or a direct dial that the listener refuses for lack of a record).
        return Ok(ALLOW);
    }
    let addr = ip.to_ne_bytes();
    let mut orig = [0u8; 16];
    orig[..4].copy_from_slice(&addr);
    let verdict = rules::lookup_v4(addr, port, settings);
    let result = enforce(ctx, &verdict, orig, port, FAMILY_V4, || {
        // SAFETY: user_ip4/user_port are writable in connect4.
        unsafe {
            (*sa).user_ip4 = settings.proxy_ip4;
            (*sa).user_port = u32::from(settings.proxy_port.to_be());
        }
    });
    if result == DENY {
        info!(ctx, "connect4 denied to {:i}:{}", u32::from_be(ip), port);
    }
    Ok(result)
}

/// Applies a rule verdict: counts it and, for a redirect, records the
/// connection and runs `rewrite` (which points the socket at the listener).
#[inline(always)]
fn enforce(
    ctx: &SockAddrContext,
    verdict: &rules::Verdict,
    orig: [u8; 16],
    port: u16,
    family: u16,
    rewrite: impl FnOnce(),
) -> i32 {
    match Action::from_raw(verdict.action) {
        Some(Action::Pass) => {
            count(verdict.slot, Counter::Passed);
            ALLOW
        }
        Some(Action::Redirect) => {
            if let Err(e) = record::store(ctx, orig, port, family, verdict.slot) {
                // Fails closed, and says why (the connect gets EPERM).
                warn!(ctx, "connection record not stored (error {}): connect refused", e);
                count(verdict.slot, Counter::Denied);
                return DENY;
            }
            rewrite();
            count(verdict.slot, Counter::Redirected);
            ALLOW
        }
        Some(Action::Deny) | None => {
            count(verdict.slot, Counter::Denied);
            DENY
        }
    }
}

/// Reads `user_ip6` one 32-bit word at a time, as the verifier demands.
#[inline(always)]
fn read_ip6(sa: *mut bpf_sock_addr) -> [u32; 4] {
    // SAFETY: 4-byte aligned loads of a readable context field.
    unsafe {
        let p = core::ptr::addr_of!((*sa).user_ip6) as *const u32;
        [
            core::ptr::read_volatile(p),
            core::ptr::read_volatile(p.add(1)),
            core::ptr::read_volatile(p.add(2)),
            core::ptr::read_volatile(p.add(3)),
        ]
    }
}

/// Writes `user_ip6` one 32-bit word at a time, as the verifier demands.
#[inline(always)]
pub(crate) fn write_ip6(sa: *mut bpf_sock_addr, words: [u32; 4]) {
    // SAFETY: 4-byte aligned stores to a writable context field.
    unsafe {
        let p = core::ptr::addr_of_mut!((*sa).user_ip6) as *mut u32;
        core::ptr::write_volatile(p, words[0]);
        core::ptr::write_volatile(p.add(1), words[1]);
        core::ptr::write_volatile(p.add(2), words[2]);
        core::ptr::write_volatile(p.add(3), words[3]);
    }
}

/// The third word of an IPv4-mapped address (`::ffff:a.b.c.d`) as stored.
#[inline(always)]
pub(crate) fn mapped_marker() -> u32 {
    u32::from_ne_bytes([0, 0, 0xff, 0xff])
}

fn try_connect6(ctx: &SockAddrContext) -> Result<i32, ()> {
    let sa = ctx.sock_addr;
    // SAFETY: user_port is readable in connect6.
    let port = unsafe { u16::from_be((*sa).user_port as u16) };
    let settings = match screen(sa, port)? {
        Screen::Done(verdict) => return Ok(verdict),
        Screen::Tcp(settings) => settings,
    };
    let words = read_ip6(sa);
    // An IPv4-mapped destination on an AF_INET6 socket really goes to the IPv4
    // address: judge it by the IPv4 rules, or `::ffff:10.0.0.1` would escape them.
    let mapped = words[0] == 0 && words[1] == 0 && words[2] == mapped_marker();
    let mut orig = [0u8; 16];
    let (verdict, family, proxy) = if mapped {
        if words[3] == settings.proxy_ip4 && port == settings.proxy_port {
            return Ok(ALLOW);
        }
        let addr = words[3].to_ne_bytes();
        orig[..4].copy_from_slice(&addr);
        let proxy = [0, 0, mapped_marker(), settings.proxy_ip4];
        (rules::lookup_v4(addr, port, settings), FAMILY_V4, proxy)
    } else {
        if words == settings.proxy_ip6 && port == settings.proxy_port {
            return Ok(ALLOW);
        }
        for (i, w) in words.iter().enumerate() {
            orig[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        (rules::lookup_v6(orig, port, settings), FAMILY_V6, settings.proxy_ip6)
    };
    let result = enforce(ctx, &verdict, orig, port, family, || {
        write_ip6(sa, proxy);
        // SAFETY: user_port is writable in connect6.
        unsafe { (*sa).user_port = u32::from(settings.proxy_port.to_be()) };
    });
    if result == DENY {
        info!(ctx, "connect6 denied to port {}", port);
    }
    Ok(result)
}
