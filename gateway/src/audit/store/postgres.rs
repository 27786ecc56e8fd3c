//! The fleet store: one PostgreSQL database that many gateways write to at
//! once. Each gateway appends to its own chain (its instance id), so
//! writers never contend for sequence numbers; ids come from one sequence.
//! Migrations run under an advisory lock, so gateways starting together
//! apply each once. The writer thread drives tokio-postgres on a runtime of
//! its own.
use tokio_postgres::{tls::MakeTlsConnect, types::ToSql, Client, NoTls};

use super::{Checkpoint, Filter, Reader, Store, StoreError};
use crate::{
    audit::record::Record,
    config::{AuditPostgres, UpstreamTls},
    types::OrigDst,
};

/// Schema, one migration per entry.
const MIGRATIONS: [&str; 1] = ["
CREATE TABLE interlock_audit_events (
  id BIGSERIAL PRIMARY KEY,
  instance TEXT NOT NULL, seq BIGINT NOT NULL, time TEXT NOT NULL, host TEXT NOT NULL,
  kind TEXT NOT NULL, agent TEXT, pid BIGINT, exe TEXT, target TEXT, decision TEXT,
  policies TEXT NOT NULL, body TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL,
  UNIQUE (instance, seq)
);
CREATE INDEX interlock_audit_events_time ON interlock_audit_events (time);
CREATE INDEX interlock_audit_events_agent ON interlock_audit_events (agent, time);
CREATE INDEX interlock_audit_events_target ON interlock_audit_events (target, time);
CREATE TABLE interlock_audit_checkpoints (
  instance TEXT NOT NULL, seq BIGINT NOT NULL, hash TEXT NOT NULL, time TEXT NOT NULL,
  key_id TEXT NOT NULL, signature TEXT NOT NULL, PRIMARY KEY (instance, seq)
);
"];

/// Advisory lock key for migrations ("interlck").
const MIGRATION_LOCK: i64 = 0x696e_7465_726c_636b;

const COLUMNS: &str =
    "id, instance, seq, time, host, kind, agent, pid, exe, target, decision, policies, body, prev_hash, hash";

/// A PostgreSQL audit store.
pub struct PgStore {
    rt: tokio::runtime::Runtime,
    client: Client,
    name: String,
    spec: AuditPostgres,
    mark: u32,
}

fn row(r: &tokio_postgres::Row) -> Record {
    Record {
        id: r.get(0),
        instance: r.get(1),
        seq: r.get(2),
        time: r.get(3),
        host: r.get(4),
        kind: r.get(5),
        agent: r.get(6),
        pid: r.get(7),
        exe: r.get(8),
        target: r.get(9),
        decision: r.get(10),
        policies: r.get(11),
        body: r.get(12),
        prev_hash: r.get(13),
        hash: r.get(14),
    }
}

impl PgStore {
    /// Connects (with the configured TLS) and migrates.
    pub fn connect(spec: &AuditPostgres, bypass_mark: u32) -> Result<Self, StoreError> {
        let name = format!("postgres://{}@{}:{}/{}", spec.user, spec.host, spec.port, spec.dbname);
        let fail = |m: String| StoreError::Failed {
            path: name.clone(),
            message: m,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| fail(e.to_string()))?;
        let mut config = tokio_postgres::Config::new();
        config
            .host(&spec.host)
            .port(spec.port)
            .dbname(&spec.dbname)
            .user(&spec.user)
            .application_name("interlock-audit")
            .connect_timeout(std::time::Duration::from_secs(10));
        if let Some(path) = &spec.password_file {
            let password = std::fs::read_to_string(path).map_err(|e| fail(format!("{}: {e}", path.display())))?;
            config.password(password.trim());
        }
        let tls = match spec.tls {
            UpstreamTls::Disable => {
                config.ssl_mode(tokio_postgres::config::SslMode::Disable);
                None
            }
            mode => {
                config.ssl_mode(if mode == UpstreamTls::Require {
                    tokio_postgres::config::SslMode::Require
                } else {
                    tokio_postgres::config::SslMode::Prefer
                });
                let base = crate::net::upstream_config(spec.ca_file.as_deref()).map_err(|e| fail(e.to_string()))?;
                let mut c = (*base).clone();
                c.alpn_protocols = vec![b"postgresql".to_vec()];
                Some(tokio_postgres_rustls::MakeRustlsConnect::new(c))
            }
        };
        let client = rt.block_on(async {
            let addr = tokio::net::lookup_host((spec.host.as_str(), spec.port))
                .await
                .map_err(|e| format!("cannot resolve {}: {e}", spec.host))?
                .next()
                .ok_or_else(|| format!("{} has no address", spec.host))?;
            // Marked like every gateway socket, so its own hooks never
            // redirect the audit store back into the gateway.
            let tcp = crate::net::connect_upstream(OrigDst(addr), bypass_mark, std::time::Duration::from_secs(10))
                .await
                .map_err(|e| e.to_string())?;
            let client = match tls {
                None => {
                    let (client, conn) = config.connect_raw(tcp, NoTls).await.map_err(|e| e.to_string())?;
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::warn!("audit store connection ended: {e}");
                        }
                    });
                    client
                }
                Some(mut make) => {
                    let connector = <tokio_postgres_rustls::MakeRustlsConnect as MakeTlsConnect<
                        tokio::net::TcpStream,
                    >>::make_tls_connect(&mut make, &spec.host)
                    .map_err(|e| e.to_string())?;
                    let (client, conn) = config.connect_raw(tcp, connector).await.map_err(|e| e.to_string())?;
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::warn!("audit store connection ended: {e}");
                        }
                    });
                    client
                }
            };
            Ok::<_, String>(client)
        });
        let client = client.map_err(fail)?;
        let mut store = Self {
            rt,
            client,
            name,
            spec: spec.clone(),
            mark: bypass_mark,
        };
        store.migrate()?;
        Ok(store)
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Failed {
            path: self.name.clone(),
            message: e.to_string(),
        }
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let result = self.rt.block_on(async {
            let tx = self.client.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS interlock_audit_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            )
            .await?;
            let done: i64 = tx
                .query_opt("SELECT value FROM interlock_audit_meta WHERE key = 'schema'", &[])
                .await?
                .and_then(|r| r.get::<_, String>(0).parse().ok())
                .unwrap_or(0);
            for (n, sql) in MIGRATIONS.iter().enumerate().skip(done.max(0) as usize) {
                tx.batch_execute(sql).await?;
                tx.execute(
                    "INSERT INTO interlock_audit_meta (key, value) VALUES ('schema', $1)
                     ON CONFLICT (key) DO UPDATE SET value = $1",
                    &[&(n + 1).to_string()],
                )
                .await?;
            }
            tx.commit().await?;
            Ok::<_, tokio_postgres::Error>(done)
        });
        let done = result.map_err(|e| self.err(e))?;
        if done > MIGRATIONS.len() as i64 {
            return Err(self.err(format!("schema version {done} is newer than this gateway knows")));
        }
        Ok(())
    }

    fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        self.rt
            .block_on(self.client.query(sql, params))
            .map_err(|e| self.err(e))
    }
}

