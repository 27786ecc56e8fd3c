//! The event sink. A recorder serialises its event, chains it (sequence
//! number and hash) and appends it to the journal and the JSON-lines mirror
//! under one lock, in the calling task: the event is acknowledged after
//! that one append, with no thread hand-off and no database commit on the
//! agent's path. One writer thread then puts the journal's records into the
//! store (see `writer`). Backpressure: at most `queue` records may wait for
//! the store. While the store or the journal fails, the gateway refuses new
//! work (or, if configured, drops events and says so), and a probe brings
//! it back when the store returns.
use std::{
    io::Write,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc, Arc, Mutex,
    },
    time::Duration,
};

use tokio::sync::{oneshot, Semaphore};

use super::{
    keys::{Identity, KeyError},
    record::{Record, GENESIS},
    store::{open_writer, Checkpoint, StoreError},
    Event,
};
use crate::config::{Config, OnFailure};

mod journal;
mod writer;

use journal::Journal;
use writer::{Msg, Writer};

/// Errors of the event sink (gateway side).
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The signing key or instance id is unusable.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The store is failing: events cannot be recorded, so work is refused.
    #[error("the audit trail is unavailable ({0}); requests are refused until it is back")]
    Unavailable(String),
    /// The writer has stopped.
    #[error("the audit writer has stopped")]
    Closed,
    /// This backend cannot be used.
    #[error("audit backend: {0}")]
    Backend(String),
}

struct Health {
    ok: AtomicBool,
    policy: OnFailure,
    error: Mutex<String>,
    dropped: AtomicU64,
}

impl Health {
    fn fail(&self, e: &str) {
        if self.ok.swap(false, Ordering::SeqCst) {
            tracing::error!(policy = ?self.policy, "audit store failing: {e}");
        }
        *self.error.lock().unwrap_or_else(|p| p.into_inner()) = e.to_owned();
    }

    fn recover(&self) {
        if !self.ok.swap(true, Ordering::SeqCst) {
            tracing::warn!("audit store is back; serving again");
        }
    }

    fn dropped(&self) {
        let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::warn!(dropped = n, "audit store failing: event dropped (on_failure = drop)");
    }
}

/// The chain's end, as recorders extend it.
struct Chain {
    instance: String,
    host: String,
    seq: i64,
    prev: String,
    journal: Journal,
    mirror: Option<std::fs::File>,
    /// Sends records to the writer in chain order (sent under this lock).
    tx: mpsc::Sender<Msg>,
}

/// What recorders and the writer share.
struct Shared {
    chain: Mutex<Chain>,
    /// Records that may wait for the store; the writer gives them back.
    permits: Semaphore,
    health: Health,
}

impl Shared {
    fn chain(&self) -> std::sync::MutexGuard<'_, Chain> {
        self.chain.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The store has everything up to `committed`: the journal may shrink.
    fn maintain_journal(&self, committed: i64) {
        let mut chain = self.chain();
        let newest = chain.seq;
        chain.journal.maintain(committed, newest);
    }
}

/// Handle for recording events. Cheap to clone.
#[derive(Clone)]
pub struct EventSink {
    shared: Arc<Shared>,
}

impl EventSink {
    /// Opens the configured store, puts in what the journal holds beyond
    /// the store's head (records acknowledged before the gateway last
    /// stopped), and starts the writer.
    pub async fn open(config: &Config) -> Result<Self, SinkError> {
        let config = config.clone();
        // The store may run a runtime of its own (PostgreSQL): it is opened,
        // used and dropped only off the async workers.
        let shared = tokio::task::spawn_blocking(move || Self::start(&config))
            .await
            .map_err(|e| SinkError::Backend(format!("store open task: {e}")))??;
        let sink = Self { shared };
        sink.spawn_prober();
        Ok(sink)
    }

