//! PostgreSQL events: one per statement, and one at each end of a session.
use serde::{Deserialize, Serialize};

use crate::{
    identity::Identity,
    policy::Decision,
    types::{AgentName, ConnId},
};

/// One SQL statement: a simple-protocol query string, or one extended-protocol
/// Execute (with the statement it runs and its parameters).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SqlStatementEvent {
    /// Time the statement arrived (RFC 3339).
    pub time: String,
    /// The connection it came on.
    pub conn_id: ConnId,
    /// The agent.
    pub agent: AgentName,
    /// The caller.
    pub identity: Identity,
    /// The target.
    pub target: String,
    /// Database logged in to.
    pub database: String,
    /// Role the gateway logged in as.
    pub user: String,
    /// Which message ran it.
    pub protocol: SqlProtocol,
    /// The SQL text (values the masking rules catch are masked; capped).
    pub sql: String,
    /// Bound parameter values, masked like result values (`None` for NULL).
    pub params: Vec<Option<String>>,
    /// Statement kind (`select`, `insert`, ..., `unparsed`).
    pub kind: String,
    /// Tables read.
    pub tables_read: Vec<String>,
    /// Tables written.
    pub tables_written: Vec<String>,
    /// Rows sent to the agent.
    pub rows_returned: u64,
    /// Rows the command reports (INSERT/UPDATE/DELETE/COPY/...), when it does.
    pub rows_affected: Option<u64>,
    /// Milliseconds from arrival to completion.
    pub duration_ms: u64,
    /// The policy decision.
    pub decision: Decision,
    /// How it ended.
    pub outcome: Ran,
    /// SQLSTATE and message of an error the agent received.
    pub error: Option<String>,
    /// What was masked in the results: column or detector, and how many values.
    pub masked: Vec<MaskCount>,
}

/// Which PostgreSQL message ran a statement. Recorded as `simple`,
/// `extended` or `function_call`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SqlProtocol {
    /// A Query message.
    Simple,
    /// Parse, Bind and Execute.
    Extended,
    /// A FunctionCall message.
    FunctionCall,
}

/// How one execution of a statement ended. Recorded as `ok`, `suspended`,
/// `error` or `denied`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ran {
    /// It completed.
    Ok,
    /// An Execute with a row limit stopped at it (PortalSuspended: rows left).
    Suspended,
    /// The server answered with an error.
    Error,
    /// The gateway refused it (policy, or a limit).
    Denied,
}

/// Values masked by one column rule or detector in one statement.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MaskCount {
    /// `column customers.email` or `detector card`.
    pub by: String,
    /// Values masked.
    pub count: u64,
}

/// A PostgreSQL session started (after the upstream login) or ended.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PgSessionEvent {
    /// Time (RFC 3339).
    pub time: String,
    /// The connection.
    pub conn_id: ConnId,
    /// The agent.
    pub agent: AgentName,
    /// The caller.
    pub identity: Identity,
    /// The target.
    pub target: String,
    /// `start` or `end`.
    pub phase: String,
    /// Database logged in to.
    pub database: String,
    /// Role the gateway logged in as.
    pub user: String,
    /// Role the agent asked for (never used to log in).
    pub agent_user: String,
    /// `application_name` the agent sent.
    pub application_name: String,
    /// The agent's hop is TLS (terminated by the gateway).
    pub agent_tls: bool,
    /// The upstream hop is verified TLS.
    pub upstream_tls: bool,
    /// The upstream session was reused from the pool (reset, same agent
    /// and login), not logged in anew.
    #[serde(default)]
    pub upstream_reused: bool,
    /// Bytes from agent to gateway (at `end`).
    pub bytes_up: u64,
    /// Bytes from gateway to agent (at `end`).
    pub bytes_down: u64,
    /// Statements seen (at `end`).
    pub statements: u64,
    /// Milliseconds since the session started (at `end`).
    pub duration_ms: u64,
    /// How it ended (at `end`), or why the login failed.
    pub outcome: Option<String>,
}
