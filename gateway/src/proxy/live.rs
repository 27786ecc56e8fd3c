//! The table of connections being relayed now, for status and for cutting.
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::SystemTime,
};

use serde::{Deserialize, Serialize};

use super::RelayStats;
use crate::{
    identity::Identity,
    types::{ConnId, OrigDst},
};

/// A live connection as shown to operators.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LiveConn {
    /// Connection number.
    pub id: ConnId,
    /// Caller pid.
    pub pid: u32,
    /// Caller uid.
    pub uid: u32,
    /// Caller's agent.
    pub agent: String,
    /// Caller executable, when known.
    pub exe: Option<String>,
    /// Original destination.
    pub orig_dst: OrigDst,
    /// Bytes agent -> upstream.
    pub bytes_up: u64,
    /// Bytes upstream -> agent.
    pub bytes_down: u64,
    /// Seconds since accept.
    pub age_secs: u64,
    /// An idle HTTP/1.1 keep-alive connection, parked until its next request
    /// (`listener.park_idle`).
    #[serde(default)]
    pub parked: bool,
}

struct Entry {
    identity: Arc<Identity>,
    agent: String,
    orig_dst: OrigDst,
    started: SystemTime,
    stats: Arc<RelayStats>,
}

/// The registry.
#[derive(Default)]
pub struct LiveTable {
    conns: Mutex<BTreeMap<ConnId, Entry>>,
}

/// What a session keeps while it is in the table.
pub struct LiveHandle {
    /// Counters and cut switch.
    pub stats: Arc<RelayStats>,
}

impl LiveTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<ConnId, Entry>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a connection.
    pub fn insert(&self, id: ConnId, identity: &Identity, agent: &str, orig_dst: OrigDst) -> LiveHandle {
        let stats = Arc::new(RelayStats::default());
        let entry = Entry {
            identity: Arc::new(identity.clone()),
            agent: agent.to_owned(),
            orig_dst,
            started: SystemTime::now(),
            stats: stats.clone(),
        };
        self.lock().insert(id, entry);
        LiveHandle { stats }
    }

    /// Removes a finished connection.
    pub fn remove(&self, id: ConnId) {
        self.lock().remove(&id);
    }

    /// Snapshot for status.
    pub fn list(&self) -> Vec<LiveConn> {
        self.lock()
            .iter()
            .map(|(id, e)| {
                let (up, down) = e.stats.totals();
                LiveConn {
                    id: *id,
                    pid: e.identity.pid,
                    uid: e.identity.uid,
                    agent: e.agent.clone(),
                    exe: e
                        .identity
                        .process
                        .as_ref()
                        .and_then(|p| p.exe.as_ref())
                        .map(|x| x.display().to_string()),
                    orig_dst: e.orig_dst,
                    bytes_up: up,
                    bytes_down: down,
                    age_secs: e.started.elapsed().map(|d| d.as_secs()).unwrap_or(0),
                    parked: e.stats.is_parked(),
                }
            })
            .collect()
    }

    /// Cuts every live connection whose caller (identity, agent) matches
    /// `pred`, recording `reason`; returns how many.
    pub fn cut_where(&self, reason: &str, pred: impl Fn(&Identity, &str) -> bool) -> usize {
        let conns = self.lock();
        let mut n = 0;
        for e in conns.values().filter(|e| pred(&e.identity, &e.agent)) {
            e.stats.cut(reason);
            n += 1;
        }
        n
    }
}
