//! Starting a session once the agent has sent its StartupMessage: refuse
//! replication, log in upstream, read the masked columns, register a cancel
//! key, greet the agent, relay, and record the session's start and end.
use std::{sync::Arc, time::Instant};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{cancel, columns, encoding, login, pool, relay::relay, sqlstate, wire, Io, Session};
use crate::{
    audit::{self, Event, Outcome, PgSessionEvent},
    config::{PostgresSpec, TargetSpec},
    proxy::{ProxyCtx, RelayStats, SessionStart},
    types::{OrigDst, Side, Wire},
};

/// What a starting session needs.
pub struct SessionSetup<'a> {
    /// The accepted connection.
    pub start: &'a SessionStart,
    /// Its target.
    pub spec: &'a TargetSpec,
    /// The target's PostgreSQL settings.
    pub pg: PostgresSpec,
    /// Where the database is.
    pub upstream: OrigDst,
    /// Shared proxy state.
    pub ctx: &'a Arc<ProxyCtx>,
    /// Byte counters and the cut signal.
    pub stats: &'a Arc<RelayStats>,
}

fn param<'p>(params: &'p [(String, String)], name: &str) -> Option<&'p str> {
    params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Sends a FATAL error and closes.
pub async fn fatal(io: &mut Box<dyn Io>, code: &'static str, message: String) {
    let _ = io.write_all(&wire::ErrorFields::fatal(code, message).to_bytes()).await;
    close_gently(io).await;
}

/// Ends the agent's stream after a last message: closing with unread input
/// would reset the connection and the agent could lose that message, so
/// what it still sends is read (bounded) until it hangs up.
pub async fn close_gently<W: AsyncRead + AsyncWrite + Unpin>(io: &mut W) {
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

    /// Runs the session to its end.
    pub async fn run(self, mut io: Box<dyn Io>, agent_tls: bool, minor: u16, params: Vec<(String, String)>) -> Outcome {
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
            fatal(&mut io, sqlstate::INSUFFICIENT_PRIVILEGE, message.clone()).await;
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
        let pool_key = pool::PoolKey {
            agent: self.start.verdict.agent.clone(),
            upstream: self.upstream,
            tls: (self.pg.tls, self.spec.ca_file.clone(), spec.tls_name.clone()),
            user: self.pg.user.clone(),
            database: database.clone(),
            params: forwarded.clone(),
        };
        let pooling = !self.pg.pool_idle.is_zero();
        let pooled = if pooling {
            self.ctx.pg_pool.take(&pool_key)
        } else {
            None
        };
        let pooled = match pooled {
            Some(mut up) => {
                match tokio::time::timeout(std::time::Duration::from_secs(5), pool::hand_over(&mut up)).await {
                    Ok(Ok(())) => Some(up),
                    // Then a fresh login, as without a pooled session.
                    failed => {
                        tracing::debug!(conn = %self.start.id, "pooled session not handed over: {failed:?}");
                        pool::terminate(up).await;
                        None
                    }
                }
            }
            None => None,
        };
        let upstream_reused = pooled.is_some();
        let logged_in = match pooled {
            Some(up) => Ok(up),
            None => login::login(&spec, self.ctx).await,
        };
        let mut up = match logged_in {
            Ok(up) => up,
            Err(e) => {
                tracing::info!(conn = %self.start.id, target = %self.spec.name, "login failed: {e}");
                let _ = io.write_all(&out).await;
                fatal(
                    &mut io,
                    sqlstate::of_login(&e),
                    format!("interlock could not log in to {}: {e}", self.spec.name),
                )
                .await;
                return Outcome::Error {
                    side: e.side(),
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
                        sqlstate::CONNECTION_FAILURE,
                        format!("interlock could not read the masked columns: {e}"),
                    )
                    .await;
                    return Outcome::Error {
                        side: Side::Upstream,
                        error: format!("column lookup: {e}"),
                    };
                }
            }
        };
        let target = self.start.verdict.target.speaking(Wire::Postgres);
        let cancel_target = cancel::CancelTarget {
            agent: self.start.verdict.agent.clone(),
            upstream: self.upstream,
            tls: (self.pg.tls, self.spec.ca_file.clone(), self.tls_name()),
            key: up.key,
        };
        let Some(agent_key) = self.ctx.pg_cancels.register(cancel_target) else {
            fatal(
                &mut io,
                sqlstate::CONNECTION_FAILURE,
                "interlock: no random source for a cancel key".into(),
            )
            .await;
            return Outcome::Error {
                side: Side::Gateway,
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
        // The encoding the server reads this session's text in, as its
        // greeting reports it (a pooled session's greeting is its login's,
        // and the reset before reuse restores the same value).
        let mut encoding = encoding::ClientEncoding::Utf8;
        for m in &up.greeting {
            if m.first() == Some(&b'S') {
                if let Ok(Some(e)) = super::response::reported_encoding(m) {
                    encoding = e;
                }
            }
        }
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
            review_webhook: self.spec.review_webhook.clone(),
            encoding: encoding::EncodingCell::new(encoding),
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
            upstream_reused,
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
        let (outcome, statements, kept) = if let Err(e) = io.write_all(&out).await {
            let error = Outcome::Error {
                side: Side::Agent,
                error: e.to_string(),
            };
            (error, 0, None)
        } else {
            let r = relay(&session, io, up, self.stats, pooling).await;
            (r.outcome, r.statements, r.kept)
        };
        self.ctx.pg_cancels.remove(agent_key);
        if let Some(up) = kept {
            // Before the end event: the agent's next session may be arriving.
            self.ctx.pg_pool.give(pool_key, up, self.pg.pool_idle).await;
        }
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
        Outcome::Shutdown => "closed at the gateway's shutdown".into(),
        Outcome::Error { side, error } => format!("{side} error: {error}"),
        other => format!("{other:?}"),
    }
}

/// Reads the masked columns' oids on the session's own connection, before the
/// agent is let in.
async fn lookup(
    up: &mut login::Upstream,
    rules: columns::ColumnRules,
) -> Result<columns::MaskedColumns, login::QueryError> {
    use login::QueryError;
    use postgres_protocol::message::backend::Message;
    let mut out = BytesMut::new();
    postgres_protocol::message::frontend::query(&rules.lookup_sql(), &mut out)?;
    up.io.write_all(&out).await?;
    let mut rows = Vec::new();
    let mut failure = None;
    loop {
        match login::next(&mut up.io, &mut up.buf).await? {
            Message::DataRow(row) => {
                let mut values = Vec::new();
                let mut ranges = row.ranges();
                while let Some(range) = fallible_iterator::FallibleIterator::next(&mut ranges)? {
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
        return Err(QueryError::Refused(e));
    }
    columns::MaskedColumns::from_rows(rules, &rows).map_err(QueryError::Unexpected)
}
