//! Connecting to the original destination. Every upstream socket carries the
//! bypass mark before connect(), which is how the kernel hooks know it is the
//! gateway's own and must not be redirected back to the listener.
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpSocket, TcpStream};

use crate::types::OrigDst;

/// Errors reaching the upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The socket could not be made or marked (gateway side).
    #[error("gateway: preparing upstream socket: {0}")]
    Socket(std::io::Error),
    /// connect() failed (upstream side).
    #[error("upstream {dst}: connect: {source}")]
    Connect {
        /// Destination.
        dst: OrigDst,
        /// The error.
        source: std::io::Error,
    },
    /// connect() did not finish in time (upstream side).
    #[error("upstream {dst}: connect timed out after {timeout:?}")]
    Timeout {
        /// Destination.
        dst: OrigDst,
        /// The limit.
        timeout: Duration,
    },
}

/// Opens a marked TCP connection to `dst`.
pub async fn connect_upstream(dst: OrigDst, mark: u32, timeout: Duration) -> Result<TcpStream, UpstreamError> {
    let domain = if dst.0.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
    let socket = Socket::new(domain, Type::STREAM.nonblocking().cloexec(), Some(Protocol::TCP))
        .map_err(UpstreamError::Socket)?;
    socket.set_mark(mark).map_err(UpstreamError::Socket)?;
    socket.set_nodelay(true).map_err(UpstreamError::Socket)?;
    let socket = TcpSocket::from_std_stream(socket.into());
    match tokio::time::timeout(timeout, socket.connect(dst.0)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(source)) => Err(UpstreamError::Connect { dst, source }),
        Err(_) => Err(UpstreamError::Timeout { dst, timeout }),
    }
}

/// Opens a marked UDP socket connected to `dst` (a fresh source port each
/// time, so answers to one question cannot be spoofed for another).
pub fn udp_upstream(dst: OrigDst, mark: u32) -> Result<tokio::net::UdpSocket, UpstreamError> {
    let domain = if dst.0.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
    let socket =
        Socket::new(domain, Type::DGRAM.nonblocking().cloexec(), Some(Protocol::UDP)).map_err(UpstreamError::Socket)?;
    socket.set_mark(mark).map_err(UpstreamError::Socket)?;
    socket
        .connect(&dst.0.into())
        .map_err(|source| UpstreamError::Connect { dst, source })?;
    tokio::net::UdpSocket::from_std(socket.into()).map_err(UpstreamError::Socket)
}
