//! The session driver for one accepted connection. Raw TCP is the fallback
//! for every protocol: connect to the original destination (with the
//! gateway's bypass mark, so the hooks let it through) and relay bytes both
//! ways. Connections to HTTP(S) targets are inspected request by request.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Instant,
};

use tokio::net::TcpStream;

use crate::{
    audit::{self, ConnectionEvent, Event, EventSink, Outcome},
    detect::Protocol,
    identity::Identity,
    net::Built,
    policy::{self, ConnectVerdict, Gate},
    types::{ConnId, OrigDst},
};

mod counted;
pub mod dns;
mod http;
mod judge;
mod live;
mod misfit;
pub mod pg;
mod relay;
pub mod tls;

pub use live::{LiveConn, LiveTable};
pub use relay::{relay, Cut, RelayEnd, RelayError, RelayStats};

/// Settings every session needs.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// SO_MARK for upstream sockets.
    pub bypass_mark: u32,
    /// Upstream connect timeout.
    pub connect_timeout: std::time::Duration,
    /// Idle timeout for relays.
    pub idle_timeout: std::time::Duration,
    /// Time allowed for an HTTP request head (and HTTP/2 keep-alive answers).
    pub header_timeout: std::time::Duration,
    /// Largest HTTP/1.1 request head accepted, in bytes.
    pub max_request_head: usize,
    /// Quiet time after which an HTTP/1.1 keep-alive connection is parked
    /// (zero: never).
    pub park_idle: std::time::Duration,
    /// Bytes of each body and SQL text kept in the audit trail.
    pub body_cap: usize,
}

/// Detector names from `@mask`, and the injected secret to scrub, if any.
type MaskerKey = (Vec<String>, Option<String>);

/// What every session shares.
pub struct ProxyCtx {
    /// Timeouts and the bypass mark.
    pub settings: ProxySettings,
    /// The gateway's own network client (marked sockets, upstream TLS).
    pub net: Arc<crate::net::Net>,
    /// Live connections.
    pub live: Arc<LiveTable>,
    /// Event stream.
    pub events: EventSink,
    /// Agents, targets, policy.
    pub gate: Arc<Gate>,
    /// The local CA for intercepted TLS.
    pub ca: Arc<tls::LocalCa>,
    /// Agent-side TLS acceptors, by the address their leaf certificates
    /// fall back to: one config (and session cache) shared by connections.
    agent_tls: Built<std::net::IpAddr, tokio_rustls::TlsAcceptor>,
    maskers: Built<MaskerKey, Arc<crate::masking::MaskPlan>>,
    /// Masking detectors and rules from config.
    catalog: crate::masking::Catalog,
    /// Upstream HTTP connections lent per exchange.
    pool: Arc<http::Pool>,
    /// Credentials per target, shared so caches (file reads, tokens) are too.
    credentials: Mutex<HashMap<String, (crate::config::CredentialSpec, Arc<crate::credentials::Credential>)>>,
    /// Cancel keys handed to agents by PostgreSQL sessions.
    pg_cancels: pg::CancelTable,
    /// Upstream PostgreSQL sessions kept for reuse.
    pg_pool: Arc<pg::PgPool>,
    /// Encrypts masked originals that masking rules keep.
    pub sealer: Arc<crate::audit::seal::Sealer>,
    /// Requests held for review.
    pub reviews: Arc<crate::review::Reviews>,
    /// Per-agent shares and rates.
    pub limits: Arc<crate::limits::Limits>,
    /// The resolver's limits and exfiltration guards.
    pub dns: Arc<dns::Guards>,
}

/// What a proxy context is built from.
pub struct ProxyParts {
    /// Timeouts, the bypass mark and the audit body cap.
    pub settings: ProxySettings,
    /// The gateway's own network client.
    pub net: Arc<crate::net::Net>,
    /// Live connections.
    pub live: Arc<LiveTable>,
    /// Event stream.
    pub events: EventSink,
    /// Agents, targets, policy.
    pub gate: Arc<Gate>,
    /// The local CA.
    pub ca: Arc<tls::LocalCa>,
    /// Masking detectors and rules.
    pub catalog: crate::masking::Catalog,
    /// The sealing key for kept originals.
    pub sealer: Arc<crate::audit::seal::Sealer>,
    /// Held requests.
    pub reviews: Arc<crate::review::Reviews>,
    /// Per-agent shares and rates.
    pub limits: Arc<crate::limits::Limits>,
    /// The resolver's limits and exfiltration guards.
    pub dns: Arc<dns::Guards>,
}

