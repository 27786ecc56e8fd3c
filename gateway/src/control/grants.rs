//! Time-limited grants: extra permissions on top of policy, for one agent and
//! one target, that expire by themselves. Each grant becomes a generated Cedar
//! permit bounded by `context.time`, so it is subject to every forbid like any
//! other permit, and a request a second after expiry is denied even before
//! the expiry sweep removes it. Grants persist in the state directory.
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use crate::types::Grant;
use crate::{config::Config, policy::GRANTS_FILE};

/// Errors adding or removing grants (operator input).
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// A field is malformed.
    #[error("grant: {0}")]
    Invalid(String),
    /// No grant with this id.
    #[error("no grant `{0}`")]
    NotFound(String),
    /// The state file is unreadable or malformed.
    #[error("grant state {path}: {message}")]
    State {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// What the operator asks for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GrantRequest {
    /// Agent name.
    pub agent: String,
    /// Target name or `ip:port`.
    pub target: String,
    /// Actions (`connect`, `http_request`, `sql_statement`); empty = all.
    pub actions: Vec<String>,
    /// Lifetime in seconds.
    pub seconds: u64,
    /// Why.
    pub reason: String,
}

const ACTIONS: [&str; 3] = ["connect", "http_request", "sql_statement"];
/// Longest grant: a week. Longer access belongs in reviewed policy files.
const MAX_SECONDS: u64 = 7 * 24 * 3600;

#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StateFile {
    next: u64,
    grants: Vec<Grant>,
}

/// The grants in force.
pub struct GrantBook {
    state: StateFile,
    path: PathBuf,
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:[]".contains(c))
}

