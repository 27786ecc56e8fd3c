//! cgroup_skb/egress: for each DNS datagram an agent sends to the gateway's
//! resolver (redirected there by connect or sendmsg), publish its socket's
//! record under the datagram's source address and port, which is all the
//! gateway sees of the sender. This is the UDP counterpart of sock_ops: a
//! connected UDP socket's sends pass no sock_addr hook, and at connect() it
//! has no port yet, so only the packet itself can name it.
//!
//! The record is the socket's, written by the hooks that redirected it; its
//! time is set to now, and the gateway trusts only fresh entries, so a port
//! reused by a process outside the agent cgroup does not inherit a record.
//!
//! FAILS OPEN here, CLOSED overall: every packet passes; a datagram whose
//! record is not published is refused by the gateway (REFUSED, no record).
use aya_ebpf::{
    helpers::generated::{bpf_get_socket_cookie, bpf_ktime_get_boot_ns},
    macros::cgroup_skb,
    programs::SkBuffContext,
    EbpfContext,
};
use gateway_common::{HandoffKey, DNS_VIA_GATEWAY, FAMILY_V4, FAMILY_V6, IPPROTO_UDP, SLOT_DNS};

use crate::maps::{settings, SOCKETS, UDP_HANDOFF};

/// Every packet passes.
const PASS: i32 = 1;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;

#[cgroup_skb(egress)]
pub fn interlock_udp_egress(ctx: SkBuffContext) -> i32 {
    try_egress(&ctx);
    PASS
}

/// The UDP source of a datagram to the gateway's resolver, as a hand-off key
/// (without the namespace, which the record supplies).
fn to_resolver(ctx: &SkBuffContext, proxy_ip4: u32, proxy_ip6: [u32; 4], proxy_port: u16) -> Option<HandoffKey> {
    let ethertype = u16::from_be(ctx.skb.protocol() as u16);
    let mut key = HandoffKey::default();
    let udp = if ethertype == ETH_P_IP {
        let vhl: u8 = ctx.load(0).ok()?;
        let ihl = usize::from(vhl & 0x0f) * 4;
        let proto: u8 = ctx.load(9).ok()?;
        // Only a first fragment carries the UDP header.
        let frag: u16 = ctx.load(6).ok()?;
        let daddr: u32 = ctx.load(16).ok()?;
        if ihl < 20 || proto != IPPROTO_UDP || u16::from_be(frag) & 0x1fff != 0 || daddr != proxy_ip4 {
            return None;
        }
        let saddr: [u8; 4] = ctx.load(12).ok()?;
        key.addr[..4].copy_from_slice(&saddr);
        key.family = FAMILY_V4;
        ihl
    } else if ethertype == ETH_P_IPV6 {
        let next: u8 = ctx.load(6).ok()?;
        let daddr: [u32; 4] = ctx.load(24).ok()?;
        if next != IPPROTO_UDP || daddr != proxy_ip6 {
            return None;
        }
        key.addr = ctx.load(8).ok()?;
        key.family = FAMILY_V6;
        40
    } else {
        return None;
    };
    let sport: u16 = ctx.load(udp).ok()?;
    let dport: u16 = ctx.load(udp + 2).ok()?;
    if u16::from_be(dport) != proxy_port {
        return None;
    }
    key.port = u16::from_be(sport);
    Some(key)
}

fn try_egress(ctx: &SkBuffContext) -> Option<()> {
    let settings = settings()?;
    if settings.dns != DNS_VIA_GATEWAY {
        return None;
    }
    let mut key = to_resolver(ctx, settings.proxy_ip4, settings.proxy_ip6, settings.proxy_port)?;
    // SAFETY: helpers valid in cgroup_skb programs with their own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: LRU values stay valid for the duration of the program; copied out.
    let mut record = (unsafe { SOCKETS.get(&cookie) }).copied()?;
    if record.rule_slot != SLOT_DNS {
        return None;
    }
    // SAFETY: plain helper call.
    record.connect_boot_ns = unsafe { bpf_ktime_get_boot_ns() };
    key.netns_cookie = record.netns_cookie;
    UDP_HANDOFF.insert(&key, &record, 0).ok()
}