impl ProxyCtx {
    /// Bundles the parts.
    pub fn new(parts: ProxyParts) -> Self {
        let ProxyParts {
            settings,
            net,
            live,
            events,
            gate,
            ca,
            catalog,
            sealer,
            reviews,
            limits,
            dns,
        } = parts;
        Self {
            settings,
            net,
            live,
            events,
            gate,
            ca,
            catalog,
            agent_tls: Built::default(),
            maskers: Built::default(),
            pool: Arc::default(),
            credentials: Mutex::new(HashMap::new()),
            pg_cancels: pg::CancelTable::default(),
            pg_pool: Arc::default(),
            sealer,
            reviews,
            limits,
            dns,
        }
    }

    /// The masking plan for `@mask` names, plus an exact secret to scrub if
    /// the gateway injected one (built once per set).
    pub fn mask_plan(
        &self,
        names: &[String],
        secret: Option<&str>,
    ) -> Result<Arc<crate::masking::MaskPlan>, crate::masking::MaskError> {
        let key = (names.to_vec(), secret.map(str::to_owned));
        self.maskers
            .get_or_build(key, || self.catalog.plan(names, secret).map(Arc::new))
    }

    /// The credential of a target, shared across its connections (replaced
    /// when the target's credential spec changes on reload).
    pub fn credential(
        &self,
        target: &str,
        spec: &crate::config::CredentialSpec,
    ) -> Arc<crate::credentials::Credential> {
        let mut all = self.credentials.lock().unwrap_or_else(|p| p.into_inner());
        match all.get(target) {
            Some((known, credential)) if known == spec => credential.clone(),
            _ => {
                let credential = Arc::new(crate::credentials::Credential::new(spec));
                all.insert(target.to_owned(), (spec.clone(), credential.clone()));
                credential
            }
        }
    }

    /// The agent-side TLS acceptor for leaf certificates falling back to
    /// `fallback` (built once with `build`, then shared).
    pub(crate) fn agent_tls(
        &self,
        fallback: std::net::IpAddr,
        build: impl FnOnce() -> Result<tokio_rustls::TlsAcceptor, rustls::Error>,
    ) -> Result<tokio_rustls::TlsAcceptor, rustls::Error> {
        self.agent_tls.get_or_build(fallback, build)
    }
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
    /// What the agent speaks.
    pub protocol: Protocol,
    /// The target it was judged as, and the name it gave.
    pub judged: crate::targets::Judged,
    /// The policy stage's verdict on the connect.
    pub verdict: ConnectVerdict,
}

/// Runs a session to completion and records its event: refuse it, inspect it
/// as HTTP(S) or PostgreSQL when its target says so, or relay it as raw TCP.
pub async fn run(agent: TcpStream, start: SessionStart, ctx: Arc<ProxyCtx>) {
    let began = Instant::now();
    // While the session runs, this task holds the start, the live handle
    // and a pointer to the session's boxed future: an idle connection
    // costs little more than what its protocol keeps.
    let (outcome, totals) = match open(agent, &start, &ctx) {
        Opened::Denied => (Outcome::Denied, (0, 0)),
        Opened::Misfit(agent, misfit) => {
            tracing::info!(conn = %start.id, agent = %start.verdict.agent, dst = %start.orig_dst, "refused: {}", misfit.reason);
            Box::pin(misfit::answer(agent, misfit.answer, &misfit.reason)).await;
            (Outcome::Refused { reason: misfit.reason }, (0, 0))
        }
        Opened::Session(session, handle) => {
            let outcome = session.await;
            let totals = handle.stats.totals();
            ctx.live.remove(start.id);
            (outcome, totals)
        }
    };
    Box::pin(record(&ctx.events, start, totals, began, outcome)).await;
}

/// A session's protocol, boxed: each holds only its own state.
type SessionFuture<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Outcome> + Send + 'a>>;

/// What an accepted connection turns into.
enum Opened<'a> {
    /// Denied by policy (closed with a reset).
    Denied,
    /// What the agent sent does not fit its target: answered and closed.
    Misfit(TcpStream, misfit::Misfit),
    /// A session to run, registered in the live table.
    Session(SessionFuture<'a>, live::LiveHandle),
}

