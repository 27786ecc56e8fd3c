//! Carrying out revocations: kernel entries first (so nothing new gets out),
//! then cutting live sessions, then persisting and recording.
use std::{collections::HashSet, path::Path};

use serde::{Deserialize, Serialize};

use super::{
    revocations::{Revocation, RevocationBook, Selector},
    ControlState, Response,
};
use crate::{
    audit::{self, Event},
    cgroup,
    identity::{self, Identity},
    kernel::{KernelError, KernelMaps},
    policy::Gate,
};

/// What the operator asks to revoke; exactly one selector is set.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RevokeRequest {
    /// A process id.
    pub pid: Option<u32>,
    /// An executable path.
    pub exe: Option<String>,
    /// A cgroup path (relative to the cgroup2 mount, or absolute under it).
    pub cgroup: Option<String>,
    /// An agent name.
    pub agent: Option<String>,
    /// A uid.
    pub uid: Option<u32>,
    /// Lifetime in seconds (none = until unrevoked).
    pub seconds: Option<u64>,
    /// Why.
    pub reason: String,
}

fn selector(req: &RevokeRequest, mount: &Path) -> Result<Selector, String> {
    let given = [
        req.pid.is_some(),
        req.exe.is_some(),
        req.cgroup.is_some(),
        req.agent.is_some(),
        req.uid.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err("give exactly one of --pid, --exe, --cgroup, --agent, --uid".into());
    }
    if let Some(pid) = req.pid {
        let (_, start_ticks) = identity::parent_and_start(pid).ok_or_else(|| format!("no process {pid}"))?;
        return Ok(Selector::Pid { pid, start_ticks });
    }
    if let Some(exe) = &req.exe {
        // Revoke the file itself, whatever symlink named it.
        let path = std::fs::canonicalize(exe).map_or_else(|_| exe.clone(), |p| p.display().to_string());
        return Ok(Selector::Exe { path });
    }
    if let Some(cg) = &req.cgroup {
        let dir = cgroup::resolve(mount, cg);
        let id = cgroup::id(&dir).map_err(|e| e.to_string())?;
        let path = format!("/{}", dir.strip_prefix(mount).unwrap_or(&dir).display());
        return Ok(Selector::Cgroup { path, id });
    }
    if let Some(name) = &req.agent {
        return Ok(Selector::Agent { name: name.clone() });
    }
    Ok(Selector::Uid {
        uid: req.uid.unwrap_or_default(),
    })
}

/// Does a process (by identity and agent name) fall under a selector?
fn covers(selector: &Selector, id: &Identity, agent: &str) -> bool {
    let process = id.process.as_deref();
    match selector {
        Selector::Pid { pid, start_ticks } => id.pid == *pid && process.is_some_and(|p| p.start_ticks == *start_ticks),
        Selector::Exe { path } => process
            .and_then(|p| p.exe.as_ref())
            .is_some_and(|e| e.as_os_str() == path.as_str()),
        Selector::Cgroup { path, .. } => process
            .and_then(|p| p.cgroup.as_deref())
            .is_some_and(|c| c == path || c.starts_with(&format!("{path}/"))),
        Selector::Agent { name } => agent == name,
        Selector::Uid { uid } => id.uid == *uid,
    }
}

/// Writes a revocation's kernel entries; returns how many processes were named.
pub fn apply(maps: &mut KernelMaps, gate: &Gate, r: &Revocation) -> Result<usize, KernelError> {
    match &r.selector {
        Selector::Uid { uid } => maps.revoke_uid(*uid, r.number).map(|()| 0),
        Selector::Cgroup { id, .. } => maps.revoke_cgroup(*id, r.number).map(|()| 0),
        selector => {
            // Processes running now (and, for a pid, the children it already has;
            // later children follow through the fork tracepoint).
            let pids = identity::all_pids();
            let mut named: HashSet<u32> = HashSet::new();
            for pid in &pids {
                let Some(id) = identity::from_pid(*pid) else { continue };
                if covers(selector, &id, &gate.agent_of(&id).0) {
                    named.insert(*pid);
                }
            }
            if matches!(selector, Selector::Pid { .. }) && !named.is_empty() {
                loop {
                    let before = named.len();
                    for pid in &pids {
                        if let Some((ppid, _)) = identity::parent_and_start(*pid) {
                            if named.contains(&ppid) {
                                named.insert(*pid);
                            }
                        }
                    }
                    if named.len() == before {
                        break;
                    }
                }
            }
            for pid in &named {
                maps.revoke_pid(*pid, r.number)?;
            }
            Ok(named.len())
        }
    }
}

