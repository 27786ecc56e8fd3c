//! Turning a gateway request into a Cedar request: the agent (principal) with
//! its identity attributes, the action, the target (resource), and the
//! context (time and request details).
use std::{
    net::IpAddr,
    str::FromStr,
    time::{SystemTime, UNIX_EPOCH},
};

use cedar_policy::{Context, Entities, EntityUid, Request};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::load::LoadedPolicies;
use crate::{identity::Identity, types::AgentName};

/// The destination as policies see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetRef {
    /// Configured target name, or `ip:port` for an undeclared destination.
    pub name: String,
    /// Destination address.
    pub ip: IpAddr,
    /// Destination port.
    pub port: u16,
    /// Host name, when known (SNI or Host header); empty otherwise.
    pub host: String,
    /// Protocol, when known (`tcp` for raw connections).
    pub protocol: String,
}

/// What the agent is trying to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ActionKind {
    /// Open a connection.
    Connect,
    /// Send an HTTP request.
    HttpRequest {
        /// Method.
        method: String,
        /// Path (without the query).
        path: String,
    },
    /// Run a SQL statement.
    SqlStatement {
        /// select, insert, update, delete, ddl, other.
        kind: String,
        /// Tables read.
        tables_read: Vec<String>,
        /// Tables written.
        tables_written: Vec<String>,
        /// UPDATE/DELETE has a WHERE.
        has_where: bool,
        /// Statements in the string.
        statements: i64,
        /// The statement text.
        sql: String,
    },
}

impl ActionKind {
    /// The Cedar action id.
    pub fn cedar_name(&self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::HttpRequest { .. } => "http_request",
            Self::SqlStatement { .. } => "sql_statement",
        }
    }
}

/// One question for the policy engine.
pub struct Query<'a> {
    /// The agent's name.
    pub agent: &'a AgentName,
    /// The caller.
    pub identity: &'a Identity,
    /// The destination.
    pub target: &'a TargetRef,
    /// The action.
    pub action: &'a ActionKind,
    /// When.
    pub now: SystemTime,
}

/// Errors building a request: the gateway's own bug or a schema that does not
/// describe what the gateway sends. Decisions fail closed on them.
#[derive(Debug, thiserror::Error)]
#[error("building the policy request: {0}")]
pub struct RequestError(pub String);

fn uid(kind: &str, id: &str) -> Result<EntityUid, RequestError> {
    let text = format!("Interlock::{kind}::{}", serde_json::to_string(id).unwrap_or_default());
    EntityUid::from_str(&text).map_err(|e| RequestError(e.to_string()))
}

fn time_context(now: SystemTime) -> serde_json::Map<String, Value> {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let days = secs.div_euclid(86_400);
    let mut ctx = serde_json::Map::new();
    ctx.insert("time".into(), json!(secs));
    ctx.insert("hour".into(), json!(secs.rem_euclid(86_400) / 3600));
    // 1970-01-01 was a Thursday; 0 = Sunday.
    ctx.insert("weekday".into(), json!((days + 4).rem_euclid(7)));
    ctx
}

/// Builds the Cedar request and the entities it refers to.
pub fn build(p: &LoadedPolicies, q: &Query<'_>) -> Result<(Request, Entities), RequestError> {
    let principal = uid("Agent", &q.agent.0)?;
    let resource = uid("Target", &q.target.name)?;
    let action = uid("Action", q.action.cedar_name())?;
    let id = q.identity;
    let process = id.process.as_deref();
    let text = |v: Option<String>| v.unwrap_or_default();
    let entities = json!([
        {
            "uid": {"type": "Interlock::Agent", "id": q.agent.0},
            "attrs": {
                "name": q.agent.0,
                "pid": id.pid,
                "uid": id.uid,
                "user": text(id.user.clone()),
                "comm": id.comm,
                "exe": text(process.and_then(|p| p.exe.as_ref()).map(|e| e.display().to_string())),
                "cmdline": process.map(|p| p.cmdline.join(" ")).unwrap_or_default(),
                "cgroup": text(process.and_then(|p| p.cgroup.clone())),
                "container": text(process.and_then(|p| p.container.as_ref()).map(|c| c.id.clone())),
                "unit": text(process.and_then(|p| p.systemd_unit.clone())),
            },
            "parents": []
        },
        {
            "uid": {"type": "Interlock::Target", "id": q.target.name},
            "attrs": {
                "name": q.target.name,
                "ip": {"__extn": {"fn": "ip", "arg": q.target.ip.to_string()}},
                "port": q.target.port,
                "host": q.target.host,
                "protocol": q.target.protocol,
            },
            "parents": []
        }
    ]);
    let entities = Entities::from_json_value(entities, Some(&p.schema)).map_err(|e| RequestError(e.to_string()))?;
    let mut ctx = time_context(q.now);
    match q.action {
        ActionKind::Connect => {}
        ActionKind::HttpRequest { method, path } => {
            ctx.insert("method".into(), json!(method));
            ctx.insert("path".into(), json!(path));
        }
        ActionKind::SqlStatement {
            kind,
            tables_read,
            tables_written,
            has_where,
            statements,
            sql,
        } => {
            ctx.insert("kind".into(), json!(kind));
            ctx.insert("tables_read".into(), json!(tables_read));
            ctx.insert("tables_written".into(), json!(tables_written));
            ctx.insert("has_where".into(), json!(has_where));
            ctx.insert("statements".into(), json!(statements));
            ctx.insert("sql".into(), json!(sql));
        }
    }
    let context = Context::from_json_value(Value::Object(ctx), Some((&p.schema, &action)))
        .map_err(|e| RequestError(e.to_string()))?;
    let request =
        Request::new(principal, action, resource, context, Some(&p.schema)).map_err(|e| RequestError(e.to_string()))?;
    Ok((request, entities))
}