/// Decides what a connection becomes and sets its session up.
fn open<'a>(agent: TcpStream, start: &'a SessionStart, ctx: &'a Arc<ProxyCtx>) -> Opened<'a> {
    if start.verdict.decision.outcome != policy::Ruling::Allow {
        let d = &start.verdict.decision;
        tracing::info!(conn = %start.id, agent = %start.verdict.agent, dst = %start.orig_dst, policies = ?d.policies, "denied: {}", d.reason);
        // A reset: the agent's connect() succeeded (to the listener), so this
        // is the quickest refusal it can see.
        let _ = socket2::SockRef::from(&agent).set_linger(Some(std::time::Duration::ZERO));
        return Opened::Denied;
    }
    let spec = start.judged.spec.clone();
    let upstream_addr = OrigDst(spec.as_ref().and_then(|s| s.upstream).unwrap_or(start.orig_dst.0));
    let fit = match &spec {
        Some(spec) => misfit::fit(spec, &start.protocol, &start.judged),
        None => Ok(misfit::Fit::Raw),
    };
    let fit = match fit {
        Ok(fit) => fit,
        Err(misfit) => return Opened::Misfit(agent, misfit),
    };
    let handle = ctx
        .live
        .insert(start.id, &start.identity, &start.verdict.agent.0, start.orig_dst);
    let stats = &handle.stats;
    let session: SessionFuture<'a> = match (fit, spec) {
        (misfit::Fit::Postgres, Some(spec)) => {
            let stats = stats.clone();
            Box::pin(async move { pg::serve(agent, start, spec, upstream_addr, ctx, &stats).await })
        }
        (misfit::Fit::Http, Some(spec)) => {
            let name = start.judged.session_name().map(str::to_owned);
            Box::pin(http::serve(agent, start, spec, upstream_addr, name, ctx, stats))
        }
        _ => {
            let (net, idle, stats, id) = (ctx.net.clone(), ctx.settings.idle_timeout, stats.clone(), start.id);
            Box::pin(async move { relay_tcp(agent, upstream_addr, &net, idle, &stats, id).await })
        }
    };
    Opened::Session(session, handle)
}

/// The raw TCP path: connect upstream and relay bytes both ways.
async fn relay_tcp(
    mut agent: TcpStream,
    dst: OrigDst,
    net: &crate::net::Net,
    idle_timeout: std::time::Duration,
    stats: &Arc<RelayStats>,
    id: ConnId,
) -> Outcome {
    match net.connect(dst).await {
        Err(e) => {
            tracing::info!(conn = %id, %dst, "upstream connect failed: {e}");
            // The agent's connect() already succeeded (to the listener); a reset
            // is the closest it can get to the refusal the upstream gave.
            let _ = socket2::SockRef::from(&agent).set_linger(Some(std::time::Duration::ZERO));
            Outcome::UpstreamConnectFailed { error: e.to_string() }
        }
        Ok(mut upstream) => match relay(&mut agent, &mut upstream, idle_timeout, stats).await {
            Ok(RelayEnd::Closed) => Outcome::Closed,
            Ok(RelayEnd::IdleTimeout) => Outcome::IdleTimeout,
            Ok(RelayEnd::Cut) => {
                // Abort both sides: nothing more may pass.
                let _ = socket2::SockRef::from(&agent).set_linger(Some(std::time::Duration::ZERO));
                let _ = socket2::SockRef::from(&upstream).set_linger(Some(std::time::Duration::ZERO));
                stats.cut_outcome()
            }
            Err(e) => Outcome::Error {
                side: e.side(),
                error: e.to_string(),
            },
        },
    }
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
        target: Some(start.verdict.target.name),
        decision: Some(start.verdict.decision),
        peer: start.peer,
        orig_dst: Some(start.orig_dst),
        bytes_up,
        bytes_down,
        duration_ms: began.elapsed().as_millis() as u64,
        outcome,
    };
    // Boxed: the recording future is large, and the session tasks that end
    // with it should not carry its room while they sit idle.
    if let Err(e) = Box::pin(events.record(Event::Connection(Box::new(event)))).await {
        tracing::error!(conn = %id, "connection event lost: {e}");
    }
}

/// Records a connection the listener refused before any session started;
/// `caller` when it is known by then (who is flooding, say).
pub async fn record_refusal(
    events: &EventSink,
    id: ConnId,
    peer: std::net::SocketAddr,
    caller: Option<(&crate::types::AgentName, &Identity)>,
    reason: &str,
) {
    let event = ConnectionEvent {
        time: audit::now(),
        conn_id: id,
        agent: caller.map(|(agent, _)| agent.clone()),
        identity: caller.map(|(_, identity)| identity.clone()),
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
    if let Err(e) = Box::pin(events.record(Event::Connection(Box::new(event)))).await {
        tracing::error!(conn = %id, "refusal event lost: {e}");
    }
}
