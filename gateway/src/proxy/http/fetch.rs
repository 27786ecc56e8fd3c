//! One HTTP(S) request made by the gateway itself (an OAuth2 token request):
//! a marked socket, verified TLS, HTTP/1.1. Used as oauth2's HTTP client.
use std::path::Path;

use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use super::super::{connect_upstream, ProxyCtx};
use crate::types::OrigDst;

/// Why the gateway's own request failed (upstream side, or gateway side for TLS setup).
#[derive(Debug, thiserror::Error)]
#[error("token request: {0}")]
pub struct FetchError(pub String);

/// Sends `req` (absolute URI) and returns the whole response.
pub(crate) async fn fetch(
    ctx: &ProxyCtx,
    ca_file: Option<&Path>,
    req: http::Request<Vec<u8>>,
) -> Result<http::Response<Vec<u8>>, FetchError> {
    let err = |m: String| FetchError(m);
    let uri = req.uri().clone();
    let host = uri
        .host()
        .ok_or_else(|| err(format!("no host in {uri}")))?
        .trim_matches(['[', ']'])
        .to_owned();
    let https = uri.scheme_str() == Some("https");
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let addr = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| err(format!("resolving {host}: {e}")))?
        .next()
        .ok_or_else(|| err(format!("{host} has no address")))?;
    let settings = &ctx.settings;
    let tcp = connect_upstream(OrigDst(addr), settings.bypass_mark, settings.connect_timeout)
        .await
        .map_err(|e| err(e.to_string()))?;
    let (mut parts, body) = req.into_parts();
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = path.parse().map_err(|e| err(format!("{e}")))?;
    parts.headers.insert(
        http::header::HOST,
        http::HeaderValue::from_str(&host).map_err(|e| err(e.to_string()))?,
    );
    let req = http::Request::from_parts(parts, Full::new(bytes::Bytes::from(body)));
    let resp = if https {
        let mut config = (*ctx.upstream_tls(ca_file).map_err(|e| err(e.to_string()))?).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| err(e.to_string()))?;
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| err(format!("TLS: {e}")))?;
        send(TokioIo::new(tls), req).await?
    } else {
        send(TokioIo::new(tcp), req).await?
    };
    Ok(resp)
}

async fn send<IO>(
    io: TokioIo<IO>,
    req: http::Request<Full<bytes::Bytes>>,
) -> Result<http::Response<Vec<u8>>, FetchError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut tx, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| FetchError(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = tx.send_request(req).await.map_err(|e| FetchError(e.to_string()))?;
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| FetchError(e.to_string()))?
        .to_bytes()
        .to_vec();
    Ok(http::Response::from_parts(parts, body))
}

/// Fetches an access token with the client-credentials grant; returns it and
/// its lifetime. Errors never contain the client secret.
/// The gateway's own HTTP client for oauth2 and openidconnect: a marked
/// socket and verified TLS; owns what it needs, and its futures are `Send`.
pub struct GatewayHttp {
    ctx: std::sync::Arc<ProxyCtx>,
    ca_file: Option<std::path::PathBuf>,
}

impl GatewayHttp {
    /// A client trusting the system roots plus `ca_file`.
    pub fn new(ctx: std::sync::Arc<ProxyCtx>, ca_file: Option<std::path::PathBuf>) -> Self {
        Self { ctx, ca_file }
    }
}

type TokenFuture<'c> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<http::Response<Vec<u8>>, FetchError>> + Send + 'c>>;

impl<'c> oauth2::AsyncHttpClient<'c> for GatewayHttp {
    type Error = FetchError;
    type Future = TokenFuture<'c>;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(fetch(&self.ctx, self.ca_file.as_deref(), request))
    }
}

pub(crate) async fn client_credentials(
    ctx: &std::sync::Arc<ProxyCtx>,
    spec: &crate::config::OAuth2Spec,
) -> Result<(String, std::time::Duration), String> {
    use oauth2::{basic::BasicClient, ClientId, ClientSecret, Scope, TokenResponse, TokenUrl};
    let secret = std::fs::read_to_string(&spec.client_secret_file)
        .map_err(|e| format!("client secret {}: {}", spec.client_secret_file.display(), e.kind()))?;
    let client = BasicClient::new(ClientId::new(spec.client_id.clone()))
        .set_client_secret(ClientSecret::new(secret.trim().to_owned()))
        .set_token_uri(TokenUrl::new(spec.token_url.clone()).map_err(|e| e.to_string())?);
    let http = GatewayHttp::new(ctx.clone(), spec.ca_file.clone());
    let mut request = client.exchange_client_credentials();
    for scope in &spec.scopes {
        request = request.add_scope(Scope::new(scope.clone()));
    }
    let token = request.request_async(&http).await.map_err(|e| match e {
        oauth2::RequestTokenError::ServerResponse(r) => format!("token endpoint refused: {}", r.error()),
        oauth2::RequestTokenError::Request(e) => e.to_string(),
        oauth2::RequestTokenError::Parse(e, _) => format!("token endpoint answer: {e}"),
        oauth2::RequestTokenError::Other(m) => m,
    })?;
    let lifetime = token.expires_in().unwrap_or(std::time::Duration::from_secs(3600));
    Ok((token.access_token().secret().clone(), lifetime))
}
