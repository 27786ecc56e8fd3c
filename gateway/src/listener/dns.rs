//! The resolver's datagram sockets, on the listener's addresses and port
//! (UDP and TCP port numbers are apart, so the kernel hooks send DNS to the
//! same `ip:port` as TCP). Each datagram's sender is found by the record
//! the kernel published under its source address (see the eBPF
//! `dns_handoff`); a datagram without a fresh record is refused, so a
//! process outside the agent cgroups gains nothing by dialling here.
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::{net::UdpSocket, sync::Semaphore};

use super::{handoff_key, netns_cookie, ListenerError, Shared};
use crate::{
    audit::DnsTransport,
    identity,
    proxy::dns::{self, message, DnsCaller},
    types::OrigDst,
};

/// Questions answered at once; more are refused (REFUSED), never queued.
const IN_FLIGHT: usize = 1024;
/// A record older than this is not trusted: the kernel writes it as the
/// datagram leaves, microseconds before it is read here.
const FRESH: Duration = Duration::from_secs(5);
/// Largest datagram read (EDNS allows up to 64 KiB).
const MAX_DATAGRAM: usize = 65_535;
/// How long a socket's caller is taken as known without reading /proc
/// again (a TCP connection keeps the identity of its first moment for its
/// whole life; a resolver socket keeps it this long).
const CALLER_TTL: Duration = Duration::from_secs(1);
/// Sockets whose callers are kept (then all are dropped).
const CALLERS: usize = 4096;

/// What the kernel record says of a sender, as far as it names the caller.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct CallerKey {
    socket_cookie: u64,
    pid: u32,
    uid: u32,
    gid: u32,
    cgroup_id: u64,
}

/// Callers of recent datagrams, by socket: reading /proc for every query
/// was a tenth of the resolver's CPU.
#[derive(Default)]
struct Callers(Mutex<HashMap<CallerKey, (identity::Identity, crate::types::AgentName, Instant)>>);

impl Callers {
    fn get(
        &self,
        shared: &Shared,
        record: &gateway_common::ConnRecord,
    ) -> (identity::Identity, crate::types::AgentName) {
        let key = CallerKey {
            socket_cookie: record.socket_cookie,
            pid: record.pid,
            uid: record.uid,
            gid: record.gid,
            cgroup_id: record.cgroup_id,
        };
        let now = Instant::now();
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((id, agent, at)) = map.get(&key) {
            if now.duration_since(*at) < CALLER_TTL {
                let mut id = id.clone();
                id.tid = record.tid;
                return (id, agent.clone());
            }
        }
        drop(map);
        let id = shared.resolver.resolve(record);
        let agent = shared.ctx.gate.agent_of(&id);
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= CALLERS {
            map.clear();
        }
        map.insert(key, (id.clone(), agent.clone(), now));
        (id, agent)
    }
}

/// A bound resolver socket.
pub struct BoundUdp {
    socket: Arc<UdpSocket>,
    netns_cookie: u64,
}

/// Binds the resolver's datagram socket on `addr`.
pub fn bind_udp(addr: SocketAddr) -> Result<BoundUdp, ListenerError> {
    let err = |source| ListenerError::Bind { addr, source };
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM.nonblocking().cloexec(), None).map_err(err)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true).map_err(err)?;
    }
    socket.bind(&addr.into()).map_err(err)?;
    let netns_cookie = netns_cookie(&socket).map_err(ListenerError::NetnsCookie)?;
    let socket = UdpSocket::from_std(socket.into()).map_err(err)?;
    Ok(BoundUdp {
        socket: Arc::new(socket),
        netns_cookie,
    })
}

/// Answers datagrams until the task is aborted.
pub async fn serve_udp(bound: BoundUdp, shared: Arc<Shared>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let callers = Arc::new(Callers::default());
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, peer) = match bound.socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                tracing::warn!("dns receive failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let datagram = buf[..n].to_vec();
        let (socket, shared, callers) = (bound.socket.clone(), shared.clone(), callers.clone());
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            if let Ok(q) = message::parse_question(&datagram) {
                let reply = message::refusal(q.id, Some(&q), hickory_proto::op::ResponseCode::Refused);
                let _ = socket.send_to(&reply, peer).await;
            }
            continue;
        };
        let cookie = bound.netns_cookie;
        tokio::spawn(async move {
            let _permit = permit;
            if let Some(reply) = one(&shared, &callers, cookie, peer, &datagram).await {
                if let Err(e) = socket.send_to(&reply, peer).await {
                    tracing::debug!(%peer, "dns answer not sent: {e}");
                }
            }
        });
    }
}

async fn one(shared: &Shared, callers: &Callers, netns: u64, peer: SocketAddr, datagram: &[u8]) -> Option<Vec<u8>> {
    let record = shared
        .kernel
        .dns_sender(&handoff_key(netns, peer))
        .filter(|r| identity::boot_ns().saturating_sub(r.connect_boot_ns) < FRESH.as_nanos() as u64);
    let Some(record) = record else {
        tracing::warn!(%peer, "dns refused: no kernel record for the sender (not an agent's redirected query)");
        let q = message::parse_question(datagram).ok()?;
        return Some(message::refusal(
            q.id,
            Some(&q),
            hickory_proto::op::ResponseCode::Refused,
        ));
    };
    let (identity, agent) = callers.get(shared, &record);
    let caller = DnsCaller {
        agent,
        server: identity::orig_dst(&record),
        identity,
        peer,
        transport: DnsTransport::Udp,
    };
    dns::answer(&shared.ctx, &caller, datagram).await
}

/// The server a TCP/53 connection was meant for, as a caller.
pub fn tcp_caller(
    identity: identity::Identity,
    agent: crate::types::AgentName,
    peer: SocketAddr,
    server: OrigDst,
) -> DnsCaller {
    DnsCaller {
        agent,
        identity,
        peer,
        server,
        transport: DnsTransport::Tcp,
    }
}
