//! The model: small types that give meaning to numbers and addresses passed
//! between stages, and the records every layer above shares (targets and
//! actions as policies see them, grants, revocations, reviews, masking
//! styles). The bottom layer: it imports no other module of the crate.
use std::{fmt, net::SocketAddr};

use serde::{Deserialize, Serialize};

mod action;
mod grant;
mod mask;
mod review;

pub use action::{ActionKind, DnsFacts, SqlFacts, TargetRef, Wire};
pub use grant::{Grant, Revocation, Selector};
pub use mask::{FieldPath, PathSegment, Style, BUILTIN_NAMES};
pub use review::{Person, ReviewRecord, ReviewState, Scope};

/// Where the agent meant to connect before the kernel redirected it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrigDst(pub SocketAddr);

impl fmt::Display for OrigDst {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A cgroup v2 id (the cgroup directory's inode number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CgroupId(pub u64);

/// A kernel socket cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SocketCookie(pub u64);

/// The gateway's number for one proxied connection, unique per gateway run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

/// The name of a configured agent (or `unknown`), as policies see it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AgentName(pub String);

impl fmt::Display for AgentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which party sent bad bytes or failed: the agent, the upstream, or the
/// gateway itself. Recorded as `agent`, `upstream` or `gateway`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The agent (client) side.
    Agent,
    /// The upstream (server) side.
    Upstream,
    /// The gateway.
    Gateway,
}

impl Side {
    /// As recorded.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Upstream => "upstream",
            Self::Gateway => "gateway",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
