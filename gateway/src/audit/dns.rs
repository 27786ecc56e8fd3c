//! DNS events: one per question an agent sent to the gateway's resolver.
use serde::{Deserialize, Serialize};

use crate::{identity::Identity, policy::Decision, types::AgentName};

/// How a DNS question reached the gateway.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DnsTransport {
    /// A datagram (port 53/udp).
    Udp,
    /// A message on a TCP connection (port 53/tcp).
    Tcp,
}

/// One record of an answer the agent received.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DnsAnswer {
    /// The owner name.
    pub name: String,
    /// The record type.
    pub rtype: String,
    /// The record data, as text.
    pub data: String,
    /// Time to live, seconds.
    pub ttl: u32,
}

/// One DNS question and what became of it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DnsQueryEvent {
    /// Time the question arrived (RFC 3339).
    pub time: String,
    /// The agent.
    pub agent: AgentName,
    /// The caller.
    pub identity: Identity,
    /// The agent's socket, as the gateway received from it.
    pub peer: std::net::SocketAddr,
    /// UDP or TCP.
    pub transport: DnsTransport,
    /// The server the agent asked.
    pub server: std::net::SocketAddr,
    /// The target the question was judged against (the server's).
    pub target: String,
    /// The name asked (lower case, no final dot).
    pub name: String,
    /// The record type asked.
    pub qtype: String,
    /// The exfiltration guard the question was over, or "".
    pub guard: String,
    /// The policy decision.
    pub decision: Decision,
    /// Where an allowed question was sent, when it was.
    pub upstream: Option<std::net::SocketAddr>,
    /// The answer was the gateway's kept copy of `upstream`'s earlier
    /// answer (TTLs lowered by its age), not a new trip upstream.
    #[serde(default)]
    pub cached: bool,
    /// The response code the agent received (`NoError`, `NXDomain`,
    /// `Refused`, `ServFail`...).
    pub rcode: String,
    /// The answer section the agent received.
    pub answers: Vec<DnsAnswer>,
    /// Addresses of the answer now bound to the name for this agent (0
    /// when the server is not trusted to bind names; see
    /// `[dns] trusted_servers`).
    #[serde(default)]
    pub bound: usize,
    /// Microseconds from arrival to the answer.
    pub duration_us: u64,
    /// Why the gateway answered SERVFAIL or FORMERR itself, when it did.
    pub error: Option<String>,
}
