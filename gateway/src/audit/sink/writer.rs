//! The store writer: one thread takes records already chained and in the
//! journal, copies them to the JSON-lines mirror (one write per batch, off
//! the agents' path) and puts them into the store in batches, signing a
//! checkpoint every `checkpoint_every` records, at least every
//! `checkpoint_interval` while records are added (a quiet writer signs
//! what it has once the interval is up), and when the gateway stops, and
//! applying retention. After every batch the head file is rewritten, signed.
//! A batch the
//! store refuses stays pending and is retried (by the prober, or with the
//! next batch): records acknowledged to agents are never dropped here.
use std::{
    path::PathBuf,
    sync::{mpsc, Weak},
    time::Duration,
};

use tokio::sync::oneshot;

use super::{mirror::Mirror, Shared};
use crate::audit::{
    keys::Identity,
    record::Record,
    store::{Checkpoint, Store},
};

/// What the writer is told.
pub(super) enum Msg {
    /// A record to store (in the journal, or buffered for it: see `flush_buffers`).
    Record(Box<Record>),
    /// Answer once everything sent before is stored (or failed).
    Flush(oneshot::Sender<()>),
    /// Try the failing store again.
    Probe,
    /// Sign what is stored (a checkpoint now, if any record is not covered
    /// yet), then answer: the gateway is stopping.
    Seal(oneshot::Sender<()>),
}

/// Records written in one transaction at most.
const BATCH: usize = 1024;

/// How long the writer lets records gather before a transaction. Nothing
/// waits for the store (records are acknowledged once in the journal), and
/// each commit rewrites the touched pages of the table and its indexes in
/// the WAL whether it holds one record or hundreds: gathering turns ~6 page
/// writes per record into ~6 per batch. Sleeping (rather than waiting on the
/// channel) also spares recorders a thread wake-up per record.
const GATHER: Duration = Duration::from_millis(20);

/// Mirror lines are written in pieces of about this size (a batch of
/// records with large bodies would otherwise be copied whole first).
const MIRROR_WRITE: usize = 256 << 10;

/// Length of the head file's line (instance, seq, a SHA-256 hash, a key id
/// and an Ed25519 signature fit).
const HEAD_LEN: usize = 300;

/// Everything the writer needs.
pub(super) struct Writer {
    pub(super) store: Box<dyn Store>,
    pub(super) identity: Identity,
    pub(super) head_file: PathBuf,
    pub(super) head: Option<std::fs::File>,
    pub(super) checkpoint_every: u64,
    /// A checkpoint at least this often while records are added.
    pub(super) checkpoint_interval: Duration,
    /// When the last checkpoint was signed.
    pub(super) last_checkpoint: std::time::Instant,
    /// The seq the last checkpoint (or the start) covers.
    pub(super) checkpointed: i64,
    pub(super) max_age: Option<Duration>,
    pub(super) max_records: Option<u64>,
    /// Last record in the store.
    pub(super) seq: i64,
    pub(super) prev: String,
    /// The JSON-lines copy of the trail.
    pub(super) mirror: Mirror,
    /// Its lines for the batch at hand.
    pub(super) mirror_buf: Vec<u8>,
}

