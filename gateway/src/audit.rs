//! The typed event stream: one event per connection (later issues add HTTP
//! exchanges, statements and operator actions). Events go to a sink off the
//! request path; until the audit store exists, the sink is a JSON-lines file.
use std::{net::SocketAddr, time::SystemTime};

use serde::{Deserialize, Serialize};

use crate::{
    identity::Identity,
    policy::Decision,
    types::{AgentName, ConnId, OrigDst},
};

mod columns;
mod dns;
pub mod head;
pub mod keys;
pub mod record;
pub mod seal;
mod sink;
mod sql;
pub mod store;
#[cfg(test)]
mod tests;
pub mod verify;

pub use dns::{DnsAnswer, DnsQueryEvent, DnsTransport};
pub(crate) use sink::journal::{line as journal_line, parse as journal_parse};
pub use sink::{append_direct, EventSink, SinkError};
pub use sql::{MaskCount, PgSessionEvent, Ran, SqlProtocol, SqlStatementEvent};

/// How a connection ended.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// Both sides finished normally.
    Closed,
    /// Nothing moved either way for the idle timeout.
    IdleTimeout,
    /// The upstream could not be reached (upstream side).
    UpstreamConnectFailed {
        /// Why.
        error: String,
    },
    /// A read or write failed mid-stream.
    Error {
        /// Which side failed.
        side: crate::types::Side,
        /// The error.
        error: String,
    },
    /// Policy refused the connection (deny, or review until approvals exist).
    Denied,
    /// Cut mid-stream because the caller was revoked.
    Revoked {
        /// Which revocation.
        reason: String,
    },
    /// Closed by the gateway as it stopped: still open when
    /// `listener.drain_timeout` ran out.
    Shutdown,
    /// The gateway refused the connection before relaying anything.
    Refused {
        /// Why.
        reason: String,
    },
}

/// One proxied (or refused) connection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConnectionEvent {
    /// Wall-clock time the connection was accepted (RFC 3339).
    pub time: String,
    /// Gateway-local connection number.
    pub conn_id: ConnId,
    /// The agent the caller was matched to.
    pub agent: Option<AgentName>,
    /// The caller, when the kernel left a record.
    pub identity: Option<Identity>,
    /// The target the destination was matched to.
    pub target: Option<String>,
    /// The policy decision on the connect, with the deciding policies.
    pub decision: Option<Decision>,
    /// Agent-side address as the listener saw it.
    pub peer: SocketAddr,
    /// Where the agent meant to go.
    pub orig_dst: Option<OrigDst>,
    /// Bytes from agent to upstream.
    pub bytes_up: u64,
    /// Bytes from upstream to agent.
    pub bytes_down: u64,
    /// Milliseconds from accept to close.
    pub duration_ms: u64,
    /// How it ended.
    pub outcome: Outcome,
}

/// One HTTP exchange on an inspected connection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HttpExchangeEvent {
    /// Time the request arrived (RFC 3339).
    pub time: String,
    /// The connection it came on.
    pub conn_id: ConnId,
    /// The agent.
    pub agent: AgentName,
    /// The caller.
    pub identity: Identity,
    /// The target.
    pub target: String,
    /// Request method.
    pub method: String,
    /// Request path (without the query).
    pub path: String,
    /// Exchange number on the connection (links its `http_body` event).
    pub exchange: u64,
    /// Status returned to the agent.
    pub status: u16,
    /// The policy decision on the request.
    pub decision: Decision,
    /// Whether the gateway injected the target's credential.
    pub credential_injected: bool,
    /// What was masked in the request body: detector and field (never the values).
    pub masked_request: Vec<crate::masking::MaskedValue>,
    /// What was masked in the response, when masking had finished before
    /// this event (a whole response); a response still streaming has a
    /// `masked` event after this one instead.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub masked_response: Vec<crate::masking::MaskedValue>,
    /// Why the upstream could not answer, when it could not (upstream side).
    pub upstream_error: Option<String>,
    /// Milliseconds until the response headers.
    pub duration_ms: u64,
    /// The bodies, when the whole response was at hand with its head: then
    /// no `http_body` event follows. A response still streaming when its
    /// head went out has its bodies in the `http_body` event instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bodies: Option<ExchangeBodies>,
}

/// An exchange's bodies as recorded with it, up to the configured cap of
/// each, as they crossed the gateway (after masking).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExchangeBodies {
    /// The request body as sent upstream (capped).
    pub request_body: String,
    /// Its full length.
    pub request_bytes: u64,
    /// The response body as delivered (capped).
    pub response_body: String,
    /// Its full length.
    pub response_bytes: u64,
    /// The response body was whole (always, for bodies recorded with the exchange).
    pub response_complete: bool,
}

