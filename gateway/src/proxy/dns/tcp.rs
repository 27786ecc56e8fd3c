//! DNS over TCP (RFC 7766): a connection an agent opened to port 53 carries
//! length-prefixed messages, answered one at a time in order. Anything that
//! is not DNS ends the connection at its first message: a TCP/53 listener
//! that is not a DNS server is never reached with the agent's bytes.
use std::{sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::{answer, DnsCaller, ProxyCtx};

/// How long a connection may sit between messages.
const IDLE: Duration = Duration::from_secs(10);

/// Serves one agent connection to port 53 until it closes, goes quiet, or
/// sends something that is not a DNS question.
pub async fn serve_tcp(mut stream: TcpStream, caller: DnsCaller, ctx: Arc<ProxyCtx>) {
    loop {
        let len = match tokio::time::timeout(IDLE, stream.read_u16()).await {
            Ok(Ok(len)) => len,
            _ => return,
        };
        let mut buf = vec![0u8; usize::from(len)];
        match tokio::time::timeout(IDLE, stream.read_exact(&mut buf)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let Some(reply) = answer(&ctx, &caller, &buf).await else {
            // Not DNS at all: nothing to answer, and nothing more is read.
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            return;
        };
        let Ok(reply_len) = u16::try_from(reply.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(reply.len() + 2);
        framed.extend_from_slice(&reply_len.to_be_bytes());
        framed.extend_from_slice(&reply);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}
