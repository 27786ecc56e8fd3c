//! Revocations: incident response. A revocation names processes (by pid,
//! exe, cgroup, agent or uid); from that moment the kernel refuses their new
//! connections and sends, and their live sessions are cut. Revocations
//! persist across restarts and cover processes that start later.
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::Config;
pub use crate::types::{Revocation, Selector};

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
        let state = crate::persist::load_json(&path).map_err(|e| RevocationError::State {
            path: path.clone(),
            message: e.to_string(),
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
        crate::persist::save_json(&self.path, &self.state).map_err(|e| RevocationError::State {
            path: self.path.clone(),
            message: e.to_string(),
        })
    }
}
