//! The request filter of a PostgreSQL session (agent -> upstream): each
//! Query, Parse and FunctionCall is classified and judged by policy. A
//! denied one is not dropped, which would break the protocol's bookkeeping;
//! it is replaced by a statement the server rejects at parse time, so the
//! server itself produces the error, aborts a transaction block as any
//! error would, and skips to Sync. The response filter rewrites that error
//! into the policy's 42501. Everything else passes as it came.
use std::{collections::HashMap, sync::Arc, time::Instant};

use bytes::{BufMut, BytesMut};
use postgres_protocol::message::frontend;

use super::{
    encoding::{self, DecodeError},
    frontend::{self as parsed, Frontend, Named},
    sqlstate,
    wire::{self, ErrorFields, Frame, WireError},
    Expect, Run, Session, Statement,
};
use crate::{
    audit::{self, SqlProtocol},
    config::Unparsed,
    policy::{ActionKind, Decision, Ruling, SqlFacts},
    proxy::judge::{self, Protocol},
    types::Side,
};

/// Longest parameter value kept in an audit event.
const PARAM_CAP: usize = 1 << 10;

/// What the agent has prepared and bound, as the request side knows it,
/// by name (bytes in the client's encoding, compared as the server does).
#[derive(Default)]
pub struct Prepared {
    statements: HashMap<Vec<u8>, Arc<Statement>>,
    portals: HashMap<Vec<u8>, Portal>,
}

struct Portal {
    statement: Arc<Statement>,
    params: Vec<Option<String>>,
    /// The agent described the portal since its Bind (its shape is known).
    described: bool,
}

/// Whether the agent asked to end the session.
pub enum Step {
    /// Keep reading.
    More,
    /// Policy holds this statement for review: settle it, then hand the
    /// message back with the settled decision.
    Hold(Box<Held>),
    /// The agent sent Terminate (not forwarded: see `relay`).
    Terminate,
}

fn kind_facts(action: ActionKind) -> (String, Vec<String>, Vec<String>) {
    match action {
        ActionKind::SqlStatement { facts, .. } => (facts.kind, facts.tables_read, facts.tables_written),
        _ => (String::new(), Vec::new(), Vec::new()),
    }
}

fn cap(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_owned();
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &text[..end], text.len())
}

/// A SQL string as the decision path needs it: the action policies see,
/// and what else the statement does.
pub struct Classified {
    action: ActionKind,
    /// `COPY ... TO STDOUT`; `Some(true)` when binary.
    copy_out: Option<bool>,
    /// Why the parser could not read it, if it could not.
    parse_error: Option<crate::sql::SqlError>,
    /// It names a table with masked columns.
    touches_masked: bool,
}

/// A statement policy holds for review: settle it, then hand the message
/// back with the settled decision (it is not classified again).
pub struct Held {
    /// The statement.
    pub classified: Classified,
    /// The `review` decision.
    pub decision: Decision,
}

impl Held {
    /// The action people are asked about.
    pub fn action(&self) -> &ActionKind {
        &self.classified.action
    }
}

/// Classifies one SQL string (cached by its shape; see `sql`).
fn classify(s: &Session, sql: &str) -> Classified {
    let (action, extras, parse_error) = match crate::sql::classify_with_extras(sql) {
        Ok((action, extras)) => (action, extras, None),
        Err(e) => {
            let action = ActionKind::SqlStatement {
                facts: SqlFacts {
                    kind: "unparsed".into(),
                    tables_read: Vec::new(),
                    tables_written: Vec::new(),
                    has_where: false,
                    statements: 1,
                },
                sql: crate::sql::redact_passwords(sql).unwrap_or_else(|| sql.to_owned()),
            };
            (action, Default::default(), Some(e))
        }
    };
    let touches_masked = match &action {
        ActionKind::SqlStatement { facts, .. } => (facts.tables_read.iter())
            .chain(&facts.tables_written)
            .any(|t| s.masked.covers(t)),
        _ => false,
    };
    Classified {
        action,
        copy_out: extras.copy_out,
        parse_error,
        touches_masked,
    }
}

