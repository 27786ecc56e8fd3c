//! Reading the gateway's JSON-lines event log.
use std::path::PathBuf;

use serde_json::Value;

/// The event log of one gateway.
pub struct Events {
    path: PathBuf,
}

impl Events {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self { path }
    }

    /// Every event so far.
    pub fn all(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad event line {l:?}: {e}")))
            .collect()
    }

    /// Connection events.
    pub fn connections(&self) -> Vec<Value> {
        self.all().into_iter().filter(|e| e["event"] == "connection").collect()
    }

    /// Waits (bounded) for an event of `kind` matching `pred`.
    pub fn wait(&self, kind: &str, pred: impl Fn(&Value) -> bool) -> Value {
        crate::wait_for(10, || self.all().into_iter().find(|e| e["event"] == kind && pred(e)))
            .unwrap_or_else(|| panic!("no matching {kind} event; events so far:\n{:#?}", self.all()))
    }

    /// Waits (bounded) for a connection event matching `pred`.
    pub fn wait_connection(&self, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait("connection", pred)
    }

    /// Waits for the connection event of a given original destination and pid.
    pub fn for_dst_pid(&self, dst: &str, pid: u32) -> Value {
        self.wait_connection(|e| e["orig_dst"] == dst && e["identity"]["pid"] == pid)
    }
}
