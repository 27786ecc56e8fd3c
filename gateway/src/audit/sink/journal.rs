//! The audit journal: every record, chained and hashed, appended to a local
//! file with one write before the event is acknowledged. The store (SQLite
//! or PostgreSQL) is filled from it in the background, so an agent waits
//! for one append, not for a database commit; records the store has not
//! taken yet when the gateway dies are put in on the next start.
//!
//! Durability is the store's own with `synchronous = NORMAL`: the append is
//! in the operating system's cache when the event is acknowledged, so a
//! killed gateway loses nothing; a power cut can lose what was not yet
//! written back.
use std::{
    fs::{File, OpenOptions},
    io::{BufRead, Write},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::audit::record::Record;

/// Above this size the journal is rotated (once the store has everything
/// in the rotated file, it is removed).
const ROTATE_AT: u64 = 16 << 20;

/// The journal files of one gateway instance.
pub(super) struct Journal {
    path: PathBuf,
    file: File,
    size: u64,
    /// The newest sequence number in the rotated file, while it exists.
    rotated: Option<i64>,
}

fn open_append(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new().create(true).append(true).mode(0o600).open(path)
}

fn old(path: &Path) -> PathBuf {
    path.with_extension("old")
}

impl Journal {
    /// Opens (creating) the journal at `path`, empty: call after [`recover`].
    pub(super) fn open(path: &Path) -> std::io::Result<Self> {
        super::sweep_retired(path);
        let file = open_append(path)?;
        file.set_len(0)?;
        let _ = std::fs::remove_file(old(path));
        Ok(Self {
            path: path.to_owned(),
            file,
            size: 0,
            rotated: None,
        })
    }

    /// Appends one record as a line.
    #[cfg(test)]
    pub(super) fn append(&mut self, record: &Record) -> Result<(), String> {
        self.write(&line(record)?)
    }

    /// Appends whole lines. On failure the file is cut back to where it
    /// was, so no partial line stays behind.
    pub(super) fn write(&mut self, lines: &[u8]) -> Result<(), String> {
        match self.file.write_all(lines) {
            Ok(()) => {
                self.size += lines.len() as u64;
                Ok(())
            }
            Err(e) => {
                let _ = self.file.set_len(self.size);
                Err(format!("audit journal {}: {e}", self.path.display()))
            }
        }
    }

    /// After the store took everything up to `committed`: removes the
    /// rotated file if it holds nothing newer, and rotates a large journal
    /// (whose newest record is `newest`).
    pub(super) fn maintain(&mut self, committed: i64, newest: i64) {
        if self.rotated.is_some_and(|r| committed >= r) {
            // Off this thread: it holds the chain's lock (see `retire`).
            super::retire(&old(&self.path));
            self.rotated = None;
        }
        if self.size < ROTATE_AT || self.rotated.is_some() {
            return;
        }
        let renamed = std::fs::rename(&self.path, old(&self.path)).and_then(|()| open_append(&self.path));
        match renamed {
            Ok(file) => {
                self.file = file;
                self.size = 0;
                self.rotated = Some(newest);
            }
            Err(e) => tracing::warn!("audit journal {}: rotation: {e}", self.path.display()),
        }
    }
}

/// A journal line's fields but the event, which follows them as it is
/// (raw JSON, not re-escaped into a string: that second escape of every
/// event was ~4% of the gateway's CPU under HTTP load).
#[derive(Serialize)]
struct Head<'a> {
    id: i64,
    instance: &'a str,
    seq: i64,
    time: &'a str,
    host: &'a str,
    kind: &'a str,
    agent: Option<&'a str>,
    pid: Option<i64>,
    exe: Option<&'a str>,
    target: Option<&'a str>,
    decision: Option<&'a str>,
    policies: &'a str,
    prev_hash: &'a str,
    hash: &'a str,
}

/// A journal line as read back: the event raw. Lines written before the
/// event went in raw carry it as a JSON string; both read the same.
#[derive(Deserialize)]
struct Line {
    id: i64,
    instance: String,
    seq: i64,
    time: String,
    host: String,
    kind: String,
    agent: Option<String>,
    pid: Option<i64>,
    exe: Option<String>,
    target: Option<String>,
    decision: Option<String>,
    policies: String,
    body: Box<RawValue>,
    prev_hash: String,
    hash: String,
}

/// A record's journal line. Its event must be the JSON text the record was
/// chained with (as [`Record::next`] made it).
pub(crate) fn line(record: &Record) -> Result<Vec<u8>, String> {
    let head = Head {
        id: record.id,
        instance: &record.instance,
        seq: record.seq,
        time: &record.time,
        host: &record.host,
        kind: &record.kind,
        agent: record.agent.as_deref(),
        pid: record.pid,
        exe: record.exe.as_deref(),
        target: record.target.as_deref(),
        decision: record.decision.as_deref(),
        policies: &record.policies,
        prev_hash: &record.prev_hash,
        hash: &record.hash,
    };
    let mut line = Vec::with_capacity(record.body.len() + 384);
    serde_json::to_writer(&mut line, &head).map_err(|e| format!("journal record: {e}"))?;
    // `{...}` becomes `{...,"body":<event>}`.
    line.pop();
    line.extend_from_slice(b",\"body\":");
    line.extend_from_slice(record.body.as_bytes());
    line.extend_from_slice(b"}\n");
    Ok(line)
}