/// SQL on the decision path: unparsable text may be refused before policy,
/// the target's value detectors apply to every result, COPY out of what
/// cannot be masked is refused, and a refusal is SQLSTATE 42501.
struct Sql<'a> {
    s: &'a Session,
    c: &'a Classified,
}

impl Protocol for Sql<'_> {
    type Refusal = ErrorFields;

    fn before_policy(&self) -> Option<String> {
        let e = self.c.parse_error.as_ref()?;
        (self.s.pg.unparsed == Unparsed::Deny).then(|| format!("{e}; unparsable SQL is denied"))
    }

    fn own_masks(&self) -> &[String] {
        &self.s.pg.detectors
    }

    fn after_allow(&self, plan: Option<&crate::masking::MaskPlan>) -> Option<String> {
        // COPY TO STDOUT sends rows without a column description: masked
        // columns could not be found in them, and binary rows cannot be read.
        let detectors = plan.is_some_and(|p| p.any.is_some());
        match self.c.copy_out {
            Some(_) if self.c.touches_masked => {
                Some("COPY TO STDOUT from a table with masked columns; use SELECT".into())
            }
            Some(true) if detectors => Some("binary COPY TO STDOUT cannot be masked; use text format".into()),
            _ => None,
        }
    }

    fn refusal(&self, decision: &Decision) -> ErrorFields {
        let ids = if decision.policies.is_empty() {
            "no policy permits it".to_owned()
        } else {
            format!("policy {}", decision.policies.join(", "))
        };
        ErrorFields::error(
            sqlstate::INSUFFICIENT_PRIVILEGE,
            format!("interlock denied this statement: {} ({ids})", decision.reason),
        )
    }
}

/// Judges one SQL string on the shared decision path; `settled` is a held
/// statement people have decided. `Err`: policy holds it for review.
pub fn judge(s: &Session, sql: &str, settled: Option<(Held, Decision)>) -> Result<Statement, Box<Held>> {
    let (classified, decision) = match settled {
        Some((held, decision)) => (held.classified, decision),
        // Drivers and pools check a connection with `""` or `";"`: it runs
        // nothing (EmptyQueryResponse), so no policy is asked.
        None if crate::sql::is_empty(sql) => return Ok(empty_statement(s, sql)),
        None => {
            let classified = classify(s, sql);
            let decision = judge::ask(&s.ctx, &s.caller(), &classified.action, &Sql { s, c: &classified });
            if decision.outcome == Ruling::Review {
                return Err(Box::new(Held { classified, decision }));
            }
            (classified, decision)
        }
    };
    let protocol = Sql { s, c: &classified };
    let judged = judge::conclude(&s.ctx, decision, &protocol);
    let denial = (!judged.allowed()).then(|| protocol.refusal(&judged.decision));
    let detectors = judged.plan.and_then(|p| p.any.clone());
    let shown = crate::sql::redact_passwords(sql).map_or(std::borrow::Cow::Borrowed(sql), std::borrow::Cow::Owned);
    let audit_sql = match &detectors {
        Some(m) => String::from_utf8_lossy(&m.mask(shown.as_bytes()).0).into_owned(),
        None => shown.into_owned(),
    };
    let computed = classified.touches_masked;
    let (kind, tables_read, tables_written) = kind_facts(classified.action);
    Ok(Statement {
        sql: cap(&audit_sql, s.ctx.settings.body_cap),
        kind,
        tables_read,
        tables_written,
        decision: judged.decision,
        detectors,
        denial,
        computed,
        counted: false,
    })
}

/// The text of a Query or Parse in the session's client_encoding. While
/// an execution the server has not answered is in flight, it may change
/// that encoding (`SET client_encoding`, or any function calling
/// `set_config`), and the server would read this text in the new one:
/// then only text that reads the same in every encoding is taken (a
/// pipelined `SET client_encoding TO sjis` could otherwise make a
/// backslash the gateway saw vanish into a character, and end a string
/// literal the gateway thought went on).
fn text<'q>(
    s: &Session,
    sql: &'q [u8],
    pending: &std::sync::Mutex<std::collections::VecDeque<Expect>>,
) -> Result<std::borrow::Cow<'q, str>, DecodeError> {
    let in_flight = || {
        let pending = pending.lock().unwrap_or_else(|p| p.into_inner());
        pending
            .iter()
            .any(|e| matches!(e, Expect::Query(_) | Expect::Execute(_)))
    };
    if encoding::ambiguous(sql) && in_flight() {
        return Err(DecodeError::Changing);
    }
    s.encoding.get().decode(sql)
}

