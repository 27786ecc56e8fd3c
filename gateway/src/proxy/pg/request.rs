//! The request filter of a PostgreSQL session (agent -> upstream): each
//! Query, Parse and FunctionCall is classified and judged by policy. A
//! denied one is not dropped, which would break the protocol's bookkeeping;
//! it is replaced by a statement the server rejects at parse time, so the
//! server itself produces the error, aborts a transaction block as any
//! error would, and skips to Sync. The response filter rewrites that error
//! into the policy's 42501. Everything else passes as it came.
use std::{collections::HashMap, sync::Arc, time::Instant};

use bytes::BytesMut;
use postgres_protocol::message::frontend;

use super::{
    wire::{Cursor, ErrorFields, Frame, WireError},
    Expect, Run, Session, Statement,
};
use crate::{
    audit,
    config::Unparsed,
    policy::{ActionKind, Decision, Outcome as PolicyOutcome, Query, SqlFacts},
};

/// Longest parameter value kept in an audit event.
const PARAM_CAP: usize = 1 << 10;

/// What the agent has prepared and bound, as the request side knows it.
#[derive(Default)]
pub struct Prepared {
    statements: HashMap<String, Arc<Statement>>,
    portals: HashMap<String, Portal>,
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
    Hold(Box<(ActionKind, Decision)>),
    /// The agent sent Terminate (not forwarded: see `relay`).
    Terminate,
}

