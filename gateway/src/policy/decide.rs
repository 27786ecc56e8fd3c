//! From Cedar's answer to the gateway's decision. Forbid overrides permit,
//! no match is deny, a failing forbid denies (fail closed), and `@review`
//! turns a would-be decision into a hold for approval.
use std::borrow::Cow;

use cedar_policy::{Authorizer, Decision as CedarDecision, Effect};
use serde::{Deserialize, Serialize};

use super::{
    load::LoadedPolicies,
    request::{request, ActionKind, Query, Subject, SubjectCache},
};

/// What policy rules for a request (the audit trail's `Outcome` is how a
/// connection ended; this is what it was allowed to do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ruling {
    /// Go ahead.
    Allow,
    /// Refused.
    Deny,
    /// Held for people to approve or deny.
    Review,
}

/// A decision with the policies that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The outcome.
    pub outcome: Ruling,
    /// Ids of the deciding policies (empty for the default deny).
    pub policies: Vec<String>,
    /// Why, in words (from `@reason` where given).
    pub reason: String,
    /// Masking rules that apply (from `@mask` on the allowing policies).
    pub mask: Vec<String>,
}

impl Decision {
    /// A denial by `policies` (none for the gateway's own refusals), for `reason`.
    pub fn deny(policies: Vec<String>, reason: String) -> Self {
        Self {
            outcome: Ruling::Deny,
            policies,
            reason,
            mask: Vec::new(),
        }
    }
}

fn sorted_ids<'a>(ids: impl Iterator<Item = &'a cedar_policy::PolicyId>) -> Vec<String> {
    let mut v: Vec<String> = ids.map(|id| id.to_string()).collect();
    v.sort();
    v
}

fn reasons(p: &LoadedPolicies, ids: &[String], fallback: &str) -> String {
    let given: Vec<&str> = ids.iter().filter_map(|id| p.meta(id)?.reason.as_deref()).collect();
    if given.is_empty() {
        format!("{fallback}: {}", ids.join(", "))
    } else {
        given.join("; ")
    }
}

/// The grants among `ids` (generated from `interlock grant` and approvals).
fn granted(p: &LoadedPolicies, ids: &[String]) -> Vec<String> {
    ids.iter()
        .filter(|id| p.meta(id).is_some_and(|m| m.file == super::GRANTS_FILE))
        .cloned()
        .collect()
}

/// Allowed by grants, which answer the review a policy asks for.
fn by_grants(p: &LoadedPolicies, grants: Vec<String>, mask: Vec<String>) -> Decision {
    Decision {
        outcome: Ruling::Allow,
        reason: reasons(p, &grants, "granted by"),
        policies: grants,
        mask,
    }
}

/// The masking rules of the allowing policies.
fn masks(p: &LoadedPolicies, ids: &[String]) -> Vec<String> {
    let mut mask: Vec<String> = ids
        .iter()
        .filter_map(|id| p.meta(id))
        .flat_map(|m| m.mask.clone())
        .collect();
    mask.sort();
    mask.dedup();
    mask
}

/// Decides one query.
pub fn decide(p: &LoadedPolicies, q: &Query<'_>) -> Decision {
    decide_cached(p, q, &SubjectCache::default())
}

/// Decisions kept per subject at most.
const DECISIONS: usize = 256;
/// Longest SQL text whose decision is kept.
const CACHED_SQL: usize = 4096;

/// Decides one query, taking the principal and resource from `cache`, and
/// the decision too when the same subject asked the same thing of the same
/// policy set before and no policy reads the clock.
pub fn decide_cached(p: &LoadedPolicies, q: &Query<'_>, cache: &SubjectCache) -> Decision {
    let subject = match cache.get(q) {
        Ok(s) => s,
        Err(e) => return Decision::deny(Vec::new(), format!("gateway error, denied: {e}")),
    };
    let key = (!p.reads_time).then(|| cache_key(p, q.action)).flatten();
    let lock = || subject.decisions.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(key) = &key {
        if let Some((generation, hit)) = lock().get(key.as_ref()) {
            if *generation == p.generation {
                return hit.clone();
            }
        }
    }
    let decision = decide_subject(p, q, &subject);
    if let Some(key) = key {
        let mut map = lock();
        if map.len() >= DECISIONS {
            map.clear();
        }
        map.insert(key.into_owned(), (p.generation, decision.clone()));
    }
    decision
}

