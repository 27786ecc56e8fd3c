//! Session pooling of upstream PostgreSQL connections. When an agent's
//! session ends cleanly (Terminate or EOF between statements, nothing
//! outstanding, the server idle outside a transaction), the gateway resets
//! the server session (`DISCARD ALL`: prepared statements, temporary
//! tables, settings, advisory locks, LISTENs) and keeps the logged-in
//! connection for the next session of the same agent with the same login
//! (address, TLS, role, database, startup parameters), for `pool_idle`.
//! A new connection per transaction then costs no TCP connect, no backend
//! start and no SCRAM derivation (half the gateway's CPU per connection).
//! While it waits, the session's `application_name` says so (`interlock:
//! idle in the pool of agent ...`, in `pg_stat_activity`); handed over, it
//! is reset to the login's, which is the agent's own.
//! Anything unusual (an error, a revocation, a transaction left open, an
//! answer still owed, a reset that fails) closes the connection instead.
use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use bytes::BytesMut;
use postgres_protocol::message::{backend::Message, frontend};
use tokio::io::{AsyncRead, AsyncWriteExt};

use super::login::{self, Upstream};
use crate::types::{AgentName, OrigDst};

/// Idle connections kept per login at most.
const PER_KEY: usize = 16;

/// How long a reset may take before the connection is closed instead.
const RESET_WAIT: Duration = Duration::from_secs(5);

/// What a pooled connection may be reused for: the same agent, logged in
/// the same way.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// The agent (sessions of different agents never share a server session).
    pub agent: AgentName,
    /// The database server.
    pub upstream: OrigDst,
    /// Upstream TLS: mode, extra CA bundle, the name verified.
    pub tls: (crate::config::UpstreamTls, Option<std::path::PathBuf>, String),
    /// The role.
    pub user: String,
    /// The database.
    pub database: String,
    /// Startup parameters passed on (they are the session's defaults).
    pub params: Vec<(String, String)>,
}

/// How often idle connections past their time are looked for.
const REAP_EVERY: Duration = Duration::from_secs(1);

struct Idle {
    up: Upstream,
    /// Its target's `pool_idle` after it was given back.
    until: Instant,
}

/// Idle upstream sessions, by login.
#[derive(Default)]
pub struct PgPool {
    idle: Mutex<HashMap<PoolKey, Vec<Idle>>>,
    /// A reaper task is running.
    reaping: AtomicBool,
}

impl PgPool {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<PoolKey, Vec<Idle>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An idle connection for `key`, if one is still open and within its
    /// time. The most recently used comes first. The ones passed over (past
    /// their time, or closed or spoken to by the server) are ended with a
    /// Terminate off the caller's path, as the reaper ends those it finds:
    /// a server whose session just drops logs an unexpected EOF.
    pub fn take(&self, key: &PoolKey) -> Option<Upstream> {
        let mut spent = Vec::new();
        let found = {
            let mut map = self.map();
            let list = map.get_mut(key)?;
            let mut found = None;
            while let Some(mut idle) = list.pop() {
                if Instant::now() < idle.until && still_quiet(&mut idle.up) {
                    found = Some(idle.up);
                    break;
                }
                spent.push(idle.up);
            }
            if list.is_empty() {
                map.remove(key);
            }
            found
        };
        if !spent.is_empty() {
            tokio::spawn(async move {
                for up in spent {
                    terminate(up).await;
                }
            });
        }
        found
    }

    /// Resets a session's server side and keeps it for `max_idle`; closes it
    /// when the reset fails or the pool for its login is full.
    pub async fn give(self: &Arc<Self>, key: PoolKey, mut up: Upstream, max_idle: Duration) {
        match tokio::time::timeout(RESET_WAIT, reset(&mut up, &key.agent)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(upstream = %key.upstream, "upstream session not pooled: {e}");
                return terminate(up).await;
            }
            Err(_) => return terminate(up).await,
        }
        let full = {
            let mut map = self.map();
            let list = map.entry(key).or_default();
            if list.len() >= PER_KEY {
                Some(up)
            } else {
                list.push(Idle {
                    up,
                    until: Instant::now() + max_idle,
                });
                None
            }
        };
        if let Some(up) = full {
            return terminate(up).await;
        }
        if !self.reaping.swap(true, Ordering::AcqRel) {
            let pool = Arc::downgrade(self);
            tokio::spawn(reap(pool));
        }
    }
}

/// Closes idle connections past their time, until none are left.
async fn reap(pool: std::sync::Weak<PgPool>) {
    loop {
        tokio::time::sleep(REAP_EVERY).await;
        let Some(pool) = pool.upgrade() else { return };
        let expired: Vec<Upstream> = {
            let mut map = pool.map();
            let mut out = Vec::new();
            let now = Instant::now();
            for list in map.values_mut() {
                let (old, young): (Vec<Idle>, Vec<Idle>) = list.drain(..).partition(|i| now >= i.until);
                *list = young;
                out.extend(old.into_iter().map(|i| i.up));
            }
            map.retain(|_, list| !list.is_empty());
            if map.is_empty() {
                pool.reaping.store(false, Ordering::Release);
            }
            out
        };
        for up in expired {
            terminate(up).await;
        }
        if !pool.reaping.load(Ordering::Acquire) {
            return;
        }
    }
}

