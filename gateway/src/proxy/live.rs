//! The table of connections being relayed now, for status, for cutting,
//! and for closing what is left at shutdown.
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::SystemTime,
};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{Cut, RelayStats};
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
    /// Cancelled once the drain at shutdown is over: what is added is cut
    /// at once, and connections still being admitted stop waiting.
    closing: CancellationToken,
    /// Cancelled when the drain begins: HTTP/2 connections send GOAWAY, so
    /// their clients finish what is in flight and open no new streams.
    draining: CancellationToken,
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
        let mut conns = self.lock();
        // Checked under the lock `close` takes: no insert slips between
        // its flag and its sweep.
        if self.closing.is_cancelled() {
            stats.cut(Cut::Shutdown);
        }
        conns.insert(id, entry);
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

    /// The drain has begun: sessions that can end gracefully (HTTP/2's
    /// GOAWAY) should.
    pub fn begin_drain(&self) {
        self.draining.cancel();
    }

    /// Resolves once the drain has begun.
    pub async fn draining(&self) {
        self.draining.cancelled().await;
    }

    /// Closes the idle kept-alive HTTP connections (parked between
    /// requests): at shutdown they need not wait for a request that may
    /// never come. Returns how many.
    pub fn close_idle(&self) -> usize {
        let conns = self.lock();
        let idle = conns.values().filter(|e| e.stats.is_parked());
        idle.map(|e| e.stats.cut(Cut::Shutdown)).count()
    }

    /// Closes every connection, and every one added from now on; returns
    /// how many were live.
    pub fn close(&self) -> usize {
        let conns = self.lock();
        self.closing.cancel();
        conns.values().map(|e| e.stats.cut(Cut::Shutdown)).count()
    }

    /// Resolves once `close` has been called: connections still being
    /// admitted stop waiting for their first bytes.
    pub async fn closed(&self) {
        self.closing.cancelled().await;
    }

    /// Cuts every live connection whose caller (identity, agent) matches
    /// `pred`, recording `reason`; returns how many.
    pub fn cut_where(&self, reason: &str, pred: impl Fn(&Identity, &str) -> bool) -> usize {
        let conns = self.lock();
        let mut n = 0;
        for e in conns.values().filter(|e| pred(&e.identity, &e.agent)) {
            e.stats.cut(Cut::Revoked(reason.to_owned()));
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dst() -> OrigDst {
        OrigDst("127.0.0.2:80".parse().unwrap())
    }

    #[test]
    fn close_cuts_the_live_and_every_later_connection_as_shutdown() {
        let table = LiveTable::default();
        let before = table.insert(ConnId(1), &Identity::unattributed(), "a", dst());
        assert_eq!(table.close(), 1);
        let after = table.insert(ConnId(2), &Identity::unattributed(), "a", dst());
        for handle in [before, after] {
            assert_eq!(handle.stats.cut_why(), Some(Cut::Shutdown));
            assert_eq!(handle.stats.cut_outcome(), crate::audit::Outcome::Shutdown);
        }
    }

    #[test]
    fn a_revocation_is_not_overwritten_by_the_shutdown() {
        let table = LiveTable::default();
        let h = table.insert(ConnId(1), &Identity::unattributed(), "a", dst());
        assert_eq!(table.cut_where("revoked pid 1", |_, _| true), 1);
        table.close();
        assert_eq!(h.stats.cut_why(), Some(Cut::Revoked("revoked pid 1".into())));
    }

    #[test]
    fn close_idle_cuts_only_parked_connections() {
        let table = LiveTable::default();
        let busy = table.insert(ConnId(1), &Identity::unattributed(), "a", dst());
        let idle = table.insert(ConnId(2), &Identity::unattributed(), "a", dst());
        idle.stats.set_parked(true);
        assert_eq!(table.close_idle(), 1);
        assert_eq!(idle.stats.cut_why(), Some(Cut::Shutdown));
        assert_eq!(busy.stats.cut_why(), None);
    }
}