/// Checks a process that exec'd against the exe and agent revocations.
pub fn check_exec(maps: &mut KernelMaps, gate: &Gate, book: &RevocationBook, tgid: u32) {
    if let Some(id) = identity::from_pid(tgid) {
        let agent = gate.agent_of(&id).0;
        for r in book.list().iter().filter(|r| r.selector.watches_exec()) {
            if covers(&r.selector, &id, &agent) {
                if let Err(e) = maps.revoke_pid(tgid, r.number) {
                    // Leave it held: fail closed.
                    tracing::error!(tgid, revocation = %r.id, "cannot revoke a new process, it stays held: {e}");
                    return;
                }
                tracing::info!(tgid, revocation = %r.id, "new process revoked at exec");
                break;
            }
        }
    }
    maps.release_exec(tgid);
}

/// Cuts the live sessions a revocation covers; returns how many.
fn cut(state: &ControlState, r: &Revocation, revoked_pids: &HashSet<u32>) -> usize {
    let reason = format!("revoked by {} ({})", r.id, r.selector);
    state.live.cut_where(&reason, |id, agent| {
        revoked_pids.contains(&id.pid) || covers(&r.selector, id, agent)
    })
}

async fn record(state: &ControlState, change: &str, r: Revocation, by: &str, cut: usize) {
    let event = Event::Revocation {
        time: audit::now(),
        change: change.into(),
        revocation: r,
        by: by.into(),
        cut,
    };
    if let Err(e) = state.events.record(event).await {
        tracing::error!("revocation event lost: {e}");
    }
}

/// `interlock revoke`.
pub async fn add(state: &ControlState, req: RevokeRequest, by: &str) -> Response {
    let sel = match selector(&req, &state.cgroup_mount) {
        Ok(s) => s,
        Err(message) => return Response::Error { message },
    };
    let expires = req.seconds.map(|s| super::now_unix() + s);
    let mut book = state.revocations.lock().await;
    let r = match book.add(sel, req.reason, by.to_owned(), expires) {
        Ok(r) => r,
        Err(e) => return Response::Error { message: e.to_string() },
    };
    let (named, revoked_pids) = {
        let mut kernel = state.kernel.lock().await;
        let watch = book.watches_exec();
        let applied = kernel
            .maps
            .set_watch_exec(watch)
            .and_then(|()| apply(&mut kernel.maps, &state.gate, &r));
        match applied {
            Ok(n) => (
                n,
                kernel
                    .maps
                    .revoked_pids()
                    .into_iter()
                    .filter(|(_, n)| *n == r.number)
                    .map(|(p, _)| p)
                    .collect(),
            ),
            Err(e) => {
                kernel.maps.unrevoke(r.number);
                let _ = book.remove(&r.id);
                let _ = kernel.maps.set_watch_exec(book.watches_exec());
                return Response::Error {
                    message: format!("revocation not applied: {e}"),
                };
            }
        }
    };
    let cut_count = cut(state, &r, &revoked_pids);
    if let Err(e) = book.persist() {
        tracing::error!("revocation {} applied but not saved: {e}", r.id);
    }
    drop(book);
    tracing::warn!(id = %r.id, selector = %r.selector, by, cut = cut_count, processes = named, "revoked: {}", r.reason);
    let message = format!(
        "revoked {} ({}): {named} running processes named, {cut_count} live connections cut",
        r.id, r.selector
    );
    record(state, "added", r, by, cut_count).await;
    Response::Ok { message }
}

/// `interlock unrevoke`.
pub async fn remove(state: &ControlState, id: &str, by: &str) -> Response {
    let mut book = state.revocations.lock().await;
    let r = match book.remove(id) {
        Ok(r) => r,
        Err(e) => return Response::Error { message: e.to_string() },
    };
    {
        let mut kernel = state.kernel.lock().await;
        kernel.maps.unrevoke(r.number);
        let _ = kernel.maps.set_watch_exec(book.watches_exec());
    }
    if let Err(e) = book.persist() {
        tracing::error!("unrevoke {id} applied but not saved: {e}");
    }
    drop(book);
    tracing::warn!(id, by, "revocation lifted");
    record(state, "removed", r, by, 0).await;
    Response::Ok {
        message: format!("lifted revocation {id}"),
    }
}

/// Lifts lapsed time-limited revocations.
pub async fn sweep(state: &ControlState) {
    let mut book = state.revocations.lock().await;
    let lapsed = book.expire(super::now_unix());
    if lapsed.is_empty() {
        return;
    }
    {
        let mut kernel = state.kernel.lock().await;
        for r in &lapsed {
            kernel.maps.unrevoke(r.number);
        }
        let _ = kernel.maps.set_watch_exec(book.watches_exec());
    }
    let _ = book.persist();
    drop(book);
    for r in lapsed {
        tracing::info!(id = %r.id, "revocation lapsed");
        record(state, "expired", r, "gateway", 0).await;
    }
}