/// What a Query or Parse whose text the session's client_encoding cannot
/// give is recorded as: refused with the server's own code for bad bytes,
/// never guessed at.
fn unreadable(s: &Session, sql: &[u8], e: &DecodeError) -> Statement {
    let reason = format!("query text unreadable: {e}");
    Statement {
        sql: cap(
            &crate::sql::redact_passwords(&String::from_utf8_lossy(sql))
                .unwrap_or_else(|| String::from_utf8_lossy(sql).into_owned()),
            s.ctx.settings.body_cap,
        ),
        kind: "unreadable".into(),
        tables_read: Vec::new(),
        tables_written: Vec::new(),
        denial: Some(ErrorFields::error(
            sqlstate::of_decode(e),
            format!("interlock: {reason}"),
        )),
        decision: Decision::deny(Vec::new(), reason),
        detectors: None,
        computed: false,
        counted: false,
    }
}

/// What an empty query is recorded as.
fn empty_statement(s: &Session, sql: &str) -> Statement {
    Statement {
        sql: cap(sql, s.ctx.settings.body_cap),
        kind: "empty".into(),
        tables_read: Vec::new(),
        tables_written: Vec::new(),
        decision: Decision {
            outcome: Ruling::Allow,
            policies: Vec::new(),
            reason: "an empty query runs nothing".into(),
            mask: Vec::new(),
        },
        detectors: None,
        denial: None,
        computed: false,
        counted: false,
    }
}

/// A statement the server refuses at parse time (or a portal it does not
/// have), naming the session's nonce so its error is recognised.
fn substitute(s: &Session) -> String {
    format!("{} INTERLOCK DENIED", s.nonce)
}

/// Counts one execution (a simple Query or an Execute) against the agent's
/// request rate; past it, the refusal.
fn over_rate(s: &Session) -> Option<crate::limits::Refused> {
    s.ctx.limits.admit_request(&s.agent).err()
}

/// What an execution refused by the request rate is recorded as; `like` is
/// the prepared statement it would have run. Not classified: a flood
/// should cost the gateway as little as it can.
fn refused_statement(s: &Session, sql: &str, like: Option<&Statement>, refused: crate::limits::Refused) -> Statement {
    let message = format!("interlock refused this statement: {}; try again later", refused.reason);
    Statement {
        sql: cap(
            &crate::sql::redact_passwords(sql).unwrap_or_else(|| sql.to_owned()),
            s.ctx.settings.body_cap,
        ),
        kind: like.map_or_else(|| "unclassified".to_owned(), |st| st.kind.clone()),
        tables_read: like.map(|st| st.tables_read.clone()).unwrap_or_default(),
        tables_written: like.map(|st| st.tables_written.clone()).unwrap_or_default(),
        decision: Decision::deny(Vec::new(), refused.reason),
        detectors: None,
        denial: Some(ErrorFields::error(sqlstate::CONFIGURATION_LIMIT_EXCEEDED, message)),
        computed: false,
        counted: !refused.record,
    }
}

