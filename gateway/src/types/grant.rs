//! Operator grants and revocations, as the control socket, the state files
//! and the audit trail see them.
use serde::{Deserialize, Serialize};

/// One grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// `g-N`.
    pub id: String,
    /// Agent name.
    pub agent: String,
    /// Target name or `ip:port`.
    pub target: String,
    /// Cedar actions it covers.
    pub actions: Vec<String>,
    /// Unix seconds after which it no longer applies.
    pub expires_unix: u64,
    /// Why it was granted.
    pub reason: String,
    /// Who granted it (peer credentials of the control socket).
    pub granted_by: String,
    /// When (RFC 3339).
    pub granted_at: String,
}

/// Which processes a revocation covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "lowercase")]
pub enum Selector {
    /// One process (and the children it starts), recognised by its start time.
    Pid {
        /// Process id.
        pid: u32,
        /// Start time in ticks since boot, so a reused pid is not revoked.
        start_ticks: u64,
    },
    /// Every process running this executable, now or later.
    Exe {
        /// Resolved path.
        path: String,
    },
    /// A cgroup and its descendants.
    Cgroup {
        /// Path relative to the cgroup2 mount.
        path: String,
        /// Its id.
        id: u64,
    },
    /// Every process the named agent matches, now or later.
    Agent {
        /// Agent name.
        name: String,
    },
    /// Every process of a user.
    Uid {
        /// The uid.
        uid: u32,
    },
}

impl Selector {
    /// True for selectors that need new images checked at exec.
    pub fn watches_exec(&self) -> bool {
        matches!(self, Self::Exe { .. } | Self::Agent { .. })
    }
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pid { pid, .. } => write!(f, "pid {pid}"),
            Self::Exe { path } => write!(f, "exe {path}"),
            Self::Cgroup { path, .. } => write!(f, "cgroup {path}"),
            Self::Agent { name } => write!(f, "agent {name}"),
            Self::Uid { uid } => write!(f, "uid {uid}"),
        }
    }
}

/// One revocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    /// `r-N`.
    pub id: String,
    /// N, the value kept in the kernel maps.
    pub number: u32,
    /// What it covers.
    pub selector: Selector,
    /// Why.
    pub reason: String,
    /// Who issued it.
    pub by: String,
    /// When (RFC 3339).
    pub created_at: String,
    /// Unix seconds when it lapses, if time-limited.
    pub expires_unix: Option<u64>,
}