/// A Cedar string literal.
fn cedar_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl GrantBook {
    /// Loads the persisted grants.
    pub fn load(config: &Config) -> Result<Self, GrantError> {
        let path = config.paths.state_dir.join("grants.json");
        let state = crate::persist::load_json(&path).map_err(|e| GrantError::State {
            path: path.clone(),
            message: e.to_string(),
        })?;
        Ok(Self { state, path })
    }

    /// Every grant not yet removed.
    pub fn list(&self) -> &[Grant] {
        &self.state.grants
    }

    /// Adds a grant; the caller persists and applies it.
    pub fn add(&mut self, req: GrantRequest, by: String, now_unix: u64) -> Result<Grant, GrantError> {
        if !valid_name(&req.agent) || !valid_name(&req.target) {
            return Err(GrantError::Invalid("agent and target must be names or ip:port".into()));
        }
        if req.seconds == 0 || req.seconds > MAX_SECONDS {
            return Err(GrantError::Invalid(format!(
                "duration must be between 1 s and {MAX_SECONDS} s (a week)"
            )));
        }
        if req.reason.trim().is_empty() {
            return Err(GrantError::Invalid("a reason is required".into()));
        }
        let actions: Vec<String> = if req.actions.is_empty() {
            ACTIONS.iter().map(|a| (*a).to_owned()).collect()
        } else {
            req.actions
        };
        if let Some(bad) = actions.iter().find(|a| !ACTIONS.contains(&a.as_str())) {
            return Err(GrantError::Invalid(format!(
                "unknown action `{bad}` (connect, http_request, sql_statement)"
            )));
        }
        self.state.next += 1;
        let grant = Grant {
            id: format!("g-{}", self.state.next),
            agent: req.agent,
            target: req.target,
            actions,
            expires_unix: now_unix + req.seconds,
            reason: req.reason,
            granted_by: by,
            granted_at: crate::audit::now(),
        };
        self.state.grants.push(grant.clone());
        Ok(grant)
    }

    /// Removes a grant early.
    pub fn revoke(&mut self, id: &str) -> Result<Grant, GrantError> {
        let pos = self
            .state
            .grants
            .iter()
            .position(|g| g.id == id)
            .ok_or_else(|| GrantError::NotFound(id.to_owned()))?;
        Ok(self.state.grants.remove(pos))
    }

    /// Removes and returns grants past their expiry.
    pub fn expire(&mut self, now_unix: u64) -> Vec<Grant> {
        let (gone, kept) = std::mem::take(&mut self.state.grants)
            .into_iter()
            .partition(|g| g.expires_unix <= now_unix);
        self.state.grants = kept;
        gone
    }

    /// The generated policy file for the grants in force.
    pub fn policies(&self) -> Vec<(String, String)> {
        let text: String = self
            .state
            .grants
            .iter()
            .map(|g| {
                let actions: Vec<String> =
                    g.actions.iter().map(|a| format!("Interlock::Action::{}", cedar_str(a))).collect();
                format!(
                    "@id({id})\n@reason({reason})\npermit (principal == Interlock::Agent::{agent}, action in [{actions}], resource == Interlock::Target::{target})\nwhen {{ context.time < {expires} }};\n\n",
                    id = cedar_str(&format!("grant-{}", g.id)),
                    reason = cedar_str(&format!("grant {} by {}: {}", g.id, g.granted_by, g.reason)),
                    agent = cedar_str(&g.agent),
                    target = cedar_str(&g.target),
                    actions = actions.join(", "),
                    expires = g.expires_unix,
                )
            })
            .collect();
        vec![(GRANTS_FILE.to_owned(), text)]
    }

    /// Writes the grants to the state file (atomically).
    pub fn persist(&self) -> Result<(), GrantError> {
        crate::persist::save_json(&self.path, &self.state).map_err(|e| GrantError::State {
            path: self.path.clone(),
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{embedded_sources, ActionKind, Ruling};

    fn book() -> GrantBook {
        let dir = std::env::temp_dir().join(format!(
            "interlock-grants-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let mut config = Config::default();
        config.paths.state_dir = dir;
        GrantBook::load(&config).unwrap()
    }

    fn req(reason: &str) -> GrantRequest {
        GrantRequest {
            agent: "db-reader".into(),
            target: "10.9.9.9:5432".into(),
            actions: vec!["connect".into()],
            seconds: 60,
            reason: reason.into(),
        }
    }

    #[test]
    fn grant_policies_compile_permit_until_expiry_and_yield_to_forbids() {
        let mut b = book();
        let g = b
            .add(req("incident \"42\" \\ follow-up"), "root".into(), 1_000)
            .unwrap();
        let set = embedded_sources().load_with(&b.policies()).unwrap();
        let decide = |agent: &str, target: &str, now: u64| {
            let identity = crate::identity::Identity::unattributed();
            let t = crate::policy::TargetRef {
                name: target.into(),
                ip: "10.9.9.9".parse().unwrap(),
                port: 5432,
                host: String::new(),
                protocol: crate::types::Wire::Tcp,
            };
            let agent = crate::types::AgentName(agent.into());
            crate::policy::decide(
                &set,
                &crate::policy::Query {
                    agent: &agent,
                    identity: &identity,
                    target: &t,
                    action: &ActionKind::Connect,
                    now: std::time::UNIX_EPOCH + std::time::Duration::from_secs(now),
                },
            )
        };
        let d = decide("db-reader", "10.9.9.9:5432", 1_059);
        assert_eq!(d.outcome, Ruling::Allow, "{d:?}");
        assert_eq!(d.policies, vec![format!("grant-{}", g.id)]);
        assert_eq!(decide("db-reader", "10.9.9.9:5432", 1_060).outcome, Ruling::Deny);
        assert_eq!(decide("assistant", "10.9.9.9:5432", 1_010).outcome, Ruling::Deny);
        // The base forbid still wins over a grant.
        assert_eq!(decide("unknown", "10.9.9.9:5432", 1_010).outcome, Ruling::Deny);
    }

    #[test]
    fn bad_requests_are_refused_and_expiry_removes_grants() {
        let mut b = book();
        assert!(b
            .add(GrantRequest { seconds: 0, ..req("x") }, "root".into(), 0)
            .is_err());
        assert!(b
            .add(
                GrantRequest {
                    reason: " ".into(),
                    ..req("x")
                },
                "root".into(),
                0
            )
            .is_err());
        assert!(b
            .add(
                GrantRequest {
                    agent: "a\"b".into(),
                    ..req("x")
                },
                "root".into(),
                0
            )
            .is_err());
        assert!(b
            .add(
                GrantRequest {
                    actions: vec!["delete".into()],
                    ..req("x")
                },
                "root".into(),
                0
            )
            .is_err());
        let g = b.add(req("x"), "root".into(), 100).unwrap();
        assert!(b.expire(159).is_empty());
        assert_eq!(b.expire(160), vec![g]);
        assert!(b.list().is_empty());
        assert!(matches!(b.revoke("g-1"), Err(GrantError::NotFound(_))));
    }
}
