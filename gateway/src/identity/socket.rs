//! Who holds the other end of a loopback connection that did not pass the
//! kernel hooks (dialled explicitly, or sent by a NAT REDIRECT rule), so no
//! kernel record names its caller. sock_diag finds the client's socket by
//! its four-tuple (uid, inode, cookie: kernel facts), and /proc finds the
//! process holding that inode. Weaker than the kernel record in one way: a
//! socket inherited by several processes is attributed to the first found
//! (recent callers are looked at first).
use std::{
    collections::VecDeque,
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex},
};

use gateway_common::{ConnRecord, FAMILY_V4, FAMILY_V6};
use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
use netlink_packet_sock_diag::{
    constants::{AF_INET, AF_INET6, IPPROTO_TCP},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
    SockDiagMessage,
};
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket};

use crate::types::OrigDst;

/// Why the caller of a connection could not be found.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    /// The socket diagnostics request failed (gateway side).
    #[error("sock_diag: {0}")]
    Diag(String),
    /// The kernel knows no such socket: the caller already closed it, or it
    /// lives in another network namespace (agent side).
    #[error("no socket {client} -> {server} in the gateway's network namespace")]
    NoSocket {
        /// The caller's address.
        client: SocketAddr,
        /// The address it dialled.
        server: SocketAddr,
    },
    /// No process holds the socket any more (agent side).
    #[error("no process holds socket inode {0}")]
    NoProcess(u32),
    /// The caller is the gateway itself: a NAT rule sends the gateway's own
    /// upstream connections back to it (configuration).
    #[error("the connection comes from the gateway itself; exclude the gateway from the redirect rule")]
    Loop,
}

/// The kernel's facts about a client socket and the process holding it.
#[derive(Debug, Clone, Copy)]
pub struct SocketOwner {
    /// The holding process (tgid).
    pub pid: u32,
    /// The socket's uid.
    pub uid: u32,
    /// The socket's inode.
    pub inode: u32,
    /// The socket's cookie.
    pub cookie: u64,
}

/// Finds socket owners, looking at recent callers' descriptors first.
#[derive(Default)]
pub struct OwnerFinder {
    recent: Mutex<VecDeque<u32>>,
}

/// Recent callers remembered for the fast path.
const RECENT: usize = 16;