impl Prepared {
    /// Handles one agent message: records what it expects and appends what
    /// goes upstream.
    pub fn handle(
        &mut self,
        s: &Session,
        frame: &Frame,
        pending: &std::sync::Mutex<std::collections::VecDeque<Expect>>,
        out: &mut BytesMut,
        settled: Option<(Held, Decision)>,
    ) -> Result<Step, WireError> {
        let reviewed = settled.is_some();
        let mut settled = settled;
        let push = |e: Expect| pending.lock().unwrap_or_else(|p| p.into_inner()).push_back(e);
        let io = |e: std::io::Error| WireError::malformed(Side::Agent, e.to_string());
        match parsed::parse(frame)? {
            Frontend::Query { sql } => {
                // A settled review was counted when it first came.
                let limited = if reviewed { None } else { over_rate(s) };
                let statement = match (limited, text(s, sql, pending)) {
                    (Some(refused), text) => {
                        let text = text.unwrap_or_else(|_| String::from_utf8_lossy(sql));
                        refused_statement(s, &text, None, refused)
                    }
                    (None, Err(e)) => unreadable(s, sql, &e),
                    (None, Ok(text)) => match judge(s, &text, settled.take()) {
                        Err(held) => return Ok(Step::Hold(held)),
                        Ok(statement) => statement,
                    },
                };
                let statement = Arc::new(statement);
                let denied = statement.denial.is_some();
                push(Expect::Query(Box::new(Run::new(
                    statement,
                    SqlProtocol::Simple,
                    Vec::new(),
                ))));
                if denied {
                    frontend::query(&substitute(s), out).map_err(io)?;
                    return Ok(Step::More);
                }
            }
            Frontend::Parse { name, sql, .. } => {
                let judged = match text(s, sql, pending) {
                    Err(e) => unreadable(s, sql, &e),
                    Ok(text) => match judge(s, &text, settled.take()) {
                        Err(held) => return Ok(Step::Hold(held)),
                        Ok(statement) => statement,
                    },
                };
                let statement = Arc::new(judged);
                self.statements.insert(name.to_vec(), statement.clone());
                if statement.denial.is_some() {
                    push(Expect::Parse(Some(Box::new(Run::new(
                        statement,
                        SqlProtocol::Extended,
                        Vec::new(),
                    )))));
                    wire::message(out, b'P', |b| {
                        wire::put_cstr(b, name);
                        wire::put_cstr(b, substitute(s).as_bytes());
                        b.put_u16(0);
                    });
                    return Ok(Step::More);
                }
                push(Expect::Parse(None));
            }
            Frontend::Bind(bind) => {
                let statement = self.statements.get(bind.statement).cloned();
                let params = (bind.params.iter().enumerate())
                    .map(|(i, p)| p.map(|v| param_text(v, bind.binary(i), statement.as_deref())))
                    .collect();
                let statement = statement.unwrap_or_else(|| Arc::new(unknown_statement(bind.statement)));
                let portal = Portal {
                    statement,
                    params,
                    described: false,
                };
                self.portals.insert(bind.portal.to_vec(), portal);
                push(Expect::Bind);
            }
            Frontend::Describe {
                kind: Named::Statement,
                name,
            } => push(Expect::DescribeStatement {
                computed: self.statements.get(name).is_some_and(|st| st.computed),
            }),
            Frontend::Describe {
                kind: Named::Portal,
                name,
            } => {
                let computed = self.portals.get_mut(name).is_some_and(|p| {
                    p.described = true;
                    p.statement.computed
                });
                push(Expect::DescribePortal {
                    portal: name.to_vec(),
                    swallow: false,
                    computed,
                });
            }
            Frontend::Execute { portal, .. } => return self.execute(s, portal, frame, out, push),
            Frontend::Close { kind, name } => {
                match kind {
                    Named::Statement => self.statements.remove(name).map(drop),
                    Named::Portal => self.portals.remove(name).map(drop),
                };
                push(Expect::Close);
            }
            Frontend::Sync => push(Expect::Sync),
            Frontend::FunctionCall(_) => {
                // The fast-path function call runs a function by oid, past
                // any SQL inspection (large objects, among others): refused.
                push(Expect::Query(Box::new(Run::new(
                    Arc::new(function_call()),
                    SqlProtocol::FunctionCall,
                    Vec::new(),
                ))));
                frontend::query(&substitute(s), out).map_err(io)?;
                return Ok(Step::More);
            }
            // Not passed on here: the relay ends the upstream session, or
            // keeps it for the pool.
            Frontend::Terminate => return Ok(Step::Terminate),
            // Flush and COPY sub-protocol messages pass as they are.
            Frontend::Flush | Frontend::CopyData(_) | Frontend::CopyDone | Frontend::CopyFail(_) => {}
        }
        out.extend_from_slice(&frame.raw);
        Ok(Step::More)
    }

