//! One HTTP(S) request made by the gateway itself (an OAuth2 token request,
//! OIDC discovery, a review webhook): a marked socket, verified TLS,
//! HTTP/1.1. Also oauth2's and openidconnect's HTTP client.
use std::path::Path;

use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use super::Net;
use crate::types::OrigDst;

/// Why the gateway's own request failed (upstream side, or gateway side for TLS setup).
#[derive(Debug, thiserror::Error)]
#[error("gateway request: {0}")]
pub struct FetchError(pub String);

/// Sends `req` (absolute URI) and returns the whole response.
pub(super) async fn fetch(
    net: &Net,
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
    let tcp = net.connect(OrigDst(addr)).await.map_err(|e| err(e.to_string()))?;
    let (mut parts, body) = req.into_parts();
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = path.parse().map_err(|e| err(format!("{e}")))?;
    parts.headers.insert(
        http::header::HOST,
        http::HeaderValue::from_str(&host).map_err(|e| err(e.to_string()))?,
    );
    let req = http::Request::from_parts(parts, Full::new(bytes::Bytes::from(body)));
    let resp = if https {
        let mut config = (*net.upstream_tls(ca_file).map_err(|e| err(e.to_string()))?).clone();
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

/// The gateway's own HTTP client for oauth2 and openidconnect: a marked
/// socket and verified TLS; owns what it needs, and its futures are `Send`.
pub struct GatewayHttp {
    net: std::sync::Arc<Net>,
    ca_file: Option<std::path::PathBuf>,
}

impl GatewayHttp {
    /// A client trusting the system roots plus `ca_file`.
    pub fn new(net: std::sync::Arc<Net>, ca_file: Option<std::path::PathBuf>) -> Self {
        Self { net, ca_file }
    }

    /// Sends `req` (absolute URI) and returns the whole response.
    pub async fn send(&self, req: http::Request<Vec<u8>>) -> Result<http::Response<Vec<u8>>, FetchError> {
        fetch(&self.net, self.ca_file.as_deref(), req).await
    }
}

type FetchFuture<'c> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<http::Response<Vec<u8>>, FetchError>> + Send + 'c>>;

impl<'c> oauth2::AsyncHttpClient<'c> for GatewayHttp {
    type Error = FetchError;
    type Future = FetchFuture<'c>;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}
