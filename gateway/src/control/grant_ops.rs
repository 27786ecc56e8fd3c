//! Applying grant changes: every change is compiled into the policy set
//! before it is kept, persisted, and recorded with who made it.
use std::time::{SystemTime, UNIX_EPOCH};

use super::{ControlState, Grant, GrantBook, GrantRequest, Response};
use crate::{
    audit::{self, Event},
    policy::Gate,
};

/// Seconds since the epoch.
pub fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Puts the book's grants into force.
pub fn apply(gate: &Gate, book: &GrantBook) -> Result<(), String> {
    gate.policies
        .set_generated(book.policies())
        .map(drop)
        .map_err(|e| e.to_string())
}

async fn record(state: &ControlState, change: &str, grant: Grant, by: &str) {
    let event = Event::Grant {
        time: audit::now(),
        change: change.into(),
        grant,
        by: by.into(),
    };
    if let Err(e) = state.events.record(event).await {
        tracing::error!("grant event lost: {e}");
    }
}

/// `interlock grant`.
pub async fn add(state: &ControlState, request: GrantRequest, by: &str) -> Response {
    let mut book = state.grants.lock().await;
    let grant = match book.add(request, by.to_owned(), now_unix()) {
        Ok(g) => g,
        Err(e) => return Response::Error { message: e.to_string() },
    };
    if let Err(e) = apply(&state.gate, &book).and_then(|()| book.persist().map_err(|e| e.to_string())) {
        let _ = book.revoke(&grant.id);
        let _ = apply(&state.gate, &book);
        return Response::Error {
            message: format!("grant not applied: {e}"),
        };
    }
    tracing::info!(id = %grant.id, agent = %grant.agent, target = %grant.target, by, "grant added");
    let message = format!(
        "granted {} to {} on {} until unix {} ({})",
        grant.actions.join(","),
        grant.agent,
        grant.target,
        grant.expires_unix,
        grant.id
    );
    record(state, "added", grant, by).await;
    Response::Ok { message }
}

/// `interlock grants revoke ID`.
pub async fn revoke(state: &ControlState, id: &str, by: &str) -> Response {
    let mut book = state.grants.lock().await;
    let grant = match book.revoke(id) {
        Ok(g) => g,
        Err(e) => return Response::Error { message: e.to_string() },
    };
    if let Err(e) = apply(&state.gate, &book).and_then(|()| book.persist().map_err(|e| e.to_string())) {
        // Removing a permit cannot make the policy set invalid; report and keep going.
        tracing::error!("grant {id} revoked but not saved: {e}");
    }
    tracing::info!(id, by, "grant revoked");
    record(state, "revoked", grant, by).await;
    Response::Ok {
        message: format!("revoked grant {id}"),
    }
}

/// Removes expired grants (the generated policies already stop matching at expiry).
pub async fn sweep(state: &ControlState) {
    let mut book = state.grants.lock().await;
    let expired = book.expire(now_unix());
    if expired.is_empty() {
        return;
    }
    if let Err(e) = apply(&state.gate, &book).and_then(|()| book.persist().map_err(|e| e.to_string())) {
        tracing::error!("expiring grants: {e}");
    }
    drop(book);
    for grant in expired {
        tracing::info!(id = %grant.id, "grant expired");
        record(state, "expired", grant, "gateway").await;
    }
}
