//! PostgreSQL sessions, in the same phases as HTTP: the agent is accepted
//! by its kernel identity (no password), the gateway logs in upstream with
//! the credential only it holds, then every statement passes the request
//! filter (policy), results pass the response filter (column rules and
//! value detectors), and each statement and the session are logged.
use std::{collections::HashMap, sync::Arc, time::Instant};

use tokio::io::{AsyncRead, AsyncWrite};

use super::{counted::Counted, ProxyCtx, RelayStats, SessionStart};
use crate::{
    audit::{Event, MaskCount, Outcome, Ran, SqlProtocol, SqlStatementEvent},
    config::{PostgresSpec, TargetSpec},
    identity::Identity,
    masking::Masker,
    policy::{Decision, TargetRef},
    types::Side,
    types::{AgentName, ConnId, OrigDst},
};

mod cancel;
pub mod columns;
pub(crate) mod encoding;
pub(crate) mod frontend;
mod login;
mod pool;
mod relay;
mod request;
mod response;
mod session;
pub mod sqlstate;
mod startup;
pub(crate) mod wire;

pub use cancel::CancelTable;
pub use pool::PgPool;

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
    /// The target's review webhook.
    review_webhook: Option<String>,
    /// The client_encoding the server reads query text in.
    encoding: encoding::EncodingCell,
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
    /// It touches a table with masked columns: computed result columns are
    /// masked too, and error details withheld.
    computed: bool,
    /// Refused by a rate limit within a burst already recorded: counted
    /// into the burst's `limited` event instead of an event of its own.
    counted: bool,
}

/// One execution of a statement, until its completion.
pub struct Run {
    statement: Arc<Statement>,
    protocol: SqlProtocol,
    params: Vec<Option<String>>,
    /// The portal executed (a name in the client's encoding).
    portal: Vec<u8>,
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
    DescribeStatement {
        /// The statement touches masked columns.
        computed: bool,
    },
    /// Describe of a portal; `swallow` when the gateway sent it for itself.
    DescribePortal {
        /// The portal.
        portal: Vec<u8>,
        /// The agent did not ask: its answer is not passed on.
        swallow: bool,
        /// Its statement touches masked columns.
        computed: bool,
    },
    /// Execute.
    Execute(Box<Run>),
    /// Close.
    Close,
    /// Sync.
    Sync,
}

impl Session {
    /// Records a finished statement; the agent gets its answer only after this.
    async fn record(&self, run: Box<Run>, how: Ran) -> Result<(), crate::audit::SinkError> {
        let st = &run.statement;
        if st.counted {
            return Ok(());
        }
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
            protocol: run.protocol,
            sql: st.sql.clone(),
            params: run.params,
            kind: st.kind.clone(),
            tables_read: st.tables_read.clone(),
            tables_written: st.tables_written.clone(),
            rows_returned: run.rows,
            rows_affected: run.affected,
            duration_ms: run.started.elapsed().as_millis() as u64,
            decision: st.decision.clone(),
            outcome: how,
            error: if how == Ran::Denied { None } else { run.error },
            masked,
        };
        self.ctx.events.record(Event::SqlStatement(Box::new(event))).await
    }

    /// What the response filter needs of the session.
    fn view(&self) -> response::SessionView<'_> {
        response::SessionView {
            masked: &self.masked,
            nonce: &self.nonce,
            encoding: &self.encoding,
        }
    }

    /// The session's caller on the decision path.
    fn caller(&self) -> super::judge::Caller<'_> {
        super::judge::Caller {
            agent: &self.agent,
            identity: &self.identity,
            target: &self.target,
            review_webhook: self.review_webhook.as_deref(),
        }
    }
}

/// Serves one PostgreSQL connection to a `protocol = "postgres"` target.
pub(super) async fn serve(
    agent: tokio::net::TcpStream,
    start: &SessionStart,
    spec: Arc<TargetSpec>,
    upstream: OrigDst,
    ctx: &Arc<ProxyCtx>,
    stats: &Arc<RelayStats>,
) -> Outcome {
    let Some(pg) = spec.postgres.clone() else {
        return Outcome::Error {
            side: Side::Gateway,
            error: format!("target {} has no postgres settings", spec.name),
        };
    };
    let io: Box<dyn Io> = Box::new(Counted::new(agent, stats.clone()));
    let fallback = start.orig_dst.0.ip().to_string();
    let opening = startup::accept(io, pg.agent_tls, fallback, ctx).await;
    match opening {
        Err((e, io)) => {
            if let Some(mut io) = io {
                session::fatal(&mut io, sqlstate::PROTOCOL_VIOLATION, format!("interlock: {e}")).await;
            }
            Outcome::Error {
                side: e.side(),
                error: e.to_string(),
            }
        }
        Ok(startup::Opening::Closed) => Outcome::Closed,
        Ok(startup::Opening::Cancel { io, pid, key }) => {
            let what = cancel::forward(ctx, &start.verdict.agent, pid, key).await;
            tracing::info!(conn = %start.id, agent = %start.verdict.agent, "{what}");
            // Only now does the agent's cancel() return (it waits for EOF),
            // so its next query cannot be hit by this cancel.
            drop(io);
            Outcome::Closed
        }
        Ok(startup::Opening::Session { io, tls, minor, params }) => {
            let s = session::SessionSetup {
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
