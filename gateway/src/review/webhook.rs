//! Announcing a review: one JSON POST (Slack-compatible: a `text` field,
//! plus the review itself) to each webhook, from a task of its own with a
//! few bounded retries, so a failing webhook never holds up traffic.
use std::{sync::Arc, time::Duration};

use super::ReviewRecord;
use crate::net::{GatewayHttp, Net};

/// Attempts per webhook.
const ATTEMPTS: u32 = 3;

/// Sends the announcement in the background.
pub fn announce(net: Arc<Net>, url: String, review: ReviewRecord, link_base: Option<String>) {
    tokio::spawn(async move {
        let http = GatewayHttp::new(net, None);
        let link = link_base.map(|base| format!("{}/reviews/{}", base.trim_end_matches('/'), review.id));
        let text = format!(
            "Review {}: agent {} (pid {}) asks {} for `{}` — {}{}",
            review.id,
            review.agent,
            review.pid,
            review.target,
            review.request,
            review.reason,
            link.as_deref().map(|l| format!(" <{l}|open>")).unwrap_or_default()
        );
        let body = serde_json::json!({"text": text, "link": link, "review": review}).to_string();
        for attempt in 1..=ATTEMPTS {
            let req = http::Request::post(url.as_str())
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(body.clone().into_bytes());
            let req = match req {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(%url, "webhook URL unusable: {e}");
                    return;
                }
            };
            let sent = tokio::time::timeout(Duration::from_secs(10), http.send(req)).await;
            match sent {
                Ok(Ok(resp)) if resp.status().is_success() => return,
                Ok(Ok(resp)) => tracing::warn!(%url, attempt, status = %resp.status(), "webhook refused the review"),
                Ok(Err(e)) => tracing::warn!(%url, attempt, "webhook failed: {e}"),
                Err(_) => tracing::warn!(%url, attempt, "webhook timed out"),
            }
            tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
        }
        tracing::error!(%url, review = %review.id, "webhook gave up after {ATTEMPTS} attempts");
    });
}