impl Writer {
    /// Runs until every recorder is gone (the channel's sender lives with them).
    pub(super) fn run(mut self, rx: mpsc::Receiver<Msg>, shared: &Weak<Shared>) {
        let mut pending: Vec<Record> = Vec::new();
        loop {
            let first = if pending.is_empty() && self.seq > self.checkpointed {
                // Records no checkpoint covers yet: sign them once the interval is up.
                let due = self.checkpoint_interval.saturating_sub(self.last_checkpoint.elapsed());
                match rx.recv_timeout(due) {
                    Ok(m) => Some(m),
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        if let Err(e) = self.seal() {
                            tracing::warn!("audit checkpoint: {e}");
                        }
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => None,
                }
            } else if pending.is_empty() {
                rx.recv().ok()
            } else {
                // Failing: retry the pending batch now and then even if nothing arrives.
                match rx.recv_timeout(Duration::from_millis(500)) {
                    Ok(m) => Some(m),
                    Err(mpsc::RecvTimeoutError::Timeout) => Some(Msg::Probe),
                    Err(mpsc::RecvTimeoutError::Disconnected) => None,
                }
            };
            let Some(first) = first else { break };
            let Some(shared) = shared.upgrade() else { break };
            let gather = matches!(first, Msg::Record(_)) && pending.is_empty();
            let (mut flushes, mut probe, mut seals) = (Vec::new(), false, Vec::new());
            let mut mirrored = pending.len();
            let mut next = Some(first);
            let mut gathered = false;
            loop {
                while let Some(msg) = next {
                    match msg {
                        Msg::Record(r) => pending.push(*r),
                        Msg::Flush(done) => flushes.push(done),
                        Msg::Probe => probe = true,
                        Msg::Seal(done) => seals.push(done),
                    }
                    next = if pending.len() < BATCH {
                        rx.try_recv().ok()
                    } else {
                        None
                    };
                }
                // Lines of submitted events may still be buffered: the journal
                // has every record before the store or the mirror does.
                shared.flush_buffers();
                self.mirror(&pending[mirrored..]);
                mirrored = pending.len();
                // A full batch waiting has nothing to gather for: sleeping
                // then anyway capped the store at BATCH records per GATHER
                // plus a commit, below what two events per request need at
                // 19k req/s, and the backlog held recorders back (-30%).
                if !gather || gathered || pending.len() >= BATCH {
                    break;
                }
                // The mirror got the first records at once (a `tail -f`
                // sees an event as it is acknowledged); the store waits for more.
                gathered = true;
                std::thread::sleep(GATHER);
                next = rx.try_recv().ok();
            }
            let health = &shared.health;
            if probe && !health.ok() {
                match self.store.probe() {
                    // With nothing pending the store is all that was in doubt
                    // (a recorder whose journal write failed will say so again).
                    Ok(()) if pending.is_empty() => health.recover(),
                    Ok(()) => {}
                    Err(e) => health.fail(&e.to_string()),
                }
            }
            if !pending.is_empty() && (health.ok() || probe) {
                match self.commit(&mut pending) {
                    Ok(()) => {
                        shared.permits.add_permits(pending.len());
                        pending.clear();
                        health.recover();
                        shared.maintain_journal(self.seq);
                    }
                    Err(e) => health.fail(&e),
                }
            }
            for done in flushes {
                let _ = done.send(());
            }
            if !seals.is_empty() && pending.is_empty() {
                if let Err(e) = self.seal() {
                    tracing::warn!("audit checkpoint at stop: {e}");
                }
            }
            for done in seals {
                let _ = done.send(());
            }
        }
    }

    /// A signed checkpoint for the newest stored record, if no checkpoint
    /// covers it yet.
    pub(super) fn seal(&mut self) -> Result<(), String> {
        if self.seq <= self.checkpointed {
            return Ok(());
        }
        let checkpoint = self.checkpoint(&self.identity.instance.clone(), self.seq, &self.prev.clone());
        self.store
            .append(&mut [], Some(&checkpoint))
            .map_err(|e| e.to_string())?;
        self.checkpointed = self.seq;
        self.last_checkpoint = std::time::Instant::now();
        Ok(())
    }

    fn checkpoint(&self, instance: &str, seq: i64, hash: &str) -> Checkpoint {
        let (key_id, signature) = self.identity.sign(instance, seq, hash);
        Checkpoint {
            instance: instance.to_owned(),
            seq,
            hash: hash.to_owned(),
            time: crate::audit::now(),
            key_id,
            signature,
        }
    }

    /// Copies records to the mirror, once each (records the store refused
    /// and retries are not copied again). A failing mirror is logged: the
    /// store and the journal are the record.
    pub(super) fn mirror(&mut self, records: &[Record]) {
        for (i, r) in records.iter().enumerate() {
            self.mirror_buf.extend_from_slice(r.body.as_bytes());
            self.mirror_buf.push(b'\n');
            if self.mirror_buf.len() >= MIRROR_WRITE || i + 1 == records.len() {
                if let Err(e) = self.mirror.write(&self.mirror_buf) {
                    tracing::warn!("event mirror file: {e}");
                }
                self.mirror_buf.clear();
            }
        }
    }

    /// Stores a batch (in chain order, continuing the store's head) with its
    /// checkpoint; on failure nothing of it counts.
    pub(super) fn commit(&mut self, records: &mut [Record]) -> Result<(), String> {
        let Some(last) = records.last() else { return Ok(()) };
        let (instance, seq, hash) = (last.instance.clone(), last.seq, last.hash.clone());
        let every = self.checkpoint_every as i64;
        let due = seq / every > self.seq / every || self.last_checkpoint.elapsed() >= self.checkpoint_interval;
        let checkpoint = due.then(|| self.checkpoint(&instance, seq, &hash));
        // The head first: the store is never ahead of it, so records found
        // after it at start were not written by this gateway.
        self.write_head(&instance, seq, &hash);
        self.store
            .append(records, checkpoint.as_ref())
            .map_err(|e| e.to_string())?;
        self.seq = seq;
        self.prev = hash;
        if checkpoint.is_some() {
            self.checkpointed = seq;
            self.last_checkpoint = std::time::Instant::now();
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

    /// Overwrites the head file in place with the signed head of the batch
    /// about to be stored: one short line at offset 0, padded
    /// to a fixed length. Not write-and-rename: on ext4 a rename over a file
    /// forces its data to disk at once (auto_da_alloc), a disk write per batch.
    fn write_head(&mut self, instance: &str, seq: i64, hash: &str) {
        use std::os::unix::fs::FileExt;
        let line = crate::audit::head::SignedHead::new(&self.identity, instance, seq, hash).line();
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
}
