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

pub use decide::{decide, decide_cached, Decision, Ruling};
pub use gate::{ConnectVerdict, Gate};
pub use load::{
    embedded_sources, load_dir, load_embedded, load_sources, read_dir_sources, LoadedPolicies, PolicyError, PolicyMeta,
    ReviewRules, Sources,
};
pub use request::{ActionKind, Query, RequestError, SqlFacts, SubjectCache, TargetRef};

/// The name grants' generated policies are loaded under (`control` makes
/// them; decisions say which allowing policies were grants).
pub const GRANTS_FILE: &str = "<grants>";

/// The policy set in force: the last good files plus generated policies
/// (grants), and where to reload the files from.
pub struct PolicyStore {
    /// The set in force and its generation (bumped on every swap; decision
    /// caches key on it).
    current: RwLock<(u64, Arc<LoadedPolicies>)>,
    state: RwLock<(Sources, Vec<(String, String)>)>,
    dir: Option<PathBuf>,
    mask_names: Vec<String>,
    /// Principals and resources already built (they do not depend on the policies).
    pub(crate) subjects: SubjectCache,
}

impl PolicyStore {
    /// Loads from `dir`, or the embedded policies when `None`; `mask_names`
    /// are the detectors and masking rules `@mask` may name.
    pub fn load(dir: Option<PathBuf>, mask_names: Vec<String>) -> Result<Self, PolicyError> {
        let sources = Self::read(dir.as_deref(), &mask_names)?;
        let set = sources.load_with(&[])?;
        Ok(Self {
            current: RwLock::new((1, Arc::new(set))),
            state: RwLock::new((sources, Vec::new())),
            dir,
            mask_names,
            subjects: SubjectCache::default(),
        })
    }

    fn read(dir: Option<&std::path::Path>, mask_names: &[String]) -> Result<Sources, PolicyError> {
        let mut sources = match dir {
            Some(d) => read_dir_sources(d)?,
            None => embedded_sources(),
        };
        sources.mask_names = mask_names.to_vec();
        Ok(sources)
    }

    /// The policy directory, if policies come from files.
    pub fn dir(&self) -> Option<&std::path::Path> {
        self.dir.as_deref()
    }

    /// The set in force.
    pub fn current(&self) -> Arc<LoadedPolicies> {
        self.snapshot().1
    }

    /// The set in force with its generation.
    pub fn snapshot(&self) -> (u64, Arc<LoadedPolicies>) {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn swap(&self, set: LoadedPolicies) -> Arc<LoadedPolicies> {
        let set = Arc::new(set);
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        *current = (current.0 + 1, set.clone());
        set
    }

    /// Re-reads the files; on error the old set stays in force and the error is returned.
    pub fn reload(&self) -> Result<Arc<LoadedPolicies>, PolicyError> {
        let sources = Self::read(self.dir.as_deref(), &self.mask_names)?;
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        let set = sources.load_with(&state.1)?;
        state.0 = sources;
        Ok(self.swap(set))
    }

    /// Replaces the generated policies (grants) on top of the last good files.
    pub fn set_generated(&self, generated: Vec<(String, String)>) -> Result<Arc<LoadedPolicies>, PolicyError> {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        let set = state.0.load_with(&generated)?;
        state.1 = generated;
        Ok(self.swap(set))
    }

    /// Decides with the set in force.
    pub fn decide(&self, q: &Query<'_>) -> Decision {
        decide_cached(&self.current(), q, &self.subjects)
    }
}

#[cfg(test)]
mod tests;
