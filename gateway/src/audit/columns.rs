//! An event's JSON text and its search columns, made together. The kinds
//! recorded on every connection, exchange and statement have their columns
//! read off the typed event; parsing the JSON just written again to find
//! them was ~4.5% of the gateway's CPU under HTTP load. Every other kind
//! (operator actions, reviews: rare) is parsed, as verification does: both
//! ways must give the same columns, or a verified trail would call its own
//! records modified (the tests below hold them to that).
use super::{record::Columns, Event};
use crate::{
    identity::Identity,
    policy::{Decision, Ruling},
    types::AgentName,
};

/// An event ready to be chained.
pub(crate) struct Encoded {
    /// The event as JSON.
    pub(crate) body: String,
    /// Its search columns, when read off the typed event.
    pub(crate) columns: Option<Columns>,
}

impl Encoded {
    /// Serialises `event` (into a buffer sized for a typical event: growing
    /// it from empty copied each event several times).
    pub(crate) fn new(event: &Event) -> Result<Self, serde_json::Error> {
        let mut buf = Vec::with_capacity(1536);
        serde_json::to_writer(&mut buf, event)?;
        // serde_json writes UTF-8 only; the check is cheap next to the write.
        let body = String::from_utf8(buf).map_err(|e| serde::ser::Error::custom(e.to_string()))?;
        Ok(Self {
            body,
            columns: typed(event),
        })
    }
}

/// The search columns of the frequent kinds, from the typed event.
fn typed(event: &Event) -> Option<Columns> {
    match event {
        Event::Connection(e) => columns(
            "connection",
            &e.time,
            e.agent.as_ref(),
            e.identity.as_ref(),
            e.target.as_deref(),
            e.decision.as_ref(),
        ),
        Event::HttpExchange(e) => columns(
            "http_exchange",
            &e.time,
            Some(&e.agent),
            Some(&e.identity),
            Some(&e.target),
            Some(&e.decision),
        ),
        Event::HttpBody(e) => columns(
            "http_body",
            &e.time,
            Some(&e.agent),
            Some(&e.identity),
            Some(&e.target),
            None,
        ),
        Event::SqlStatement(e) => columns(
            "sql_statement",
            &e.time,
            Some(&e.agent),
            Some(&e.identity),
            Some(&e.target),
            Some(&e.decision),
        ),
        Event::DnsQuery(e) => columns(
            "dns_query",
            &e.time,
            Some(&e.agent),
            Some(&e.identity),
            Some(&e.target),
            Some(&e.decision),
        ),
        Event::PgSession(e) => columns(
            "pg_session",
            &e.time,
            Some(&e.agent),
            Some(&e.identity),
            Some(&e.target),
            None,
        ),
        _ => None,
    }
}

fn columns(
    kind: &str,
    time: &str,
    agent: Option<&AgentName>,
    identity: Option<&Identity>,
    target: Option<&str>,
    decision: Option<&Decision>,
) -> Option<Columns> {
    let exe = match identity.and_then(|i| i.process.as_ref()).and_then(|p| p.exe.as_ref()) {
        // A path that is not UTF-8 is left to the parser (as it was written).
        Some(path) => Some(path.to_str()?.to_owned()),
        None => None,
    };
    Some(Columns {
        kind: kind.to_owned(),
        time: time.to_owned(),
        agent: agent.map(|a| a.0.clone()),
        pid: identity.map(|i| i64::from(i.pid)),
        exe,
        target: target.map(str::to_owned),
        decision: decision.map(|d| outcome(d.outcome).to_owned()),
        policies: decision.map(|d| d.policies.join(",")).unwrap_or_default(),
    })
}

