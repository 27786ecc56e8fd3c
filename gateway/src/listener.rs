//! The loopback listeners agents' connections arrive at. For each accepted
//! connection: find who is calling and where it meant to go (the kernel's
//! record; with the opt-in ways in, conntrack or the listener's destination
//! plus sock_diag and /proc — see `origin`), or refuse; resolve the caller's
//! identity, and hand the connection to a proxy session.
use std::{
    net::SocketAddr,
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use gateway_common::{HandoffKey, FAMILY_V4, FAMILY_V6};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};

use crate::{
    audit,
    config::TargetProtocol,
    detect,
    identity::{self, OwnerFinder, Resolver},
    kernel::{Handoff, KernelView},
    proxy::{self, ProxyCtx, SessionStart},
    types::{ConnId, OrigDst},
};

mod dns;
mod origin;

pub use dns::{bind_udp, serve_udp, BoundUdp};

/// Errors setting up the listeners (gateway side).
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    /// bind() or listen() failed.
    #[error("listen on {addr}: {source} (is another gateway running?)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The network namespace cookie of the listener could not be read.
    #[error("reading SO_NETNS_COOKIE: {0}")]
    NetnsCookie(std::io::Error),
}

/// How connections reach a listener, hence how their caller and
/// destination are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Redirected by the kernel hooks; with `nat`, also by a NAT rule.
    Redirect {
        /// Accept NAT-redirected connections too.
        nat: bool,
    },
    /// Dialled on purpose; stands for this destination.
    Explicit(OrigDst),
}

/// Everything the accept loops share.
pub struct Shared {
    /// Kernel hand-off records.
    pub handoff: Arc<Handoff>,
    /// The kernel's revocation entries (checked here for connections that
    /// did not pass the kernel hooks) and redirected sockets' records.
    pub kernel: KernelView,
    /// Finds the callers of such connections.
    pub owners: Arc<OwnerFinder>,
    /// Where the cgroup2 hierarchy is mounted.
    pub cgroup_mount: std::path::PathBuf,
    /// Identity resolution and cache.
    pub resolver: Resolver,
    /// What sessions share (policy, events, live table, CA).
    pub ctx: Arc<ProxyCtx>,
    /// Limits concurrent sessions.
    pub slots: Arc<Semaphore>,
    /// Every accepted connection's task, from accept to its event: the
    /// drain at shutdown waits for them.
    pub sessions: tokio_util::task::TaskTracker,
    /// How long to wait for an agent's first bytes before treating the
    /// connection as raw TCP (server-first protocols send nothing).
    pub detect_wait: Duration,
    next_id: AtomicU64,
}

impl Shared {
    /// Bundles the accept loops' shared state.
    pub fn new(
        handoff: Arc<Handoff>,
        kernel: KernelView,
        cgroup_mount: std::path::PathBuf,
        ctx: Arc<ProxyCtx>,
        max: usize,
        detect_wait: Duration,
    ) -> Self {
        Self {
            handoff,
            kernel,
            owners: Arc::default(),
            cgroup_mount,
            resolver: Resolver::default(),
            ctx,
            slots: Arc::new(Semaphore::new(max)),
            sessions: tokio_util::task::TaskTracker::new(),
            detect_wait,
            next_id: AtomicU64::new(1),
        }
    }
}

/// A bound listener and the network namespace it serves.
pub struct Bound {
    listener: TcpListener,
    netns_cookie: u64,
    arrival: Arrival,
}

impl Bound {
    /// The local address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }
}

/// Binds one listener (IPv6 ones are v6-only; IPv4 has its own).
pub fn bind(addr: SocketAddr, arrival: Arrival) -> Result<Bound, ListenerError> {
    let err = |source| ListenerError::Bind { addr, source };
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM.nonblocking().cloexec(), None).map_err(err)?;
    socket.set_reuse_address(true).map_err(err)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true).map_err(err)?;
    }
    socket.bind(&addr.into()).map_err(err)?;
    socket.listen(1024).map_err(err)?;
    let netns_cookie = netns_cookie(&socket).map_err(ListenerError::NetnsCookie)?;
    let listener = TcpListener::from_std(socket.into()).map_err(err)?;
    Ok(Bound {
        listener,
        netns_cookie,
        arrival,
    })
}

pub(crate) fn netns_cookie(socket: &socket2::Socket) -> std::io::Result<u64> {
    const SO_NETNS_COOKIE: libc::c_int = 71;
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: valid fd, output buffer of the advertised size.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(cookie)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The key sock_ops published the record under, from the accepted peer.
pub fn handoff_key(netns_cookie: u64, peer: SocketAddr) -> HandoffKey {
    let mut key = HandoffKey {
        netns_cookie,
        port: peer.port(),
        ..HandoffKey::default()
    };
    match peer.ip() {
        std::net::IpAddr::V4(ip) => {
            key.family = FAMILY_V4;
            key.addr[..4].copy_from_slice(&ip.octets());
        }
        std::net::IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(v4) => {
                key.family = FAMILY_V4;
                key.addr[..4].copy_from_slice(&v4.octets());
            }
            None => {
                key.family = FAMILY_V6;
                key.addr = ip.octets();
            }
        },
    }
    key
}

/// Accepts until the task is dropped.
pub async fn serve(bound: Bound, shared: Arc<Shared>) {
    loop {
        let (stream, peer) = match bound.listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::error!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = shared.clone();
        let way = origin::Way {
            netns_cookie: bound.netns_cookie,
            arrival: bound.arrival,
        };
        let sessions = shared.sessions.clone();
        sessions.spawn(async move { handle(stream, peer, way, shared).await });
    }
}

