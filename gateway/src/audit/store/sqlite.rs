//! The embedded store: one SQLite file in WAL mode. A commit is in the WAL
//! (the operating system's cache) when it returns, so a killed gateway
//! loses nothing it acknowledged; `synchronous = NORMAL` leaves only a power
//! cut between commit and the next checkpoint of the WAL.
use std::path::Path;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::{Checkpoint, Filter, Reader, Store, StoreError};
use crate::audit::record::Record;

/// Schema, one migration per entry; `meta.schema` holds how many ran.
const MIGRATIONS: [&str; 1] = ["
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE events (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  instance TEXT NOT NULL, seq INTEGER NOT NULL, time TEXT NOT NULL, host TEXT NOT NULL,
  kind TEXT NOT NULL, agent TEXT, pid INTEGER, exe TEXT, target TEXT, decision TEXT,
  policies TEXT NOT NULL, body TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL,
  UNIQUE (instance, seq)
);
CREATE INDEX events_time ON events (time);
CREATE INDEX events_agent ON events (agent, time);
CREATE INDEX events_target ON events (target, time);
CREATE TABLE checkpoints (
  instance TEXT NOT NULL, seq INTEGER NOT NULL, hash TEXT NOT NULL, time TEXT NOT NULL,
  key_id TEXT NOT NULL, signature TEXT NOT NULL, PRIMARY KEY (instance, seq)
);
"];

/// An SQLite audit store.
pub struct SqliteStore {
    conn: Connection,
    path: String,
    /// Stops the checkpointer when the writer goes (dropping it is the signal).
    checkpointer: Option<std::sync::mpsc::Sender<()>>,
}

/// How often the checkpointer copies the WAL back into the database.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// Page size of a new store. Audit rows are 0.8–2.5 KB (an HTTP exchange,
/// its bodies): in 4 KiB pages one or two fit and the rest of the page is
/// wasted, so every insert split a page. 8 KiB pages took 2.2 → 1.5 KB of
/// file per event and ~25% less writer CPU (measured with the bench's
/// rows; 16 KiB was barely better and doubles what a small commit writes).
/// Only a new file takes it: an existing store keeps the size it has.
const PAGE_SIZE: u32 = 8192;

/// WAL size past which the checkpointer makes the writer wait for a full one.
const WAL_LIMIT: u64 = 64 << 20;

/// Copies the WAL back into the database from its own connection, off the
/// writer: a checkpoint (and the fsync it ends with) done by the writer
/// itself stalled every acknowledgement behind it. PASSIVE never blocks the
/// writer, and the WAL restarts from its beginning once one caught up; under
/// sustained load none does (the writer always has appended more), and the
/// WAL grew without bound (1.7 GB in a benchmark run). Past `WAL_LIMIT` a
/// TRUNCATE checkpoint waits for the writer's transaction, copies
/// everything and empties the WAL: only the store's writer waits, never an
/// agent (acknowledgements come from the journal).
fn spawn_checkpointer(path: &Path, wal_limit: u64) -> Option<std::sync::mpsc::Sender<()>> {
    let conn = Connection::open(path).ok()?;
    let _ = conn.busy_timeout(std::time::Duration::from_secs(5));
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let shown = path.display().to_string();
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let spawned = std::thread::Builder::new()
        .name("audit-checkpoint".into())
        .spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY) {
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!("audit store {shown}: checkpoint: {e}");
                }
                let wal_size = std::fs::metadata(&wal).map_or(0, |m| m.len());
                if wal_size > wal_limit {
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
                        tracing::warn!("audit store {shown}: full checkpoint: {e}");
                    }
                }
            }
        });
    spawned.ok().map(|_| stop)
}

const COLUMNS: &str =
    "id, instance, seq, time, host, kind, agent, pid, exe, target, decision, policies, body, prev_hash, hash";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Record> {
    Ok(Record {
        id: r.get(0)?,
        instance: r.get(1)?,
        seq: r.get(2)?,
        time: r.get(3)?,
        host: r.get(4)?,
        kind: r.get(5)?,
        agent: r.get(6)?,
        pid: r.get(7)?,
        exe: r.get(8)?,
        target: r.get(9)?,
        decision: r.get(10)?,
        policies: r.get(11)?,
        body: r.get(12)?,
        prev_hash: r.get(13)?,
        hash: r.get(14)?,
    })
}