/// Whether an idle connection has had nothing to say: a server that closed
/// it (restart, `idle_session_timeout`, an administrator) or sent anything
/// (a notice, a notification) makes it unusable.
fn still_quiet(up: &mut Upstream) -> bool {
    if !up.buf.is_empty() {
        return false;
    }
    let mut byte = [0u8; 1];
    let mut read = tokio::io::ReadBuf::new(&mut byte);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    matches!(
        std::pin::Pin::new(&mut up.io).poll_read(&mut cx, &mut read),
        std::task::Poll::Pending
    )
}

/// What `pg_stat_activity` shows as the `application_name` of a pooled
/// session while it waits for its agent's next one.
pub fn idle_name(agent: &crate::types::AgentName) -> String {
    format!("interlock: idle in the pool of agent {agent}")
}

/// `DISCARD ALL`, then the idle session's `application_name`, each answered
/// by its completion and an idle ReadyForQuery.
async fn reset(up: &mut Upstream, agent: &crate::types::AgentName) -> Result<(), login::QueryError> {
    let mut out = BytesMut::new();
    frontend::query("DISCARD ALL", &mut out)?;
    let name = idle_name(agent).replace('\'', "''");
    frontend::query(&format!("SET application_name = '{name}'"), &mut out)?;
    up.io.write_all(&out).await?;
    answered(up).await?;
    answered(up).await?;
    nothing_after(up)
}

/// Hands a pooled session over to the agent's new one: `RESET
/// application_name` gives back the login's own (the agent's startup
/// value), as the session had before it was pooled.
pub async fn hand_over(up: &mut Upstream) -> Result<(), login::QueryError> {
    let mut out = BytesMut::new();
    frontend::query("RESET application_name", &mut out)?;
    up.io.write_all(&out).await?;
    answered(up).await?;
    nothing_after(up)
}

/// A server that said more than it was asked cannot be lent.
fn nothing_after(up: &Upstream) -> Result<(), login::QueryError> {
    if up.buf.is_empty() {
        Ok(())
    } else {
        Err(login::QueryError::Unexpected("more than the answer".into()))
    }
}

/// Reads one command's answer: its completion, then an idle ReadyForQuery
/// with nothing after it.
async fn answered(up: &mut Upstream) -> Result<(), login::QueryError> {
    use login::QueryError;
    let mut completed = false;
    loop {
        match login::next(&mut up.io, &mut up.buf).await? {
            Message::CommandComplete(_) => completed = true,
            Message::ErrorResponse(body) => return Err(QueryError::Refused(login::error_text(body.fields()).1)),
            Message::ReadyForQuery(body) if completed && body.status() == b'I' => return Ok(()),
            Message::ReadyForQuery(_) => return Err(QueryError::Unexpected("not idle after the reset".into())),
            Message::ParameterStatus(_) | Message::NoticeResponse(_) => {}
            _ => return Err(QueryError::Unexpected("unexpected answer to the reset".into())),
        }
    }
}

/// Ends a server session politely (Terminate), best effort.
pub async fn terminate(mut up: Upstream) {
    let mut out = BytesMut::new();
    frontend::terminate(&mut out);
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = up.io.write_all(&out).await;
        let _ = up.io.shutdown().await;
    })
    .await;
}

#[cfg(test)]
mod tests {
    use tokio::{
        io::AsyncReadExt,
        net::{TcpListener, TcpStream},
    };

    use super::*;

    /// An idle entry whose server side is `server`'s peer.
    async fn idle(until: Instant) -> (Idle, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let up = Upstream {
            io: Box::new(client),
            buf: BytesMut::new(),
            greeting: Vec::new(),
            key: (1, 2),
            tls: false,
        };
        (Idle { up, until }, server)
    }

    fn key() -> PoolKey {
        PoolKey {
            agent: AgentName("a".into()),
            upstream: OrigDst("127.0.0.1:5432".parse().unwrap()),
            tls: (crate::config::UpstreamTls::default(), None, String::new()),
            user: "u".into(),
            database: "d".into(),
            params: Vec::new(),
        }
    }

    #[tokio::test]
    async fn a_connection_past_its_time_is_not_lent_and_gets_a_terminate() {
        let pool = PgPool::default();
        let (fresh, _fresh_server) = idle(Instant::now() + Duration::from_secs(60)).await;
        let (expired, mut expired_server) = idle(Instant::now() - Duration::from_secs(1)).await;
        // The expired one was given back last, so it is looked at first.
        pool.map().insert(key(), vec![fresh, expired]);
        let lent = pool.take(&key()).expect("the fresh connection is lent");
        assert_eq!(lent.key, (1, 2));
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), expired_server.read_to_end(&mut got))
            .await
            .expect("the expired connection is closed")
            .unwrap();
        assert_eq!(got, [b'X', 0, 0, 0, 4], "a Terminate, then EOF");
        assert!(pool.take(&key()).is_none(), "nothing else was kept");
    }
}
