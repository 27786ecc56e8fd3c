//! PostgreSQL sessions, in the same phases as HTTP: the agent is accepted
//! by its kernel identity (no password), the gateway logs in upstream with
//! the credential only it holds, then every statement passes the request
//! filter (policy), results pass the response filter (column rules and
//! value detectors), and each statement and the session are logged.
use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::Instant,
};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{counted::Counted, ProxyCtx, RelayStats, SessionStart};
use crate::{
    audit::{self, Event, MaskCount, Outcome, PgSessionEvent, SqlStatementEvent},
    config::{PostgresSpec, TargetSpec},
    identity::Identity,
    masking::Masker,
    policy::{Decision, TargetRef},
    types::{AgentName, ConnId, OrigDst},
};

mod cancel;
mod columns;
mod login;
mod request;
mod response;
mod startup;
mod wire;

pub use cancel::CancelTable;

/// A byte stream either side may use (TCP, or TLS over it).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// What a session knows about itself.
pub struct Session {
    ctx: Arc<ProxyCtx>,
    conn_id: ConnId,
    agent: AgentName,
    identity: Identity,
    target: TargetRef,
    pg: PostgresSpec,
    database: String,
    masked: columns::MaskedColumns,
    /// Marks the statements the gateway substitutes for denied ones.
    nonce: String,
}

/// A judged SQL string.
pub struct Statement {
    /// Text for the audit trail (masked, capped).
    sql: String,
    kind: String,
    tables_read: Vec<String>,
    tables_written: Vec<String>,
    decision: Decision,
    /// Value detectors for its results.
    detectors: Option<Arc<Masker>>,
    /// The error the agent gets, when denied.
    denial: Option<wire::ErrorFields>,
}

/// One execution of a statement, until its completion.
pub struct Run {
    statement: Arc<Statement>,
    protocol: &'static str,
    params: Vec<Option<String>>,
    portal: String,
    time: String,
    started: Instant,
    rows: u64,
    affected: Option<u64>,
    error: Option<String>,
    masked: HashMap<String, u64>,
}

/// An answer the upstream owes, in the order the agent asked.
pub enum Expect {
    /// A simple query (or a refused function call): answered up to ReadyForQuery.
    Query(Box<Run>),
    /// Parse; `Some` when it was denied and replaced.
    Parse(Option<Box<Run>>),
    /// Bind.
    Bind,
    /// Describe of a statement.
    DescribeStatement,
    /// Describe of a portal; `swallow` when the gateway sent it for itself.
    DescribePortal {
        /// The portal.
        portal: String,
        /// The agent did not ask: its answer is not passed on.
        swallow: bool,
    },
    /// Execute.
    Execute(Box<Run>),
    /// Close.
    Close,
    /// Sync.
    Sync,
}

impl Session {
    async fn record(&self, run: Box<Run>, how: &'static str) {
        let st = &run.statement;
        let mut masked: Vec<MaskCount> = run
            .masked
            .into_iter()
            .map(|(by, count)| MaskCount { by, count })
            .collect();
        masked.sort_by(|a, b| a.by.cmp(&b.by));
        let event = SqlStatementEvent {
            time: run.time,
            conn_id: self.conn_id,
            agent: self.agent.clone(),
            identity: self.identity.clone(),
            target: self.target.name.clone(),
            database: self.database.clone(),
            user: self.pg.user.clone(),
            protocol: run.protocol.to_owned(),
            sql: st.sql.clone(),
            params: run.params,
            kind: st.kind.clone(),
            tables_read: st.tables_read.clone(),
            tables_written: st.tables_written.clone(),
            rows_returned: run.rows,
            rows_affected: run.affected,
            duration_ms: run.started.elapsed().as_millis() as u64,
            decision: st.decision.clone(),
            outcome: how.to_owned(),
            error: if how == "denied" { None } else { run.error },
            masked,
        };
        if let Err(e) = self.ctx.events.record(Event::SqlStatement(Box::new(event))).await {
            tracing::error!(conn = %self.conn_id, "statement event lost: {e}");
        }
    }
}