async fn handle(stream: TcpStream, peer: SocketAddr, way: origin::Way, shared: Arc<Shared>) {
    // Admission is boxed: its futures' room is freed before the session
    // starts, and the task then holds little more than the session.
    let Some((stream, start, held)) = Box::pin(admit(stream, peer, way, &shared)).await else {
        return;
    };
    proxy::run(stream, start, shared.ctx.clone()).await;
    drop(held);
}

/// A session's place: one of the shared slots and one of its agent's
/// share, both given back when the session ends.
struct Held {
    _permit: tokio::sync::OwnedSemaphorePermit,
    _share: crate::limits::ShareGuard,
}

/// Finds the caller and the original destination, takes a connection slot,
/// detects the protocol and asks policy; `None` when the connection was
/// refused (and recorded as such).
async fn admit(
    stream: TcpStream,
    peer: SocketAddr,
    way: origin::Way,
    shared: &Shared,
) -> Option<(TcpStream, SessionStart, Held)> {
    let id = ConnId(shared.next_id.fetch_add(1, Ordering::Relaxed));
    let (record, via) = match origin::find(shared, way, &stream, peer).await {
        Ok(found) => found,
        Err(refused) => {
            let reason = refused.to_string();
            tracing::warn!(conn = %id, %peer, "refused: {reason}");
            refuse(stream);
            proxy::record_refusal(&shared.ctx.events, id, peer, None, &reason).await;
            return None;
        }
    };
    let identity = shared.resolver.resolve(&record);
    let agent = shared.ctx.gate.agent_of(&identity);
    // The agent's share first: a flooding agent is refused before it can
    // take the slots every agent shares.
    let share = match shared.ctx.limits.admit_connection(&agent) {
        Ok(share) => share,
        Err(refused) => {
            tracing::debug!(conn = %id, %peer, %agent, "refused: {}", refused.reason);
            refuse(stream);
            if refused.record {
                let caller = Some((&agent, &identity));
                proxy::record_refusal(&shared.ctx.events, id, peer, caller, &refused.reason).await;
            }
            return None;
        }
    };
    let Ok(permit) = shared.slots.clone().try_acquire_owned() else {
        tracing::warn!(conn = %id, %peer, "refused: connection limit reached");
        refuse(stream);
        let caller = Some((&agent, &identity));
        proxy::record_refusal(&shared.ctx.events, id, peer, caller, "connection limit reached").await;
        return None;
    };
    if let Err(e) = shared.ctx.events.accepting() {
        // Fail closed: what cannot be recorded is not served.
        tracing::warn!(conn = %id, %peer, "refused: {e}");
        refuse(stream);
        return None;
    }
    let _ = stream.set_nodelay(true);
    let orig_dst = identity::orig_dst(&record);
    if record.rule_slot == gateway_common::SLOT_DNS && matches!(way.arrival, Arrival::Redirect { nat: false }) {
        // DNS over TCP: judged question by question, never relayed.
        let caller = dns::tcp_caller(identity, agent, peer, orig_dst);
        let ctx = shared.ctx.clone();
        let held = Held {
            _permit: permit,
            _share: share,
        };
        shared.sessions.spawn(async move {
            crate::proxy::dns::serve_tcp(stream, caller, ctx).await;
            drop(held);
        });
        return None;
    }
    let targets = shared.ctx.gate.targets();
    // A target known by its address to speak HTTP(S) or PostgreSQL gets
    // the header timeout to start: its first bytes decide, not a pause.
    let wait = match targets.by_addr(orig_dst).map(|t| t.protocol) {
        None | Some(TargetProtocol::Tcp) => shared.detect_wait,
        Some(_) => shared.ctx.settings.header_timeout.max(shared.detect_wait),
    };
    let protocol = tokio::select! {
        protocol = detect::sniff(&stream, wait) => protocol,
        // The drain at shutdown is over: nothing new starts.
        () = shared.ctx.live.closed() => {
            refuse(stream);
            let caller = Some((&agent, &identity));
            proxy::record_refusal(&shared.ctx.events, id, peer, caller, "the gateway is shutting down").await;
            return None;
        }
    };
    let learned = shared.ctx.gate.learned.names(&agent, orig_dst.0.ip());
    let judged = targets
        .judge(orig_dst, protocol.host(), &shared.ctx.gate.names, &learned)
        .await;
    let verdict = shared.ctx.gate.connect(agent, &identity, orig_dst, &judged);
    tracing::debug!(
        conn = %id, via, pid = identity.pid, agent = %verdict.agent, dst = %orig_dst, target = %verdict.target.name,
        policy_generation = verdict.generation, ?protocol, outcome = ?verdict.decision.outcome, "accepted"
    );
    let start = SessionStart {
        id,
        identity,
        peer,
        orig_dst,
        time: audit::now(),
        protocol,
        judged,
        verdict,
    };
    Some((
        stream,
        start,
        Held {
            _permit: permit,
            _share: share,
        },
    ))
}

/// Closes with a reset, so the caller sees the refusal at once.
fn refuse(stream: TcpStream) {
    if let Ok(std) = stream.into_std() {
        let socket = socket2::Socket::from(std);
        let _ = socket.set_linger(Some(Duration::ZERO));
    }
}