/// The bodies of one HTTP exchange, up to the configured cap of each, as
/// they crossed the gateway (after masking; credentials travel in headers
/// and are never here).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HttpBodyEvent {
    /// When the response body ended.
    pub time: String,
    /// The connection.
    pub conn_id: ConnId,
    /// The exchange on that connection (as in its `http_exchange` event).
    pub exchange: u64,
    /// The agent.
    pub agent: AgentName,
    /// The caller.
    pub identity: Identity,
    /// The target.
    pub target: String,
    /// Request path.
    pub path: String,
    /// The request body as sent upstream (capped).
    pub request_body: String,
    /// Its full length.
    pub request_bytes: u64,
    /// The response body as delivered (capped).
    pub response_body: String,
    /// Its full length.
    pub response_bytes: u64,
    /// The response body was delivered to its end.
    pub response_complete: bool,
}

/// Every kind of event the gateway records.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A connection ended (or was refused).
    Connection(Box<ConnectionEvent>),
    /// One HTTP request and its response (or refusal).
    HttpExchange(Box<HttpExchangeEvent>),
    /// The bodies of an HTTP exchange (capped), when its response ended.
    HttpBody(Box<HttpBodyEvent>),
    /// One SQL statement on a PostgreSQL session (or its refusal).
    SqlStatement(Box<SqlStatementEvent>),
    /// A PostgreSQL session started or ended.
    PgSession(Box<PgSessionEvent>),
    /// One DNS question from an agent, and its answer or refusal.
    DnsQuery(Box<DnsQueryEvent>),
    /// Values were masked in a response (which detectors; never the values).
    Masked {
        /// Time (RFC 3339).
        time: String,
        /// The connection.
        conn_id: ConnId,
        /// The agent.
        agent: AgentName,
        /// The target.
        target: String,
        /// Request path.
        path: String,
        /// `response` (request masking, and response masking that ended before
        /// the exchange's event, are on the exchange event).
        direction: String,
        /// What was masked: detector and field or offset, in order (never the values).
        detectors: Vec<crate::masking::MaskedValue>,
    },
    /// An operator changed the redirect rules.
    RulesChanged {
        /// Time (RFC 3339).
        time: String,
        /// What changed, in words.
        change: String,
    },
    /// The gateway started, re-adopting or creating its kernel state.
    GatewayStarted {
        /// Time (RFC 3339).
        time: String,
        /// Cgroups the hooks are attached to.
        cgroups: Vec<String>,
    },
    /// An operator removed the kernel hooks with `interlock detach`.
    Detached {
        /// Time (RFC 3339).
        time: String,
        /// Who ran it.
        by: String,
        /// What was removed.
        removed: Vec<String>,
    },
    /// A grant was added, revoked early, or expired.
    Grant {
        /// Time (RFC 3339).
        time: String,
        /// `added`, `revoked` or `expired`.
        change: String,
        /// The grant.
        grant: crate::types::Grant,
        /// Who made the change (`gateway` for expiry).
        by: String,
    },
    /// A revocation was issued, lifted, or lapsed.
    Revocation {
        /// Time (RFC 3339).
        time: String,
        /// `added`, `removed` or `expired`.
        change: String,
        /// The revocation.
        revocation: crate::types::Revocation,
        /// Who made the change (`gateway` for expiry).
        by: String,
        /// Live connections cut.
        cut: usize,
    },
    /// Policies were (re)loaded, or a reload was refused.
    PolicyReloaded {
        /// Time (RFC 3339).
        time: String,
        /// Directory or `embedded default policies`.
        source: String,
        /// Policies now in force.
        policies: usize,
        /// Why the new files were refused (the old set stays in force).
        error: Option<String>,
    },
    /// A review was opened, approved (in part), denied, expired or failed.
    Review {
        /// Time (RFC 3339).
        time: String,
        /// `opened`, `approval`, `approved`, `denied`, `expired` or `failed`.
        change: String,
        /// The review after the change.
        review: Box<crate::types::ReviewRecord>,
        /// The person who made the change.
        by: Option<crate::types::Person>,
    },
    /// Refusals by a per-agent limit that were counted, not recorded one by
    /// one (the first of each burst has an event of its own).
    Limited {
        /// Time (RFC 3339).
        time: String,
        /// The agent.
        agent: AgentName,
        /// `max_connections_per_agent`, `connection_rate` or `request_rate`.
        limit: String,
        /// Why, in words.
        reason: String,
        /// How many were refused since the last such event.
        refused: u64,
    },
    /// The gateway stopped (agents are refused until it returns).
    GatewayStopped {
        /// Time (RFC 3339).
        time: String,
    },
}

/// Now, as RFC 3339 with milliseconds.
pub fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}
