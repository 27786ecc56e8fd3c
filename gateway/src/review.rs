//! Just-in-time review: a request whose decision is `review` is held (the
//! agent's call simply waits) until enough distinct people approve it, one
//! denies it, or it times out. Approvals may cover this request only, the
//! agent's identical requests for some minutes, or become a grant. Reviews
//! are persisted, so after a restart the record shows what became of the
//! requests that were held. Every step is in the audit trail with the
//! person who took it.
use std::{collections::BTreeMap, path::PathBuf, sync::Mutex, time::Duration};

use tokio::sync::oneshot;

use crate::{
    audit::{self, Event, EventSink},
    net::Net,
    policy::ReviewRules,
};

mod settle;
mod types;
mod webhook;

pub use crate::types::{Person, ReviewRecord, ReviewState, Scope};
pub use settle::{describe, settle, HeldRequest};
use settle::{now_unix, Abandoned};
pub use types::{ReviewError, Verdict};
pub use webhook::announce;

struct Pending {
    record: ReviewRecord,
    key: String,
    waiter: Option<oneshot::Sender<Verdict>>,
}

/// A standing approval of an agent's identical requests.
struct Standing {
    agent: String,
    key: String,
    until: u64,
    by: Person,
}

#[derive(Default)]
struct State {
    next: u64,
    reviews: BTreeMap<u64, Pending>,
    standing: Vec<Standing>,
}

/// The reviews of one gateway.
pub struct Reviews {
    state: Mutex<State>,
    events: EventSink,
    /// Webhooks go out through the gateway's own client.
    net: std::sync::Arc<Net>,
    file: PathBuf,
    default_timeout: Duration,
    /// Where people open reviews (webhook links).
    pub link_base: Option<String>,
}