/// Serves one PostgreSQL connection to a `protocol = "postgres"` target.
pub(super) async fn serve(
    agent: tokio::net::TcpStream,
    start: &SessionStart,
    spec: TargetSpec,
    upstream: OrigDst,
    ctx: &Arc<ProxyCtx>,
    stats: &Arc<RelayStats>,
) -> Outcome {
    let Some(pg) = spec.postgres.clone() else {
        return Outcome::Error {
            side: "gateway".into(),
            error: format!("target {} has no postgres settings", spec.name),
        };
    };
    let io: Box<dyn Io> = Box::new(Counted::new(agent, stats.clone()));
    let fallback = start.orig_dst.0.ip().to_string();
    let opening = startup::accept(io, pg.agent_tls, fallback, ctx).await;
    match opening {
        Err((e, io)) => {
            if let Some(mut io) = io {
                fatal(&mut io, "08P01", format!("interlock: {e}")).await;
            }
            Outcome::Error {
                side: e.side().into(),
                error: e.to_string(),
            }
        }
        Ok(startup::Opening::Closed) => Outcome::Closed,
        Ok(startup::Opening::Cancel { pid, key }) => {
            let what = cancel::forward(ctx, &start.verdict.agent, pid, key).await;
            tracing::info!(conn = %start.id, agent = %start.verdict.agent, "{what}");
            Outcome::Closed
        }
        Ok(startup::Opening::Session { io, tls, minor, params }) => {
            let s = SessionSetup {
                start,
                spec: &spec,
                pg,
                upstream,
                ctx,
                stats,
            };
            s.run(io, tls, minor, params).await
        }
    }
}

struct SessionSetup<'a> {
    start: &'a SessionStart,
    spec: &'a TargetSpec,
    pg: PostgresSpec,
    upstream: OrigDst,
    ctx: &'a Arc<ProxyCtx>,
    stats: &'a Arc<RelayStats>,
}

fn param<'p>(params: &'p [(String, String)], name: &str) -> Option<&'p str> {
    params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

async fn fatal(io: &mut Box<dyn Io>, code: &'static str, message: String) {
    let _ = io.write_all(&wire::ErrorFields::fatal(code, message).to_bytes()).await;
    close_gently(io).await;
}

/// Ends the agent's stream after a last message: closing with unread input
/// would reset the connection and the agent could lose that message, so
/// what it still sends is read (bounded) until it hangs up.
async fn close_gently<W: AsyncRead + AsyncWrite + Unpin>(io: &mut W) {
    let _ = io.shutdown().await;
    let mut sink = vec![0u8; 16 << 10];
    let mut left: usize = 1 << 20;
    let drain = async {
        while left > 0 {
            match io.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), drain).await;
}

