//! cgroup/connect4 and cgroup/connect6: send an agent's TCP connect() to the
//! gateway's listener, or refuse it; the same decision serves UDP connect()
//! and, from `udp`, every unconnected UDP send.
//!
//! Order: the gateway's own marked sockets pass; revoked processes are
//! refused, agent or not; non-agents pass; then, for agents, port 53 (TCP
//! and UDP) goes to the gateway's resolver, TCP to 853 (DNS over TLS) is
//! refused, other TCP follows the rules (the default action when none matches) and UDP passes only where a `udp` rule
//! says `pass`. Any other socket type is refused.
//!
//! FAILS CLOSED: missing settings, a failed record write or an unknown action
//! make connect() (or the send) fail with EPERM.
use aya_ebpf::{bindings::bpf_sock_addr, macros::cgroup_sock_addr, programs::SockAddrContext};
use aya_log_ebpf::{info, warn};
use gateway_common::{
    Action, Settings, DNS_VIA_GATEWAY, FAMILY_V4, FAMILY_V6, IPPROTO_TCP, IPPROTO_UDP, SLOT_DEFAULT, SLOT_DNS,
    SLOT_DOT, SLOT_QUIC, SLOT_SOCKET, SLOT_UDP_DEFAULT,
};

use crate::{
    maps::{count, settings, Counter},
    record, revoke, rules, select, verdict_of, ALLOW, DENY,
};

const SOCK_STREAM: u32 = 1;
const SOCK_DGRAM: u32 = 2;
const DNS_PORT: u16 = 53;
const QUIC_PORT: u16 = 443;
const DOT_PORT: u16 = 853;

#[cgroup_sock_addr(connect4)]
pub fn interlock_connect4(ctx: SockAddrContext) -> i32 {
    verdict_of(try_addr4(&ctx))
}

#[cgroup_sock_addr(connect6)]
pub fn interlock_connect6(ctx: SockAddrContext) -> i32 {
    verdict_of(try_addr6(&ctx))
}