impl SqliteStore {
    /// Opens (creating and migrating) the store for writing.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, WAL_LIMIT)
    }

    fn open_with(path: &Path, wal_limit: u64) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let conn = Connection::open(path).map_err(|e| fail(path, e))?;
        // The file holds who did what: root only.
        let _ = std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600));
        let mut store = Self {
            conn,
            path: path.display().to_string(),
            checkpointer: None,
        };
        store
            .conn
            // Checkpoints are the checkpointer's (below), not the writer's.
            .execute_batch(&format!(
                "PRAGMA page_size = {PAGE_SIZE}; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000; \
                 PRAGMA wal_autocheckpoint = 0;"
            ))
            .map_err(|e| store.err(e))?;
        store.migrate()?;
        store.checkpointer = spawn_checkpointer(path, wal_limit);
        if store.checkpointer.is_none() {
            // Without one, the writer checkpoints as SQLite does by default.
            let _ = store.conn.execute_batch("PRAGMA wal_autocheckpoint = 1000;");
        }
        Ok(store)
    }

    /// Opens an existing store for reading.
    pub fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(|e| fail(path, e))?;
        let _ = conn.busy_timeout(std::time::Duration::from_secs(5));
        Ok(Self {
            conn,
            path: path.display().to_string(),
            checkpointer: None,
        })
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Failed {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let has_meta: bool = self
            .conn
            .query_row(
                "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        let done: usize = if has_meta {
            self.conn
                .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
                    r.get::<_, String>(0)
                })
                .optional()
                .map_err(|e| self.err(e))?
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        } else {
            0
        };
        if done > MIGRATIONS.len() {
            return Err(self.err(format!(
                "schema version {done} is newer than this gateway knows ({})",
                MIGRATIONS.len()
            )));
        }
        for (n, sql) in MIGRATIONS.iter().enumerate().skip(done) {
            let tx = self.conn.transaction().map_err(|e| fail_str(&self.path, e))?;
            tx.execute_batch(sql).map_err(|e| fail_str(&self.path, e))?;
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('schema', ?1) ON CONFLICT (key) DO UPDATE SET value = ?1",
                [(n + 1).to_string()],
            )
            .map_err(|e| fail_str(&self.path, e))?;
            tx.commit().map_err(|e| fail_str(&self.path, e))?;
        }
        Ok(())
    }
}

fn fail(path: &Path, e: impl std::fmt::Display) -> StoreError {
    fail_str(&path.display().to_string(), e)
}

