//! The policy stage of the data path: name the agent, name the target, and
//! decide. Swappable parts (agents, targets) are replaced whole on reload.
use std::{sync::RwLock, time::SystemTime};

use super::{ActionKind, Decision, PolicyStore, Query};
use crate::{
    identity::{AgentMatcher, Identity},
    targets::TargetTable,
    types::{AgentName, OrigDst},
};

/// What the policy stage says about a new connection.
pub struct ConnectVerdict {
    /// The caller's agent.
    pub agent: AgentName,
    /// The destination's target name.
    pub target: String,
    /// The decision.
    pub decision: Decision,
}

/// Agents, targets and policies together.
pub struct Gate {
    /// The policy set.
    pub policies: PolicyStore,
    naming: RwLock<(std::sync::Arc<AgentMatcher>, std::sync::Arc<TargetTable>)>,
}

impl Gate {
    /// Bundles the parts.
    pub fn new(policies: PolicyStore, agents: AgentMatcher, targets: TargetTable) -> Self {
        Self {
            policies,
            naming: RwLock::new((agents.into(), targets.into())),
        }
    }

    /// Replaces the agent and target definitions (on config reload).
    pub fn replace_naming(&self, agents: AgentMatcher, targets: TargetTable) {
        *self.naming.write().unwrap_or_else(|p| p.into_inner()) = (agents.into(), targets.into());
    }

    fn naming(&self) -> (std::sync::Arc<AgentMatcher>, std::sync::Arc<TargetTable>) {
        self.naming.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The agent name of an identity.
    pub fn agent_of(&self, identity: &Identity) -> AgentName {
        self.naming().0.name_of(identity)
    }

    /// Decides whether a redirected connection may proceed.
    pub fn connect(&self, identity: &Identity, dst: OrigDst) -> ConnectVerdict {
        let (agents, targets) = self.naming();
        let agent = agents.name_of(identity);
        let target = targets.resolve(dst, "tcp");
        let decision = self.policies.decide(&Query {
            agent: &agent,
            identity,
            target: &target,
            action: &ActionKind::Connect,
            now: SystemTime::now(),
        });
        ConnectVerdict {
            agent,
            target: target.name,
            decision,
        }
    }

    /// The targets, for explain.
    pub fn targets(&self) -> std::sync::Arc<TargetTable> {
        self.naming().1
    }
}
