//! Asking an upstream server: over UDP for a question that came by UDP
//! (a truncated answer goes back as it is, and the agent retries over TCP,
//! which comes here too), over TCP for one that came by TCP. Each question
//! gets a fresh marked socket and an id of the gateway's own.
use std::time::Duration;

use ring::rand::SecureRandom;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{
    message::{self, Answer, Question},
    ProxyCtx,
};
use crate::{audit::DnsTransport, types::OrigDst};

/// Largest answer read from an upstream.
const MAX_ANSWER: usize = 65_535;

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
    let socket = ctx.net.udp(upstream).map_err(|e| e.to_string())?;
    socket.send(query).await.map_err(|e| format!("send: {e}"))?;
    let mut buf = vec![0u8; MAX_ANSWER];
    loop {
        let n = socket.recv(&mut buf).await.map_err(|e| format!("receive: {e}"))?;
        // A datagram for another id or question is ignored (a late answer,
        // or a spoof), as a stub resolver would; the timeout bounds the wait.
        if message::read_answer(&buf[..n], q, id).is_ok() {
            buf.truncate(n);
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
