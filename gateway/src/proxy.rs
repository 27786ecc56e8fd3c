//! Proxying one accepted connection. This path is raw TCP: connect to
//! the original destination (with the gateway's bypass mark, so the hooks let
//! it through) and relay bytes both ways. Protocol-aware sessions (HTTP,
//! PostgreSQL) will plug in here behind the same session shape.
use std::{sync::Arc, time::Instant};

use tokio::net::TcpStream;

use crate::{
    audit::{self, ConnectionEvent, Event, EventSink, Outcome},
    identity::Identity,
    policy::{self, ConnectVerdict},
    types::{ConnId, OrigDst},
};

mod live;
mod relay;
mod upstream;

pub use live::{LiveConn, LiveTable};
pub use relay::{relay, RelayEnd, RelayError, RelayStats};
pub use upstream::{connect_upstream, UpstreamError};

/// Settings every session needs.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// SO_MARK for upstream sockets.
    pub bypass_mark: u32,
    /// Upstream connect timeout.
    pub connect_timeout: std::time::Duration,
    /// Idle timeout for relays.
    pub idle_timeout: std::time::Duration,
}

/// Everything a session needs about its connection.
pub struct SessionStart {
    /// Connection number.
    pub id: ConnId,
    /// Caller identity.
    pub identity: Identity,
    /// Agent-side peer address.
    pub peer: std::net::SocketAddr,
    /// Original destination.
    pub orig_dst: OrigDst,
    /// Accept time (wall clock, RFC 3339).
    pub time: String,
    /// The policy stage's verdict on the connect.
    pub verdict: ConnectVerdict,
}

/// Runs a raw TCP session to completion and records its event.
pub async fn run_tcp(
    mut agent: TcpStream,
    start: SessionStart,
    settings: Arc<ProxySettings>,
    live: Arc<LiveTable>,
    events: EventSink,
) {
    let began = Instant::now();
    if start.verdict.decision.outcome != policy::Outcome::Allow {
        let d = &start.verdict.decision;
        tracing::info!(conn = %start.id, agent = %start.verdict.agent, dst = %start.orig_dst, policies = ?d.policies, "denied: {}", d.reason);
        // A reset: the agent's connect() succeeded (to the listener), so this
        // is the quickest refusal it can see.
        let _ = socket2::SockRef::from(&agent).set_linger(Some(std::time::Duration::ZERO));
        drop(agent);
        record(&events, start, (0, 0), began, Outcome::Denied).await;
        return;
    }
    let handle = live.insert(start.id, &start.identity, &start.verdict.agent.0, start.orig_dst);
    let outcome = match connect_upstream(start.orig_dst, settings.bypass_mark, settings.connect_timeout).await {
        Err(e) => {
            tracing::info!(conn = %start.id, dst = %start.orig_dst, "upstream connect failed: {e}");
            Outcome::UpstreamConnectFailed { error: e.to_string() }
        }
        Ok(mut upstream) => {
            let end = relay(&mut agent, &mut upstream, settings.idle_timeout, &handle.stats).await;
            match end {
                Ok(RelayEnd::Closed) => Outcome::Closed,
                Ok(RelayEnd::IdleTimeout) => Outcome::IdleTimeout,
                Ok(RelayEnd::Cut) => {
                    // Abort both sides: nothing more may pass.
                    let _ = socket2::SockRef::from(&agent).set_linger(Some(std::time::Duration::ZERO));
                    let _ = socket2::SockRef::from(&upstream).set_linger(Some(std::time::Duration::ZERO));
                    Outcome::Revoked {
                        reason: handle.stats.cut_reason().unwrap_or_default(),
                    }
                }
                Err(e) => Outcome::Error {
                    side: e.side().to_owned(),
                    error: e.to_string(),
                },
            }
        }
    };
    let totals = handle.stats.totals();
    live.remove(start.id);
    record(&events, start, totals, began, outcome).await;
}

async fn record(
    events: &EventSink,
    start: SessionStart,
    (bytes_up, bytes_down): (u64, u64),
    began: Instant,
    outcome: Outcome,
) {
    let id = start.id;
    let event = ConnectionEvent {
        time: start.time,
        conn_id: start.id,
        agent: Some(start.verdict.agent),
        identity: Some(start.identity),
        target: Some(start.verdict.target),
        decision: Some(start.verdict.decision),
        peer: start.peer,
        orig_dst: Some(start.orig_dst),
        bytes_up,
        bytes_down,
        duration_ms: began.elapsed().as_millis() as u64,
        outcome,
    };
    if let Err(e) = events.record(Event::Connection(Box::new(event))).await {
        tracing::error!(conn = %id, "connection event lost: {e}");
    }
}

/// Records a connection the listener refused before any session started.
pub async fn record_refusal(events: &EventSink, id: ConnId, peer: std::net::SocketAddr, reason: &str) {
    let event = ConnectionEvent {
        time: audit::now(),
        conn_id: id,
        agent: None,
        identity: None,
        target: None,
        decision: None,
        peer,
        orig_dst: None,
        bytes_up: 0,
        bytes_down: 0,
        duration_ms: 0,
        outcome: Outcome::Refused {
            reason: reason.to_owned(),
        },
    };
    if let Err(e) = events.record(Event::Connection(Box::new(event))).await {
        tracing::error!(conn = %id, "refusal event lost: {e}");
    }
}
