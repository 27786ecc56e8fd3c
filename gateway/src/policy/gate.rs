//! The policy stage of the data path: name the agent, name the target, and
//! decide. Swappable parts (agents, targets) are replaced whole on reload.
use std::{
    collections::HashMap,
    sync::{Mutex, RwLock},
    time::SystemTime,
};

use super::{ActionKind, Decision, PolicyStore, Query, TargetRef};
use crate::{
    identity::{AgentMatcher, Identity},
    targets::{Judged, Learned, Names, TargetTable},
    types::{AgentName, OrigDst, Wire},
};

/// What the policy stage says about a new connection.
pub struct ConnectVerdict {
    /// The caller's agent.
    pub agent: AgentName,
    /// The destination as it was judged: resolved once per connection, so
    /// every request of the session names the target this verdict did.
    pub target: TargetRef,
    /// The policy generation the verdict was reached under.
    pub generation: u64,
    /// The decision.
    pub decision: Decision,
}

/// Agents, targets and policies together.
pub struct Gate {
    /// The policy set.
    pub policies: PolicyStore,
    /// Which names resolve to which addresses (kept across reloads).
    pub names: Names,
    /// Names agents resolved through the gateway, per agent and address.
    pub learned: Learned,
    naming: RwLock<(std::sync::Arc<AgentMatcher>, std::sync::Arc<TargetTable>)>,
    cache: Mutex<HashMap<ConnectKey, Decision>>,
}

/// Everything a `connect` decision can depend on when no policy reads the
/// request context: the policy generation, every principal attribute, and the
/// target. Equal keys give equal decisions, so caching on them is safe.
#[derive(Clone, PartialEq, Eq, Hash)]
struct ConnectKey {
    generation: u64,
    agent: AgentName,
    pid: u32,
    uid: u32,
    user: Option<String>,
    comm: String,
    process: Option<std::sync::Arc<crate::identity::ProcessInfo>>,
    target: String,
    host: String,
    ip: std::net::IpAddr,
    port: u16,
}

/// Cached decisions kept before the cache is cleared.
const CACHE_LIMIT: usize = 16_384;

impl Gate {
    /// Bundles the parts.
    pub fn new(policies: PolicyStore, agents: AgentMatcher, targets: TargetTable) -> Self {
        Self {
            policies,
            names: Names::default(),
            learned: Learned::default(),
            naming: RwLock::new((agents.into(), targets.into())),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Replaces the agent and target definitions (on config reload).
    pub fn replace_naming(&self, agents: AgentMatcher, targets: TargetTable) {
        *self.naming.write().unwrap_or_else(|p| p.into_inner()) = (agents.into(), targets.into());
        // Names feed the cache key, but a stale entry keyed on an old name is
        // never wrong; clearing just bounds memory.
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    fn naming(&self) -> (std::sync::Arc<AgentMatcher>, std::sync::Arc<TargetTable>) {
        self.naming.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The agent name of an identity.
    pub fn agent_of(&self, identity: &Identity) -> AgentName {
        self.naming().0.name_of(identity)
    }

    /// Decides whether a redirected connection may proceed, as the target it
    /// was judged as (see [`TargetTable::judge`]).
    /// `agent` is the identity's agent name (see [`agent_of`](Self::agent_of)).
    pub fn connect(&self, agent: AgentName, identity: &Identity, dst: OrigDst, judged: &Judged) -> ConnectVerdict {
        let host = judged.bound.as_deref();
        let target = TargetRef {
            name: judged.spec.as_ref().map_or_else(|| dst.to_string(), |t| t.name.clone()),
            ip: dst.0.ip(),
            port: dst.0.port(),
            host: host.unwrap_or_default().to_owned(),
            protocol: if judged.claimed.is_some() { Wire::Tls } else { Wire::Tcp },
        };
        let (generation, set) = self.policies.snapshot();
        if let Some(reason) = judged.unresolved() {
            return ConnectVerdict {
                agent,
                target,
                generation,
                decision: Decision::deny(Vec::new(), reason),
            };
        }
        let key = (!set.reads_context).then(|| ConnectKey {
            generation,
            agent: agent.clone(),
            pid: identity.pid,
            uid: identity.uid,
            user: identity.user.clone(),
            comm: identity.comm.clone(),
            process: identity.process.clone(),
            target: target.name.clone(),
            host: target.host.clone(),
            ip: target.ip,
            port: target.port,
        });
        if let Some(key) = &key {
            if let Some(hit) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(key) {
                return ConnectVerdict {
                    agent,
                    target,
                    generation,
                    decision: hit.clone(),
                };
            }
        }
        let query = Query {
            agent: &agent,
            identity,
            target: &target,
            action: &ActionKind::Connect,
            now: SystemTime::now(),
        };
        let decision = super::decide_cached(&set, &query, &self.policies.subjects);
        if let Some(key) = key {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(key, decision.clone());
        }
        ConnectVerdict {
            agent,
            target,
            generation,
            decision,
        }
    }

    /// The targets, for explain.
    pub fn targets(&self) -> std::sync::Arc<TargetTable> {
        self.naming().1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_decisions_follow_policy_reloads() {
        let dir = std::env::temp_dir().join(format!("interlock-gate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("s.cedarschema"),
            include_str!("../../../policies/interlock.cedarschema"),
        )
        .unwrap();
        std::fs::write(dir.join("p.cedar"), "permit (principal, action, resource);").unwrap();
        let gate = Gate::new(
            PolicyStore::load(Some(dir.clone()), Vec::new()).unwrap(),
            AgentMatcher::new(&[]).unwrap(),
            TargetTable::default(),
        );
        let id = Identity::unattributed();
        let dst = OrigDst("192.0.2.1:443".parse().unwrap());
        assert_eq!(
            gate.connect(gate.agent_of(&id), &id, dst, &Judged::default())
                .decision
                .outcome,
            super::super::Ruling::Allow
        );
        assert_eq!(
            gate.connect(gate.agent_of(&id), &id, dst, &Judged::default())
                .decision
                .outcome,
            super::super::Ruling::Allow
        );
        std::fs::write(dir.join("p.cedar"), "forbid (principal, action, resource);").unwrap();
        gate.policies.reload().unwrap();
        assert_eq!(
            gate.connect(gate.agent_of(&id), &id, dst, &Judged::default())
                .decision
                .outcome,
            super::super::Ruling::Deny
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
