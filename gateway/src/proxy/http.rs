//! HTTP(S) inspection, in phases: request filter (policy on each request),
//! upstream request filter (credentials: the agent's placeholder is removed
//! and the real secret injected), upstream (a verified connection lent from
//! the pool for the exchange, HTTP/1.1 or HTTP/2 as negotiated), response
//! (streamed back unbuffered), logging (one event per exchange).
use std::{convert::Infallible, sync::Arc};

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::{counted::Counted, tls::LeafResolver, ProxyCtx, RelayStats, SessionStart};
use crate::{
    audit::Outcome,
    config::{TargetProtocol, TargetSpec},
    credentials::Credential,
    identity::Identity,
    policy::TargetRef,
    types::{AgentName, ConnId, OrigDst, Side, Wire},
};
use failure::Failure;

mod capture;
mod exchange;
mod failure;
mod headers;
mod held;
mod mask;
mod park;
mod pool;
mod ready;
mod upgrade;
mod vet;

pub use pool::Pool;

/// Bodies in both directions: streamed from the other side, or generated.
pub(super) type Body = BoxBody<Bytes, hyper::Error>;

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Body>),
    H2(hyper::client::conn::http2::SendRequest<Body>),
}

struct HttpSession {
    ctx: Arc<ProxyCtx>,
    conn_id: ConnId,
    agent: AgentName,
    identity: Identity,
    target: TargetRef,
    spec: Arc<TargetSpec>,
    upstream: OrigDst,
    /// Host to name upstream (SNI and :authority).
    host: String,
    /// The agent's TLS SNI: every request's name must match it.
    sni: Option<String>,
    credential: Option<Arc<Credential>>,
    /// Exchanges so far on this connection.
    exchanges: std::sync::atomic::AtomicU64,
}

impl HttpSession {
    fn pool_key(&self) -> pool::PoolKey {
        pool::PoolKey {
            upstream: self.upstream,
            host: self.host.clone(),
            tls: self.spec.protocol == TargetProtocol::Https,
            ca_file: self.spec.ca_file.clone(),
        }
    }
}

/// Serves one inspected connection until it ends or is cut. The session
/// is set up before the returned future is first polled, which then holds
/// only the stream and shared state: what an idle connection keeps.
/// `name` is the agent's name for the upstream when it may be used (see
/// [`crate::targets::Judged::session_name`]).
pub(super) fn serve(
    agent: TcpStream,
    start: &SessionStart,
    spec: Arc<TargetSpec>,
    upstream: OrigDst,
    name: Option<String>,
    ctx: &Arc<ProxyCtx>,
    stats: &Arc<RelayStats>,
) -> impl std::future::Future<Output = Outcome> + Send + 'static {
    let host = name
        .clone()
        .or_else(|| spec.hosts.first().filter(|h| !h.starts_with('*')).cloned())
        .unwrap_or_else(|| upstream.0.ip().to_string());
    let sni = match &start.protocol {
        crate::detect::Protocol::Tls { sni, .. } => sni.clone(),
        _ => None,
    };
    let wire = if spec.protocol == TargetProtocol::Https {
        Wire::Https
    } else {
        Wire::Http
    };
    let target = start.verdict.target.speaking(wire);
    let session = Arc::new(HttpSession {
        sni,
        ctx: ctx.clone(),
        conn_id: start.id,
        agent: start.verdict.agent.clone(),
        identity: start.identity.clone(),
        target,
        credential: spec.credential.as_ref().map(|c| ctx.credential(&spec.name, c)),
        spec,
        upstream,
        host,
        exchanges: std::sync::atomic::AtomicU64::new(0),
    });
    let acceptor = (session.spec.protocol == TargetProtocol::Https).then(|| {
        let fallback = start.orig_dst.0.ip();
        ctx.agent_tls(fallback, || tls_acceptor(ctx, fallback))
    });
    let plain_h2 = matches!(start.protocol, crate::detect::Protocol::Http2);
    let (stats, handshake_limit) = (stats.clone(), ctx.settings.connect_timeout);
    async move {
        let Some(acceptor) = acceptor else {
            return serve_conn(Counted::new(agent, stats.clone()), session, &stats, plain_h2).await;
        };
        let acceptor = match acceptor {
            Ok(a) => a,
            Err(e) => {
                return Outcome::Error {
                    side: Side::Gateway,
                    error: e.to_string(),
                }
            }
        };
        let tls = match handshake(acceptor, Counted::new(agent, stats.clone()), handshake_limit).await {
            // Boxed: the TLS state then has one place, whichever future holds it.
            Ok(Ok(tls)) => Box::new(tls),
            Ok(Err(e)) => {
                return Outcome::Error {
                    side: Side::Agent,
                    error: format!("TLS handshake: {e}"),
                }
            }
            Err(_) => {
                return Outcome::Error {
                    side: Side::Agent,
                    error: "TLS handshake timed out".into(),
                }
            }
        };
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
        serve_conn(tls, session, &stats, h2).await
    }
}

