//! Where records are kept. The writer needs a few operations (the chain's
//! head, appending a batch with an optional checkpoint, pruning, a health
//! probe); people need searches and whole chains. SQLite is the embedded
//! default; PostgreSQL serves a fleet.
use super::record::Record;

mod postgres;
mod sqlite;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// A store failure (gateway side: the audit store).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store refused an operation.
    #[error("audit store {path}: {message}")]
    Failed {
        /// The file or database.
        path: String,
        /// What failed.
        message: String,
    },
}

/// A signed checkpoint of a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The chain.
    pub instance: String,
    /// The record it vouches for.
    pub seq: i64,
    /// That record's hash.
    pub hash: String,
    /// When it was made.
    pub time: String,
    /// The signing key's id.
    pub key_id: String,
    /// Ed25519 signature, hex.
    pub signature: String,
}

/// What a search selects; every field given must match.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Event kind.
    pub kind: Option<String>,
    /// Agent name.
    pub agent: Option<String>,
    /// Caller pid.
    pub pid: Option<i64>,
    /// Caller executable.
    pub exe: Option<String>,
    /// Target name.
    pub target: Option<String>,
    /// Decision outcome.
    pub decision: Option<String>,
    /// A deciding policy id.
    pub policy: Option<String>,
    /// At or after this time (RFC 3339).
    pub since: Option<String>,
    /// Before this time (RFC 3339).
    pub until: Option<String>,
    /// Text anywhere in the event.
    pub text: Option<String>,
}

/// The operations the writer needs.
pub trait Store: Send {
    /// The last (seq, hash) of a chain, if it has records.
    fn head(&mut self, instance: &str) -> Result<Option<(i64, String)>, StoreError>;
    /// The hash of a chain's record at `seq`, if the store has it.
    fn hash_at(&mut self, instance: &str, seq: i64) -> Result<Option<String>, StoreError>;
    /// Stores a batch (and a checkpoint) atomically; sets the records' ids.
    fn append(&mut self, records: &mut [Record], checkpoint: Option<&Checkpoint>) -> Result<(), StoreError>;
    /// Removes records older than `cutoff` or beyond `max_records`, only up
    /// to a signed checkpoint (so what remains still verifies). Returns how
    /// many were removed.
    fn prune(&mut self, instance: &str, cutoff: Option<&str>, max_records: Option<u64>) -> Result<u64, StoreError>;
    /// Checks the store accepts writes again.
    fn probe(&mut self) -> Result<(), StoreError>;
}

/// The operations people need.
pub trait Reader {
    /// Records matching `filter` with ids above `after`, oldest first, at most `limit`.
    fn search(&mut self, filter: &Filter, after: i64, limit: i64) -> Result<Vec<Record>, StoreError>;
    /// One record.
    fn get(&mut self, id: i64) -> Result<Option<Record>, StoreError>;
    /// The chains in the store.
    fn instances(&mut self) -> Result<Vec<String>, StoreError>;
    /// A chain's records in `seq` order, a page at a time (seq above `after`).
    fn chain(&mut self, instance: &str, after: i64, limit: i64) -> Result<Vec<Record>, StoreError>;
    /// A chain's checkpoints.
    fn checkpoints(&mut self, instance: &str) -> Result<Vec<Checkpoint>, StoreError>;
    /// The last seq removed by retention (0 when none).
    fn pruned_to(&mut self, instance: &str) -> Result<i64, StoreError>;
}

/// Opens the configured store for reading (`interlock audit ...`).
pub fn open_reader(config: &crate::config::Config) -> Result<Box<dyn Reader>, StoreError> {
    match (&config.audit.backend, &config.audit.postgres) {
        (crate::config::AuditBackend::Postgres, Some(spec)) => {
            Ok(Box::new(PgStore::connect(spec, config.intercept.bypass_mark)?))
        }
        _ => {
            let path = config.audit_db();
            if !path.exists() {
                return Err(StoreError::Failed {
                    path: path.display().to_string(),
                    message: "no audit store here (has the gateway run with this config?)".into(),
                });
            }
            Ok(Box::new(SqliteStore::open_read_only(&path)?))
        }
    }
}

/// Opens the configured store for writing.
pub fn open_writer(config: &crate::config::Config) -> Result<Box<dyn Store>, StoreError> {
    match (&config.audit.backend, &config.audit.postgres) {
        (crate::config::AuditBackend::Postgres, Some(spec)) => {
            Ok(Box::new(PgStore::connect(spec, config.intercept.bypass_mark)?))
        }
        (crate::config::AuditBackend::Postgres, None) => Err(StoreError::Failed {
            path: "audit.postgres".into(),
            message: "backend = \"postgres\" needs [audit.postgres]".into(),
        }),
        _ => Ok(Box::new(SqliteStore::open(&config.audit_db())?)),
    }
}
