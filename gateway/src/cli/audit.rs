//! `interlock audit`: verify, search, tail, export and show the audit
//! trail, read straight from the store (the daemon need not run).
use std::io::Write;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::Value;

use super::CliError;
use crate::{
    audit::{
        record::Record,
        store::{open_reader, Filter, Reader},
        verify,
    },
    config::Config,
};

/// `interlock audit ...`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chains and signed checkpoints; names the first bad record.
    Verify {
        /// Trusted public key files, one per gateway writing to the store
        /// (default: this gateway's `<state_dir>/audit-signing.pub`).
        #[arg(long)]
        key: Vec<std::path::PathBuf>,
    },
    /// Find events.
    Search {
        #[command(flatten)]
        filter: FilterArgs,
        /// At most this many (oldest first).
        #[arg(long, default_value_t = 1000)]
        limit: i64,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the latest events and, with -f, follow new ones.
    Tail {
        #[command(flatten)]
        filter: FilterArgs,
        /// Keep printing new events.
        #[arg(short = 'f', long)]
        follow: bool,
        /// How many recent events to start with.
        #[arg(short = 'n', long, default_value_t = 10)]
        lines: i64,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Write events for other tools.
    Export {
        #[command(flatten)]
        filter: FilterArgs,
        /// jsonl, or cef (ArcSight Common Event Format, for SIEMs).
        #[arg(long, value_enum, default_value_t = Format::Jsonl)]
        format: Format,
    },
    /// One event, whole, with its place in the chain.
    Show {
        /// Event id.
        id: i64,
    },
}

/// Export formats.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    /// One JSON object per line.
    Jsonl,
    /// Common Event Format lines.
    Cef,
}

/// Search filters.
#[derive(Debug, Clone, Default, Args)]
pub struct FilterArgs {
    /// Event kind (connection, http_exchange, sql_statement, grant, ...).
    #[arg(long)]
    kind: Option<String>,
    /// Agent name.
    #[arg(long)]
    agent: Option<String>,
    /// Caller pid.
    #[arg(long)]
    pid: Option<i64>,
    /// Caller executable path.
    #[arg(long)]
    exe: Option<String>,
    /// Target name.
    #[arg(long)]
    target: Option<String>,
    /// Decision: allow, deny or review.
    #[arg(long)]
    decision: Option<String>,
    /// A deciding policy id.
    #[arg(long)]
    policy: Option<String>,
    /// From this time (RFC 3339, or a duration ago such as 1h).
    #[arg(long)]
    since: Option<String>,
    /// Before this time (RFC 3339, or a duration ago).
    #[arg(long)]
    until: Option<String>,
    /// Text anywhere in the event.
    #[arg(long)]
    text: Option<String>,
}

/// `2026-01-01T00:00:00Z` stays; `1h` means an hour ago.
fn when(text: &str) -> Result<String, CliError> {
    if let Ok(t) = humantime::parse_rfc3339_weak(text) {
        return Ok(humantime::format_rfc3339_millis(t).to_string());
    }
    let ago = humantime::parse_duration(text)
        .map_err(|_| CliError::Other(format!("`{text}` is neither an RFC 3339 time nor a duration")))?;
    Ok(humantime::format_rfc3339_millis(std::time::SystemTime::now() - ago).to_string())
}

impl FilterArgs {
    fn filter(&self) -> Result<Filter, CliError> {
        Ok(Filter {
            kind: self.kind.clone(),
            agent: self.agent.clone(),
            pid: self.pid,
            exe: self.exe.clone(),
            target: self.target.clone(),
            decision: self.decision.clone(),
            policy: self.policy.clone(),
            since: self.since.as_deref().map(when).transpose()?,
            until: self.until.as_deref().map(when).transpose()?,
            text: self.text.clone(),
        })
    }
}

fn open(config: &Config) -> Result<Box<dyn Reader>, CliError> {
    open_reader(config).map_err(|e| CliError::Other(e.to_string()))
}

fn store_err(e: impl std::fmt::Display) -> CliError {
    CliError::Other(e.to_string())
}

