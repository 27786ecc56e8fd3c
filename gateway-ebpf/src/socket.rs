//! cgroup/sock_create: an agent may open only the sockets the gateway
//! carries, TCP streams and UDP datagrams (AF_INET and AF_INET6; the hook
//! runs for no other family). ICMP "ping" sockets, raw sockets, SCTP, MPTCP
//! and UDP-Lite are refused at socket() with EPERM, and counted.
//!
//! Families other than inet never reach this hook: AF_PACKET needs
//! CAP_NET_RAW (out of scope: a privileged agent can leave its cgroup), and
//! AF_UNIX, AF_NETLINK and the like do not leave the host.
//!
//! FAILS CLOSED for agents: without settings an agent opens no inet socket.
use aya_ebpf::{macros::cgroup_sock, programs::SockContext};
use gateway_common::{IPPROTO_TCP, IPPROTO_UDP, SLOT_SOCKET};

use crate::{
    maps::{count, settings, Counter},
    select, verdict_of, ALLOW, DENY,
};

const SOCK_STREAM: u32 = 1;
const SOCK_DGRAM: u32 = 2;

#[cgroup_sock(sock_create)]
pub fn interlock_sock_create(ctx: SockContext) -> i32 {
    verdict_of(try_sock_create(&ctx))
}

fn try_sock_create(ctx: &SockContext) -> Result<i32, ()> {
    let settings = settings().ok_or(())?;
    if !select::is_agent(settings) {
        return Ok(ALLOW);
    }
    // SAFETY: type and protocol are readable in sock_create.
    let (sock_type, protocol) = unsafe { ((*ctx.sock).type_, (*ctx.sock).protocol) };
    let carried = (sock_type == SOCK_STREAM && protocol == u32::from(IPPROTO_TCP))
        || (sock_type == SOCK_DGRAM && protocol == u32::from(IPPROTO_UDP));
    if carried {
        Ok(ALLOW)
    } else {
        count(SLOT_SOCKET, Counter::Denied);
        Ok(DENY)
    }
}