impl Store for PgStore {
    fn head(&mut self, instance: &str) -> Result<Option<(i64, String)>, StoreError> {
        let rows = self.query(
            "SELECT seq, hash FROM interlock_audit_events WHERE instance = $1 ORDER BY seq DESC LIMIT 1",
            &[&instance],
        )?;
        Ok(rows.first().map(|r| (r.get(0), r.get(1))))
    }

    fn hash_at(&mut self, instance: &str, seq: i64) -> Result<Option<String>, StoreError> {
        let rows = self.query(
            "SELECT hash FROM interlock_audit_events WHERE instance = $1 AND seq = $2",
            &[&instance, &seq],
        )?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    fn append(&mut self, records: &mut [Record], checkpoint: Option<&Checkpoint>) -> Result<(), StoreError> {
        let result = self.rt.block_on(async {
            let tx = self.client.transaction().await?;
            let insert = tx
                .prepare(
                    "INSERT INTO interlock_audit_events
                     (instance, seq, time, host, kind, agent, pid, exe, target, decision, policies, body, prev_hash, hash)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING id",
                )
                .await?;
            let mut ids = Vec::with_capacity(records.len());
            for r in records.iter() {
                let row = tx
                    .query_one(
                        &insert,
                        &[
                            &r.instance, &r.seq, &r.time, &r.host, &r.kind, &r.agent, &r.pid, &r.exe, &r.target,
                            &r.decision, &r.policies, &r.body, &r.prev_hash, &r.hash,
                        ],
                    )
                    .await?;
                ids.push(row.get::<_, i64>(0));
            }
            if let Some(c) = checkpoint {
                tx.execute(
                    "INSERT INTO interlock_audit_checkpoints (instance, seq, hash, time, key_id, signature)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                    &[&c.instance, &c.seq, &c.hash, &c.time, &c.key_id, &c.signature],
                )
                .await?;
            }
            tx.commit().await?;
            Ok::<_, tokio_postgres::Error>(ids)
        });
        let ids = result.map_err(|e| self.err(e))?;
        for (r, id) in records.iter_mut().zip(ids) {
            r.id = id;
        }
        Ok(())
    }

    fn prune(&mut self, instance: &str, cutoff: Option<&str>, max_records: Option<u64>) -> Result<u64, StoreError> {
        let mut to: i64 = 0;
        if let Some(cutoff) = cutoff {
            let rows = self.query(
                "SELECT max(c.seq) FROM interlock_audit_checkpoints c
                 JOIN interlock_audit_events e ON e.instance = c.instance AND e.seq = c.seq
                 WHERE c.instance = $1 AND e.time < $2",
                &[&instance, &cutoff],
            )?;
            to = to.max(rows.first().and_then(|r| r.get::<_, Option<i64>>(0)).unwrap_or(0));
        }
        if let Some(max) = max_records {
            let rows = self.query(
                "SELECT max(c.seq) FROM interlock_audit_checkpoints c WHERE c.instance = $1
                 AND c.seq <= (SELECT coalesce(max(seq), 0) FROM interlock_audit_events WHERE instance = $1) - $2",
                &[&instance, &(max as i64)],
            )?;
            to = to.max(rows.first().and_then(|r| r.get::<_, Option<i64>>(0)).unwrap_or(0));
        }
        if to <= self.pruned_to(instance)? {
            return Ok(0);
        }
        let key = format!("pruned:{instance}");
        let result = self.rt.block_on(async {
            let tx = self.client.transaction().await?;
            let n = tx
                .execute(
                    "DELETE FROM interlock_audit_events WHERE instance = $1 AND seq <= $2",
                    &[&instance, &to],
                )
                .await?;
            tx.execute(
                "INSERT INTO interlock_audit_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = $2",
                &[&key, &to.to_string()],
            )
            .await?;
            tx.commit().await?;
            Ok::<_, tokio_postgres::Error>(n)
        });
        result.map_err(|e| self.err(e))
    }

    fn probe(&mut self) -> Result<(), StoreError> {
        if self.client.is_closed() {
            // The server went away and may be back: connect again.
            *self = Self::connect(&self.spec, self.mark)?;
        }
        self.query("SELECT 1", &[]).map(|_| ())
    }
}

impl Reader for PgStore {
    fn search(&mut self, f: &Filter, after: i64, limit: i64) -> Result<Vec<Record>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM interlock_audit_events WHERE id > $1
               AND ($2::text IS NULL OR kind = $2) AND ($3::text IS NULL OR agent = $3)
               AND ($4::bigint IS NULL OR pid = $4) AND ($5::text IS NULL OR exe = $5)
               AND ($6::text IS NULL OR target = $6) AND ($7::text IS NULL OR decision = $7)
               AND ($8::text IS NULL OR ',' || policies || ',' LIKE '%,' || $8 || ',%')
               AND ($9::text IS NULL OR time >= $9) AND ($10::text IS NULL OR time < $10)
               AND ($11::text IS NULL OR strpos(body, $11) > 0)
             ORDER BY id LIMIT $12"
        );
        let rows = self.query(
            &sql,
            &[
                &after,
                &f.kind,
                &f.agent,
                &f.pid,
                &f.exe,
                &f.target,
                &f.decision,
                &f.policy,
                &f.since,
                &f.until,
                &f.text,
                &limit,
            ],
        )?;
        Ok(rows.iter().map(row).collect())
    }

    fn get(&mut self, id: i64) -> Result<Option<Record>, StoreError> {
        let rows = self.query(
            &format!("SELECT {COLUMNS} FROM interlock_audit_events WHERE id = $1"),
            &[&id],
        )?;
        Ok(rows.first().map(row))
    }

    fn instances(&mut self) -> Result<Vec<String>, StoreError> {
        let rows = self.query(
            "SELECT DISTINCT instance FROM interlock_audit_events UNION SELECT DISTINCT instance FROM interlock_audit_checkpoints",
            &[],
        )?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn chain(&mut self, instance: &str, after: i64, limit: i64) -> Result<Vec<Record>, StoreError> {
        let rows = self.query(
            &format!(
                "SELECT {COLUMNS} FROM interlock_audit_events WHERE instance = $1 AND seq > $2 ORDER BY seq LIMIT $3"
            ),
            &[&instance, &after, &limit],
        )?;
        Ok(rows.iter().map(row).collect())
    }

    fn checkpoints(&mut self, instance: &str) -> Result<Vec<Checkpoint>, StoreError> {
        let rows = self.query(
            "SELECT instance, seq, hash, time, key_id, signature FROM interlock_audit_checkpoints
             WHERE instance = $1 ORDER BY seq",
            &[&instance],
        )?;
        Ok(rows
            .iter()
            .map(|r| Checkpoint {
                instance: r.get(0),
                seq: r.get(1),
                hash: r.get(2),
                time: r.get(3),
                key_id: r.get(4),
                signature: r.get(5),
            })
            .collect())
    }

    fn pruned_to(&mut self, instance: &str) -> Result<i64, StoreError> {
        let rows = self.query(
            "SELECT value FROM interlock_audit_meta WHERE key = $1",
            &[&format!("pruned:{instance}")],
        )?;
        Ok(rows
            .first()
            .and_then(|r| r.get::<_, String>(0).parse().ok())
            .unwrap_or(0))
    }
}
