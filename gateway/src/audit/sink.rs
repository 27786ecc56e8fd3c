//! The event sink: recorders hand events to one writer thread through a
//! bounded queue (backpressure when the store is slow) and wait until the
//! batch holding their event is committed, so an event is stored before
//! the agent is answered. The writer chains and signs records; while the
//! store fails, the gateway refuses new work (or, if configured, drops
//! events and says so), and a probe brings it back when the store returns.
use std::{
    io::Write,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use tokio::sync::{mpsc, oneshot};

use super::{
    keys::{Identity, KeyError},
    record::{Record, GENESIS},
    store::{open_writer, Checkpoint, Store, StoreError},
    Event,
};
use crate::config::{Config, OnFailure};

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

type Ack = oneshot::Sender<Result<(), String>>;

enum Msg {
    Event(Box<Event>, Option<Ack>),
    Flush(oneshot::Sender<()>),
    Probe,
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
}

/// Handle for recording events. Cheap to clone.
#[derive(Clone)]
pub struct EventSink {
    tx: mpsc::Sender<Msg>,
    health: Arc<Health>,
}

/// Everything the writer needs.
struct Writer {
    store: Box<dyn Store>,
    identity: Identity,
    host: String,
    mirror: Option<std::fs::File>,
    head_file: PathBuf,
    head: Option<std::fs::File>,
    checkpoint_every: u64,
    max_age: Option<Duration>,
    max_records: Option<u64>,
    seq: i64,
    prev: String,
}

impl EventSink {
    /// Opens the configured store and starts the writer.
    pub async fn open(config: &Config) -> Result<Self, SinkError> {
        let audit = &config.audit;
        let identity = Identity::load_or_create(&config.paths.state_dir)?;
        let mirror = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(config.paths.events_file())
            .map_err(|e| SinkError::Backend(format!("{}: {e}", config.paths.events_file().display())))?;
        let host = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "unknown".into());
        let (tx, rx) = mpsc::channel(audit.queue);
        let health = Arc::new(Health {
            ok: AtomicBool::new(true),
            policy: audit.on_failure,
            error: Mutex::new(String::new()),
            dropped: AtomicU64::new(0),
        });
        let h = health.clone();
        let config = config.clone();
        // The store may run a runtime of its own (PostgreSQL): it is opened,
        // used and dropped only off the async workers.
        tokio::task::spawn_blocking(move || {
            let audit = &config.audit;
            let mut writer = Writer {
                store: open_writer(&config)?,
                identity,
                host,
                mirror: Some(mirror),
                head_file: config.paths.state_dir.join("audit-head"),
                head: None,
                checkpoint_every: audit.checkpoint_every,
                max_age: audit.max_age,
                max_records: audit.max_records,
                seq: 0,
                prev: GENESIS.to_owned(),
            };
            if let Some((seq, hash)) = writer.store.head(&writer.identity.instance)? {
                writer.seq = seq;
                writer.prev = hash;
            }
            tracing::info!(instance = %writer.identity.instance, seq = writer.seq, "audit trail open");
            std::thread::Builder::new()
                .name("audit-writer".into())
                .spawn(move || writer.run(rx, &h))
                .map(|_| ())
                .map_err(|e| SinkError::Backend(format!("writer thread: {e}")))
        })
        .await
        .map_err(|e| SinkError::Backend(format!("store open task: {e}")))??;
        let sink = Self { tx, health };
        sink.spawn_prober();
        Ok(sink)
    }

    fn spawn_prober(&self) {
        let (tx, health) = (self.tx.downgrade(), self.health.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let Some(tx) = tx.upgrade() else { return };
                if !health.ok.load(Ordering::SeqCst) {
                    let _ = tx.try_send(Msg::Probe);
                }
            }
        });
    }

    /// Whether new work may start: `Err` while the store fails and the
    /// policy is to refuse.
    pub fn accepting(&self) -> Result<(), SinkError> {
        if self.health.ok.load(Ordering::SeqCst) || self.health.policy == OnFailure::Drop {
            return Ok(());
        }
        let e = self.health.error.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Err(SinkError::Unavailable(e))
    }

    /// Records an event and waits until it is stored. While the store fails:
    /// an error (refuse policy), or the event is dropped (drop policy).
    pub async fn record(&self, event: Event) -> Result<(), SinkError> {
        if !self.health.ok.load(Ordering::SeqCst) && self.health.policy == OnFailure::Drop {
            let n = self.health.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(dropped = n, "audit store failing: event dropped (on_failure = drop)");
            return Ok(());
        }
        self.accepting()?;
        let (ack, wait) = oneshot::channel();
        self.tx
            .send(Msg::Event(Box::new(event), Some(ack)))
            .await
            .map_err(|_| SinkError::Closed)?;
        match wait.await.map_err(|_| SinkError::Closed)? {
            Ok(()) => Ok(()),
            Err(_) if self.health.policy == OnFailure::Drop => Ok(()),
            Err(e) => Err(SinkError::Unavailable(e)),
        }
    }

    /// Records an event without waiting for it to be stored: for events
    /// that follow one already acknowledged (an exchange's bodies), where no
    /// answer waits on them. Failures are logged by the writer's health; a
    /// full queue makes a task wait for room instead of the caller.
    pub fn submit(&self, event: Event) {
        if self.accepting().is_err() {
            tracing::error!("audit store failing: event not recorded");
            return;
        }
        match self.tx.try_send(Msg::Event(Box::new(event), None)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(msg)) => {
                let tx = self.tx.clone();
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn(async move {
                        let _ = tx.send(msg).await;
                    });
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => tracing::error!("audit writer stopped: event not recorded"),
        }
    }

    /// Waits until everything queued so far is written.
    pub async fn flush(&self) -> Result<(), SinkError> {
        let (done, wait) = oneshot::channel();
        self.tx.send(Msg::Flush(done)).await.map_err(|_| SinkError::Closed)?;
        wait.await.map_err(|_| SinkError::Closed)
    }
}

