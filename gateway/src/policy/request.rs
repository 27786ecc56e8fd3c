//! Turning a gateway request into a Cedar request: the agent (principal) with
//! its identity attributes, the action, the target (resource), and the
//! context (time and request details).
use std::{
    collections::{HashMap, HashSet},
    str::FromStr,
    time::{SystemTime, UNIX_EPOCH},
};

use cedar_policy::{Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, Request, RestrictedExpression};

#[cfg(test)]
use super::load::LoadedPolicies;
pub use crate::types::{ActionKind, SqlFacts, TargetRef};
use crate::{identity::Identity, types::AgentName};

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

/// The entity types the gateway sends, parsed once: parsing a uid from
/// text runs Cedar's full parser (a lexer with a fresh regex cache), which
/// was most of a decision's cost.
static TYPES: std::sync::LazyLock<Result<[EntityTypeName; 3], String>> = std::sync::LazyLock::new(|| {
    let parse = |t: &str| EntityTypeName::from_str(t).map_err(|e| e.to_string());
    Ok([
        parse("Interlock::Agent")?,
        parse("Interlock::Target")?,
        parse("Interlock::Action")?,
    ])
});

/// Which of the gateway's entity types.
#[derive(Clone, Copy)]
enum Kind {
    Agent = 0,
    Target = 1,
    Action = 2,
}

fn uid(kind: Kind, id: &str) -> Result<EntityUid, RequestError> {
    let types = TYPES.as_ref().map_err(|e| RequestError(e.clone()))?;
    Ok(EntityUid::from_type_name_and_id(
        types[kind as usize].clone(),
        EntityId::new(id),
    ))
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

/// The principal, resource and entities of a request: everything but the
/// action and context. Built once per distinct agent, process and target
/// (see [`SubjectCache`]).
pub struct Subject {
    principal: EntityUid,
    resource: EntityUid,
    /// The agent and target entities.
    pub entities: Entities,
    /// Decisions already made about this subject, by action, with the
    /// generation of the policy set that made them.
    pub(super) decisions: std::sync::Mutex<HashMap<ActionKind, (u64, super::Decision)>>,
}

/// The values a [`Subject`] is built from; equal facts build equal subjects,
/// so they key the cache.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Facts {
    agent: String,
    pid: u32,
    uid: u32,
    user: String,
    comm: String,
    exe: String,
    cmdline: String,
    cgroup: String,
    container: String,
    unit: String,
    target: TargetRef,
}

impl Facts {
    fn of(q: &Query<'_>) -> Self {
        let id = q.identity;
        let process = id.process.as_deref();
        Self {
            agent: q.agent.0.clone(),
            pid: id.pid,
            uid: id.uid,
            user: id.user.clone().unwrap_or_default(),
            comm: id.comm.clone(),
            exe: process
                .and_then(|p| p.exe.as_ref())
                .map(|e| e.display().to_string())
                .unwrap_or_default(),
            cmdline: process.map(|p| p.cmdline.join(" ")).unwrap_or_default(),
            cgroup: process.and_then(|p| p.cgroup.clone()).unwrap_or_default(),
            container: process
                .and_then(|p| p.container.as_ref())
                .map(|c| c.id.clone())
                .unwrap_or_default(),
            unit: process.and_then(|p| p.systemd_unit.clone()).unwrap_or_default(),
            target: q.target.clone(),
        }
    }
}

/// Subjects already built. Building one (entity construction, attribute
/// evaluation, Cedar's parse of the `ip` extension name) was most of a
/// decision's cost, and a connection asks about the same subject for every
/// request it makes. Bounded: cleared when full.
#[derive(Default)]
pub struct SubjectCache {
    map: std::sync::Mutex<HashMap<Facts, std::sync::Arc<Subject>>>,
}

/// Subjects kept at most.
const SUBJECTS: usize = 4096;

impl SubjectCache {
    /// The subject of `q`, built if it is not here yet.
    pub(super) fn get(&self, q: &Query<'_>) -> Result<std::sync::Arc<Subject>, RequestError> {
        let facts = Facts::of(q);
        let lock = || self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(hit) = lock().get(&facts) {
            return Ok(hit.clone());
        }
        let built = std::sync::Arc::new(subject(&facts, None)?);
        let mut map = lock();
        if map.len() >= SUBJECTS {
            map.clear();
        }
        map.insert(facts, built.clone());
        Ok(built)
    }
}

