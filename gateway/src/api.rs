//! The operator HTTP API: the socket's operations (reviews, grants,
//! revocations, status) as JSON over HTTP for remote people. Every call but
//! `/openapi.json` needs an OIDC bearer token; what a caller may do follows
//! from the roles their groups hold. Actions are carried out by the same
//! code as the socket's, recorded with the person's issuer, subject and
//! e-mail.
use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};

use crate::{
    config::{ApiConfig, Roles},
    control::{handle_as, ControlState, Request as Op, Response as OpResult},
};

mod oidc;

pub use oidc::{AuthError, Verifier};

/// The OpenAPI description of this API.
pub const OPENAPI: &str = include_str!("api/openapi.json");

/// Why the API could not start (gateway side).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The address could not be bound.
    #[error("operator API on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS certificate or key is unusable.
    #[error("operator API TLS: {0}")]
    Tls(String),
    /// The issuer URL is unusable.
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// What a role may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Need {
    /// Read.
    View,
    /// Approve or deny reviews.
    Approve,
    /// Revoke or lift revocations.
    Respond,
    /// Grants, everything.
    Admin,
}

fn allowed(roles: &Roles, groups: &[String], need: Need) -> bool {
    let has = |role: &[String]| role.iter().any(|g| groups.contains(g));
    has(&roles.admin)
        || match need {
            Need::View => has(&roles.viewer) || has(&roles.approver) || has(&roles.responder),
            Need::Approve => has(&roles.approver),
            Need::Respond => has(&roles.responder),
            Need::Admin => false,
        }
}

struct Api {
    state: Arc<ControlState>,
    verifier: Verifier,
    roles: Roles,
}

fn json_response(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    r
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response<Full<Bytes>> {
    json_response(status, json!({"error": message.to_string()}))
}

/// Serves the API until the task is dropped.
pub async fn serve(config: ApiConfig, state: Arc<ControlState>, net: Arc<crate::net::Net>) -> Result<(), ApiError> {
    let Some(addr) = config.listen else { return Ok(()) };
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
        _ => None,
    };
    let api = Arc::new(Api {
        state,
        verifier: Verifier::new(net, &config)?,
        roles: config.roles.clone(),
    });
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ApiError::Bind { addr, source })?;
    tracing::info!(%addr, tls = tls.is_some(), "operator API listening");
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let (api, tls) = (api.clone(), tls.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let api = api.clone();
                async move { Ok::<_, Infallible>(api.handle(req).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let served = match tls {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(tls) => builder.serve_connection(TokioIo::new(tls), svc).await,
                    Err(e) => {
                        tracing::debug!(%peer, "operator API TLS handshake: {e}");
                        return;
                    }
                },
                None => builder.serve_connection(TokioIo::new(stream), svc).await,
            };
            if let Err(e) = served {
                tracing::debug!(%peer, "operator API connection: {e}");
            }
        });
    }
}

fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> Result<tokio_rustls::TlsAcceptor, ApiError> {
    let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| ApiError::Tls(format!("{}: {e}", p.display())));
    let certs = rustls_pemfile::certs(&mut read(cert)?.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::Tls(e.to_string()))?;
    let key = rustls_pemfile::private_key(&mut read(key)?.as_slice())
        .map_err(|e| ApiError::Tls(e.to_string()))?
        .ok_or_else(|| ApiError::Tls("no private key in the key file".into()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ApiError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ApiError::Tls(e.to_string()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Largest request body accepted.
const MAX_BODY: usize = 64 << 10;

impl Api {
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let (method, path) = (req.method().clone(), req.uri().path().to_owned());
        if method == Method::GET && path == "/openapi.json" {
            let mut r = Response::new(Full::new(Bytes::from_static(OPENAPI.as_bytes())));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
            return r;
        }
        let bearer = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned);
        let caller = match bearer {
            None => Err(AuthError::Missing),
            Some(t) => self.verifier.verify(t.trim()).await,
        };
        let caller = match caller {
            Ok(c) => c,
            Err(e @ AuthError::Issuer(_)) => {
                tracing::warn!("operator API: {e}");
                return error(StatusCode::SERVICE_UNAVAILABLE, e);
            }
            Err(e) => {
                tracing::info!(%path, "operator API refused a token: {e}");
                let mut r = error(StatusCode::UNAUTHORIZED, e);
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
                return r;
            }
        };
        let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("request body: {e}")),
        };
        let (op, need) = match route(&method, &path, &body) {
            Ok(found) => found,
            Err((status, message)) => return error(status, message),
        };
        if !allowed(&self.roles, &caller.groups, need) {
            tracing::info!(who = %caller.person.name, %path, "operator API: role missing");
            return error(
                StatusCode::FORBIDDEN,
                format!("{} lacks the role for this ({need:?})", caller.person.name),
            );
        }
        match handle_as(op, &self.state, caller.person).await {
            OpResult::Error { message } => error(StatusCode::CONFLICT, message),
            other => match serde_json::to_value(&other) {
                Ok(v) => json_response(StatusCode::OK, v),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
            },
        }
    }
}

/// A refusal before any operation ran: status and message.
type Refusal = (StatusCode, String);

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
    serde_json::from_slice(body).map_err(|e| (StatusCode::BAD_REQUEST, format!("request body: {e}")))
}

/// The operation a method and path name, and the role it needs.
fn route(method: &Method, path: &str, body: &[u8]) -> Result<(Op, Need), Refusal> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let found = match (method.as_str(), parts.as_slice()) {
        ("GET", ["v1", "status"]) => (Op::Status, Need::View),
        ("GET", ["v1", "reviews"]) => (Op::ApprovalsList, Need::View),
        ("GET", ["v1", "reviews", id]) => (Op::ApprovalShow { id: (*id).into() }, Need::View),
        ("POST", ["v1", "reviews", id, "approve"]) => {
            let scope = if body.is_empty() {
                crate::review::Scope::Once
            } else {
                parse::<crate::review::Scope>(body)?
            };
            (
                Op::Approve {
                    id: (*id).into(),
                    scope,
                },
                Need::Approve,
            )
        }
        ("POST", ["v1", "reviews", id, "deny"]) => {
            #[derive(serde::Deserialize)]
            struct Deny {
                reason: String,
            }
            let reason = parse::<Deny>(body)?.reason;
            (
                Op::Deny {
                    id: (*id).into(),
                    reason,
                },
                Need::Approve,
            )
        }
        ("GET", ["v1", "grants"]) => (Op::GrantsList, Need::View),
        ("POST", ["v1", "grants"]) => (Op::GrantAdd { grant: parse(body)? }, Need::Admin),
        ("DELETE", ["v1", "grants", id]) => (Op::GrantRevoke { id: (*id).into() }, Need::Admin),
        ("GET", ["v1", "revocations"]) => (Op::RevocationsList, Need::View),
        ("POST", ["v1", "revocations"]) => (Op::Revoke { revoke: parse(body)? }, Need::Respond),
        ("DELETE", ["v1", "revocations", id]) => (Op::Unrevoke { id: (*id).into() }, Need::Respond),
        _ => {
            return Err((
                StatusCode::NOT_FOUND,
                format!("no operation {method} {path} (see /openapi.json)"),
            ))
        }
    };
    Ok(found)
}