/// Length of the head file's line (instance, seq and a SHA-256 hash fit).
const HEAD_LEN: usize = 127;

/// Events written in one transaction at most.
const BATCH: usize = 1024;

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Msg>, health: &Health) {
        while let Some(first) = rx.blocking_recv() {
            let (mut events, mut flushes, mut probe) = (Vec::new(), Vec::new(), false);
            let mut next = Some(first);
            while let Some(msg) = next {
                match msg {
                    Msg::Event(e, ack) => events.push((e, ack)),
                    Msg::Flush(done) => flushes.push(done),
                    Msg::Probe => probe = true,
                }
                next = if events.len() < BATCH { rx.try_recv().ok() } else { None };
            }
            if probe && !health.ok.load(Ordering::SeqCst) {
                match self.store.probe() {
                    Ok(()) => health.recover(),
                    Err(e) => health.fail(&e.to_string()),
                }
            }
            if !events.is_empty() {
                let (events, acks): (Vec<_>, Vec<_>) = events.into_iter().unzip();
                let result = self.write(&events);
                match &result {
                    Ok(()) => health.recover(),
                    Err(e) => health.fail(e),
                }
                for ack in acks.into_iter().flatten() {
                    let _ = ack.send(result.clone());
                }
            }
            for done in flushes {
                let _ = done.send(());
            }
        }
    }

    /// Overwrites the head file in place: one short line at offset 0, padded
    /// to a fixed length. Not write-and-rename: on ext4 a rename over a file
    /// forces its data to disk at once (auto_da_alloc), a disk write per
    /// batch on the request path.
    fn write_head(&mut self, instance: &str, seq: i64) {
        use std::os::unix::fs::FileExt;
        let line = format!("{instance} {seq} {}", self.prev);
        let padded = format!("{line:<HEAD_LEN$}\n");
        if self.head.is_none() {
            let opened = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(false)
                .open(&self.head_file);
            match opened {
                Ok(f) => self.head = Some(f),
                Err(e) => tracing::warn!("audit head file {}: {e}", self.head_file.display()),
            }
        }
        if let Some(f) = &self.head {
            if let Err(e) = f.write_all_at(padded.as_bytes(), 0) {
                tracing::warn!("audit head file {}: {e}", self.head_file.display());
            }
        }
    }

    /// Chains, stores and mirrors a batch; on failure nothing of it counts.
    fn write(&mut self, events: &[Box<Event>]) -> Result<(), String> {
        let instance = self.identity.instance.clone();
        let mut records = Vec::with_capacity(events.len());
        let (mut seq, mut prev) = (self.seq, self.prev.clone());
        for event in events {
            let body = serde_json::to_string(event).map_err(|e| format!("event does not serialize: {e}"))?;
            seq += 1;
            let record = Record::next(&instance, &self.host, seq, &prev, body)
                .map_err(|e| format!("event does not read back: {e}"))?;
            prev = record.hash.clone();
            records.push(record);
        }
        let every = self.checkpoint_every as i64;
        let checkpoint = (seq / every > self.seq / every).then(|| {
            let (key_id, signature) = self.identity.sign(&instance, seq, &prev);
            Checkpoint {
                instance: instance.clone(),
                seq,
                hash: prev.clone(),
                time: super::now(),
                key_id,
                signature,
            }
        });
        self.store
            .append(&mut records, checkpoint.as_ref())
            .map_err(|e| e.to_string())?;
        self.seq = seq;
        self.prev = prev;
        self.write_head(&instance, seq);
        if let Some(mirror) = self.mirror.as_mut() {
            let mut lines = Vec::new();
            for r in &records {
                lines.extend_from_slice(r.body.as_bytes());
                lines.push(b'\n');
            }
            if let Err(e) = mirror.write_all(&lines) {
                tracing::warn!("event mirror file: {e}");
            }
        }
        if checkpoint.is_some() && (self.max_age.is_some() || self.max_records.is_some()) {
            let cutoff = self
                .max_age
                .map(|age| humantime::format_rfc3339_millis(std::time::SystemTime::now() - age).to_string());
            match self.store.prune(&instance, cutoff.as_deref(), self.max_records) {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "audit retention removed old records"),
                Err(e) => tracing::warn!("audit retention: {e}"),
            }
        }
        Ok(())
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
