//! The gateway's own network client, below everything that talks to the
//! network: marked upstream sockets (the kernel hooks let them through),
//! verified upstream TLS, and one-shot HTTP(S) requests (OAuth2 tokens, OIDC
//! discovery, review webhooks). The proxy, the audit store's PostgreSQL
//! client, review and the API all reach the network through here, so none of
//! them needs another's state to do so.
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::net::TcpStream;

use crate::types::OrigDst;

mod built;
mod connect;
mod fetch;
mod tls;

pub use built::Built;
pub use connect::{connect_upstream, UpstreamError};
pub use fetch::{FetchError, GatewayHttp};
pub use tls::{upstream_config, TlsConfigError, UpstreamTls};

/// What every outbound connection of the gateway shares: the bypass mark,
/// the connect timeout, and the upstream TLS configs built so far.
pub struct Net {
    mark: u32,
    connect_timeout: Duration,
    upstream_tls: Built<Option<PathBuf>, UpstreamTls>,
}

impl Net {
    /// Connections marked `mark`, given up after `connect_timeout`.
    pub fn new(mark: u32, connect_timeout: Duration) -> Self {
        Self {
            mark,
            connect_timeout,
            upstream_tls: Built::default(),
        }
    }

    /// A marked UDP socket connected to `dst`.
    pub fn udp(&self, dst: OrigDst) -> Result<tokio::net::UdpSocket, UpstreamError> {
        connect::udp_upstream(dst, self.mark)
    }

    /// Opens a marked TCP connection to `dst`.
    pub async fn connect(&self, dst: OrigDst) -> Result<TcpStream, UpstreamError> {
        connect_upstream(dst, self.mark, self.connect_timeout).await
    }

    /// The upstream TLS client config for a CA bundle (built once, then shared).
    pub fn upstream_tls(&self, ca_file: Option<&Path>) -> Result<UpstreamTls, TlsConfigError> {
        self.upstream_tls
            .get_or_build(ca_file.map(Path::to_owned), || upstream_config(ca_file))
    }
}