/// What a cached decision for `action` is filed under: the action without
/// the attributes no policy reads (so requests differing only in those
/// share it), or `None` when it is not cached (a long statement text that
/// policies do read).
fn cache_key<'a>(p: &LoadedPolicies, action: &'a ActionKind) -> Option<Cow<'a, ActionKind>> {
    match action {
        ActionKind::SqlStatement { sql, .. } if p.reads_sql => {
            (sql.len() <= CACHED_SQL).then_some(Cow::Borrowed(action))
        }
        ActionKind::SqlStatement { facts, sql: _ } => Some(Cow::Owned(ActionKind::SqlStatement {
            facts: facts.clone(),
            sql: String::new(),
        })),
        ActionKind::HttpRequest { body_size, .. } if !p.reads_body_size && *body_size != 0 => {
            let mut key = action.clone();
            if let ActionKind::HttpRequest { body_size, .. } = &mut key {
                *body_size = 0;
            }
            Some(Cow::Owned(key))
        }
        _ => Some(Cow::Borrowed(action)),
    }
}

fn decide_subject(p: &LoadedPolicies, q: &Query<'_>, subject: &Subject) -> Decision {
    let request = match request(subject, q, None) {
        Ok(r) => r,
        Err(e) => return Decision::deny(Vec::new(), format!("gateway error, denied: {e}")),
    };
    let entities = &subject.entities;
    let authorizer = Authorizer::new();
    let response = authorizer.is_authorized(&request, &p.all, entities);
    // A forbid that failed to evaluate might have matched: deny, naming it.
    let failed_forbids: Vec<String> = response
        .diagnostics()
        .errors()
        .map(|e| match e {
            cedar_policy::AuthorizationError::PolicyEvaluationError(pe) => pe.policy_id().to_string(),
        })
        .filter(|id| p.meta(id).is_some_and(|m| m.effect == Effect::Forbid))
        .collect();
    if !failed_forbids.is_empty() {
        let reason = format!(
            "forbid policy could not be evaluated, denied: {}",
            failed_forbids.join(", ")
        );
        return Decision::deny(failed_forbids, reason);
    }
    let deciding = sorted_ids(response.diagnostics().reason());
    match response.decision() {
        CedarDecision::Allow => {
            let review: Vec<String> = deciding
                .iter()
                .filter(|id| p.meta(id).is_some_and(|m| m.review))
                .cloned()
                .collect();
            let mask = masks(p, &deciding);
            // A grant is a person's approval for a time window: it answers
            // the review the policy asks for.
            let grants = granted(p, &deciding);
            if !review.is_empty() && !grants.is_empty() {
                return by_grants(p, grants, mask);
            }
            if !review.is_empty() {
                let reason = reasons(p, &review, "held for review by");
                return Decision {
                    outcome: Ruling::Review,
                    policies: review,
                    reason,
                    // What applies once a person approves it.
                    mask,
                };
            }
            let reason = reasons(p, &deciding, "permitted by");
            Decision {
                outcome: Ruling::Allow,
                policies: deciding,
                reason,
                mask,
            }
        }
        CedarDecision::Deny if deciding.is_empty() => {
            Decision::deny(Vec::new(), "no policy permits this (default deny)".into())
        }
        CedarDecision::Deny => {
            let hard: Vec<String> = deciding
                .iter()
                .filter(|id| p.meta(id).is_some_and(|m| !m.review))
                .cloned()
                .collect();
            if !hard.is_empty() {
                let reason = reasons(p, &hard, "forbidden by");
                return Decision::deny(hard, reason);
            }
            // Only @review forbids matched: hold it if the rest of the policy would allow it.
            let rest = authorizer.is_authorized(&request, &p.without_review, entities);
            if rest.decision() == CedarDecision::Allow {
                let permits = sorted_ids(rest.diagnostics().reason());
                let grants = granted(p, &permits);
                if !grants.is_empty() {
                    return by_grants(p, grants, masks(p, &permits));
                }
                let reason = reasons(p, &deciding, "held for review by");
                Decision {
                    outcome: Ruling::Review,
                    policies: deciding,
                    reason,
                    mask: masks(p, &permits),
                }
            } else {
                Decision::deny(Vec::new(), "no policy permits this (default deny)".into())
            }
        }
    }
}