impl Reviews {
    /// Reviews kept in `state_dir`; held requests are refused after `default_timeout`.
    pub fn new(
        events: EventSink,
        net: std::sync::Arc<Net>,
        state_dir: &std::path::Path,
        default_timeout: Duration,
        link_base: Option<String>,
    ) -> Self {
        Self {
            state: Mutex::new(State::default()),
            events,
            net,
            file: state_dir.join("reviews.json"),
            default_timeout,
            link_base,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn persist(&self, state: &State) {
        let records: Vec<&ReviewRecord> = state.reviews.values().map(|p| &p.record).collect();
        let body = serde_json::json!({"next": state.next, "reviews": records});
        if let Err(e) = crate::persist::save_json(&self.file, &body) {
            tracing::error!("reviews file {}: {e}", self.file.display());
        }
    }

    async fn record(&self, change: &str, review: ReviewRecord, by: Option<Person>) {
        let event = Event::Review {
            time: audit::now(),
            change: change.into(),
            review: Box::new(review),
            by,
        };
        if let Err(e) = self.events.record(event).await {
            tracing::error!("review event lost: {e}");
        }
    }

    /// At start: reviews left pending by the previous run failed with it.
    pub async fn recover(&self) {
        let Ok(text) = std::fs::read_to_string(&self.file) else {
            return;
        };
        let Ok(saved) = serde_json::from_str::<serde_json::Value>(&text) else {
            tracing::error!("reviews file {} is unreadable; starting afresh", self.file.display());
            return;
        };
        let records: Vec<ReviewRecord> = serde_json::from_value(saved["reviews"].clone()).unwrap_or_default();
        let mut failed = Vec::new();
        {
            let mut state = self.lock();
            state.next = saved["next"].as_u64().unwrap_or(0);
            for mut r in records {
                if r.state == ReviewState::Pending {
                    r.state = ReviewState::Failed;
                    r.note = Some("the gateway restarted while the request was held; the agent's call failed".into());
                    failed.push(r.clone());
                }
            }
            state.reviews.clear();
            self.persist(&state);
        }
        for r in failed {
            tracing::warn!(review = %r.id, "held request failed: the gateway restarted");
            self.record("failed", r, None).await;
        }
    }

    /// Holds a request until it is decided. Returns how it ended.
    pub async fn hold(&self, held: HeldRequest<'_>, rules: &ReviewRules, webhooks: &[String]) -> Verdict {
        let key = format!(
            "{}\n{}\n{}",
            held.target.name,
            held.action.cedar_name(),
            describe(held.action)
        );
        let now = now_unix();
        let (rx, record) = {
            let mut state = self.lock();
            state.standing.retain(|s| s.until > now);
            if let Some(s) = state.standing.iter().find(|s| s.agent == held.agent.0 && s.key == key) {
                let remaining = (s.until - now).div_ceil(60);
                return Verdict::Approved(s.by.clone(), Scope::Identical { minutes: remaining });
            }
            state.next += 1;
            let id = state.next;
            let timeout = rules.timeout.unwrap_or(self.default_timeout);
            let record = ReviewRecord {
                id: format!("rv-{id}"),
                opened: audit::now(),
                expires_unix: now + timeout.as_secs(),
                agent: held.agent.0.clone(),
                pid: held.identity.pid,
                user: held.identity.user.clone(),
                exe: held
                    .identity
                    .process
                    .as_ref()
                    .and_then(|p| p.exe.as_ref())
                    .map(|e| e.display().to_string()),
                target: held.target.name.clone(),
                request: describe(held.action),
                action: held.action.cedar_name().into(),
                policies: held.decision.policies.clone(),
                reason: held.decision.reason.clone(),
                approvals_needed: rules.approvers.max(1),
                no_self_approval: rules.no_self_approval,
                approvals: Vec::new(),
                state: ReviewState::Pending,
                decided_by: None,
                scope: None,
                note: None,
            };
            let (tx, rx) = oneshot::channel();
            state.reviews.insert(
                id,
                Pending {
                    record: record.clone(),
                    key,
                    waiter: Some(tx),
                },
            );
            self.persist(&state);
            (rx, record)
        };
        tracing::info!(review = %record.id, agent = %record.agent, target = %record.target, "request held for review");
        self.record("opened", record.clone(), None).await;
        for url in webhooks {
            announce(self.net.clone(), url.clone(), record.clone(), self.link_base.clone());
        }
        let wait = Duration::from_secs(record.expires_unix.saturating_sub(now_unix()));
        // If the agent goes away (or its session is cut) while held, the
        // review is closed as failed rather than left pending.
        let mut guard = Abandoned {
            reviews: self,
            id: Some(record.id.clone()),
        };
        let verdict = match tokio::time::timeout(wait, rx).await {
            Ok(Ok(verdict)) => verdict,
            Ok(Err(_)) => Verdict::Failed("the review was dropped".into()),
            Err(_) => Verdict::Expired,
        };
        guard.id = None;
        if verdict == Verdict::Expired {
            if let Some(r) = self.close(&record.id, ReviewState::Expired, "nobody decided in time".into()) {
                self.record("expired", r, None).await;
            }
        }
        verdict
    }

    /// Marks a pending review closed and returns its record.
    fn close(&self, id: &str, how: ReviewState, note: String) -> Option<ReviewRecord> {
        let mut state = self.lock();
        let pending = open_review(&mut state, id).ok()?;
        pending.record.state = how;
        pending.record.note = Some(note);
        let record = pending.record.clone();
        self.persist(&state);
        Some(record)
    }

    /// All reviews this run has seen, newest last.
    pub fn list(&self) -> Vec<ReviewRecord> {
        self.lock().reviews.values().map(|p| p.record.clone()).collect()
    }

    /// One review.
    pub fn get(&self, id: &str) -> Option<ReviewRecord> {
        let n = number(id).ok()?;
        self.lock().reviews.get(&n).map(|p| p.record.clone())
    }

    /// An approval by `person`. Returns the record and whether it is now approved.
    pub async fn approve(&self, id: &str, person: Person, scope: Scope) -> Result<(ReviewRecord, bool), ReviewError> {
        let (record, done) = {
            let mut state = self.lock();
            let pending = open_review(&mut state, id)?;
            let r = &mut pending.record;
            if r.approvals
                .iter()
                .any(|p| p.issuer == person.issuer && p.subject == person.subject)
            {
                return Err(ReviewError::Twice(person.name.clone(), id.into()));
            }
            if r.no_self_approval && owns(&person, r.user.as_deref()) {
                return Err(ReviewError::OwnAgent(person.name.clone(), id.into()));
            }
            r.approvals.push(person.clone());
            let done = r.approvals.len() as u32 >= r.approvals_needed;
            let mut standing = None;
            if done {
                r.state = ReviewState::Approved;
                r.decided_by = Some(person.clone());
                r.scope = Some(scope);
                if let Some(tx) = pending.waiter.take() {
                    let _ = tx.send(Verdict::Approved(person.clone(), scope));
                }
                if let Scope::Identical { minutes } = scope {
                    standing = Some(Standing {
                        agent: pending.record.agent.clone(),
                        key: pending.key.clone(),
                        until: now_unix() + minutes * 60,
                        by: person.clone(),
                    });
                }
            }
            let record = pending.record.clone();
            state.standing.extend(standing);
            self.persist(&state);
            (record, done)
        };
        let change = if done { "approved" } else { "approval" };
        self.record(change, record.clone(), Some(person)).await;
        Ok((record, done))
    }

    /// A denial by `person`.
    pub async fn deny(&self, id: &str, person: Person, reason: String) -> Result<ReviewRecord, ReviewError> {
        let record = {
            let mut state = self.lock();
            let pending = open_review(&mut state, id)?;
            pending.record.state = ReviewState::Denied;
            pending.record.decided_by = Some(person.clone());
            pending.record.note = Some(reason.clone());
            if let Some(tx) = pending.waiter.take() {
                let _ = tx.send(Verdict::Denied(person.clone(), reason));
            }
            let record = pending.record.clone();
            self.persist(&state);
            record
        };
        self.record("denied", record.clone(), Some(person)).await;
        Ok(record)
    }

    /// At shutdown: every held request fails now, and the records say so.
    pub async fn fail_all(&self, why: &str) {
        let failed: Vec<ReviewRecord> = {
            let mut state = self.lock();
            let mut failed = Vec::new();
            for p in state
                .reviews
                .values_mut()
                .filter(|p| p.record.state == ReviewState::Pending)
            {
                p.record.state = ReviewState::Failed;
                p.record.note = Some(why.to_owned());
                if let Some(tx) = p.waiter.take() {
                    let _ = tx.send(Verdict::Failed(why.to_owned()));
                }
                failed.push(p.record.clone());
            }
            self.persist(&state);
            failed
        };
        for r in failed {
            self.record("failed", r, None).await;
        }
    }
}

/// The review `id`, if it is still pending.
fn open_review<'s>(state: &'s mut State, id: &str) -> Result<&'s mut Pending, ReviewError> {
    let pending = state
        .reviews
        .get_mut(&number(id)?)
        .ok_or_else(|| ReviewError::Unknown(id.into()))?;
    if pending.record.state != ReviewState::Pending {
        return Err(ReviewError::Closed(id.into(), pending.record.state));
    }
    Ok(pending)
}

/// The number in `rv-N`.
fn number(id: &str) -> Result<u64, ReviewError> {
    id.strip_prefix("rv-")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| ReviewError::Unknown(id.into()))
}

/// Whether `person` is the user the agent runs as.
fn owns(person: &Person, agent_user: Option<&str>) -> bool {
    let Some(user) = agent_user else { return false };
    person.unix_user.as_deref() == Some(user)
        || person
            .email
            .as_deref()
            .and_then(|e| e.split('@').next())
            .is_some_and(|local| local == user)
}
