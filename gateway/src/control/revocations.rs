//! Revocations: incident response. A revocation names processes (by pid,
//! exe, cgroup, agent or uid); from that moment the kernel refuses their new
//! connections and sends, and their live sessions are cut. Revocations
//! persist across restarts and cover processes that start later.
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::Config;

/// Errors adding or removing revocations (operator input).
#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    /// The request is malformed.
    #[error("revoke: {0}")]
    Invalid(String),
    /// No revocation with this id.
    #[error("no revocation `{0}`")]
    NotFound(String),
    /// The state file is unreadable or malformed.
    #[error("revocation state {path}: {message}")]
    State {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
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

#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StateFile {
    next: u32,
    revocations: Vec<Revocation>,
}

/// The revocations in force.
pub struct RevocationBook {
    state: StateFile,
    path: PathBuf,
}

impl RevocationBook {
    /// Loads the persisted revocations.
    pub fn load(config: &Config) -> Result<Self, RevocationError> {
        let path = config.paths.state_dir.join("revocations.json");
        let state = super::state::load_json(&path).map_err(|message| RevocationError::State {
            path: path.clone(),
            message,
        })?;
        Ok(Self { state, path })
    }

    /// Every revocation in force.
    pub fn list(&self) -> &[Revocation] {
        &self.state.revocations
    }

    /// True when any revocation needs exec checks.
    pub fn watches_exec(&self) -> bool {
        self.state.revocations.iter().any(|r| r.selector.watches_exec())
    }

    /// Adds a revocation; the caller applies and persists it.
    pub fn add(
        &mut self,
        selector: Selector,
        reason: String,
        by: String,
        expires_unix: Option<u64>,
    ) -> Result<Revocation, RevocationError> {
        if reason.trim().is_empty() {
            return Err(RevocationError::Invalid("a reason is required".into()));
        }
        self.state.next += 1;
        let r = Revocation {
            id: format!("r-{}", self.state.next),
            number: self.state.next,
            selector,
            reason,
            by,
            created_at: crate::audit::now(),
            expires_unix,
        };
        self.state.revocations.push(r.clone());
        Ok(r)
    }

    /// Removes a revocation.
    pub fn remove(&mut self, id: &str) -> Result<Revocation, RevocationError> {
        let pos = self
            .state
            .revocations
            .iter()
            .position(|r| r.id == id)
            .ok_or_else(|| RevocationError::NotFound(id.to_owned()))?;
        Ok(self.state.revocations.remove(pos))
    }

    /// Removes and returns lapsed time-limited revocations.
    pub fn expire(&mut self, now_unix: u64) -> Vec<Revocation> {
        let (gone, kept) = std::mem::take(&mut self.state.revocations)
            .into_iter()
            .partition(|r| r.expires_unix.is_some_and(|t| t <= now_unix));
        self.state.revocations = kept;
        gone
    }

    /// Writes the revocations to the state file (atomically).
    pub fn persist(&self) -> Result<(), RevocationError> {
        super::state::save_json(&self.path, &self.state).map_err(|message| RevocationError::State {
            path: self.path.clone(),
            message,
        })
    }
}