fn kind_facts(action: &ActionKind) -> (String, Vec<String>, Vec<String>) {
    match action {
        ActionKind::SqlStatement { facts, .. } => (
            facts.kind.clone(),
            facts.tables_read.clone(),
            facts.tables_written.clone(),
        ),
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

/// Classifies and judges one SQL string; `given` is a decision already
/// made for it (a settled review).
pub fn judge(s: &Session, sql: &str, given: Option<Decision>) -> (Statement, ActionKind) {
    let denied = |reason: String| Decision::deny(Vec::new(), reason);
    let classified = crate::sql::classify_with_extras(sql);
    let (action, extras, parse_error) = match classified {
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
                sql: sql.to_owned(),
            };
            (action, Default::default(), Some(e))
        }
    };
    let mut decision = match (given, s.ctx.events.accepting(), &parse_error, s.pg.unparsed) {
        (Some(settled), ..) => settled,
        (None, Err(e), ..) => denied(e.to_string()),
        (None, Ok(()), Some(e), Unparsed::Deny) => denied(format!("{e}; unparsable SQL is denied")),
        _ => s.ctx.gate.policies.decide(&Query {
            agent: &s.agent,
            identity: &s.identity,
            target: &s.target,
            action: &action,
            now: std::time::SystemTime::now(),
        }),
    };
    let (kind, tables_read, tables_written) = kind_facts(&action);
    let touches_masked = tables_read.iter().chain(&tables_written).any(|t| s.masked.covers(t));
    let mut detectors = None;
    if decision.outcome == PolicyOutcome::Allow {
        let mut names = s.pg.detectors.clone();
        names.extend(decision.mask.iter().cloned());
        match s.ctx.mask_plan(&names, None) {
            Ok(plan) => detectors = plan.any.clone(),
            Err(e) => decision = denied(format!("masking rules unavailable ({e}); denied rather than unmasked")),
        }
        // COPY TO STDOUT sends rows without a column description: masked
        // columns could not be found in them, and binary rows cannot be read.
        match extras.copy_out {
            Some(_) if touches_masked => {
                decision = denied("COPY TO STDOUT from a table with masked columns; use SELECT".into());
            }
            Some(true) if detectors.is_some() => {
                decision = denied("binary COPY TO STDOUT cannot be masked; use text format".into());
            }
            _ => {}
        }
    }
    let denial = (decision.outcome != PolicyOutcome::Allow).then(|| {
        let ids = if decision.policies.is_empty() {
            "no policy permits it".to_owned()
        } else {
            format!("policy {}", decision.policies.join(", "))
        };
        ErrorFields::error(
            "42501",
            format!("interlock denied this statement: {} ({ids})", decision.reason),
        )
    });
    let audit_sql = match &detectors {
        Some(m) => String::from_utf8_lossy(&m.mask(sql.as_bytes()).0).into_owned(),
        None => sql.to_owned(),
    };
    let statement = Statement {
        sql: cap(&audit_sql, s.ctx.settings.body_cap),
        kind,
        tables_read,
        tables_written,
        decision,
        detectors,
        denial,
        computed: touches_masked,
        counted: false,
    };
    (statement, action)
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
        sql: cap(sql, s.ctx.settings.body_cap),
        kind: like.map_or_else(|| "unclassified".to_owned(), |st| st.kind.clone()),
        tables_read: like.map(|st| st.tables_read.clone()).unwrap_or_default(),
        tables_written: like.map(|st| st.tables_written.clone()).unwrap_or_default(),
        decision: Decision::deny(Vec::new(), refused.reason),
        detectors: None,
        // 53400 configuration_limit_exceeded: a limit the operator set.
        denial: Some(ErrorFields::error("53400", message)),
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
        settled: Option<Decision>,
    ) -> Result<Step, WireError> {
        let reviewed = settled.is_some();
        let mut settled = settled;
        let push = |e: Expect| pending.lock().unwrap_or_else(|p| p.into_inner()).push_back(e);
        let io = |e: std::io::Error| WireError::malformed("agent", e.to_string());
        let mut c = Cursor::new(frame.body(), "agent");
        match frame.tag {
            b'Q' => {
                let sql = c.cstr()?;
                c.end()?;
                // A settled review was counted when it first came.
                let limited = if reviewed { None } else { over_rate(s) };
                let statement = match limited {
                    Some(refused) => refused_statement(s, sql, None, refused),
                    None => {
                        let (statement, action) = judge(s, sql, settled.take());
                        if statement.decision.outcome == PolicyOutcome::Review && !reviewed {
                            return Ok(Step::Hold(Box::new((action, statement.decision))));
                        }
                        statement
                    }
                };
                let statement = Arc::new(statement);
                let denied = statement.denial.is_some();
                push(Expect::Query(Box::new(Run::new(statement, "simple", Vec::new()))));
                if denied {
                    frontend::query(&substitute(s), out).map_err(io)?;
                    return Ok(Step::More);
                }
            }
            b'P' => {
                let name = c.cstr()?.to_owned();
                let sql = c.cstr()?;
                let n = c.i16()?;
                for _ in 0..n.max(0) {
                    c.i32()?;
                }
                c.end()?;
                let (statement, action) = judge(s, sql, settled.take());
                if statement.decision.outcome == PolicyOutcome::Review && !reviewed {
                    return Ok(Step::Hold(Box::new((action, statement.decision))));
                }
                let statement = Arc::new(statement);
                self.statements.insert(name.clone(), statement.clone());
                if statement.denial.is_some() {
                    push(Expect::Parse(Some(Box::new(Run::new(
                        statement,
                        "extended",
                        Vec::new(),
                    )))));
                    frontend::parse(&name, &substitute(s), std::iter::empty(), out).map_err(io)?;
                    return Ok(Step::More);
                }
                push(Expect::Parse(None));
            }
            b'B' => {
                let portal = c.cstr()?.to_owned();
                let name = c.cstr()?;
                let formats: Vec<i16> = (0..c.i16()?.max(0)).map(|_| c.i16()).collect::<Result<_, _>>()?;
                let count = c.i16()?.max(0) as usize;
                let statement = self.statements.get(name).cloned();
                let mut params = Vec::with_capacity(count);
                for i in 0..count {
                    let len = c.i32()?;
                    if len < 0 {
                        params.push(None);
                        continue;
                    }
                    let value = c.bytes(len as usize)?;
                    let binary = match formats.as_slice() {
                        [] => false,
                        [one] => *one == 1,
                        many => many.get(i).is_some_and(|f| *f == 1),
                    };
                    params.push(Some(param_text(value, binary, statement.as_deref())));
                }
                let results = c.i16()?.max(0);
                for _ in 0..results {
                    c.i16()?;
                }
                c.end()?;
                let statement = statement.unwrap_or_else(|| Arc::new(unknown_statement(name)));
                self.portals.insert(
                    portal,
                    Portal {
                        statement,
                        params,
                        described: false,
                    },
                );
                push(Expect::Bind);
            }
            b'D' => {
                let which = c.u8()?;
                let name = c.cstr()?.to_owned();
                c.end()?;
                match which {
                    b'S' => push(Expect::DescribeStatement {
                        computed: self.statements.get(&name).is_some_and(|st| st.computed),
                    }),
                    b'P' => {
                        let computed = match self.portals.get_mut(&name) {
                            Some(p) => {
                                p.described = true;
                                p.statement.computed
                            }
                            None => false,
                        };
                        push(Expect::DescribePortal {
                            portal: name,
                            swallow: false,
                            computed,
                        });
                    }
                    other => return Err(WireError::malformed("agent", format!("Describe of kind {other}"))),
                }
            }
            b'E' => {
                let portal = c.cstr()?.to_owned();
                c.i32()?;
                c.end()?;
                let (statement, params, described) = match self.portals.get_mut(&portal) {
                    Some(p) => {
                        let was = p.described;
                        p.described = true;
                        (p.statement.clone(), p.params.clone(), was)
                    }
                    None => (Arc::new(unknown_statement(&portal)), Vec::new(), true),
                };
                if let Some(refused) = over_rate(s) {
                    // Executed in its place: a portal that does not exist,
                    // named with the nonce, so the server answers with an
                    // error the response side turns into this refusal.
                    let refused = refused_statement(s, &statement.sql, Some(&statement), refused);
                    let mut run = Run::new(Arc::new(refused), "extended", params);
                    run.portal = portal;
                    push(Expect::Execute(Box::new(run)));
                    frontend::execute(&substitute(s), 0, out).map_err(io)?;
                    return Ok(Step::More);
                }
                // Masking needs the result's columns: describe the portal for
                // the response side when the agent did not.
                if !described && (!s.masked.is_empty() || statement.detectors.is_some()) {
                    push(Expect::DescribePortal {
                        portal: portal.clone(),
                        swallow: true,
                        computed: statement.computed,
                    });
                    frontend::describe(b'P', &portal, out).map_err(io)?;
                }
                let mut run = Run::new(statement, "extended", params);
                run.portal = portal;
                push(Expect::Execute(Box::new(run)));
            }
            b'C' => {
                let which = c.u8()?;
                let name = c.cstr()?;
                c.end()?;
                match which {
                    b'S' => {
                        self.statements.remove(name);
                    }
                    b'P' => {
                        self.portals.remove(name);
                    }
                    other => return Err(WireError::malformed("agent", format!("Close of kind {other}"))),
                }
                push(Expect::Close);
            }
            b'S' => push(Expect::Sync),
            b'F' => {
                // The fast-path function call runs a function by oid, past
                // any SQL inspection (large objects, among others): refused.
                let statement = Statement {
                    sql: "<function call>".into(),
                    kind: "function_call".into(),
                    tables_read: Vec::new(),
                    tables_written: Vec::new(),
                    decision: Decision::deny(Vec::new(), "the function-call protocol bypasses SQL inspection".into()),
                    detectors: None,
                    computed: false,
                    denial: Some(ErrorFields::error(
                        "42501",
                        "interlock denied this call: the function-call protocol is not allowed through the gateway",
                    )),
                    counted: false,
                };
                push(Expect::Query(Box::new(Run::new(
                    Arc::new(statement),
                    "function_call",
                    Vec::new(),
                ))));
                frontend::query(&substitute(s), out).map_err(io)?;
                return Ok(Step::More);
            }
            // Not passed on here: the relay ends the upstream session, or
            // keeps it for the pool.
            b'X' => return Ok(Step::Terminate),
            // Flush and COPY sub-protocol messages pass as they are.
            b'H' | b'd' | b'c' | b'f' => {}
            other => {
                return Err(WireError::malformed(
                    "agent",
                    format!("unexpected message type {:?} after startup", other as char),
                ))
            }
        }
        out.extend_from_slice(&frame.raw);
        Ok(Step::More)
    }
}

/// A Bind naming a statement the gateway did not see parsed (the server will
/// refuse it too).
fn unknown_statement(name: &str) -> Statement {
    Statement {
        sql: format!("<unknown statement {name:?}>"),
        kind: "unknown".into(),
        tables_read: Vec::new(),
        tables_written: Vec::new(),
        decision: Decision {
            outcome: PolicyOutcome::Allow,
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
    pub fn new(statement: Arc<Statement>, protocol: &'static str, params: Vec<Option<String>>) -> Self {
        Self {
            statement,
            protocol,
            params,
            portal: String::new(),
            time: audit::now(),
            started: Instant::now(),
            rows: 0,
            affected: None,
            error: None,
            masked: HashMap::new(),
        }
    }
}