    /// An Execute: counted against the request rate, and the portal
    /// described for the response side when masking needs its columns.
    fn execute(
        &mut self,
        s: &Session,
        portal: &[u8],
        frame: &Frame,
        out: &mut BytesMut,
        push: impl Fn(Expect),
    ) -> Result<Step, WireError> {
        let io = |e: std::io::Error| WireError::malformed(Side::Agent, e.to_string());
        let limited = over_rate(s);
        let (statement, params, described) = match self.portals.get_mut(portal) {
            Some(p) => {
                let was = p.described;
                // A refused execution describes nothing: the next one must.
                p.described |= limited.is_none();
                (p.statement.clone(), p.params.clone(), was)
            }
            None => (Arc::new(unknown_statement(portal)), Vec::new(), true),
        };
        if let Some(refused) = limited {
            // Executed in its place: a portal that does not exist, named
            // with the nonce, so the server answers with an error the
            // response side turns into this refusal.
            let refused = refused_statement(s, &statement.sql, Some(&statement), refused);
            let mut run = Run::new(Arc::new(refused), SqlProtocol::Extended, params);
            run.portal = portal.to_vec();
            push(Expect::Execute(Box::new(run)));
            frontend::execute(&substitute(s), 0, out).map_err(io)?;
            return Ok(Step::More);
        }
        // Masking needs the result's columns: describe the portal for the
        // response side when the agent did not.
        if !described && (!s.masked.is_empty() || statement.detectors.is_some()) {
            push(Expect::DescribePortal {
                portal: portal.to_vec(),
                swallow: true,
                computed: statement.computed,
            });
            wire::message(out, b'D', |b| {
                b.put_u8(b'P');
                wire::put_cstr(b, portal);
            });
        }
        let mut run = Run::new(statement, SqlProtocol::Extended, params);
        run.portal = portal.to_vec();
        push(Expect::Execute(Box::new(run)));
        out.extend_from_slice(&frame.raw);
        Ok(Step::More)
    }
}

/// What a refused fast-path function call is recorded as.
fn function_call() -> Statement {
    Statement {
        sql: "<function call>".into(),
        kind: "function_call".into(),
        tables_read: Vec::new(),
        tables_written: Vec::new(),
        decision: Decision::deny(Vec::new(), "the function-call protocol bypasses SQL inspection".into()),
        detectors: None,
        computed: false,
        denial: Some(ErrorFields::error(
            sqlstate::INSUFFICIENT_PRIVILEGE,
            "interlock denied this call: the function-call protocol is not allowed through the gateway",
        )),
        counted: false,
    }
}

/// A Bind naming a statement the gateway did not see parsed (the server will
/// refuse it too).
fn unknown_statement(name: &[u8]) -> Statement {
    Statement {
        sql: format!("<unknown statement {:?}>", String::from_utf8_lossy(name)),
        kind: "unknown".into(),
        tables_read: Vec::new(),
        tables_written: Vec::new(),
        decision: Decision {
            outcome: Ruling::Allow,
            policies: Vec::new(),
            reason: "the server refuses unknown statements itself".into(),
            mask: Vec::new(),
        },
        detectors: None,
        denial: None,
        computed: false,
        counted: false,
    }
}

/// A parameter as the audit trail keeps it: text masked like results,
/// binary values by size only.
fn param_text(value: &[u8], binary: bool, statement: Option<&Statement>) -> String {
    if binary {
        return format!("<binary, {} bytes>", value.len());
    }
    let text = String::from_utf8_lossy(value);
    let masked = match statement.and_then(|s| s.detectors.as_ref()) {
        Some(m) => String::from_utf8_lossy(&m.mask(text.as_bytes()).0).into_owned(),
        None => text.into_owned(),
    };
    cap(&masked, PARAM_CAP)
}

impl Run {
    /// A statement starting now.
    pub fn new(statement: Arc<Statement>, protocol: SqlProtocol, params: Vec<Option<String>>) -> Self {
        Self {
            statement,
            protocol,
            params,
            portal: Vec::new(),
            time: audit::now(),
            started: Instant::now(),
            rows: 0,
            affected: None,
            error: None,
            masked: HashMap::new(),
        }
    }
}
