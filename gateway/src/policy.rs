//! Access decisions from Cedar policies that security teams write and review.
//!
//! The principal is the named agent with its identity attributes, the action
//! is `connect`, `http_request` or `sql_statement`, the resource is the
//! target, and the context carries time and request details. Effects beyond
//! permit/forbid ride on annotations: `@review` holds a request for approval,
//! `@mask("rule,...")` names masking rules, `@reason("...")` explains,
//! `@id("...")` names the policy.
//!
//! The current policy set is swapped atomically on reload; a set that fails
//! to load never replaces the one in force.
use std::{
    path::PathBuf,
    sync::{Arc, RwLock},
};

mod decide;
mod gate;
mod load;
mod request;

pub use decide::{decide, Decision, Outcome};
pub use gate::{ConnectVerdict, Gate};
pub use load::{load_dir, load_embedded, load_sources, LoadedPolicies, PolicyError, PolicyMeta};
pub use request::{ActionKind, Query, RequestError, TargetRef};

/// The policy set in force, and where to reload it from.
pub struct PolicyStore {
    current: RwLock<Arc<LoadedPolicies>>,
    dir: Option<PathBuf>,
}

impl PolicyStore {
    /// Loads from `dir`, or the embedded policies when `None`.
    pub fn load(dir: Option<PathBuf>) -> Result<Self, PolicyError> {
        let set = Self::read(dir.as_deref())?;
        Ok(Self {
            current: RwLock::new(Arc::new(set)),
            dir,
        })
    }

    fn read(dir: Option<&std::path::Path>) -> Result<LoadedPolicies, PolicyError> {
        match dir {
            Some(d) => load_dir(d),
            None => load_embedded(),
        }
    }

    /// The policy directory, if policies come from files.
    pub fn dir(&self) -> Option<&std::path::Path> {
        self.dir.as_deref()
    }

    /// The set in force.
    pub fn current(&self) -> Arc<LoadedPolicies> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reloads; on error the old set stays in force and the error is returned.
    pub fn reload(&self) -> Result<Arc<LoadedPolicies>, PolicyError> {
        let set = Arc::new(Self::read(self.dir.as_deref())?);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = set.clone();
        Ok(set)
    }

    /// Decides with the set in force.
    pub fn decide(&self, q: &Query<'_>) -> Decision {
        decide(&self.current(), q)
    }
}

#[cfg(test)]
mod tests;
