//! The one decision path every protocol's requests take, in one order:
//!
//! 1. the audit trail must accept events (what cannot be recorded is not
//!    served);
//! 2. the protocol's own refusal before policy is asked (unparsable SQL
//!    under `unparsed = "deny"`);
//! 3. policy;
//! 4. a `review` decision is held until people settle it;
//! 5. an allowed request gets its masking plan (the policy's `@mask` rules
//!    plus the protocol's own); a plan that cannot be built denies rather
//!    than lets data through unmasked;
//! 6. the protocol's checks of an allowed request against that plan (COPY
//!    out of masked tables).
//!
//! A protocol says what differs through [`Protocol`]: those two checks, its
//! own masking rules, and how a refusal is spoken (HTTP 403 JSON, SQLSTATE
//! 42501). The next protocol implements the trait; it does not copy a flow.
use std::sync::Arc;

use super::ProxyCtx;
use crate::{
    identity::Identity,
    masking::MaskPlan,
    policy::{ActionKind, Decision, Query, Ruling, TargetRef},
    review::HeldRequest,
    types::AgentName,
};

/// Who asks, and for which target: the same for every request of a session.
pub struct Caller<'a> {
    /// The agent.
    pub agent: &'a AgentName,
    /// The calling process.
    pub identity: &'a Identity,
    /// The target the connection was judged as.
    pub target: &'a TargetRef,
    /// The target's review webhook.
    pub review_webhook: Option<&'a str>,
}

/// What differs between protocols on the decision path.
pub trait Protocol {
    /// What the agent gets for a refused request.
    type Refusal;

    /// A reason to refuse before policy is asked.
    fn before_policy(&self) -> Option<String> {
        None
    }

    /// Masking rules of the protocol's own, added to the policy's.
    fn own_masks(&self) -> &[String] {
        &[]
    }

    /// A reason to refuse an allowed request, given its masking plan.
    fn after_allow(&self, _plan: Option<&MaskPlan>) -> Option<String> {
        None
    }

    /// The refusal of a request decided `decision`, as the protocol speaks it.
    fn refusal(&self, decision: &Decision) -> Self::Refusal;
}

/// The outcome of the decision path.
pub struct Judgement {
    /// The final decision (after review, and after the checks of steps 5-6).
    pub decision: Decision,
    /// The masking plan of an allowed request, when any rule applies.
    pub plan: Option<Arc<MaskPlan>>,
}

impl Judgement {
    /// True when the request may proceed.
    pub fn allowed(&self) -> bool {
        self.decision.outcome == Ruling::Allow
    }
}

fn denied(reason: String) -> Decision {
    Decision::deny(Vec::new(), reason)
}

/// Steps 1-3: the decision before any hold (`Review` means: hold it).
pub fn ask(ctx: &ProxyCtx, caller: &Caller<'_>, action: &ActionKind, protocol: &impl Protocol) -> Decision {
    if let Err(e) = ctx.events.accepting() {
        return denied(e.to_string());
    }
    if let Some(reason) = protocol.before_policy() {
        return denied(reason);
    }
    ctx.gate.policies.decide(&Query {
        agent: caller.agent,
        identity: caller.identity,
        target: caller.target,
        action,
        now: std::time::SystemTime::now(),
    })
}

/// Step 4: holds a `Review` decision until people settle it.
pub async fn hold(ctx: &ProxyCtx, caller: &Caller<'_>, action: &ActionKind, decision: &Decision) -> Decision {
    let held = HeldRequest {
        agent: caller.agent,
        identity: caller.identity,
        target: caller.target,
        action,
        decision,
    };
    crate::review::settle(&ctx.reviews, &ctx.gate.policies, held, caller.review_webhook).await
}

/// Steps 5-6: the masking plan and the protocol's checks of an allowed
/// request. A decision that is not an allow passes through unchanged.
pub fn conclude(ctx: &ProxyCtx, decision: Decision, protocol: &impl Protocol) -> Judgement {
    if decision.outcome != Ruling::Allow {
        return Judgement { decision, plan: None };
    }
    let own = protocol.own_masks();
    let plan = if own.is_empty() && decision.mask.is_empty() {
        None
    } else {
        let names: Vec<String> = own.iter().chain(&decision.mask).cloned().collect();
        match ctx.mask_plan(&names, None) {
            Ok(plan) => Some(plan),
            Err(e) => {
                return Judgement {
                    decision: denied(format!("masking rules unavailable ({e}); denied rather than unmasked")),
                    plan: None,
                }
            }
        }
    };
    match protocol.after_allow(plan.as_deref()) {
        Some(reason) => Judgement {
            decision: denied(reason),
            plan: None,
        },
        None => Judgement { decision, plan },
    }
}

/// The whole path for a protocol that can wait where it asks (HTTP).
pub async fn judge(ctx: &ProxyCtx, caller: &Caller<'_>, action: &ActionKind, protocol: &impl Protocol) -> Judgement {
    let mut decision = ask(ctx, caller, action, protocol);
    if decision.outcome == Ruling::Review {
        decision = hold(ctx, caller, action, &decision).await;
    }
    conclude(ctx, decision, protocol)
}