fn fail_str(path: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Failed {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

impl Store for SqliteStore {
    fn head(&mut self, instance: &str) -> Result<Option<(i64, String)>, StoreError> {
        self.conn
            .query_row(
                "SELECT seq, hash FROM events WHERE instance = ?1 ORDER BY seq DESC LIMIT 1",
                [instance],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    fn hash_at(&mut self, instance: &str, seq: i64) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row(
                "SELECT hash FROM events WHERE instance = ?1 AND seq = ?2",
                params![instance, seq],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    fn append(&mut self, records: &mut [Record], checkpoint: Option<&Checkpoint>) -> Result<(), StoreError> {
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(|e| fail_str(&path, e))?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO events (instance, seq, time, host, kind, agent, pid, exe, target, decision, policies, body, prev_hash, hash)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                )
                .map_err(|e| fail_str(&path, e))?;
            for r in records.iter_mut() {
                insert
                    .execute(params![
                        r.instance,
                        r.seq,
                        r.time,
                        r.host,
                        r.kind,
                        r.agent,
                        r.pid,
                        r.exe,
                        r.target,
                        r.decision,
                        r.policies,
                        r.body,
                        r.prev_hash,
                        r.hash
                    ])
                    .map_err(|e| fail_str(&path, e))?;
                r.id = tx.last_insert_rowid();
            }
            if let Some(c) = checkpoint {
                tx.execute(
                    "INSERT INTO checkpoints (instance, seq, hash, time, key_id, signature) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![c.instance, c.seq, c.hash, c.time, c.key_id, c.signature],
                )
                .map_err(|e| fail_str(&path, e))?;
            }
        }
        tx.commit().map_err(|e| fail_str(&path, e))
    }

    fn prune(&mut self, instance: &str, cutoff: Option<&str>, max_records: Option<u64>) -> Result<u64, StoreError> {
        let mut to: i64 = 0;
        if let Some(cutoff) = cutoff {
            let by_age: Option<i64> = self
                .conn
                .query_row(
                    "SELECT max(c.seq) FROM checkpoints c JOIN events e ON e.instance = c.instance AND e.seq = c.seq
                     WHERE c.instance = ?1 AND e.time < ?2",
                    params![instance, cutoff],
                    |r| r.get(0),
                )
                .map_err(|e| self.err(e))?;
            to = to.max(by_age.unwrap_or(0));
        }
        if let Some(max) = max_records {
            let last: Option<i64> = self
                .conn
                .query_row("SELECT max(seq) FROM events WHERE instance = ?1", [instance], |r| {
                    r.get(0)
                })
                .map_err(|e| self.err(e))?;
            let limit = last.unwrap_or(0) - max as i64;
            let by_count: Option<i64> = self
                .conn
                .query_row(
                    "SELECT max(seq) FROM checkpoints WHERE instance = ?1 AND seq <= ?2",
                    params![instance, limit],
                    |r| r.get(0),
                )
                .map_err(|e| self.err(e))?;
            to = to.max(by_count.unwrap_or(0));
        }
        if to <= self.pruned_to(instance)? {
            return Ok(0);
        }
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(|e| fail_str(&path, e))?;
        let removed = tx
            .execute(
                "DELETE FROM events WHERE instance = ?1 AND seq <= ?2",
                params![instance, to],
            )
            .map_err(|e| fail_str(&path, e))?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = ?2",
            params![format!("pruned:{instance}"), to.to_string()],
        )
        .map_err(|e| fail_str(&path, e))?;
        tx.commit().map_err(|e| fail_str(&path, e))?;
        Ok(removed as u64)
    }

    fn probe(&mut self) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO meta (key, value) VALUES ('probe', datetime('now')) ON CONFLICT (key) DO UPDATE SET value = datetime('now')",
                [],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }
}

impl Reader for SqliteStore {
    fn search(&mut self, f: &Filter, after: i64, limit: i64) -> Result<Vec<Record>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM events WHERE id > ?1
               AND (?2 IS NULL OR kind = ?2) AND (?3 IS NULL OR agent = ?3) AND (?4 IS NULL OR pid = ?4)
               AND (?5 IS NULL OR exe = ?5) AND (?6 IS NULL OR target = ?6) AND (?7 IS NULL OR decision = ?7)
               AND (?8 IS NULL OR ',' || policies || ',' LIKE '%,' || ?8 || ',%')
               AND (?9 IS NULL OR time >= ?9) AND (?10 IS NULL OR time < ?10)
               AND (?11 IS NULL OR instr(body, ?11) > 0)
             ORDER BY id LIMIT ?12"
        );
        let mut stmt = self.conn.prepare_cached(&sql).map_err(|e| fail_str(&self.path, e))?;
        let rows = stmt
            .query_map(
                params![
                    after, f.kind, f.agent, f.pid, f.exe, f.target, f.decision, f.policy, f.since, f.until, f.text,
                    limit
                ],
                row,
            )
            .map_err(|e| fail_str(&self.path, e))?;
        rows.collect::<Result<_, _>>().map_err(|e| fail_str(&self.path, e))
    }

    fn get(&mut self, id: i64) -> Result<Option<Record>, StoreError> {
        self.conn
            .query_row(&format!("SELECT {COLUMNS} FROM events WHERE id = ?1"), [id], row)
            .optional()
            .map_err(|e| self.err(e))
    }

    fn instances(&mut self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT DISTINCT instance FROM events UNION SELECT DISTINCT instance FROM checkpoints")
            .map_err(|e| fail_str(&self.path, e))?;
        let rows = stmt.query_map([], |r| r.get(0)).map_err(|e| fail_str(&self.path, e))?;
        rows.collect::<Result<_, _>>().map_err(|e| fail_str(&self.path, e))
    }

    fn chain(&mut self, instance: &str, after: i64, limit: i64) -> Result<Vec<Record>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM events WHERE instance = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
            ))
            .map_err(|e| fail_str(&self.path, e))?;
        let rows = stmt
            .query_map(params![instance, after, limit], row)
            .map_err(|e| fail_str(&self.path, e))?;
        rows.collect::<Result<_, _>>().map_err(|e| fail_str(&self.path, e))
    }

    fn checkpoints(&mut self, instance: &str) -> Result<Vec<Checkpoint>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT instance, seq, hash, time, key_id, signature FROM checkpoints WHERE instance = ?1 ORDER BY seq",
            )
            .map_err(|e| fail_str(&self.path, e))?;
        let rows = stmt
            .query_map([instance], |r| {
                Ok(Checkpoint {
                    instance: r.get(0)?,
                    seq: r.get(1)?,
                    hash: r.get(2)?,
                    time: r.get(3)?,
                    key_id: r.get(4)?,
                    signature: r.get(5)?,
                })
            })
            .map_err(|e| fail_str(&self.path, e))?;
        rows.collect::<Result<_, _>>().map_err(|e| fail_str(&self.path, e))
    }

    fn pruned_to(&mut self, instance: &str) -> Result<i64, StoreError> {
        let v: Option<String> = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = ?1",
                [format!("pruned:{instance}")],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wal_is_emptied_once_past_its_limit() {
        let dir = std::env::temp_dir().join(format!("interlock-wal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("audit.db");
        let mut store = SqliteStore::open_with(&path, 256 << 10).unwrap();
        let mut prev = crate::audit::record::GENESIS.to_owned();
        for seq in 1..=400 {
            let body =
                serde_json::json!({"event": "grant", "time": "2026-01-01T00:00:00.000Z", "pad": "x".repeat(2000)});
            let mut r = Record::next("i", "h", seq, &prev, body.to_string()).unwrap();
            prev = r.hash.clone();
            store.append(std::slice::from_mut(&mut r), None).unwrap();
        }
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let size = || std::fs::metadata(&wal).map_or(0, |m| m.len());
        assert!(size() > 256 << 10, "the WAL did not grow: {}", size());
        // The checkpointer runs every 500 ms: within two rounds the WAL is empty.
        let emptied = (0..20).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            size() == 0
        });
        assert!(emptied, "WAL still {} bytes", size());
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn page_size(path: &Path) -> u32 {
        let conn = Connection::open(path).unwrap();
        conn.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn a_new_store_has_large_pages_and_an_old_one_keeps_its_own() {
        let dir = std::env::temp_dir().join(format!("interlock-pages-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let new = dir.join("new.db");
        drop(SqliteStore::open(&new).unwrap());
        assert_eq!(page_size(&new), PAGE_SIZE);
        // A store made by an earlier gateway (4 KiB pages, WAL mode) opens,
        // keeps its pages and takes records.
        let old = dir.join("old.db");
        Connection::open(&old)
            .unwrap()
            .execute_batch("PRAGMA page_size = 4096; PRAGMA journal_mode = WAL;")
            .unwrap();
        let mut store = SqliteStore::open(&old).unwrap();
        let mut r = Record::next(
            "i",
            "h",
            1,
            crate::audit::record::GENESIS,
            r#"{"event":"grant"}"#.into(),
        )
        .unwrap();
        store.append(std::slice::from_mut(&mut r), None).unwrap();
        assert_eq!(store.head("i").unwrap(), Some((1, r.hash.clone())));
        drop(store);
        assert_eq!(page_size(&old), 4096);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