/// Reads one journal line back into its record.
pub(crate) fn parse(text: &str) -> Result<Record, serde_json::Error> {
    let l: Line = serde_json::from_str(text)?;
    let raw = l.body.get();
    let body = if raw.starts_with('"') {
        serde_json::from_str::<String>(raw)?
    } else {
        raw.to_owned()
    };
    Ok(Record {
        id: l.id,
        instance: l.instance,
        seq: l.seq,
        time: l.time,
        host: l.host,
        kind: l.kind,
        agent: l.agent,
        pid: l.pid,
        exe: l.exe,
        target: l.target,
        decision: l.decision,
        policies: l.policies,
        body,
        prev_hash: l.prev_hash,
        hash: l.hash,
    })
}

/// The records in the journal at `path` (the rotated file first) that come
/// after `(seq, hash)` of the store's head, in chain order. Reading stops at
/// the first line that is not a valid next record (a torn last write was
/// never acknowledged).
pub(super) fn recover(path: &Path, instance: &str, head_seq: i64, head_hash: &str) -> Vec<Record> {
    let mut found: Vec<Record> = Vec::new();
    let (mut seq, mut hash) = (head_seq, head_hash.to_owned());
    for file in [old(path), path.to_owned()] {
        let Ok(f) = File::open(&file) else { continue };
        for line in std::io::BufReader::new(f).lines() {
            let Ok(line) = line else { return found };
            let Ok(record) = parse(&line) else {
                tracing::warn!(
                    "audit journal {}: unreadable line ignored (an unacknowledged write)",
                    file.display()
                );
                return found;
            };
            if record.instance != instance || record.seq <= seq {
                continue;
            }
            if record.seq != seq + 1 || record.prev_hash != hash || record.defect().is_some() {
                tracing::error!(
                    seq = record.seq,
                    "audit journal {}: record does not continue the chain; recovery stops here",
                    file.display()
                );
                return found;
            }
            seq = record.seq;
            hash = record.hash.clone();
            found.push(record);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::GENESIS;

    fn chain(n: i64) -> Vec<Record> {
        let mut prev = GENESIS.to_owned();
        (1..=n)
            .map(|seq| {
                let body = format!(r#"{{"event":"x","time":"t{seq}"}}"#);
                let r = Record::next("i1", "h", seq, &prev, body).unwrap();
                prev = r.hash.clone();
                r
            })
            .collect()
    }

    #[test]
    fn lines_carry_the_event_raw_and_read_back_exactly() {
        let body = r#"{"event":"http_body","time":"t1","agent":"a\"b","response_body":"é\n\u0001 {}"}"#;
        let record = Record::next("i1", "h", 1, GENESIS, body.to_owned()).unwrap();
        let text = String::from_utf8(line(&record).unwrap()).unwrap();
        assert!(text.ends_with(&format!(",\"body\":{body}}}\n")), "{text}");
        assert_eq!(parse(text.trim_end()).unwrap(), record);
        // A line from before the event went in raw (the event as a string).
        let old = serde_json::to_string(&record).unwrap();
        assert!(old.contains(r#""body":"{\"event\""#));
        assert_eq!(parse(&old).unwrap(), record);
    }

    #[test]
    fn recovery_takes_what_follows_the_store_and_stops_at_damage() {
        let dir = std::env::temp_dir().join(format!("journal-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit-journal");
        let records = chain(6);
        let mut j = Journal::open(&path).unwrap();
        for r in &records[..4] {
            j.append(r).unwrap();
        }
        // Rotation keeps both files readable, in order.
        j.size = ROTATE_AT;
        j.maintain(0, 4);
        assert!(old(&path).exists());
        for r in &records[4..] {
            j.append(r).unwrap();
        }
        // The store has the first two: the rest comes back, in order.
        let got = recover(&path, "i1", 2, &records[1].hash);
        assert_eq!(got.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![3, 4, 5, 6]);
        // The store took everything up to 4: the rotated file goes.
        j.maintain(4, 6);
        assert!(!old(&path).exists());
        // A torn last line (never acknowledged) ends recovery quietly.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"id":0,"instance":"i1","se"#).unwrap();
        let got = recover(&path, "i1", 4, &records[3].hash);
        assert_eq!(got.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![5, 6]);
        // A head that does not match the journal's chain recovers nothing.
        assert!(recover(&path, "i1", 4, "other-hash").is_empty());
        // Opening starts an empty journal.
        drop(Journal::open(&path).unwrap());
        assert!(recover(&path, "i1", 0, GENESIS).is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
