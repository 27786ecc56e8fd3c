//! The upstream side of a session's start: connect, TLS when the target
//! wants it, StartupMessage as the configured role, and the login itself
//! with the held password (SCRAM-SHA-256, md5 or cleartext), driven by
//! postgres-protocol. Ends at the server's first ReadyForQuery.
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::{
    authentication::{
        md5_hash,
        sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256},
    },
    message::{backend::Message, frontend},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{wire::WireError, Io};
use crate::{config::UpstreamTls, proxy::ProxyCtx, types::OrigDst, types::Side};

/// Why the gateway could not log in upstream (upstream or gateway side; the
/// agent is told which, never the password).
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The database could not be reached (upstream side).
    #[error("cannot reach the database: {0}")]
    Connect(String),
    /// TLS was required and refused, or failed verification (upstream side).
    #[error("upstream TLS: {0}")]
    Tls(String),
    /// The database refused the login (upstream side).
    #[error("the database refused the gateway's login: {message} (SQLSTATE {code})")]
    Rejected {
        /// SQLSTATE.
        code: String,
        /// The server's message.
        message: String,
    },
    /// The target's credential is missing or unreadable (gateway side).
    #[error("{0}")]
    Credential(String),
    /// The server asked for an authentication method the gateway does not speak (upstream side).
    #[error("the database asked for unsupported authentication: {0}")]
    Method(String),
    /// The server broke the protocol (upstream side).
    #[error(transparent)]
    Wire(#[from] WireError),
}

impl LoginError {
    /// The upstream, or the gateway (its credential).
    pub fn side(&self) -> Side {
        match self {
            Self::Credential(_) => Side::Gateway,
            _ => Side::Upstream,
        }
    }
}

/// Why a query the gateway runs upstream for itself (the masked columns'
/// lookup, a pooled session's reset) failed. Upstream side.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The connection failed or the server broke the protocol.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The server answered with an error.
    #[error("the server refused it: {0}")]
    Refused(String),
    /// The server answered something the gateway did not ask for.
    #[error("{0}")]
    Unexpected(String),
}

impl From<std::io::Error> for QueryError {
    fn from(source: std::io::Error) -> Self {
        Self::Wire(WireError::Io { side: SIDE, source })
    }
}

/// What the login needs.
pub struct LoginSpec<'a> {
    /// Where the database is.
    pub addr: OrigDst,
    /// Name for TLS verification (the target's first host, else the address).
    pub tls_name: String,
    /// Upstream TLS mode.
    pub tls: UpstreamTls,
    /// Extra CA bundle.
    pub ca_file: Option<&'a std::path::Path>,
    /// Role.
    pub user: &'a str,
    /// Database.
    pub database: &'a str,
    /// Other startup parameters from the agent (application_name, options...).
    pub params: &'a [(String, String)],
    /// The held password, if the target has one.
    pub password: Option<Arc<crate::credentials::Credential>>,
}

/// A logged-in upstream session, at its first ReadyForQuery.
pub struct Upstream {
    /// The connection.
    pub io: Box<dyn Io>,
    /// Bytes read past the ReadyForQuery.
    pub buf: BytesMut,
    /// ParameterStatus and NoticeResponse messages, whole, to pass on.
    pub greeting: Vec<Bytes>,
    /// The server's cancel key (process id, secret).
    pub key: (i32, i32),
    /// The connection is TLS.
    pub tls: bool,
}

const SIDE: Side = Side::Upstream;

fn wire(e: std::io::Error) -> WireError {
    WireError::Io { side: SIDE, source: e }
}

/// Connects and logs in.
pub async fn login(spec: &LoginSpec<'_>, ctx: &Arc<ProxyCtx>) -> Result<Upstream, LoginError> {
    let (io, tls) = open(spec.addr, spec.tls, spec.ca_file, &spec.tls_name, ctx).await?;
    authenticate(io, tls, spec).await
}

