//! Upgrades (WebSocket): once the request is allowed and its credential
//! injected, it goes to the upstream on a connection of its own (HTTP/1.1,
//! which upgrades need); on `101 Switching Protocols` both sides are joined
//! and bytes flow untouched until either closes.
use http::{header, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;

use super::{connect, failure::Failure, set_target_uri, Body, HttpSession, Sender};

/// Whether the request asks to switch protocols.
pub(super) fn is_upgrade<B>(req: &Request<B>) -> bool {
    let connection_upgrade = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")));
    connection_upgrade && req.headers().contains_key(header::UPGRADE)
}

/// Sends an upgrade request upstream and, on 101, joins the two upgraded streams.
pub(super) async fn forward(mut req: Request<Body>, s: &HttpSession) -> Result<Response<Body>, Failure> {
    let agent_side = hyper::upgrade::on(&mut req);
    let Sender::H1(mut tx) = connect(s, true).await? else {
        return Err(Failure::Exchange(
            "upstream refused HTTP/1.1, which upgrades need".into(),
        ));
    };
    set_target_uri(&mut req, &s.host, false)?;
    tx.ready().await.map_err(|e| Failure::Exchange(e.to_string()))?;
    let mut resp = (tx.send_request(req).await).map_err(|e| Failure::Exchange(e.to_string()))?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Ok(resp.map(|b| b.boxed()));
    }
    let upstream_side = hyper::upgrade::on(&mut resp);
    let conn = s.conn_id;
    tokio::spawn(async move {
        match (agent_side.await, upstream_side.await) {
            (Ok(agent), Ok(upstream)) => {
                let (mut a, mut u) = (TokioIo::new(agent), TokioIo::new(upstream));
                match tokio::io::copy_bidirectional(&mut a, &mut u).await {
                    Ok((up, down)) => tracing::debug!(%conn, up, down, "upgraded stream ended"),
                    Err(e) => tracing::debug!(%conn, "upgraded stream ended: {e}"),
                }
            }
            (a, u) => tracing::info!(%conn, agent_ok = a.is_ok(), upstream_ok = u.is_ok(), "upgrade did not complete"),
        }
    });
    Ok(resp.map(|b| b.boxed()))
}
