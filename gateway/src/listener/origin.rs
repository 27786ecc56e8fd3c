//! Where an accepted connection came from and where it meant to go.
//!
//! - Kernel redirect: the record sock_ops published for the agent's socket
//!   (caller and destination are kernel facts taken at connect()).
//! - NAT redirect (`listener.nat_redirect`): the destination from conntrack
//!   (SO_ORIGINAL_DST), the caller from sock_diag and /proc.
//! - Explicit listener: the destination is the listener's, the caller from
//!   sock_diag and /proc.
//!
//! The last two never passed the kernel hooks, so the revocation checks the
//! hooks make are made here. Anything that cannot be established is refused.
use std::{net::SocketAddr, time::Duration};

use gateway_common::{ConnRecord, HandoffKey};
use tokio::net::TcpStream;

use super::{handoff_key, Arrival, Shared};
use crate::types::OrigDst;

/// What the accept loop knows about the listener a connection came in on.
#[derive(Debug, Clone, Copy)]
pub struct Way {
    /// The listener's network namespace.
    pub netns_cookie: u64,
    /// How connections reach it.
    pub arrival: Arrival,
}

/// Why a connection to the listener is refused before it is judged: its
/// caller cannot be found, or must not be served.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    /// The listener socket's own address is unavailable (gateway side).
    #[error("listener address: {0}")]
    Listener(std::io::Error),
    /// A redirect listener got a connection no kernel hook recorded.
    #[error("no kernel record for this connection (dialled the listener directly?)")]
    NoKernelRecord,
    /// sock_diag or /proc did not name the caller.
    #[error("caller unknown: {0}")]
    Unknown(String),
    /// The caller exited before it could be named.
    #[error("caller unknown: process {0} exited")]
    Exited(u32),
    /// The caller is revoked (what the kernel hooks would have refused).
    #[error("{0}")]
    Revoked(String),
}

/// The caller's record and how the connection arrived (`kernel`, `nat`,
/// `explicit`), or why it is refused.
pub async fn find(
    shared: &Shared,
    way: Way,
    stream: &TcpStream,
    peer: SocketAddr,
) -> Result<(ConnRecord, &'static str), OriginError> {
    let local = stream.local_addr().map_err(OriginError::Listener)?;
    match way.arrival {
        Arrival::Explicit(dst) => owner_record(shared, way, peer, local, dst)
            .await
            .map(|r| (r, "explicit")),
        Arrival::Redirect { nat } => {
            if nat {
                if let Some(dst) = nat_destination(stream, local) {
                    return owner_record(shared, way, peer, dst.0, dst).await.map(|r| (r, "nat"));
                }
            }
            match kernel_record(shared, &handoff_key(way.netns_cookie, peer), peer, local).await {
                Some(record) => Ok((record, "kernel")),
                None => Err(OriginError::NoKernelRecord),
            }
        }
    }
}

async fn kernel_record(shared: &Shared, key: &HandoffKey, peer: SocketAddr, local: SocketAddr) -> Option<ConnRecord> {
    // sock_ops publishes at ESTABLISHED, before the server side can accept, so
    // the first try normally succeeds.
    if let Some(record) = shared.handoff.take(key) {
        return Some(record);
    }
    // Under bursts of connects a hand-off entry has been seen missing (about
    // one in a few thousand; the kernel's map update failing is the likely
    // cause). The socket's own record, written at connect() and keyed by its
    // cookie, is as authoritative: find the cookie with sock_diag.
    if let Ok(cookie) = crate::identity::socket_cookie(peer, local) {
        if let Some(record) = shared.kernel.socket_record(cookie) {
            tracing::info!(%peer, cookie, "hand-off entry missing; record found by socket cookie");
            let _ = shared.handoff.take(key);
            return Some(record);
        }
    }
    for wait_ms in [2, 4, 8] {
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        if let Some(record) = shared.handoff.take(key) {
            return Some(record);
        }
    }
    None
}

/// The pre-NAT destination, when a NAT rule changed it. A connection the
/// kernel hooks redirected (or one dialled straight at the listener) has
/// the listener itself as its conntrack destination: `None`.
fn nat_destination(stream: &TcpStream, local: SocketAddr) -> Option<OrigDst> {
    let socket = socket2::SockRef::from(stream);
    let original = if local.is_ipv4() {
        socket.original_dst()
    } else {
        socket.original_dst_ipv6()
    };
    let dst = original.ok()?.as_socket()?;
    let dst = SocketAddr::new(dst.ip().to_canonical(), dst.port());
    (dst != local).then_some(OrigDst(dst))
}

/// A record for a caller found through sock_diag and /proc, after the
/// revocation checks the kernel hooks would have made. `dialled` is the
/// address the caller's socket is connected to.
async fn owner_record(
    shared: &Shared,
    way: Way,
    peer: SocketAddr,
    dialled: SocketAddr,
    dst: OrigDst,
) -> Result<ConnRecord, OriginError> {
    let owner = (shared.owners.find(peer, dialled).await).map_err(|e| OriginError::Unknown(e.to_string()))?;
    let (record, cgroups) = owner
        .record(dst, way.netns_cookie, &shared.cgroup_mount)
        .ok_or(OriginError::Exited(owner.pid))?;
    if let Some(why) = shared.kernel.refusal(record.pid, record.uid, &cgroups) {
        return Err(OriginError::Revoked(why));
    }
    Ok(record)
}
