//! Cancel keys. The agent is given the server's real backend pid (no
//! secret: `pg_backend_pid()` returns it, and notifications carry it) with
//! a secret key of the gateway's own, never the server's; a CancelRequest
//! is mapped back by that pair to the server's key of that one session and
//! sent to that session's upstream. A key unknown to the gateway, or
//! presented by a different agent, cancels nothing.
use std::{collections::HashMap, sync::Mutex};

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use tokio::io::AsyncWriteExt;

use super::login;
use crate::{
    config::UpstreamTls,
    proxy::ProxyCtx,
    types::{AgentName, OrigDst},
};

/// Where a session's cancel goes.
#[derive(Debug, Clone)]
pub struct CancelTarget {
    /// The agent that owns the session.
    pub agent: AgentName,
    /// The session's upstream.
    pub upstream: OrigDst,
    /// Its TLS mode, CA bundle and name.
    pub tls: (UpstreamTls, Option<std::path::PathBuf>, String),
    /// The server's key for the session.
    pub key: (i32, i32),
}

/// Live sessions by the key their agent was given.
#[derive(Default)]
pub struct CancelTable(Mutex<HashMap<(i32, i32), CancelTarget>>);

impl CancelTable {
    /// Registers a session; returns the key for its agent (the server's
    /// pid, a secret of the gateway's), or `None` when the kernel's random
    /// source fails (no guessable key is handed out).
    pub fn register(&self, target: CancelTarget) -> Option<(i32, i32)> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let pid = target.key.0;
        for _ in 0..8 {
            // Two servers may have a backend of one pid: the secret tells them apart.
            let key = (pid, random_i32()?);
            if let std::collections::hash_map::Entry::Vacant(slot) = map.entry(key) {
                slot.insert(target);
                return Some(key);
            }
        }
        None
    }

    /// Forgets a session.
    pub fn remove(&self, key: (i32, i32)) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
    }

    fn get(&self, key: (i32, i32)) -> Option<CancelTarget> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).get(&key).cloned()
    }
}

/// Four random bytes (ring's system random source), or `None` if the
/// kernel cannot give them.
pub fn random_u32() -> Option<u32> {
    let mut v = [0u8; 4];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut v).ok()?;
    Some(u32::from_be_bytes(v))
}

fn random_i32() -> Option<i32> {
    random_u32().map(|v| v as i32)
}

/// Sends an agent's cancel to the session it names. Returns what happened, in words.
pub async fn forward(ctx: &std::sync::Arc<ProxyCtx>, agent: &AgentName, pid: i32, key: i32) -> String {
    let Some(target) = ctx.pg_cancels.get((pid, key)) else {
        return "cancel request with an unknown key ignored".into();
    };
    if &target.agent != agent {
        return format!(
            "cancel request from agent {agent} for a session of agent {} refused",
            target.agent
        );
    }
    let (mode, ca, name) = &target.tls;
    let mut io = match login::open(target.upstream, *mode, ca.as_deref(), name, ctx).await {
        Ok((io, _)) => io,
        Err(e) => return format!("cancel not delivered: {e}"),
    };
    let mut out = BytesMut::new();
    frontend::cancel_request(target.key.0, target.key.1, &mut out);
    match io.write_all(&out).await {
        Ok(()) => {
            // The server reads the request and closes; wait for that briefly.
            let mut sink = [0u8; 1];
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(2),
                tokio::io::AsyncReadExt::read(&mut io, &mut sink),
            )
            .await;
            "cancel request delivered".into()
        }
        Err(e) => format!("cancel not delivered: {e}"),
    }
}