/// Builds the Cedar request and the entities it refers to, validated
/// against the schema: the data path builds them without a schema pass
/// (that was most of a decision's cost), and a unit test checks here that
/// what it sends conforms.
#[cfg(test)]
pub fn build_with(p: &LoadedPolicies, q: &Query<'_>, validate: bool) -> Result<(Request, Entities), RequestError> {
    let schema = validate.then_some(&p.schema);
    let subject = subject(&Facts::of(q), schema)?;
    let request = request(&subject, q, schema)?;
    Ok((request, subject.entities))
}

fn err(e: &dyn std::fmt::Display) -> RequestError {
    RequestError(e.to_string())
}

fn subject(f: &Facts, schema: Option<&cedar_policy::Schema>) -> Result<Subject, RequestError> {
    let principal = uid(Kind::Agent, &f.agent)?;
    let resource = uid(Kind::Target, &f.target.name)?;
    let agent_attrs: HashMap<String, RestrictedExpression> = [
        ("name", str_expr(f.agent.clone())),
        ("pid", RestrictedExpression::new_long(i64::from(f.pid))),
        ("uid", RestrictedExpression::new_long(i64::from(f.uid))),
        ("user", str_expr(f.user.clone())),
        ("comm", str_expr(f.comm.clone())),
        ("exe", str_expr(f.exe.clone())),
        ("cmdline", str_expr(f.cmdline.clone())),
        ("cgroup", str_expr(f.cgroup.clone())),
        ("container", str_expr(f.container.clone())),
        ("unit", str_expr(f.unit.clone())),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let t = &f.target;
    let target_attrs: HashMap<String, RestrictedExpression> = [
        ("name", str_expr(t.name.clone())),
        ("ip", RestrictedExpression::new_ip(t.ip.to_string())),
        ("port", RestrictedExpression::new_long(i64::from(t.port))),
        ("host", str_expr(t.host.clone())),
        ("protocol", str_expr(t.protocol.as_str())),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let agent = Entity::new(principal.clone(), agent_attrs, HashSet::new()).map_err(|e| err(&e))?;
    let target = Entity::new(resource.clone(), target_attrs, HashSet::new()).map_err(|e| err(&e))?;
    let entities = Entities::from_entities([agent, target], schema).map_err(|e| err(&e))?;
    Ok(Subject {
        principal,
        resource,
        entities,
        decisions: std::sync::Mutex::default(),
    })
}

/// The request for `q` about `subject`: its action and context.
pub fn request(
    subject: &Subject,
    q: &Query<'_>,
    schema: Option<&cedar_policy::Schema>,
) -> Result<Request, RequestError> {
    let action = uid(Kind::Action, q.action.cedar_name())?;
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
        ActionKind::SqlStatement { facts, sql } => {
            let set = |v: &[String]| RestrictedExpression::new_set(v.iter().map(|t| str_expr(t.clone())));
            ctx.push(("kind".into(), str_expr(facts.kind.clone())));
            ctx.push(("tables_read".into(), set(&facts.tables_read)));
            ctx.push(("tables_written".into(), set(&facts.tables_written)));
            ctx.push(("has_where".into(), RestrictedExpression::new_bool(facts.has_where)));
            ctx.push(("statements".into(), RestrictedExpression::new_long(facts.statements)));
            ctx.push(("sql".into(), str_expr(sql.clone())));
        }
        ActionKind::DnsQuery { facts } => {
            ctx.push(("name".into(), str_expr(facts.name.clone())));
            ctx.push(("qtype".into(), str_expr(facts.qtype.clone())));
            ctx.push(("target".into(), str_expr(facts.target.clone())));
            ctx.push(("reachable".into(), RestrictedExpression::new_bool(facts.reachable)));
            ctx.push(("listed".into(), RestrictedExpression::new_bool(facts.listed)));
            ctx.push(("guard".into(), str_expr(facts.guard.clone())));
        }
    }
    let context = Context::from_pairs(ctx).map_err(|e| err(&e))?;
    Request::new(
        subject.principal.clone(),
        action,
        subject.resource.clone(),
        context,
        schema,
    )
    .map_err(|e| err(&e))
}
