//! `[audit]`: where the audit trail is stored, what happens when the store
//! cannot keep up, how long records are kept, and how much of each SQL text
//! is stored.
use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

/// The audit trail's settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// `sqlite` (embedded, the default) or `postgres` (one database for a fleet).
    pub backend: AuditBackend,
    /// SQLite file; defaults to `<state_dir>/audit.db`.
    pub path: Option<PathBuf>,
    /// PostgreSQL connection for `backend = "postgres"`.
    pub postgres: Option<AuditPostgres>,
    /// Events waiting for the store before recorders wait (backpressure).
    pub queue: usize,
    /// When the store fails: `refuse` new requests (the default), or `drop`
    /// events and serve on (logged loudly).
    pub on_failure: OnFailure,
    /// A signed checkpoint every this many records.
    pub checkpoint_every: u64,
    /// And at least this often while records are added (a quiet gateway
    /// signs what it has once this has passed), and when it stops: records
    /// no checkpoint covers are verified only by the signed head file on the
    /// gateway's own host.
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    /// Records older than this are removed (at a checkpoint); none by default.
    #[serde(with = "humantime_serde")]
    pub max_age: Option<Duration>,
    /// At most this many records are kept (pruned at checkpoints); none by default.
    pub max_records: Option<u64>,
    /// Bytes of SQL text and of each HTTP body kept per event; 0 keeps no
    /// HTTP bodies (and records no `http_body` events).
    pub body_cap: usize,
    /// A group (name or number) that may read the JSON-lines mirror
    /// (`events.jsonl`, mode 0640 for it). None by default: the mirror, like
    /// everything in the state directory, is root's alone (0600), since it
    /// holds every agent's command lines, targets and masked bodies.
    pub mirror_group: Option<String>,
}

impl AuditConfig {
    /// The mirror group's gid.
    pub fn mirror_gid(&self) -> Result<Option<u32>, String> {
        self.mirror_group.as_deref().map(super::review::group_gid).transpose()
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            backend: AuditBackend::Sqlite,
            path: None,
            postgres: None,
            queue: 8192,
            on_failure: OnFailure::Refuse,
            checkpoint_every: 1000,
            checkpoint_interval: Duration::from_secs(60),
            max_age: None,
            max_records: None,
            body_cap: 16 << 10,
            mirror_group: None,
        }
    }
}

/// Which store holds the trail.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditBackend {
    /// An SQLite file on this host (WAL mode).
    #[default]
    Sqlite,
    /// A PostgreSQL database several gateways write to.
    Postgres,
}

/// What happens to traffic while events cannot be stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Refuse new connections and requests until the store is back.
    #[default]
    Refuse,
    /// Drop events and keep serving.
    Drop,
}

/// A PostgreSQL audit store.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuditPostgres {
    /// Host (address or name).
    pub host: String,
    /// Port.
    #[serde(default = "default_pg_port")]
    pub port: u16,
    /// Database.
    pub dbname: String,
    /// Role.
    pub user: String,
    /// Root-only file with the role's password.
    pub password_file: Option<PathBuf>,
    /// TLS to the database: disable, prefer or require (verified when used).
    #[serde(default)]
    pub tls: super::UpstreamTls,
    /// Extra CA bundle for the database's certificate.
    pub ca_file: Option<PathBuf>,
}

fn default_pg_port() -> u16 {
    5432
}

impl AuditConfig {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), (String, String)> {
        self.mirror_gid().map_err(|m| ("audit.mirror_group".to_owned(), m))?;
        if self.queue == 0 {
            return Err(("audit.queue".into(), "must be at least 1".into()));
        }
        if self.checkpoint_interval.is_zero() {
            return Err(("audit.checkpoint_interval".into(), "must be more than 0s".into()));
        }
        if self.checkpoint_every == 0 {
            return Err(("audit.checkpoint_every".into(), "must be at least 1".into()));
        }
        if self.backend == AuditBackend::Postgres && self.postgres.is_none() {
            return Err((
                "audit.postgres".into(),
                "backend = \"postgres\" needs [audit.postgres] (host, dbname, user)".into(),
            ));
        }
        Ok(())
    }
}