    fn start(config: &Config) -> Result<Arc<Shared>, SinkError> {
        let audit = &config.audit;
        let backend =
            |what: &std::path::Path, e: std::io::Error| SinkError::Backend(format!("{}: {e}", what.display()));
        let identity = Identity::load_or_create(&config.paths.state_dir)?;
        let mirror = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(config.paths.events_file())
            .map_err(|e| backend(&config.paths.events_file(), e))?;
        let host = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "unknown".into());
        let mut writer = Writer {
            store: open_writer(config)?,
            identity,
            head_file: config.paths.state_dir.join("audit-head"),
            head: None,
            checkpoint_every: audit.checkpoint_every,
            max_age: audit.max_age,
            max_records: audit.max_records,
            seq: 0,
            prev: GENESIS.to_owned(),
        };
        let instance = writer.identity.instance.clone();
        if let Some((seq, hash)) = writer.store.head(&instance)? {
            writer.seq = seq;
            writer.prev = hash;
        }
        let journal_path = config.paths.state_dir.join("audit-journal");
        let mut recovered = journal::recover(&journal_path, &instance, writer.seq, &writer.prev);
        if !recovered.is_empty() {
            // Acknowledged before the last stop, not yet stored: stored now,
            // or the gateway does not start (the journal is kept).
            for batch in recovered.chunks_mut(1024) {
                writer.commit(batch).map_err(SinkError::Backend)?;
            }
            tracing::warn!(records = recovered.len(), "audit records recovered from the journal");
        }
        let journal = Journal::open(&journal_path).map_err(|e| backend(&journal_path, e))?;
        tracing::info!(%instance, seq = writer.seq, "audit trail open");
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            chain: Mutex::new(Chain {
                instance,
                host,
                seq: writer.seq,
                prev: writer.prev.clone(),
                journal,
                mirror: Some(mirror),
                tx,
            }),
            permits: Semaphore::new(audit.queue),
            health: Health {
                ok: AtomicBool::new(true),
                policy: audit.on_failure,
                error: Mutex::new(String::new()),
                dropped: AtomicU64::new(0),
            },
        });
        let for_writer = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(rx, &for_writer))
            .map_err(|e| SinkError::Backend(format!("writer thread: {e}")))?;
        Ok(shared)
    }

    fn spawn_prober(&self) {
        let shared = Arc::downgrade(&self.shared);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let Some(shared) = shared.upgrade() else { return };
                if !shared.health.ok() {
                    let _ = shared.chain().tx.send(Msg::Probe);
                }
            }
        });
    }

    /// Whether new work may start: `Err` while the store fails and the
    /// policy is to refuse.
    pub fn accepting(&self) -> Result<(), SinkError> {
        let health = &self.shared.health;
        if health.ok() || health.policy == OnFailure::Drop {
            return Ok(());
        }
        let e = health.error.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Err(SinkError::Unavailable(e))
    }

    /// Records an event: it is in the journal (and the mirror) when this
    /// returns `Ok`. Waits only while `queue` records are waiting for the
    /// store. While the store fails: an error (refuse policy), or the event
    /// is dropped (drop policy).
    pub async fn record(&self, event: Event) -> Result<(), SinkError> {
        let health = &self.shared.health;
        if !health.ok() && health.policy == OnFailure::Drop {
            health.dropped();
            return Ok(());
        }
        self.accepting()?;
        let body = serde_json::to_string(&event).map_err(|e| SinkError::Backend(format!("event: {e}")))?;
        let permit = self.shared.permits.acquire().await.map_err(|_| SinkError::Closed)?;
        permit.forget();
        self.append(body)
    }

    /// Records an event without waiting for room: for events that follow
    /// one already acknowledged (an exchange's bodies). With no room it is
    /// recorded from a task once there is.
    pub fn submit(&self, event: Event) {
        match self.shared.permits.try_acquire() {
            Ok(permit) => {
                permit.forget();
                let appended = serde_json::to_string(&event)
                    .map_err(|e| SinkError::Backend(format!("event: {e}")))
                    .and_then(|body| self.append(body));
                if let Err(e) = appended {
                    tracing::error!("audit event not recorded: {e}");
                }
            }
            Err(_) => {
                let sink = self.clone();
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn(async move {
                        if let Err(e) = sink.record(event).await {
                            tracing::error!("audit event not recorded: {e}");
                        }
                    });
                }
            }
        }
    }

    /// Chains `body`, appends it to the journal and the mirror, and hands
    /// the record to the writer (holding one permit, given back by the writer).
    fn append(&self, body: String) -> Result<(), SinkError> {
        let shared = &self.shared;
        let mut chain = shared.chain();
        let c = &mut *chain;
        let record = Record::next(&c.instance, &c.host, c.seq + 1, &c.prev, body)
            .map_err(|e| SinkError::Backend(format!("event does not read back: {e}")));
        let record = match record.and_then(|r| c.journal.append(&r).map(|()| r).map_err(SinkError::Unavailable)) {
            Ok(r) => r,
            Err(e) => {
                drop(chain);
                shared.permits.add_permits(1);
                shared.health.fail(&e.to_string());
                return match shared.health.policy {
                    OnFailure::Drop => {
                        shared.health.dropped();
                        Ok(())
                    }
                    OnFailure::Refuse => Err(e),
                };
            }
        };
        if let Some(mirror) = c.mirror.as_mut() {
            let mut line = Vec::with_capacity(record.body.len() + 1);
            line.extend_from_slice(record.body.as_bytes());
            line.push(b'\n');
            if let Err(e) = mirror.write_all(&line) {
                tracing::warn!("event mirror file: {e}");
            }
        }
        c.seq = record.seq;
        c.prev = record.hash.clone();
        c.tx.send(Msg::Record(Box::new(record))).map_err(|_| SinkError::Closed)
    }

    /// Waits until everything recorded so far is in the store (or the store
    /// failed to take it; it stays in the journal).
    pub async fn flush(&self) -> Result<(), SinkError> {
        let (done, wait) = oneshot::channel();
        self.shared
            .chain()
            .tx
            .send(Msg::Flush(done))
            .map_err(|_| SinkError::Closed)?;
        wait.await.map_err(|_| SinkError::Closed)
    }
}

/// Appends one event from outside the daemon (e.g. `interlock detach`,
/// which must leave a trace while the daemon may be down). It goes on its
/// own chain, `<instance>-cli`, signed at once, so it never races the
/// daemon's chain.
pub fn append_direct(config: &Config, event: &Event) -> Result<(), SinkError> {
    let mut store = open_writer(config)?;
    let identity = Identity::load_or_create(&config.paths.state_dir)?;
    let instance = format!("{}-cli", identity.instance);
    let (seq, prev) = store.head(&instance)?.unwrap_or((0, GENESIS.to_owned()));
    let body = serde_json::to_string(event).map_err(|e| SinkError::Backend(e.to_string()))?;
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into());
    let mut record =
        Record::next(&instance, &host, seq + 1, &prev, body).map_err(|e| SinkError::Backend(e.to_string()))?;
    let (key_id, signature) = identity.sign(&instance, record.seq, &record.hash);
    let checkpoint = Checkpoint {
        instance: instance.clone(),
        seq: record.seq,
        hash: record.hash.clone(),
        time: super::now(),
        key_id,
        signature,
    };
    store.append(std::slice::from_mut(&mut record), Some(&checkpoint))?;
    Ok(())
}
