//! The data path's side of a review: what is held, holding it, and the
//! decision the request continues with once it is settled.
use std::time::{SystemTime, UNIX_EPOCH};

use super::{ReviewState, Reviews, Scope, Verdict};
use crate::{
    audit::{self, Event},
    identity::Identity,
    policy::{ActionKind, Decision, TargetRef},
    types::AgentName,
};

/// What is held.
pub struct HeldRequest<'a> {
    /// The agent.
    pub agent: &'a AgentName,
    /// The caller.
    pub identity: &'a Identity,
    /// The target.
    pub target: &'a TargetRef,
    /// The request.
    pub action: &'a ActionKind,
    /// The review decision.
    pub decision: &'a Decision,
}

pub(super) fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The exact request, in words.
pub fn describe(action: &ActionKind) -> String {
    match action {
        ActionKind::HttpRequest {
            method, path, model, ..
        } if !model.is_empty() => format!("{method} {path} (model {model})"),
        ActionKind::HttpRequest { method, path, .. } => format!("{method} {path}"),
        ActionKind::SqlStatement { sql, .. } => sql.clone(),
        ActionKind::Connect => "connect".into(),
        ActionKind::DnsQuery { facts } => format!("resolve {} {}", facts.qtype, facts.name),
    }
}

/// Closes a review whose held request went away before it was settled.
pub(super) struct Abandoned<'a> {
    pub(super) reviews: &'a Reviews,
    pub(super) id: Option<String>,
}

impl Drop for Abandoned<'_> {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else { return };
        let note = "the agent's request went away while it was held".to_owned();
        if let Some(record) = self.reviews.close(&id, ReviewState::Failed, note) {
            let events = self.reviews.events.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let event = Event::Review {
                        time: audit::now(),
                        change: "failed".into(),
                        review: Box::new(record),
                        by: None,
                    };
                    if let Err(e) = events.record(event).await {
                        tracing::error!("review event lost: {e}");
                    }
                });
            }
        }
    }
}

/// Holds a `review` decision until it is settled, and turns the outcome into
/// the decision the request proceeds (or is refused) with.
pub async fn settle(
    reviews: &Reviews,
    policies: &crate::policy::PolicyStore,
    held: HeldRequest<'_>,
    target_webhook: Option<&str>,
) -> Decision {
    use crate::policy::Ruling;
    let policies = policies.current();
    let (rules, mut webhooks) = policies.review_rules(&held.decision.policies);
    webhooks.extend(target_webhook.map(str::to_owned));
    let decision = held.decision.clone();
    let verdict = reviews.hold(held, &rules, &webhooks).await;
    let (outcome, reason) = match verdict {
        Verdict::Approved(by, Scope::Once) => (Ruling::Allow, format!("approved by {}", by.name)),
        Verdict::Approved(by, scope) => (Ruling::Allow, format!("approved by {} ({scope:?})", by.name)),
        Verdict::Denied(by, why) => (Ruling::Deny, format!("denied by {}: {why}", by.name)),
        Verdict::Expired => (
            Ruling::Deny,
            format!("review timed out: nobody approved it in time ({})", decision.reason),
        ),
        Verdict::Failed(why) => (Ruling::Deny, why),
    };
    Decision {
        outcome,
        reason,
        ..decision
    }
}