impl SessionSetup<'_> {
    fn tls_name(&self) -> String {
        self.spec
            .hosts
            .iter()
            .find(|h| !h.starts_with('*'))
            .cloned()
            .unwrap_or_else(|| self.upstream.0.ip().to_string())
    }

    async fn run(self, mut io: Box<dyn Io>, agent_tls: bool, minor: u16, params: Vec<(String, String)>) -> Outcome {
        let began = Instant::now();
        let agent_user = param(&params, "user").unwrap_or_default().to_owned();
        let database = self
            .pg
            .database
            .clone()
            .or_else(|| param(&params, "database").map(str::to_owned))
            .unwrap_or_else(|| agent_user.clone());
        let replication = param(&params, "replication").is_some_and(|v| !matches!(v, "false" | "off" | "0" | "no"));
        if replication {
            let message = "interlock: replication connections are not allowed through the gateway".to_owned();
            fatal(&mut io, "42501", message.clone()).await;
            return Outcome::Refused { reason: message };
        }
        // Startup options pass on, except who and where (the gateway's
        // choice) and protocol extensions (answered with 3.0, none known).
        let unknown: Vec<String> = params
            .iter()
            .filter(|(k, _)| k.starts_with("_pq_."))
            .map(|(k, _)| k.clone())
            .collect();
        let forwarded: Vec<(String, String)> = params
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "user" | "database" | "replication") && !k.starts_with("_pq_."))
            .cloned()
            .collect();
        let mut out = BytesMut::new();
        if minor > 0 || !unknown.is_empty() {
            wire::negotiate_protocol_version(&mut out, &unknown);
        }
        let credential = self
            .spec
            .credential
            .as_ref()
            .map(|c| self.ctx.credential(&self.spec.name, c));
        let spec = login::LoginSpec {
            addr: self.upstream,
            tls_name: self.tls_name(),
            tls: self.pg.tls,
            ca_file: self.spec.ca_file.as_deref(),
            user: &self.pg.user,
            database: &database,
            params: &forwarded,
            password: credential,
        };
        let mut up = match login::login(&spec, self.ctx).await {
            Ok(up) => up,
            Err(e) => {
                tracing::info!(conn = %self.start.id, target = %self.spec.name, "login failed: {e}");
                let code = if matches!(e, login::LoginError::Rejected { .. }) {
                    "28000"
                } else {
                    "08006"
                };
                let _ = io.write_all(&out).await;
                fatal(
                    &mut io,
                    code,
                    format!("interlock could not log in to {}: {e}", self.spec.name),
                )
                .await;
                return Outcome::Error {
                    side: e.side().into(),
                    error: e.to_string(),
                };
            }
        };
        let rules = columns::ColumnRules::new(&self.pg.columns);
        let masked = if rules.is_empty() {
            columns::MaskedColumns::default()
        } else {
            match lookup(&mut up, rules).await {
                Ok(m) => m,
                Err(e) => {
                    // Without the masked columns' oids no result can be masked: refuse.
                    fatal(
                        &mut io,
                        "08006",
                        format!("interlock could not read the masked columns: {e}"),
                    )
                    .await;
                    return Outcome::Error {
                        side: "upstream".into(),
                        error: format!("column lookup: {e}"),
                    };
                }
            }
        };
        let target = self.ctx.gate.targets().resolve(self.start.orig_dst, "postgres");
        let cancel_target = cancel::CancelTarget {
            agent: self.start.verdict.agent.clone(),
            upstream: self.upstream,
            tls: (self.pg.tls, self.spec.ca_file.clone(), self.tls_name()),
            key: up.key,
        };
        let Some(agent_key) = self.ctx.pg_cancels.register(cancel_target) else {
            fatal(&mut io, "08006", "interlock: no random source for a cancel key".into()).await;
            return Outcome::Error {
                side: "gateway".into(),
                error: "getrandom failed".into(),
            };
        };
        wire::authentication_ok(&mut out);
        for m in &up.greeting {
            out.extend_from_slice(m);
        }
        wire::backend_key_data(&mut out, agent_key.0, agent_key.1);
        wire::ready_for_query(&mut out, b'I');
        let nonce = format!(
            "interlock_{:08x}{:08x}",
            cancel::random_u32().unwrap_or(0),
            agent_key.1 as u32
        );
        let session = Session {
            ctx: self.ctx.clone(),
            conn_id: self.start.id,
            agent: self.start.verdict.agent.clone(),
            identity: self.start.identity.clone(),
            target,
            pg: self.pg.clone(),
            database,
            masked,
            nonce,
        };
        let application_name = param(&params, "application_name").unwrap_or_default().to_owned();
        let upstream_tls = up.tls;
        let event = |phase: &str, outcome: Option<String>, statements: u64| PgSessionEvent {
            time: audit::now(),
            conn_id: session.conn_id,
            agent: session.agent.clone(),
            identity: session.identity.clone(),
            target: session.target.name.clone(),
            phase: phase.into(),
            database: session.database.clone(),
            user: session.pg.user.clone(),
            agent_user: agent_user.clone(),
            application_name: application_name.clone(),
            agent_tls,
            upstream_tls,
            bytes_up: 0,
            bytes_down: 0,
            statements,
            duration_ms: began.elapsed().as_millis() as u64,
            outcome,
        };
        let started = event("start", None, 0);
        if let Err(e) = self.ctx.events.record(Event::PgSession(Box::new(started))).await {
            tracing::error!(conn = %session.conn_id, "session event lost: {e}");
        }
        let (outcome, statements) = if let Err(e) = io.write_all(&out).await {
            let error = Outcome::Error {
                side: "agent".into(),
                error: e.to_string(),
            };
            (error, 0)
        } else {
            relay(&session, io, up, self.stats).await
        };
        self.ctx.pg_cancels.remove(agent_key);
        let (bytes_up, bytes_down) = self.stats.totals();
        let mut ended = event("end", Some(describe(&outcome)), statements);
        ended.bytes_up = bytes_up;
        ended.bytes_down = bytes_down;
        if let Err(e) = self.ctx.events.record(Event::PgSession(Box::new(ended))).await {
            tracing::error!(conn = %session.conn_id, "session event lost: {e}");
        }
        outcome
    }
}

fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Closed => "closed".into(),
        Outcome::Revoked { reason } => format!("revoked: {reason}"),
        Outcome::Error { side, error } => format!("{side} error: {error}"),
        other => format!("{other:?}"),
    }
}