/// An outcome as its JSON spells it.
fn outcome(o: Ruling) -> &'static str {
    match o {
        Ruling::Allow => "allow",
        Ruling::Deny => "deny",
        Ruling::Review => "review",
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        audit::{
            record::columns_of, ConnectionEvent, HttpBodyEvent, HttpExchangeEvent, Outcome as Ended, PgSessionEvent,
            SqlStatementEvent,
        },
        identity::ProcessInfo,
        types::ConnId,
    };

    fn caller(process: bool) -> Identity {
        let mut id = Identity::unattributed();
        id.pid = 77;
        id.comm = "py\"thon".into();
        id.process = process.then(|| {
            Arc::new(ProcessInfo {
                start_ticks: 1,
                exe: Some("/opt/é/bin/python3".into()),
                cmdline: vec!["a\nb".into()],
                ppid: 1,
                cgroup: None,
                container: None,
                systemd_unit: None,
            })
        });
        id
    }

    fn decision(outcome: Ruling) -> Decision {
        Decision {
            outcome,
            policies: vec!["p-1".into(), "p,2".into()],
            reason: "why".into(),
            mask: Vec::new(),
        }
    }

    #[test]
    fn typed_columns_are_the_columns_the_json_gives() {
        let agent = AgentName("bot \"ä\"".into());
        let mut events = Vec::new();
        for (identity, decided) in [(None, None), (Some(caller(false)), Some(decision(Ruling::Review)))] {
            events.push(Event::Connection(Box::new(ConnectionEvent {
                time: "t0".into(),
                conn_id: ConnId(1),
                agent: decided.as_ref().map(|_| agent.clone()),
                identity,
                target: decided.as_ref().map(|_| "db".to_owned()),
                decision: decided,
                peer: "127.0.0.1:5".parse().unwrap(),
                orig_dst: None,
                bytes_up: 0,
                bytes_down: 0,
                duration_ms: 0,
                outcome: Ended::Closed,
            })));
        }
        events.push(Event::HttpExchange(Box::new(HttpExchangeEvent {
            time: "t1".into(),
            conn_id: ConnId(2),
            agent: agent.clone(),
            identity: caller(true),
            target: "web\\1".into(),
            method: "GET".into(),
            path: "/".into(),
            exchange: 1,
            status: 200,
            decision: decision(Ruling::Allow),
            credential_injected: false,
            masked_request: Vec::new(),
            masked_response: Vec::new(),
            upstream_error: None,
            duration_ms: 0,
            bodies: None,
        })));
        events.push(Event::HttpExchange(Box::new(HttpExchangeEvent {
            time: "t1".into(),
            conn_id: ConnId(2),
            agent: agent.clone(),
            identity: caller(true),
            target: "web".into(),
            method: "POST".into(),
            path: "/v1/chat".into(),
            exchange: 2,
            status: 200,
            decision: decision(Ruling::Allow),
            credential_injected: true,
            masked_request: Vec::new(),
            masked_response: Vec::new(),
            upstream_error: None,
            duration_ms: 1,
            bodies: Some(crate::audit::ExchangeBodies {
                request_body: "{\"q\":\"é\"}".into(),
                request_bytes: 11,
                response_body: "{\"a\":1}".into(),
                response_bytes: 7,
                response_complete: true,
            }),
        })));
        events.push(Event::HttpBody(Box::new(HttpBodyEvent {
            time: "t2".into(),
            conn_id: ConnId(2),
            exchange: 1,
            agent: agent.clone(),
            identity: caller(true),
            target: "web".into(),
            path: "/".into(),
            request_body: "{\"event\":\"x\"}".into(),
            request_bytes: 13,
            response_body: String::new(),
            response_bytes: 0,
            response_complete: true,
        })));
        events.push(Event::SqlStatement(Box::new(SqlStatementEvent {
            time: "t3".into(),
            conn_id: ConnId(3),
            agent: agent.clone(),
            identity: caller(true),
            target: "db".into(),
            database: "shop".into(),
            user: "app".into(),
            protocol: crate::audit::SqlProtocol::Simple,
            sql: "SELECT 1".into(),
            params: Vec::new(),
            kind: "select".into(),
            tables_read: Vec::new(),
            tables_written: Vec::new(),
            rows_returned: 1,
            rows_affected: None,
            duration_ms: 0,
            decision: decision(Ruling::Deny),
            outcome: crate::audit::Ran::Denied,
            error: None,
            masked: Vec::new(),
        })));
        events.push(Event::PgSession(Box::new(PgSessionEvent {
            time: "t4".into(),
            conn_id: ConnId(3),
            agent,
            identity: caller(false),
            target: "db".into(),
            phase: "start".into(),
            database: "shop".into(),
            user: "app".into(),
            agent_user: "agent".into(),
            application_name: String::new(),
            agent_tls: false,
            upstream_tls: false,
            upstream_reused: false,
            bytes_up: 0,
            bytes_down: 0,
            statements: 0,
            duration_ms: 0,
            outcome: None,
        })));
        for event in &events {
            let encoded = Encoded::new(event).unwrap();
            let typed = encoded.columns.expect("a frequent kind has typed columns");
            assert_eq!(typed, columns_of(&encoded.body).unwrap(), "{}", encoded.body);
        }
        let rare = Event::GatewayStopped { time: "t".into() };
        assert!(Encoded::new(&rare).unwrap().columns.is_none());
    }
}
