//! The event sink. A recorder serialises its event, chains it (sequence
//! number and hash) and appends it to the journal under one lock, in the
//! calling task: the event is acknowledged after that one append, with no
//! thread hand-off and no database commit on the agent's path. One writer
//! thread then puts the journal's records into the store and copies them
//! to the JSON-lines mirror, a batch at a time (see `writer`). Backpressure:
//! at most `queue` records may wait for the store. While the store or the
//! journal fails, the gateway refuses new work (or, if configured, drops
//! events and says so), and a probe brings it back when the store returns.
use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc, Arc, Mutex,
    },
    time::Duration,
};

use tokio::sync::{oneshot, Semaphore};

use super::{
    columns::Encoded,
    keys::{Identity, KeyError},
    record::{Record, GENESIS},
    store::{open_writer, Checkpoint, StoreError},
    Event,
};
use crate::config::{Config, OnFailure};

pub(crate) mod journal;
mod mirror;
mod writer;

use journal::Journal;
use mirror::Mirror;

use super::head::SignedHead;
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

    fn ok(&self) -> bool {
        self.ok.load(Ordering::SeqCst)
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
    /// Journal lines chained but not yet written, in chain order.
    journal_buf: Vec<u8>,
    /// The journal: written only under this lock, so its lines are in
    /// chain order.
    journal: Journal,
    /// Sends records to the writer in chain order (sent under this lock).
    tx: mpsc::Sender<Msg>,
}

/// What the journal thread is asked: append an event (its JSON text),
/// answering once it is written (or failed) when an answer is wanted.
struct Append {
    event: Encoded,
    ack: Option<oneshot::Sender<Result<(), String>>>,
}

/// What recorders and the writer share.
struct Shared {
    chain: Mutex<Chain>,
    /// To the journal thread.
    appends: mpsc::Sender<Append>,
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
        let mut c = self.chain();
        let newest = c.seq;
        c.journal.maintain(committed, newest);
    }

    /// The journal thread: appends come in batches (whatever arrived while
    /// the previous batch was written), are chained, written with one
    /// write to the journal, and answered. It serves recorders that found
    /// the chain's lock taken: they never wait for it, since a recorder
    /// holding it while its worker thread was preempted stalled the other
    /// workers (measured: 30% of HTTP throughput on 2 cores).
    fn run_journal(shared: &std::sync::Weak<Self>, rx: mpsc::Receiver<Append>) {
        while let Ok(first) = rx.recv() {
            // Gone once every recorder is (the sender lives in `Shared`).
            let Some(this) = shared.upgrade() else { return };
            this.journal_batch(first, &rx);
        }
    }

    fn journal_batch(&self, first: Append, rx: &mpsc::Receiver<Append>) {
        let mut batch = vec![first];
        while batch.len() < 1024 {
            match rx.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let mut chain = self.chain();
        let mut acks = Vec::with_capacity(batch.len());
        for Append { event, ack } in batch {
            match chain_one(&mut chain, event) {
                Ok(()) => acks.extend(ack),
                Err(e) => {
                    self.permits.add_permits(1);
                    if let Some(ack) = ack {
                        let _ = ack.send(Err(e));
                    } else {
                        tracing::error!("audit event not recorded: {e}");
                    }
                }
            }
        }
        let written = self.write_buffers(&mut chain);
        drop(chain);
        for ack in acks {
            let _ = ack.send(written.clone());
        }
    }

    /// Appends one event in the calling task if the chain is free (no hand-off:
    /// the lowest latency), else through the journal thread (a worker thread
    /// never waits for the lock: one that held it while preempted stalled the
    /// others, 30% of HTTP throughput on 2 cores).
    async fn append(&self, event: Encoded) -> Result<(), String> {
        let event = match self.append_inline(event) {
            Ok(done) => return done,
            Err(event) => *event,
        };
        let (ack, written) = oneshot::channel();
        self.appends
            .send(Append { event, ack: Some(ack) })
            .map_err(|_| "the audit journal has stopped".to_owned())?;
        written.await.map_err(|_| "the audit journal has stopped".to_owned())?
    }

    /// The inline path of [`Shared::append`]; gives the event back when the
    /// chain is busy.
    fn append_inline(&self, event: Encoded) -> Result<Result<(), String>, Box<Encoded>> {
        self.chain_if_free(event, true)
    }

    /// Chains an event that nobody waits for (see [`EventSink::submit`]) in
    /// the calling task if the chain is free, leaving its lines buffered:
    /// the next acknowledged append writes them, or the store writer does
    /// before it stores the record (within `GATHER`). Handing each such
    /// event to the journal thread cost a thread wake-up and two writes
    /// per event. Gives the event back when the chain is busy.
    fn submit_inline(&self, event: Encoded) -> Result<(), Box<Encoded>> {
        if let Err(e) = self.chain_if_free(event, false)? {
            tracing::error!("audit event not recorded: {e}");
        }
        Ok(())
    }

    /// Chains `event` if the chain's lock is free (writing the buffered
    /// lines out when `write`); gives the event back when it is not.
    fn chain_if_free(&self, event: Encoded, write: bool) -> Result<Result<(), String>, Box<Encoded>> {
        let mut chain = match self.chain.try_lock() {
            Ok(chain) => chain,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Err(Box::new(event)),
        };
        if let Err(e) = chain_one(&mut chain, event) {
            drop(chain);
            self.permits.add_permits(1);
            return Ok(Err(e));
        }
        Ok(if write { self.write_buffers(&mut chain) } else { Ok(()) })
    }

    /// Writes out lines chained but not yet written (by the store writer,
    /// before it stores their records).
    fn flush_buffers(&self) {
        let mut chain = self.chain();
        if !chain.journal_buf.is_empty() {
            let _ = self.write_buffers(&mut chain);
        }
    }

    /// Writes the buffered lines out (under the chain's lock, so the journal
    /// is in chain order). On failure they stay buffered for the next write
    /// and the caller's records are refused.
    fn write_buffers(&self, c: &mut Chain) -> Result<(), String> {
        if let Err(e) = c.journal.write(&c.journal_buf) {
            self.health.fail(&e);
            return Err(e);
        }
        c.journal_buf.clear();
        Ok(())
    }
}

