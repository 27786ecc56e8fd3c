//! Upstream connections kept for reuse across agent connections: an idle
//! HTTP/1.1 connection serves the next agent connection to the same place,
//! and one HTTP/2 connection is shared by all of them.
use std::{collections::HashMap, path::PathBuf, sync::Mutex};

use super::Sender;
use crate::types::OrigDst;

/// Where a connection goes and how it was verified: reuse only when all match.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(in crate::proxy) struct PoolKey {
    pub(in crate::proxy) upstream: OrigDst,
    pub(in crate::proxy) host: String,
    pub(in crate::proxy) tls: bool,
    pub(in crate::proxy) ca_file: Option<PathBuf>,
}

/// Idle connections kept per key.
const IDLE_PER_KEY: usize = 16;

/// The pool.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<HashMap<PoolKey, Vec<Sender>>>,
}

impl Pool {
    /// A live connection for `key`, if one is idle (HTTP/2 ones are shared).
    pub(super) fn checkout(&self, key: &PoolKey) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.get_mut(key)?;
        while let Some(sender) = list.pop() {
            match sender {
                Sender::H2(tx) if !tx.is_closed() => {
                    list.push(Sender::H2(tx.clone()));
                    return Some(Sender::H2(tx));
                }
                Sender::H1(tx) if !tx.is_closed() => return Some(Sender::H1(tx)),
                _ => {}
            }
        }
        None
    }

    /// Returns a connection whose agent connection has ended.
    pub(super) fn checkin(&self, key: PoolKey, sender: Sender) {
        let open = match &sender {
            Sender::H1(tx) => !tx.is_closed() && tx.is_ready(),
            Sender::H2(tx) => !tx.is_closed(),
        };
        if !open {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.entry(key).or_default();
        if matches!(sender, Sender::H2(_)) && list.iter().any(|s| matches!(s, Sender::H2(_))) {
            return; // one shared HTTP/2 connection is enough
        }
        if list.len() < IDLE_PER_KEY {
            list.push(sender);
        }
    }
}
