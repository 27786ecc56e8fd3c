//! The agent side of a session's start: SSLRequest (refused, or TLS
//! terminated with a certificate from the local CA), GSSENCRequest
//! (refused), CancelRequest, and the StartupMessage. No password is asked
//! for: the agent is known by its kernel identity, and the gateway logs in
//! upstream with credentials only it holds.
use std::sync::Arc;

use tokio::io::AsyncWriteExt;

use super::{
    wire::{self, Hello, WireError},
    Io,
};
use crate::{
    config::AgentTls,
    proxy::{tls::LeafResolver, ProxyCtx},
    types::Side,
};

/// What the agent opened the connection for.
pub enum Opening {
    /// A session, with its startup parameters.
    Session {
        /// The (possibly TLS) stream.
        io: Box<dyn Io>,
        /// TLS was terminated by the gateway.
        tls: bool,
        /// Minor protocol version asked for.
        minor: u16,
        /// Startup parameters, in order.
        params: Vec<(String, String)>,
    },
    /// A CancelRequest with the key the agent was given.
    Cancel {
        /// The agent's connection, held open until the cancel has been
        /// delivered: a client's cancel returns when the server closes it,
        /// and must not return before the backend has been signalled.
        io: Box<dyn Io>,
        /// Process id the agent saw.
        pid: i32,
        /// Secret key the agent saw.
        key: i32,
    },
    /// The agent left before sending a startup message.
    Closed,
}

/// A startup failure, with the stream when an error can still be sent.
pub type StartError = (WireError, Option<Box<dyn Io>>);

/// Reads the agent's opening messages.
pub async fn accept(
    mut io: Box<dyn Io>,
    agent_tls: AgentTls,
    fallback_name: String,
    ctx: &Arc<ProxyCtx>,
) -> Result<Opening, StartError> {
    let mut tls = false;
    // At most: GSSENCRequest, SSLRequest, then the startup message.
    for _ in 0..3 {
        let body = match wire::read_startup(&mut io).await {
            Ok(Some(body)) => body,
            Ok(None) => return Ok(Opening::Closed),
            Err(e) => return Err((e, Some(io))),
        };
        let hello = match wire::parse_hello(&body) {
            Ok(h) => h,
            Err(e) => return Err((e, Some(io))),
        };
        let write_err = |e: std::io::Error| WireError::Io {
            side: Side::Agent,
            source: e,
        };
        match hello {
            Hello::Gss => {
                // No GSS encryption here; the agent may go on with SSL or plaintext.
                io.write_all(b"N").await.map_err(|e| (write_err(e), None))?;
            }
            Hello::Ssl if tls => {
                return Err((WireError::malformed(Side::Agent, "SSLRequest inside TLS"), None));
            }
            Hello::Ssl if agent_tls == AgentTls::Refuse => {
                io.write_all(b"N").await.map_err(|e| (write_err(e), None))?;
            }
            Hello::Ssl => {
                io.write_all(b"S").await.map_err(|e| (write_err(e), None))?;
                io = terminate_tls(io, fallback_name.clone(), ctx)
                    .await
                    .map_err(|e| (e, None))?;
                tls = true;
            }
            Hello::Cancel { pid, key } => return Ok(Opening::Cancel { io, pid, key }),
            Hello::Startup { minor, params } => return Ok(Opening::Session { io, tls, minor, params }),
        }
    }
    Err((
        WireError::malformed(Side::Agent, "too many requests before the startup message"),
        Some(io),
    ))
}

async fn terminate_tls(io: Box<dyn Io>, fallback: String, ctx: &Arc<ProxyCtx>) -> Result<Box<dyn Io>, WireError> {
    let resolver = LeafResolver {
        ca: ctx.ca.clone(),
        fallback,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| WireError::malformed(Side::Agent, format!("TLS setup: {e}")))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    // libpq 17 and later name the protocol in ALPN.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    let accept = tokio_rustls::TlsAcceptor::from(Arc::new(config)).accept(io);
    match tokio::time::timeout(ctx.settings.connect_timeout, accept).await {
        Ok(Ok(tls)) => Ok(Box::new(tls)),
        Ok(Err(e)) => Err(WireError::Io {
            side: Side::Agent,
            source: e,
        }),
        Err(_) => Err(WireError::malformed(Side::Agent, "TLS handshake timed out")),
    }
}
