//! The store writer: one thread takes records already chained and in the
//! journal, copies them to the JSON-lines mirror (one write per batch, off
//! the agents' path) and puts them into the store in batches, signing a
//! checkpoint every `checkpoint_every` records and applying retention. A batch the
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

/// Length of the head file's line (instance, seq and a SHA-256 hash fit).
const HEAD_LEN: usize = 127;

/// Everything the writer needs.
pub(super) struct Writer {
    pub(super) store: Box<dyn Store>,
    pub(super) identity: Identity,
    pub(super) head_file: PathBuf,
    pub(super) head: Option<std::fs::File>,
    pub(super) checkpoint_every: u64,
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
            let first = if pending.is_empty() {
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
            let (mut flushes, mut probe) = (Vec::new(), false);
            let mut mirrored = pending.len();
            let mut next = Some(first);
            let mut gathered = false;
            loop {
                while let Some(msg) = next {
                    match msg {
                        Msg::Record(r) => pending.push(*r),
                        Msg::Flush(done) => flushes.push(done),
                        Msg::Probe => probe = true,
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
        let checkpoint = (seq / every > self.seq / every).then(|| {
            let (key_id, signature) = self.identity.sign(&instance, seq, &hash);
            Checkpoint {
                instance: instance.clone(),
                seq,
                hash: hash.clone(),
                time: crate::audit::now(),
                key_id,
                signature,
            }
        });
        self.store
            .append(records, checkpoint.as_ref())
            .map_err(|e| e.to_string())?;
        self.seq = seq;
        self.prev = hash;
        self.write_head(&instance, seq);
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

    /// Overwrites the head file in place: one short line at offset 0, padded
    /// to a fixed length. Not write-and-rename: on ext4 a rename over a file
    /// forces its data to disk at once (auto_da_alloc), a disk write per batch.
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
}