/// What to do before any rule is consulted.
enum Screen {
    /// Verdict already known (gateway socket, revoked, non-agent, refused type).
    Done(i32),
    /// An agent's TCP or UDP destination (the IP protocol number): decide it.
    Agent(&'static Settings, u8),
}

#[inline(always)]
fn screen(sa: *mut bpf_sock_addr) -> Result<Screen, ()> {
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
    // SAFETY: reading context fields the verifier allows for sock_addr hooks.
    let (sock_type, protocol) = unsafe { ((*sa).type_, (*sa).protocol) };
    match (sock_type, protocol) {
        (SOCK_STREAM, p) if p == u32::from(IPPROTO_TCP) => Ok(Screen::Agent(settings, IPPROTO_TCP)),
        (SOCK_DGRAM, p) if p == u32::from(IPPROTO_UDP) => Ok(Screen::Agent(settings, IPPROTO_UDP)),
        // MPTCP, SCTP, UDP-Lite, ICMP datagrams and the rest are not carried:
        // refuse them rather than let them leave unexamined (sock_create
        // refuses most of them earlier).
        _ => {
            count(SLOT_SOCKET, Counter::Denied);
            Ok(Screen::Done(DENY))
        }
    }
}

/// What happens to one destination of an agent.
enum Plan {
    Pass(u16),
    Redirect(u16),
    Deny(u16),
}

/// The decision for an agent's destination; `rule` looks the rule up for a
/// transport (asked only when port 53 does not decide first).
#[inline(always)]
fn plan(settings: &Settings, protocol: u8, port: u16, rule: impl FnOnce(u8) -> Option<rules::Verdict>) -> Plan {
    if settings.dns == DNS_VIA_GATEWAY && port == DNS_PORT {
        return Plan::Redirect(SLOT_DNS);
    }
    // DNS over TLS would carry names the resolver never sees: refused
    // before any rule, like a tunnel (DNS over HTTPS is an HTTPS target,
    // named by its SNI and judged by policy).
    if settings.dns == DNS_VIA_GATEWAY && protocol == IPPROTO_TCP && port == DOT_PORT {
        return Plan::Deny(SLOT_DOT);
    }
    if protocol == IPPROTO_TCP {
        let verdict = rule(IPPROTO_TCP).unwrap_or(rules::Verdict {
            action: settings.default_action,
            slot: SLOT_DEFAULT,
        });
        return match Action::from_raw(verdict.action) {
            Some(Action::Pass) => Plan::Pass(verdict.slot),
            Some(Action::Redirect) => Plan::Redirect(verdict.slot),
            Some(Action::Deny) | None => Plan::Deny(verdict.slot),
        };
    }
    // UDP: only what a rule passes. UDP/443 (QUIC) keeps its own counter, so
    // operators see clients falling back to TCP.
    match rule(IPPROTO_UDP) {
        Some(v) if Action::from_raw(v.action) == Some(Action::Pass) => Plan::Pass(v.slot),
        Some(v) => Plan::Deny(v.slot),
        None if port == QUIC_PORT => Plan::Deny(SLOT_QUIC),
        None => Plan::Deny(SLOT_UDP_DEFAULT),
    }
}

/// connect4 and sendmsg4: the destination is `user_ip4:user_port`.
pub(crate) fn try_addr4(ctx: &SockAddrContext) -> Result<i32, ()> {
    let sa = ctx.sock_addr;
    let (settings, protocol) = match screen(sa)? {
        Screen::Done(verdict) => return Ok(verdict),
        Screen::Agent(settings, protocol) => (settings, protocol),
    };
    // SAFETY: user_port/user_ip4 are readable with 4-byte loads in these hooks.
    let (port, ip) = unsafe { (u16::from_be((*sa).user_port as u16), (*sa).user_ip4) };
    if ip == settings.proxy_ip4 && port == settings.proxy_port {
        // Already aimed at the listener (a second program in the cgroup chain,
        // or a direct dial that the listener refuses for lack of a record).
        return Ok(ALLOW);
    }
    let addr = ip.to_ne_bytes();
    let mut orig = [0u8; 16];
    orig[..4].copy_from_slice(&addr);
    let plan = plan(settings, protocol, port, |p| rules::lookup_v4(addr, port, p));
    let result = enforce(ctx, plan, orig, port, FAMILY_V4, || {
        // SAFETY: user_ip4/user_port are writable in connect4 and sendmsg4.
        unsafe {
            (*sa).user_ip4 = settings.proxy_ip4;
            (*sa).user_port = u32::from(settings.proxy_port.to_be());
        }
    });
    if result == DENY {
        info!(ctx, "denied: protocol {} to {:i}:{}", protocol, u32::from_be(ip), port);
    }
    Ok(result)
}

/// Applies a plan: counts it and, for a redirect, records the connection
/// and runs `rewrite` (which points the socket at the listener).
#[inline(always)]
fn enforce(ctx: &SockAddrContext, plan: Plan, orig: [u8; 16], port: u16, family: u16, rewrite: impl FnOnce()) -> i32 {
    match plan {
        Plan::Pass(slot) => {
            count(slot, Counter::Passed);
            ALLOW
        }
        Plan::Redirect(slot) => {
            if let Err(e) = record::store(ctx, orig, port, family, slot) {
                // Fails closed, and says why (the connect gets EPERM).
                warn!(ctx, "connection record not stored (error {}): refused", e);
                count(slot, Counter::Denied);
                return DENY;
            }
            rewrite();
            count(slot, Counter::Redirected);
            ALLOW
        }
        Plan::Deny(slot) => {
            count(slot, Counter::Denied);
            DENY
        }
    }
}

/// Reads `user_ip6` one 32-bit word at a time, as the verifier demands.
#[inline(always)]
pub(crate) fn read_ip6(sa: *mut bpf_sock_addr) -> [u32; 4] {
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

/// connect6 and sendmsg6: the destination is `[user_ip6]:user_port`.
pub(crate) fn try_addr6(ctx: &SockAddrContext) -> Result<i32, ()> {
    let sa = ctx.sock_addr;
    let (settings, protocol) = match screen(sa)? {
        Screen::Done(verdict) => return Ok(verdict),
        Screen::Agent(settings, protocol) => (settings, protocol),
    };
    // SAFETY: user_port is readable in these hooks.
    let port = unsafe { u16::from_be((*sa).user_port as u16) };
    let words = read_ip6(sa);
    // An IPv4-mapped destination on an AF_INET6 socket really goes to the IPv4
    // address: judge it by the IPv4 rules, or `::ffff:10.0.0.1` would escape them.
    let mapped = words[0] == 0 && words[1] == 0 && words[2] == mapped_marker();
    let mut orig = [0u8; 16];
    let (plan, family, proxy) = if mapped {
        if words[3] == settings.proxy_ip4 && port == settings.proxy_port {
            return Ok(ALLOW);
        }
        let addr = words[3].to_ne_bytes();
        orig[..4].copy_from_slice(&addr);
        let proxy = [0, 0, mapped_marker(), settings.proxy_ip4];
        let plan = plan(settings, protocol, port, |p| rules::lookup_v4(addr, port, p));
        (plan, FAMILY_V4, proxy)
    } else {
        if words == settings.proxy_ip6 && port == settings.proxy_port {
            return Ok(ALLOW);
        }
        for (i, w) in words.iter().enumerate() {
            orig[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        let plan = plan(settings, protocol, port, |p| rules::lookup_v6(orig, port, p));
        (plan, FAMILY_V6, settings.proxy_ip6)
    };
    let result = enforce(ctx, plan, orig, port, family, || {
        write_ip6(sa, proxy);
        // SAFETY: user_port is writable in connect6 and sendmsg6.
        unsafe { (*sa).user_port = u32::from(settings.proxy_port.to_be()) };
    });
    if result == DENY {
        info!(ctx, "denied: protocol {} (IPv6) to port {}", protocol, port);
    }
    Ok(result)
}
