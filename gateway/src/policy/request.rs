//! Turning a gateway request into a Cedar request: the agent (principal) with
//! its identity attributes, the action, the target (resource), and the
//! context (time and request details).
use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    str::FromStr,
    time::{SystemTime, UNIX_EPOCH},
};

use cedar_policy::{Context, Entities, Entity, EntityUid, Request, RestrictedExpression};
use serde::{Deserialize, Serialize};

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
        /// `model` from the JSON body, for LLM targets (empty otherwise).
        #[serde(default)]
        model: String,
        /// Body size in bytes when known (Content-Length or buffered), else -1.
        #[serde(default = "unknown_size")]
        body_size: i64,
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

fn unknown_size() -> i64 {
    -1
}

impl ActionKind {
    /// An HTTP request with no body facts (model unknown, size unknown).
    pub fn http(method: &str, path: &str) -> Self {
        Self::HttpRequest {
            method: method.to_owned(),
            path: path.to_owned(),
            model: String::new(),
            body_size: -1,
        }
    }

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

fn str_expr(s: impl Into<String>) -> RestrictedExpression {
    RestrictedExpression::new_string(s.into())
}

fn time_context(now: SystemTime) -> Vec<(String, RestrictedExpression)> {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let days = secs.div_euclid(86_400);
    vec![
        ("time".into(), RestrictedExpression::new_long(secs)),
        (
            "hour".into(),
            RestrictedExpression::new_long(secs.rem_euclid(86_400) / 3600),
        ),
        // 1970-01-01 was a Thursday; 0 = Sunday.
        (
            "weekday".into(),
            RestrictedExpression::new_long((days + 4).rem_euclid(7)),
        ),
    ]
}

/// Builds the Cedar request and the entities it refers to. The values are
/// built directly (no JSON, no per-request schema pass: that was most of a
/// decision's cost); a unit test checks them against the schema instead.
pub fn build(p: &LoadedPolicies, q: &Query<'_>) -> Result<(Request, Entities), RequestError> {
    build_with(p, q, false)
}

/// As [`build`], optionally validating against the schema (tests do).
pub fn build_with(p: &LoadedPolicies, q: &Query<'_>, validate: bool) -> Result<(Request, Entities), RequestError> {
    let schema = validate.then_some(&p.schema);
    let principal = uid("Agent", &q.agent.0)?;
    let resource = uid("Target", &q.target.name)?;
    let action = uid("Action", q.action.cedar_name())?;
    let id = q.identity;
    let process = id.process.as_deref();
    let opt = |v: Option<String>| str_expr(v.unwrap_or_default());
    let agent_attrs: HashMap<String, RestrictedExpression> = [
        ("name", str_expr(q.agent.0.clone())),
        ("pid", RestrictedExpression::new_long(i64::from(id.pid))),
        ("uid", RestrictedExpression::new_long(i64::from(id.uid))),
        ("user", opt(id.user.clone())),
        ("comm", str_expr(id.comm.clone())),
        (
            "exe",
            opt(process.and_then(|p| p.exe.as_ref()).map(|e| e.display().to_string())),
        ),
        (
            "cmdline",
            str_expr(process.map(|p| p.cmdline.join(" ")).unwrap_or_default()),
        ),
        ("cgroup", opt(process.and_then(|p| p.cgroup.clone()))),
        (
            "container",
            opt(process.and_then(|p| p.container.as_ref()).map(|c| c.id.clone())),
        ),
        ("unit", opt(process.and_then(|p| p.systemd_unit.clone()))),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let target_attrs: HashMap<String, RestrictedExpression> = [
        ("name", str_expr(q.target.name.clone())),
        ("ip", RestrictedExpression::new_ip(q.target.ip.to_string())),
        ("port", RestrictedExpression::new_long(i64::from(q.target.port))),
        ("host", str_expr(q.target.host.clone())),
        ("protocol", str_expr(q.target.protocol.clone())),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let err = |e: &dyn std::fmt::Display| RequestError(e.to_string());
    let agent = Entity::new(principal.clone(), agent_attrs, HashSet::new()).map_err(|e| err(&e))?;
    let target = Entity::new(resource.clone(), target_attrs, HashSet::new()).map_err(|e| err(&e))?;
    let entities = Entities::from_entities([agent, target], schema).map_err(|e| err(&e))?;
    let mut ctx = time_context(q.now);
    match q.action {
        ActionKind::Connect => {}
        ActionKind::HttpRequest {
            method,
            path,
            model,
            body_size,
        } => {
            ctx.push(("method".into(), str_expr(method.clone())));
            ctx.push(("path".into(), str_expr(path.clone())));
            ctx.push(("model".into(), str_expr(model.clone())));
            ctx.push(("body_size".into(), RestrictedExpression::new_long(*body_size)));
        }
        ActionKind::SqlStatement {
            kind,
            tables_read,
            tables_written,
            has_where,
            statements,
            sql,
        } => {
            let set = |v: &[String]| RestrictedExpression::new_set(v.iter().map(|t| str_expr(t.clone())));
            ctx.push(("kind".into(), str_expr(kind.clone())));
            ctx.push(("tables_read".into(), set(tables_read)));
            ctx.push(("tables_written".into(), set(tables_written)));
            ctx.push(("has_where".into(), RestrictedExpression::new_bool(*has_where)));
            ctx.push(("statements".into(), RestrictedExpression::new_long(*statements)));
            ctx.push(("sql".into(), str_expr(sql.clone())));
        }
    }
    let context = Context::from_pairs(ctx).map_err(|e| err(&e))?;
    let request = Request::new(principal, action, resource, context, schema).map_err(|e| err(&e))?;
    Ok((request, entities))
}