impl OwnerFinder {
    /// The owner of the connected socket `client` -> `server`, as the client
    /// sees it (for a NAT-redirected connection `server` is the original
    /// destination, not the listener).
    pub async fn find(self: &Arc<Self>, client: SocketAddr, server: SocketAddr) -> Result<SocketOwner, OwnerError> {
        let (uid, inode, cookie) = diag(client, server)?;
        let recent: Vec<u32> = self.lock().iter().copied().collect();
        let pid = match recent.into_iter().find(|pid| holds(*pid, inode)) {
            Some(pid) => pid,
            None => {
                // Every process's descriptors: off the async workers.
                tokio::task::spawn_blocking(move || crate::identity::all_pids().into_iter().find(|p| holds(*p, inode)))
                    .await
                    .map_err(|e| OwnerError::Diag(format!("scan task: {e}")))?
                    .ok_or(OwnerError::NoProcess(inode))?
            }
        };
        if pid == std::process::id() {
            return Err(OwnerError::Loop);
        }
        let mut recent = self.lock();
        recent.retain(|p| *p != pid);
        recent.push_front(pid);
        recent.truncate(RECENT);
        Ok(SocketOwner {
            pid,
            uid,
            inode,
            cookie,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<u32>> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl SocketOwner {
    /// A record like the one the kernel hooks write, from /proc: pid, uid
    /// (the socket's), gid, comm, cgroup; `dst` is where the caller meant to
    /// go. Also returns the ids of the caller's cgroup and its ancestors
    /// (for the revocation check). `None` when the process has gone.
    pub fn record(&self, dst: OrigDst, netns_cookie: u64, cgroup_mount: &Path) -> Option<(ConnRecord, Vec<u64>)> {
        let pid = self.pid;
        let comm = super::proc::comm(pid)?;
        let gid = super::proc::gid(pid)?;
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let path = super::proc::cgroup_v2_path(&cgroup)?;
        // Leaf first, then each ancestor up to the root of the hierarchy.
        let mut ancestry = Vec::new();
        let mut dir = cgroup_mount.join(path.trim_start_matches('/'));
        while dir.starts_with(cgroup_mount) {
            if let Ok(id) = crate::cgroup::id(&dir) {
                ancestry.push(id);
            }
            if !dir.pop() {
                break;
            }
        }
        let mut record = ConnRecord {
            cgroup_id: ancestry.first().copied().unwrap_or(0),
            socket_cookie: self.cookie,
            netns_cookie,
            // Now: the owner started before this, so the resolver's pid-reuse check holds.
            connect_boot_ns: super::boot_ns(),
            pid,
            tid: pid,
            uid: self.uid,
            gid,
            orig_port: dst.0.port(),
            rule_slot: u16::MAX,
            ..ConnRecord::default()
        };
        let name = comm.as_bytes();
        let n = name.len().min(record.comm.len() - 1);
        record.comm[..n].copy_from_slice(&name[..n]);
        match dst.0 {
            SocketAddr::V4(a) => {
                record.orig_family = FAMILY_V4;
                record.orig_addr[..4].copy_from_slice(&a.ip().octets());
            }
            SocketAddr::V6(a) => {
                record.orig_family = FAMILY_V6;
                record.orig_addr = a.ip().octets();
            }
        }
        Some((record, ancestry))
    }
}

/// Does process `pid` hold socket `inode`?
fn holds(pid: u32, inode: u32) -> bool {
    let want = format!("socket:[{inode}]");
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    dir.filter_map(Result::ok)
        .any(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.as_os_str() == want.as_str()))
}

/// The cookie of the connected socket `client` -> `server` (as the client
/// sees it), by an exact sock_diag lookup.
pub fn socket_cookie(client: SocketAddr, server: SocketAddr) -> Result<u64, OwnerError> {
    diag(client, server).map(|(_, _, cookie)| cookie)
}

/// (uid, inode, cookie) of one TCP socket, by an exact sock_diag lookup.
fn diag(client: SocketAddr, server: SocketAddr) -> Result<(u32, u32, u64), OwnerError> {
    let err = |what: &str, e: &dyn std::fmt::Display| OwnerError::Diag(format!("{what}: {e}"));
    let family = if client.is_ipv4() { AF_INET } else { AF_INET6 };
    if client.is_ipv4() != server.is_ipv4() {
        return Err(OwnerError::NoSocket { client, server });
    }
    let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(|e| err("socket", &e))?;
    socket.bind_auto().map_err(|e| err("bind", &e))?;
    socket
        .connect(&netlink_sys::SocketAddr::new(0, 0))
        .map_err(|e| err("connect", &e))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST;
    let mut request = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::all(),
            socket_id: SocketId {
                source_port: client.port(),
                destination_port: server.port(),
                source_address: client.ip(),
                destination_address: server.ip(),
                interface_id: 0,
                // All ones: "no cookie", match by the four-tuple alone.
                cookie: [0xff; 8],
            },
        })
        .into(),
    );
    request.finalize();
    let mut buf = vec![0u8; request.buffer_len()];
    request.serialize(&mut buf);
    socket.send(&buf, 0).map_err(|e| err("send", &e))?;
    let mut reply = Vec::with_capacity(4096);
    socket.recv(&mut reply, 0).map_err(|e| err("recv", &e))?;
    let message = NetlinkMessage::<SockDiagMessage>::deserialize(&reply).map_err(|e| err("parse", &e))?;
    match message.payload {
        NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
            let c = r.header.socket_id.cookie;
            let low = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]);
            let high = u32::from_ne_bytes([c[4], c[5], c[6], c[7]]);
            Ok((r.header.uid, r.header.inode, u64::from(high) << 32 | u64::from(low)))
        }
        NetlinkPayload::Error(e) if e.code.is_some() => Err(OwnerError::NoSocket { client, server }),
        other => Err(OwnerError::Diag(format!("unexpected reply {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn finds_its_own_client_socket_and_refuses_it_as_a_loop() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let server = listener.local_addr().unwrap();
        let client = std::net::TcpStream::connect(server).unwrap();
        let (accepted, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let (uid, inode, cookie) = diag(peer, server).unwrap();
        assert_eq!(uid, nix::unistd::getuid().as_raw());
        assert!(inode > 0 && cookie > 0);
        assert!(holds(std::process::id(), inode));
        // The gateway's own socket is a loop, never a caller.
        let finder = Arc::new(OwnerFinder::default());
        assert!(matches!(finder.find(peer, server).await, Err(OwnerError::Loop)));
        drop((client, accepted));
        let gone = "127.0.0.1:1".parse().unwrap();
        assert!(matches!(diag(gone, server), Err(OwnerError::NoSocket { .. })));
    }
}