/// Chains one event, buffers its lines and hands the record to the store
/// writer (with its backlog permit, which the writer gives back).
fn chain_one(c: &mut Chain, event: Encoded) -> Result<(), String> {
    let Encoded { body, columns } = event;
    let record = match columns {
        Some(columns) => Record::next_with(&c.instance, &c.host, c.seq + 1, &c.prev, body, columns),
        None => Record::next(&c.instance, &c.host, c.seq + 1, &c.prev, body)
            .map_err(|e| format!("event does not read back: {e}"))?,
    };
    let line = journal::line(&record)?;
    c.journal_buf.extend_from_slice(&line);
    c.seq = record.seq;
    c.prev = record.hash.clone();
    c.tx.send(Msg::Record(Box::new(record)))
        .map_err(|_| "the audit writer has stopped".to_owned())
}

/// Removes `path` off the caller's thread: renamed aside at once (which
/// frees nothing), deleted by a thread of its own. Freeing a file's blocks
/// can take tens of milliseconds (a filesystem mounted with `discard`
/// discards them synchronously: seen on this project's VMs), and the
/// callers hold the audit chain's lock, on an async worker: deleting in
/// place stalled every request for as long (p99 40–60 ms at half load).
fn retire(path: &std::path::Path) {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".retired-{}-{n}", std::process::id()));
    let aside = std::path::PathBuf::from(aside);
    if std::fs::rename(path, &aside).is_ok() {
        delete_off_thread(aside);
    } // else nothing there (or not ours to move): nothing to delete.
}