/// The agent-side TLS handshake, boxed: its room is freed once it is done
/// (built outside the session's future, which would otherwise keep room
/// for it while the connection lives).
fn handshake(
    acceptor: tokio_rustls::TlsAcceptor,
    io: Counted<TcpStream>,
    limit: std::time::Duration,
) -> std::pin::Pin<Box<tokio::time::Timeout<tokio_rustls::Accept<Counted<TcpStream>>>>> {
    Box::pin(tokio::time::timeout(limit, acceptor.accept(io)))
}

/// The agent-side TLS acceptor: leaf certificates from the local CA, named
/// by the client's SNI (or the original destination's address).
fn tls_acceptor(ctx: &ProxyCtx, fallback: std::net::IpAddr) -> Result<tokio_rustls::TlsAcceptor, rustls::Error> {
    let resolver = LeafResolver {
        ca: ctx.ca.clone(),
        fallback: fallback.to_string(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Serves HTTP on the agent's stream until it ends or is cut: HTTP/2 when
/// negotiated (or its preface arrives), otherwise HTTP/1.1, parked while
/// idle (see `park`).
async fn serve_conn<IO>(io: IO, session: Arc<HttpSession>, stats: &Arc<RelayStats>, h2: bool) -> Outcome
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let served = async {
        let settings = &session.ctx.settings;
        let header_timeout = settings.header_timeout;
        let (max_head, park_after) = (settings.max_request_head, settings.park_idle);
        let state = Arc::new(park::ParkState::default());
        let live = session.ctx.live.clone();
        // The exchange's future is boxed: hyper keeps room for the service's
        // future in every connection, idle or not, and ours is ~12 KB
        // (measured with jemalloc's heap profile, 1,000 idle connections).
        let svc = {
            let state = state.clone();
            service_fn(move |req| {
                let session = session.clone();
                let exchange = state.begin();
                Box::pin(
                    async move { Ok::<_, Infallible>(park::tracked(exchange::handle(req, &session).await, exchange)) },
                )
            })
        };
        let mut io = io;
        let ahead = if h2 {
            bytes::Bytes::new()
        } else {
            // Nothing of hyper's is held until the first request's bytes arrive.
            match tokio::time::timeout(header_timeout, park::next_bytes(&mut io)).await {
                Err(_) => return Err("no request within the header timeout".to_owned()),
                Ok(Err(e)) => return Err(e.to_string()),
                Ok(Ok(first)) if first.is_empty() => return Ok(park::Ended::Closed),
                Ok(Ok(first)) => first,
            }
        };
        if h2 || ahead.starts_with(H2_PREFACE) {
            let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            builder
                .timer(TokioTimer::new())
                .keep_alive_interval(Some(header_timeout))
                .keep_alive_timeout(header_timeout);
            let stream = park::Parkable::new(io, ahead, state);
            // Boxed: an HTTP/2 connection's state is large, and HTTP/1.1
            // sessions should not carry room for it.
            let mut conn = Box::pin(builder.serve_connection(TokioIo::new(stream), svc));
            let ended = tokio::select! {
                ended = conn.as_mut() => ended,
                () = live.draining() => {
                    // GOAWAY: streams in flight finish, no new ones open,
                    // and the connection closes once they are done.
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            ended.map(|()| park::Ended::Closed).map_err(|e| e.to_string())
        } else {
            let mut builder = hyper::server::conn::http1::Builder::new();
            // Slow or silent clients: a request head must arrive within the limit.
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                // Bounds the request head, and the read buffer hyper keeps
                // per connection (see `listener.max_request_head`).
                .max_buf_size(max_head);
            let h1 = park::H1 {
                builder,
                service: svc,
                park_after,
                header_timeout,
                state,
                stats: stats.clone(),
            };
            park::serve_h1(io, ahead, h1).await
        }
    };
    tokio::select! {
        result = served => match result {
            Ok(park::Ended::Closed) => Outcome::Closed,
            Ok(park::Ended::IdleTimeout) => Outcome::IdleTimeout,
            Err(error) => Outcome::Error { side: Side::Agent, error },
        },
        () = stats.cut_notified() => stats.cut_outcome(),
    }
}

/// What an HTTP/2 client sends first (RFC 9113, 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

pub(super) fn json_response(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    let body = Full::new(Bytes::from(value.to_string()))
        .map_err(|never| match never {})
        .boxed();
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// Sends one request upstream on a connection from the pool (or a new one)
/// and returns the response with the connection riding on its body.
async fn forward(mut req: Request<Body>, s: &HttpSession) -> Result<Response<Body>, Failure> {
    let key = s.pool_key();
    for attempt in 0..2 {
        // The retry always opens a new connection.
        let pooled = if attempt == 0 { s.ctx.pool.checkout(&key) } else { None };
        let mut sender = match pooled {
            Some(reused) => reused,
            None => connect(s, false).await?,
        };
        let ready = match &mut sender {
            Sender::H1(tx) => tokio::time::timeout(s.ctx.settings.connect_timeout, tx.ready()).await,
            Sender::H2(tx) => tokio::time::timeout(s.ctx.settings.connect_timeout, tx.ready()).await,
        };
        if !matches!(ready, Ok(Ok(()))) {
            // The upstream closed the idle connection: once more, on a new one.
            if attempt == 0 {
                continue;
            }
            return Err(Failure::Exchange("upstream connection closed".into()));
        }
        let h2 = matches!(sender, Sender::H2(_));
        set_target_uri(&mut req, &s.host, h2)?;
        return match sender {
            Sender::H2(mut tx) => {
                let sent = tx.send_request(req);
                // Shared at once: HTTP/2 carries many exchanges together.
                s.ctx.pool.checkin(key, Sender::H2(tx));
                let mut resp = sent.await.map_err(|e| Failure::Exchange(e.to_string()))?;
                headers::strip_hop_by_hop(resp.headers_mut(), false);
                Ok(resp.map(|b| b.boxed()))
            }
            Sender::H1(mut tx) => {
                let mut resp = (tx.send_request(req).await).map_err(|e| Failure::Exchange(e.to_string()))?;
                // The upstream connection's own headers stay with it: an
                // upstream that closes after each response must not close
                // the agent's kept-alive connection too.
                headers::strip_hop_by_hop(resp.headers_mut(), false);
                // Back to the pool when this body has been read to its end.
                let pool = s.ctx.pool.clone();
                Ok(resp.map(|b| pool::Lent::new(b.boxed(), pool, key, Sender::H1(tx)).boxed()))
            }
        };
    }
    Err(Failure::Exchange("upstream unavailable".into()))
}

/// Origin-form plus Host for HTTP/1.1 upstreams; absolute for HTTP/2.
fn set_target_uri(req: &mut Request<Body>, host: &str, h2: bool) -> Result<(), Failure> {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let authority = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_else(|| host.to_owned());
    let uri: Uri = if h2 {
        format!("https://{authority}{path}").parse()
    } else {
        path.parse()
    }
    .map_err(|e| Failure::Address(format!("bad request target: {e}")))?;
    *req.uri_mut() = uri;
    if h2 {
        req.headers_mut().remove(header::HOST);
        *req.version_mut() = http::Version::HTTP_2;
    } else {
        let value = HeaderValue::from_str(&authority).map_err(|e| Failure::Address(format!("Host: {e}")))?;
        req.headers_mut().insert(header::HOST, value);
        *req.version_mut() = http::Version::HTTP_11;
    }
    Ok(())
}

/// Opens an upstream connection; `h1_only` for upgrades (WebSocket).
async fn connect(s: &HttpSession, h1_only: bool) -> Result<Sender, Failure> {
    let settings = &s.ctx.settings;
    let tcp = s.ctx.net.connect(s.upstream).await?;
    if s.spec.protocol != TargetProtocol::Https {
        return h1(TokioIo::new(tcp)).await;
    }
    let mut config = s.ctx.net.upstream_tls(s.spec.ca_file.as_deref())?;
    if h1_only {
        let mut only_h1 = (*config).clone();
        only_h1.alpn_protocols = vec![b"http/1.1".to_vec()];
        config = Arc::new(only_h1);
    }
    let name = rustls::pki_types::ServerName::try_from(s.host.clone())
        .map_err(|e| Failure::Tls(format!("bad upstream name {}: {e}", s.host)))?;
    let tls = tokio::time::timeout(
        settings.connect_timeout,
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .map_err(|_| Failure::Tls("handshake timed out".to_owned()))?
    .map_err(|e| Failure::Tls(e.to_string()))?;
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    if h2 {
        let (tx, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .map_err(|e| Failure::Exchange(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("upstream h2 connection ended: {e}");
            }
        });
        Ok(Sender::H2(tx))
    } else {
        h1(TokioIo::new(tls)).await
    }
}

async fn h1<IO>(io: TokioIo<IO>) -> Result<Sender, Failure>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (tx, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| Failure::Exchange(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!("upstream h1 connection ended: {e}");
        }
    });
    Ok(Sender::H1(tx))
}