/// Logs in on an open connection: the startup message, then whatever
/// authentication the server asks for, up to its first ReadyForQuery.
/// Apart from `open` so that it is tested on bytes alone.
pub async fn authenticate(io: Box<dyn Io>, tls: bool, spec: &LoginSpec<'_>) -> Result<Upstream, LoginError> {
    let mut io = io;
    let mut out = BytesMut::new();
    let mut params: Vec<(&str, &str)> = vec![("user", spec.user), ("database", spec.database)];
    params.extend(spec.params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    frontend::startup_message(params, &mut out).map_err(wire)?;
    io.write_all(&out).await.map_err(wire)?;
    let mut buf = BytesMut::new();
    let mut scram: Option<ScramSha256> = None;
    let mut greeting = Vec::new();
    let mut key = (0, 0);
    loop {
        let msg = next(&mut io, &mut buf).await?;
        out.clear();
        match msg {
            Message::AuthenticationOk => {}
            Message::AuthenticationCleartextPassword => {
                let password = password(spec).await?;
                frontend::password_message(password.as_bytes(), &mut out).map_err(wire)?;
            }
            Message::AuthenticationMd5Password(body) => {
                let password = password(spec).await?;
                let hash = md5_hash(spec.user.as_bytes(), password.as_bytes(), body.salt());
                frontend::password_message(hash.as_bytes(), &mut out).map_err(wire)?;
            }
            Message::AuthenticationSasl(body) => {
                let mut mechanisms = body.mechanisms();
                let mut offered = Vec::new();
                while let Some(m) = mechanisms.next().map_err(wire)? {
                    offered.push(m.to_owned());
                }
                if !offered.iter().any(|m| m == SCRAM_SHA_256) {
                    return Err(LoginError::Method(format!("SASL {}", offered.join(", "))));
                }
                let password = password(spec).await?;
                // Channel binding is not used: "n" tells a server that offers
                // SCRAM-SHA-256-PLUS that this client does not support it
                // (saying "y" would look like a downgrade attack).
                let s = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
                frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut out).map_err(wire)?;
                scram = Some(s);
            }
            Message::AuthenticationSaslContinue(body) => {
                let s = scram
                    .as_mut()
                    .ok_or_else(|| WireError::malformed(SIDE, "SASL continue before SASL start"))?;
                s.update(body.data())
                    .map_err(|e| WireError::malformed(SIDE, format!("SCRAM: {e}")))?;
                frontend::sasl_response(s.message(), &mut out).map_err(wire)?;
            }
            Message::AuthenticationSaslFinal(body) => {
                let s = scram
                    .as_mut()
                    .ok_or_else(|| WireError::malformed(SIDE, "SASL final before SASL start"))?;
                // Verifies the server's signature: it knew the password too.
                s.finish(body.data())
                    .map_err(|e| WireError::malformed(SIDE, format!("SCRAM server signature: {e}")))?;
            }
            Message::AuthenticationGss | Message::AuthenticationSspi | Message::AuthenticationKerberosV5 => {
                return Err(LoginError::Method("GSSAPI/SSPI/Kerberos".into()))
            }
            Message::ErrorResponse(body) => {
                let (code, message) = error_text(body.fields());
                return Err(LoginError::Rejected { code, message });
            }
            Message::ParameterStatus(body) => {
                let (name, value) = (body.name().map_err(wire)?, body.value().map_err(wire)?);
                greeting.push(parameter_status(name, value));
            }
            Message::NoticeResponse(_) => {}
            Message::BackendKeyData(body) => key = (body.process_id(), body.secret_key()),
            Message::ReadyForQuery(_) => {
                return Ok(Upstream {
                    io,
                    buf,
                    greeting,
                    key,
                    tls,
                })
            }
            _ => return Err(WireError::malformed(SIDE, "unexpected message during login").into()),
        }
        if !out.is_empty() {
            io.write_all(&out).await.map_err(wire)?;
        }
    }
}

/// Connects, asking for TLS per the mode. Returns the stream and whether it is TLS.
pub async fn open(
    addr: OrigDst,
    mode: UpstreamTls,
    ca_file: Option<&std::path::Path>,
    tls_name: &str,
    ctx: &Arc<ProxyCtx>,
) -> Result<(Box<dyn Io>, bool), LoginError> {
    let settings = &ctx.settings;
    let mut tcp = ctx
        .net
        .connect(addr)
        .await
        .map_err(|e| LoginError::Connect(e.to_string()))?;
    if mode == UpstreamTls::Disable {
        return Ok((Box::new(tcp), false));
    }
    let mut out = BytesMut::new();
    frontend::ssl_request(&mut out);
    tcp.write_all(&out).await.map_err(wire)?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await.map_err(wire)?;
    match (answer[0], mode) {
        (b'S', _) => {}
        (b'N', UpstreamTls::Prefer) => return Ok((Box::new(tcp), false)),
        (b'N', _) => {
            return Err(LoginError::Tls(
                "the database does not offer TLS and the target requires it".into(),
            ))
        }
        (other, _) => return Err(WireError::malformed(SIDE, format!("answered SSLRequest with byte {other}")).into()),
    }
    let base = ctx
        .net
        .upstream_tls(ca_file)
        .map_err(|e| LoginError::Tls(e.to_string()))?;
    let mut config = (*base).clone();
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    let name = rustls::pki_types::ServerName::try_from(tls_name.to_owned())
        .map_err(|e| LoginError::Tls(format!("bad server name {tls_name}: {e}")))?;
    let tls = tokio::time::timeout(
        settings.connect_timeout,
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .map_err(|_| LoginError::Tls("handshake timed out".into()))?
    .map_err(|e| LoginError::Tls(e.to_string()))?;
    Ok((Box::new(tls), true))
}

async fn password(spec: &LoginSpec<'_>) -> Result<String, LoginError> {
    let Some(credential) = spec.password.clone() else {
        return Err(LoginError::Credential(
            "the database asked for a password and the target has no credential".into(),
        ));
    };
    // A `command` credential runs a program: keep it off the async workers.
    tokio::task::spawn_blocking(move || credential.secret())
        .await
        .map_err(|e| LoginError::Credential(format!("credential task failed: {e}")))?
        .map_err(|e| LoginError::Credential(e.to_string()))
}

/// Reads the next backend message.
pub async fn next(io: &mut Box<dyn Io>, buf: &mut BytesMut) -> Result<Message, WireError> {
    loop {
        if super::wire::complete_len(buf, SIDE)?.is_some() {
            if let Some(msg) = Message::parse(buf).map_err(|e| WireError::malformed(SIDE, e.to_string()))? {
                return Ok(msg);
            }
        }
        if io.read_buf(buf).await.map_err(wire)? == 0 {
            return Err(WireError::malformed(SIDE, "connection closed"));
        }
    }
}

/// SQLSTATE and message of an ErrorResponse or NoticeResponse.
pub fn error_text(mut fields: postgres_protocol::message::backend::ErrorFields<'_>) -> (String, String) {
    let (mut code, mut message) = (String::new(), String::new());
    while let Ok(Some(field)) = fields.next() {
        let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
        match field.type_() {
            b'C' => code = value,
            b'M' => message = value,
            _ => {}
        }
    }
    (code, message)
}

fn parameter_status(name: &str, value: &str) -> Bytes {
    let mut out = BytesMut::new();
    super::wire::message(&mut out, b'S', |b| {
        super::wire::put_cstr(b, name.as_bytes());
        super::wire::put_cstr(b, value.as_bytes());
    });
    out.freeze()
}

#[cfg(test)]
mod tests;
