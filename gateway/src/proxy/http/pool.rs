//! Upstream connections lent per exchange, as nginx's and haproxy's upstream
//! keep-alive pools do: an HTTP/1.1 connection goes back to the pool when its
//! response body has been read to the end (then it can carry the next
//! request, from any agent connection to the same place), and one HTTP/2
//! connection is shared by all. An idle agent connection therefore holds no
//! upstream connection: with many idle agents the gateway keeps at most
//! `IDLE_PER_KEY` upstream connections per destination, not one per agent.
use std::{
    collections::HashMap,
    path::PathBuf,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use bytes::Bytes;
use hyper::body::{Body as _, Frame, SizeHint};

use super::{Body, Sender};
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
const IDLE_PER_KEY: usize = 64;

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

    /// Returns a connection with no exchange outstanding on it. (An HTTP/1.1
    /// connection may not signal readiness yet at the moment its response
    /// body ended; whoever takes it out waits for `ready()`.)
    pub(super) fn checkin(&self, key: PoolKey, sender: Sender) {
        let open = match &sender {
            Sender::H1(tx) => !tx.is_closed(),
            Sender::H2(tx) => !tx.is_closed(),
        };
        if !open {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.entry(key).or_default();
        list.retain(|s| match s {
            Sender::H1(tx) => !tx.is_closed(),
            Sender::H2(tx) => !tx.is_closed(),
        });
        if matches!(sender, Sender::H2(_)) && list.iter().any(|s| matches!(s, Sender::H2(_))) {
            return; // one shared HTTP/2 connection is enough
        }
        if list.len() < IDLE_PER_KEY {
            list.push(sender);
        }
    }
}

/// A response body from a lent HTTP/1.1 connection: the connection goes
/// back to the pool once the body has been read to its end; a body dropped
/// before its end takes the connection with it (it is closed).
pub(super) struct Lent {
    inner: Body,
    back: Option<(Arc<Pool>, PoolKey, Sender)>,
    ended: bool,
}

impl Lent {
    /// Wraps `inner`, whose connection is `sender`.
    pub(super) fn new(inner: Body, pool: Arc<Pool>, key: PoolKey, sender: Sender) -> Self {
        Self {
            inner,
            back: Some((pool, key, sender)),
            ended: false,
        }
    }

    fn give_back(&mut self) {
        if let Some((pool, key, sender)) = self.back.take() {
            pool.checkin(key, sender);
        }
    }
}

impl hyper::body::Body for Lent {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                this.ended = true;
                this.give_back();
            }
            // A broken body: the connection is not reused.
            Poll::Ready(Some(Err(_))) => this.back = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        // An empty body (HEAD, 204, 304) may never be polled.
        if self.ended || self.inner.is_end_stream() {
            self.give_back();
        }
    }
}
