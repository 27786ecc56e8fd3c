//! Asking an upstream server: over UDP for a question that came by UDP
//! (a truncated answer goes back as it is, and the agent retries over TCP,
//! which comes here too), over TCP for one that came by TCP. Each question
//! gets an id of the gateway's own and a marked socket: over UDP, an idle
//! one kept from an earlier question to the same server when there is one
//! (opening, marking, connecting, registering and closing a socket per
//! question was an eighth of the resolver's CPU), else a new one.
use std::{collections::HashMap, sync::Mutex, time::Duration};

use ring::rand::SecureRandom;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{
    message::{self, Answer, Question},
    ProxyCtx,
};
use crate::{audit::DnsTransport, types::OrigDst};

/// Largest answer read from an upstream.
const MAX_ANSWER: usize = 65_535;
/// Idle sockets kept per upstream server.
const IDLE_PER_UPSTREAM: usize = 32;

/// Connected UDP sockets to upstream servers, idle between questions.
#[derive(Default)]
pub struct UdpPool(Mutex<HashMap<OrigDst, Vec<tokio::net::UdpSocket>>>);

impl UdpPool {
    fn take(&self, ctx: &ProxyCtx, upstream: OrigDst) -> Result<tokio::net::UdpSocket, String> {
        let idle = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&upstream)
            .and_then(Vec::pop);
        match idle {
            Some(socket) => Ok(socket),
            None => ctx.net.udp(upstream).map_err(|e| e.to_string()),
        }
    }

    /// Keeps a socket whose exchange ended with its answer (one that timed
    /// out or failed is dropped: its late answer is nobody's).
    fn give(&self, upstream: OrigDst, socket: tokio::net::UdpSocket) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let idle = map.entry(upstream).or_default();
        if idle.len() < IDLE_PER_UPSTREAM {
            idle.push(socket);
        }
    }
}

fn fresh_id() -> Result<u16, String> {
    let mut id = [0u8; 2];
    ring::rand::SystemRandom::new()
        .fill(&mut id)
        .map_err(|_| "gateway: no randomness for a query id".to_owned())?;
    Ok(u16::from_ne_bytes(id))
}

/// Asks `upstreams` in order; the first that answers wins. Returns which
/// one, the answer's bytes (with the gateway's id) and what it says.
pub(super) async fn ask(
    ctx: &ProxyCtx,
    q: &Question,
    upstreams: &[OrigDst],
    transport: DnsTransport,
    timeout: Duration,
) -> Result<(OrigDst, Vec<u8>, Answer), String> {
    let mut last = String::from("no upstream configured");
    for &upstream in upstreams {
        let id = fresh_id()?;
        let query = message::upstream_query(q, id)?;
        let exchange = async {
            match transport {
                DnsTransport::Udp => udp(ctx, upstream, &query, q, id).await,
                DnsTransport::Tcp => tcp(ctx, upstream, &query).await,
            }
        };
        let bytes = match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(e)) => {
                last = format!("upstream {upstream}: {e}");
                continue;
            }
            Err(_) => {
                last = format!("upstream {upstream}: no answer within {timeout:?}");
                continue;
            }
        };
        match message::read_answer(&bytes, q, id) {
            Ok(answer) => return Ok((upstream, bytes, answer)),
            Err(e) => last = format!("upstream {upstream}: {e}"),
        }
    }
    Err(last)
}

async fn udp(ctx: &ProxyCtx, upstream: OrigDst, query: &[u8], q: &Question, id: u16) -> Result<Vec<u8>, String> {
    let pool = &ctx.dns.upstream_sockets;
    let socket = pool.take(ctx, upstream)?;
    socket.send(query).await.map_err(|e| format!("send: {e}"))?;
    // Filled by the kernel, not zeroed first (64 KiB a question otherwise).
    let mut buf = Vec::with_capacity(MAX_ANSWER);
    loop {
        buf.clear();
        socket.recv_buf(&mut buf).await.map_err(|e| format!("receive: {e}"))?;
        // A datagram for another id or question is ignored (a late answer,
        // or a spoof), as a stub resolver would; the timeout bounds the wait.
        if message::read_answer(&buf, q, id).is_ok() {
            pool.give(upstream, socket);
            return Ok(buf);
        }
    }
}

async fn tcp(ctx: &ProxyCtx, upstream: OrigDst, query: &[u8]) -> Result<Vec<u8>, String> {
    let mut stream = ctx.net.connect(upstream).await.map_err(|e| e.to_string())?;
    let len = u16::try_from(query.len()).map_err(|_| "query too long for TCP".to_owned())?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await.map_err(|e| format!("send: {e}"))?;
    let len = stream.read_u16().await.map_err(|e| format!("receive: {e}"))?;
    let mut buf = vec![0u8; usize::from(len)];
    stream.read_exact(&mut buf).await.map_err(|e| format!("receive: {e}"))?;
    Ok(buf)
}