/// Runs an audit command.
pub fn audit(config: &Config, command: &AuditCommand) -> Result<(), CliError> {
    let mut store = open(config)?;
    let mut out = std::io::stdout().lock();
    match command {
        AuditCommand::Verify { key } => {
            let paths = if key.is_empty() {
                vec![config.paths.state_dir.join("audit-signing.pub")]
            } else {
                key.clone()
            };
            let keys = paths
                .iter()
                .map(|p| crate::audit::keys::read_public(p).map_err(store_err))
                .collect::<Result<Vec<_>, _>>()?;
            let head = crate::audit::head::SignedHead::read(&config.paths.state_dir.join("audit-head"));
            let report = verify::verify(store.as_mut(), &keys, head.as_ref()).map_err(store_err)?;
            for (instance, records, checkpoints) in &report.chains {
                let _ = writeln!(
                    out,
                    "chain {instance}: {records} records, {checkpoints} signed checkpoints"
                );
            }
            match report.problem {
                Some(p) => Err(CliError::Other(format!("audit trail tampered: {p}"))),
                None => {
                    let _ = writeln!(out, "ok: every chain verifies");
                    Ok(())
                }
            }
        }
        AuditCommand::Search { filter, limit, json } => {
            let records = store.search(&filter.filter()?, 0, *limit).map_err(store_err)?;
            print(&mut out, &records, *json);
            Ok(())
        }
        AuditCommand::Tail {
            filter,
            follow,
            lines,
            json,
        } => {
            let f = filter.filter()?;
            let mut last = latest(store.as_mut(), &f, *lines)?;
            loop {
                let records = store.search(&f, last, 1000).map_err(store_err)?;
                if let Some(r) = records.last() {
                    last = r.id;
                }
                print(&mut out, &records, *json);
                let _ = out.flush();
                if !follow {
                    return Ok(());
                }
                if records.is_empty() {
                    std::thread::sleep(std::time::Duration::from_millis(300));
                }
            }
        }
        AuditCommand::Export { filter, format } => {
            let f = filter.filter()?;
            let mut after = 0;
            loop {
                let records = store.search(&f, after, 5000).map_err(store_err)?;
                let Some(r) = records.last() else { return Ok(()) };
                after = r.id;
                for r in &records {
                    let line = match format {
                        Format::Jsonl => json_line(r),
                        Format::Cef => cef(r),
                    };
                    let _ = writeln!(out, "{line}");
                }
            }
        }
        AuditCommand::Show { id } => {
            let Some(r) = store.get(*id).map_err(store_err)? else {
                return Err(CliError::Other(format!("no event {id}")));
            };
            let mut v = full(&r);
            if let Some(defect) = r.defect() {
                v["integrity"] = Value::String(defect);
            }
            // Bodies recorded with the exchange are in it; otherwise in its `http_body` event.
            if r.kind == "http_exchange" && v["bodies"].is_null() {
                if let Some(bodies) = bodies_of(store.as_mut(), &r, &v)? {
                    v["bodies"] = bodies;
                }
            }
            let sealer =
                crate::audit::seal::Sealer::load(&config.paths.state_dir.join(crate::audit::seal::Sealer::FILE)).ok();
            unseal(&mut v, sealer.as_ref());
            let _ = writeln!(out, "{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            Ok(())
        }
    }
}

/// The `http_body` event of an exchange (same connection and exchange number).
fn bodies_of(store: &mut dyn Reader, r: &Record, v: &Value) -> Result<Option<Value>, CliError> {
    let f = Filter {
        kind: Some("http_body".into()),
        since: Some(r.time.clone()),
        ..Filter::default()
    };
    let mut after = r.id;
    for _ in 0..20 {
        let page = store.search(&f, after, 500).map_err(store_err)?;
        let Some(last) = page.last() else { return Ok(None) };
        after = last.id;
        for b in &page {
            let body: Value = serde_json::from_str(&b.body).unwrap_or(Value::Null);
            if body["conn_id"] == v["conn_id"] && body["exchange"] == v["exchange"] {
                return Ok(Some(body));
            }
        }
    }
    Ok(None)
}

/// Opens every sealed original in an event, for whoever holds the key.
fn unseal(v: &mut Value, sealer: Option<&crate::audit::seal::Sealer>) {
    match v {
        Value::Object(map) => {
            if let Some(sealed) = map.get("sealed").and_then(Value::as_str).map(str::to_owned) {
                let original = match sealer.map(|s| s.open(&sealed)) {
                    Some(Some(plain)) => Value::String(String::from_utf8_lossy(&plain).into_owned()),
                    Some(None) => Value::String("(sealed; does not open with this key: altered?)".into()),
                    None => Value::String("(sealed; the sealing key is not readable here)".into()),
                };
                map.insert("original".into(), original);
            }
            for item in map.values_mut() {
                unseal(item, sealer);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| unseal(i, sealer)),
        _ => {}
    }
}

/// The id just before the last `n` matching events.
fn latest(store: &mut dyn Reader, f: &Filter, n: i64) -> Result<i64, CliError> {
    let mut ids = Vec::new();
    let mut after = 0;
    loop {
        let page = store.search(f, after, 10_000).map_err(store_err)?;
        let Some(r) = page.last() else { break };
        after = r.id;
        ids.extend(page.iter().map(|r| r.id));
    }
    let keep = ids.len().saturating_sub(n.max(0) as usize);
    Ok(if keep == 0 { 0 } else { ids[keep - 1] })
}

/// The event with its store fields.
fn full(r: &Record) -> Value {
    let mut v: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut v {
        map.insert("id".into(), r.id.into());
        map.insert("instance".into(), r.instance.clone().into());
        map.insert("seq".into(), r.seq.into());
        map.insert("host".into(), r.host.clone().into());
        map.insert("hash".into(), r.hash.clone().into());
        map.insert("prev_hash".into(), r.prev_hash.clone().into());
    }
    v
}

fn json_line(r: &Record) -> String {
    full(r).to_string()
}

/// A one-line summary of an event.
fn summary(r: &Record) -> String {
    let v: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
    match r.kind.as_str() {
        "http_exchange" => format!("{} {} -> {}", s("method"), s("path"), v["status"]),
        "sql_statement" => {
            let sql: String = s("sql").chars().take(60).collect();
            format!("{} [{}] {sql}", s("outcome"), s("kind"))
        }
        "connection" => format!(
            "{} {}",
            v["outcome"]["kind"].as_str().unwrap_or_default(),
            s("orig_dst")
        ),
        "pg_session" => format!("{} {}@{}", s("phase"), s("user"), s("database")),
        _ => String::new(),
    }
}

fn print(out: &mut impl Write, records: &[Record], json: bool) {
    if json {
        for r in records {
            let _ = writeln!(out, "{}", json_line(r));
        }
        return;
    }
    for r in records {
        let exe = r.exe.as_deref().and_then(|e| e.rsplit('/').next()).unwrap_or("-");
        let _ = writeln!(
            out,
            "{:>6}  {}  {:<14} {:<12} {:>7} {:<12} {:<16} {:<6} {}",
            r.id,
            r.time,
            r.kind,
            r.agent.as_deref().unwrap_or("-"),
            r.pid.map_or("-".to_owned(), |p| p.to_string()),
            exe,
            r.target.as_deref().unwrap_or("-"),
            r.decision.as_deref().unwrap_or("-"),
            summary(r)
        );
    }
}

/// A CEF line (`CEF:0|vendor|product|version|class|name|severity|extensions`).
fn cef(r: &Record) -> String {
    let head = |s: &str| s.replace('\\', "\\\\").replace('|', "\\|");
    let ext = |s: &str| {
        s.replace('\\', "\\\\")
            .replace('=', "\\=")
            .replace('\n', "\\n")
            .replace('\r', "\\r")
    };
    let severity = match r.decision.as_deref() {
        Some("deny") => 7,
        Some("review") => 5,
        _ => 3,
    };
    let mut fields = vec![format!("rt={}", ext(&r.time)), format!("externalId={}", r.id)];
    let mut push = |key: &str, value: Option<String>| {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            fields.push(format!("{key}={}", ext(&v)));
        }
    };
    push("suser", r.agent.clone());
    push("spid", r.pid.map(|p| p.to_string()));
    push("sproc", r.exe.clone());
    push("dhost", r.target.clone());
    push("act", r.decision.clone());
    push("cs1Label", Some("policies".into()));
    push("cs1", Some(r.policies.clone()));
    push("dvchost", Some(r.host.clone()));
    push("msg", Some(summary(r)));
    format!(
        "CEF:0|Interlock|gateway|{}|{}|{}|{severity}|{}",
        env!("CARGO_PKG_VERSION"),
        head(&r.kind),
        head(&r.kind),
        fields.join(" ")
    )
}