/// Reads the masked columns' oids on the session's own connection, before the
/// agent is let in.
async fn lookup(up: &mut login::Upstream, rules: columns::ColumnRules) -> Result<columns::MaskedColumns, String> {
    use postgres_protocol::message::backend::Message;
    let mut out = BytesMut::new();
    postgres_protocol::message::frontend::query(&rules.lookup_sql(), &mut out).map_err(|e| e.to_string())?;
    up.io.write_all(&out).await.map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    let mut failure = None;
    loop {
        match login::next(&mut up.io, &mut up.buf).await.map_err(|e| e.to_string())? {
            Message::DataRow(row) => {
                let mut values = Vec::new();
                let mut ranges = row.ranges();
                while let Some(range) =
                    fallible_iterator::FallibleIterator::next(&mut ranges).map_err(|e| e.to_string())?
                {
                    values.push(range.map(|r| String::from_utf8_lossy(&row.buffer()[r]).into_owned()));
                }
                rows.push(values);
            }
            Message::ErrorResponse(body) => failure = Some(login::error_text(body.fields()).1),
            Message::ReadyForQuery(_) => break,
            _ => {}
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    columns::MaskedColumns::from_rows(rules, &rows)
}

/// Runs the request and response filters until either side ends, or the
/// session is cut. Returns how it ended and how many statements it ran.
async fn relay(s: &Session, agent: Box<dyn Io>, up: login::Upstream, stats: &Arc<RelayStats>) -> (Outcome, u64) {
    let pending = Mutex::new(VecDeque::new());
    let (mut agent_r, mut agent_w) = tokio::io::split(agent);
    let (mut up_r, mut up_w) = tokio::io::split(up.io);
    let mut up_buf = up.buf;
    let statements = std::sync::atomic::AtomicU64::new(0);
    let requests = async {
        let mut prepared = request::Prepared::default();
        let mut buf = BytesMut::with_capacity(8 << 10);
        let mut out = BytesMut::new();
        loop {
            while let Some(total) = wire::complete_len(&buf, "agent")? {
                let raw = buf.split_to(total).freeze();
                let frame = wire::Frame { tag: raw[0], raw };
                if matches!(frame.tag, b'Q' | b'E' | b'F') {
                    statements.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                let step = prepared.handle(s, &frame, &pending, &mut out)?;
                if matches!(step, request::Step::Terminate) {
                    up_w.write_all(&out).await.map_err(|e| io_err("upstream", e))?;
                    let _ = up_w.shutdown().await;
                    return Ok::<_, wire::WireError>(());
                }
            }
            if !out.is_empty() {
                up_w.write_all(&out).await.map_err(|e| io_err("upstream", e))?;
                out.clear();
            }
            if agent_r.read_buf(&mut buf).await.map_err(|e| io_err("agent", e))? == 0 {
                if buf.is_empty() {
                    return Ok(());
                }
                return Err(wire::WireError::malformed(
                    "agent",
                    "connection closed inside a message",
                ));
            }
        }
    };
    let responses = async {
        let mut state = response::Responses::default();
        let mut out = BytesMut::new();
        let mut done = Vec::new();
        loop {
            state.handle(s, &mut up_buf, &pending, &mut out, &mut done)?;
            if !out.is_empty() {
                agent_w.write_all(&out).await.map_err(|e| io_err("agent", e))?;
                out.clear();
            }
            for (run, how) in done.drain(..) {
                s.record(run, how).await;
            }
            if up_r.read_buf(&mut up_buf).await.map_err(|e| io_err("upstream", e))? == 0 {
                if up_buf.is_empty() {
                    return Ok::<_, wire::WireError>(());
                }
                return Err(wire::WireError::malformed(
                    "upstream",
                    "connection closed inside a message",
                ));
            }
        }
    };
    let ended = tokio::select! {
        r = requests => r,
        r = responses => r,
        () = stats.cut_notified() => {
            let reason = stats.cut_reason().unwrap_or_default();
            let fatal = wire::ErrorFields::fatal("57P01", format!("interlock terminated this session: {reason}"));
            let _ = agent_w.write_all(&fatal.to_bytes()).await;
            return (Outcome::Revoked { reason }, statements.into_inner());
        }
    };
    let outcome = match ended {
        Ok(()) => Outcome::Closed,
        Err(e) => {
            if e.side() == "agent" || matches!(e, wire::WireError::Malformed { .. }) {
                let fatal = wire::ErrorFields::fatal("08P01", format!("interlock: {e}"));
                let _ = agent_w.write_all(&fatal.to_bytes()).await;
            }
            Outcome::Error {
                side: e.side().into(),
                error: e.to_string(),
            }
        }
    };
    let mut agent = agent_r.unsplit(agent_w);
    close_gently(&mut agent).await;
    (outcome, statements.into_inner())
}

fn io_err(side: &'static str, source: std::io::Error) -> wire::WireError {
    wire::WireError::Io { side, source }
}