/// Deletes `path` on a thread of its own (see [`retire`]).
fn delete_off_thread(path: std::path::PathBuf) {
    let shown = path.display().to_string();
    let spawned = std::thread::Builder::new().name("audit-retire".into()).spawn(move || {
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!("audit: removing {}: {e}", path.display());
        }
    });
    if let Err(e) = spawned {
        tracing::warn!("audit: no thread to remove {shown}: {e}");
    }
}

/// Deletes files [`retire`] left behind when the gateway stopped before
/// their thread ran (next to `path`).
fn sweep_retired(path: &std::path::Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(file) = file.to_str() else { continue };
        if file.starts_with(name) && file.contains(".retired-") {
            delete_off_thread(entry.path());
        }
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
        let group = audit.mirror_gid().map_err(SinkError::Backend)?;
        let mirror =
            Mirror::open(&config.paths.events_file(), group).map_err(|e| backend(&config.paths.events_file(), e))?;
        let host = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "unknown".into());
        let mut writer = Writer {
            store: open_writer(config)?,
            identity,
            head_file: config.paths.state_dir.join("audit-head"),
            head: None,
            checkpoint_every: audit.checkpoint_every,
            checkpoint_interval: audit.checkpoint_interval,
            last_checkpoint: std::time::Instant::now(),
            checkpointed: 0,
            max_age: audit.max_age,
            max_records: audit.max_records,
            seq: 0,
            prev: GENESIS.to_owned(),
            mirror,
            mirror_buf: Vec::new(),
        };
        let instance = writer.identity.instance.clone();
        if let Some((seq, hash)) = writer.store.head(&instance)? {
            writer.seq = seq;
            writer.prev = hash;
        }
        let head = signed_head(&writer, &config.paths.state_dir.join("audit-head"))?;
        let journal_path = config.paths.state_dir.join("audit-journal");
        let mut recovered = journal::recover(&journal_path, &instance, writer.seq, &writer.prev);
        if !recovered.is_empty() {
            // Acknowledged before the last stop, not yet stored: stored now,
            // or the gateway does not start (the journal is kept).
            // They may not have reached the mirror: copied again (the
            // mirror is at-least-once, the store exactly once).
            for batch in recovered.chunks_mut(1024) {
                writer.mirror(batch);
                writer.commit(batch).map_err(SinkError::Backend)?;
            }
            tracing::warn!(records = recovered.len(), "audit records recovered from the journal");
        }
        if let Some(h) = head {
            // What the journal gave back must reach what the head vouches for.
            if writer.store.hash_at(&instance, h.seq)?.as_deref() != Some(h.hash.as_str()) {
                return Err(SinkError::Backend(format!(
                    "the audit store lacks the record this gateway last wrote (seq {}, per its signed head), and the journal did not hold it; see `interlock audit verify`",
                    h.seq
                )));
            }
        }
        let journal = Journal::open(&journal_path).map_err(|e| backend(&journal_path, e))?;
        tracing::info!(%instance, seq = writer.seq, "audit trail open");
        let (tx, rx) = mpsc::channel();
        let (appends, appends_rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            chain: Mutex::new(Chain {
                instance,
                host,
                seq: writer.seq,
                prev: writer.prev.clone(),
                journal_buf: Vec::new(),
                journal,
                tx,
            }),
            appends,
            permits: Semaphore::new(audit.queue),
            health: Health {
                ok: AtomicBool::new(true),
                policy: audit.on_failure,
                error: Mutex::new(String::new()),
                dropped: AtomicU64::new(0),
            },
        });
        let for_journal = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("audit-journal".into())
            .spawn(move || Shared::run_journal(&for_journal, appends_rx))
            .map_err(|e| SinkError::Backend(format!("journal thread: {e}")))?;
        let for_writer = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(rx, &for_writer))
            .map_err(|e| SinkError::Backend(format!("writer thread: {e}")))?;
        Ok(shared)
    }

    /// Signs everything stored (the gateway is stopping): a chain's newest
    /// records are then covered by a checkpoint, not only the head file.
    /// What was recorded before is stored first, as for [`flush`](Self::flush).
    pub async fn seal(&self) -> Result<(), SinkError> {
        self.ask_writer(Msg::Seal).await
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

    /// Records an event: it is in the journal when this
    /// returns `Ok`. Waits only while `queue` records are waiting for the
    /// store, and for the journal write that carries it. While the store
    /// fails: an error (refuse policy), or the event is dropped (drop policy).
    pub async fn record(&self, event: Event) -> Result<(), SinkError> {
        let health = &self.shared.health;
        if !health.ok() && health.policy == OnFailure::Drop {
            health.dropped();
            return Ok(());
        }
        self.accepting()?;
        let encoded = Encoded::new(&event).map_err(|e| SinkError::Backend(format!("event: {e}")))?;
        let permit = self.shared.permits.acquire().await.map_err(|_| SinkError::Closed)?;
        permit.forget();
        match self.shared.append(encoded).await {
            Ok(()) => Ok(()),
            Err(_) if health.policy == OnFailure::Drop => {
                health.dropped();
                Ok(())
            }
            Err(e) => Err(SinkError::Unavailable(e)),
        }
    }

    /// Records an event without waiting: for events that follow one already
    /// acknowledged (an exchange's bodies). With no room it is recorded from
    /// a task once there is.
    pub fn submit(&self, event: Event) {
        match self.shared.permits.try_acquire() {
            Ok(permit) => {
                permit.forget();
                let sent = Encoded::new(&event)
                    .map_err(|e| SinkError::Backend(format!("event: {e}")))
                    .and_then(|event| match self.shared.submit_inline(event) {
                        Ok(()) => Ok(()),
                        Err(event) => self
                            .shared
                            .appends
                            .send(Append {
                                event: *event,
                                ack: None,
                            })
                            .map_err(|_| SinkError::Closed),
                    });
                if let Err(e) = sent {
                    self.shared.permits.add_permits(1);
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

    /// Waits until everything recorded so far is in the store (or the store
    /// failed to take it; it stays in the journal).
    pub async fn flush(&self) -> Result<(), SinkError> {
        self.ask_writer(Msg::Flush).await
    }

    /// Sends the writer a message that answers once it is done.
    async fn ask_writer(&self, msg: impl FnOnce(oneshot::Sender<()>) -> Msg) -> Result<(), SinkError> {
        let (done, wait) = oneshot::channel();
        self.shared.chain().tx.send(msg(done)).map_err(|_| SinkError::Closed)?;
        wait.await.map_err(|_| SinkError::Closed)
    }
}

/// The head file this gateway signed, checked against the store before the
/// chain goes on: the store must not be ahead of it (records after it were
/// not written by this gateway) nor differ from it. A head the journal will
/// bring the store up to is returned, to be checked once it has.
fn signed_head(writer: &Writer, path: &std::path::Path) -> Result<Option<SignedHead>, SinkError> {
    let instance = &writer.identity.instance;
    let Some(head) = SignedHead::read(path).filter(|h| &h.instance == instance) else {
        return Ok(None);
    };
    if head.signature.is_none() {
        tracing::warn!("the audit head file is not signed (an older version wrote it); it is signed from now on");
        return Ok(None);
    }
    let public = writer.identity.public_key();
    let trusted = [(super::keys::key_id(&public), public.as_slice())].into();
    let refuse = |why: String| {
        Err(SinkError::Backend(format!(
            "{why}: the audit store or {} was changed while the gateway was down. Run `interlock audit verify`; to start a new trail, move the store and the head file aside",
            path.display()
        )))
    };
    if let Err(why) = head.check(&trusted) {
        return refuse(why);
    }
    if writer.seq > head.seq {
        return refuse(format!(
            "the store holds records after the last one this gateway wrote (seq {})",
            head.seq
        ));
    }
    if writer.seq == head.seq && writer.prev != head.hash {
        return refuse(format!(
            "the store's record seq {} is not the one this gateway wrote",
            head.seq
        ));
    }
    Ok(Some(head))
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
