//! One stored audit record: the event (as JSON), the columns searches use,
//! and its place in the gateway instance's hash chain. The hash covers the
//! instance, sequence number, time, kind, event and the previous hash; the
//! search columns are derived from the event, so verification recomputes
//! them too.
use ring::digest;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

use serde_json::Value;

/// The previous hash of a chain's first record.
pub const GENESIS: &str = "genesis";

/// A stored event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Store-wide id (0 until stored).
    pub id: i64,
    /// The gateway instance whose chain it is in.
    pub instance: String,
    /// Position in that chain, from 1.
    pub seq: i64,
    /// Event time (RFC 3339).
    pub time: String,
    /// Host the gateway runs on.
    pub host: String,
    /// Event kind (`connection`, `http_exchange`, `sql_statement`, ...).
    pub kind: String,
    /// The agent, when the event has one.
    pub agent: Option<String>,
    /// The caller's pid, when known.
    pub pid: Option<i64>,
    /// The caller's executable, when known.
    pub exe: Option<String>,
    /// The target, when the event has one.
    pub target: Option<String>,
    /// Policy outcome (`allow`, `deny`, `review`), when the event has a decision.
    pub decision: Option<String>,
    /// Deciding policy ids, comma-separated.
    pub policies: String,
    /// The event, as JSON.
    pub body: String,
    /// Hash of the chain's previous record.
    pub prev_hash: String,
    /// This record's hash.
    pub hash: String,
}

/// The search columns of an event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Columns {
    /// Kind.
    pub kind: String,
    /// Time.
    pub time: String,
    /// Agent.
    pub agent: Option<String>,
    /// Pid.
    pub pid: Option<i64>,
    /// Executable.
    pub exe: Option<String>,
    /// Target.
    pub target: Option<String>,
    /// Decision outcome.
    pub decision: Option<String>,
    /// Policy ids.
    pub policies: String,
}

/// The fields of an event's JSON the search columns come from, read without
/// building the whole document. Any other shape (a field of an unexpected
/// type) fails here and is read by [`columns`] instead, so both give the
/// same columns.
#[derive(Deserialize, Default)]
#[serde(default)]
struct View<'a> {
    #[serde(borrow)]
    event: Option<Cow<'a, str>>,
    #[serde(borrow)]
    time: Option<Cow<'a, str>>,
    #[serde(borrow)]
    agent: Option<Cow<'a, str>>,
    #[serde(borrow)]
    identity: Option<IdentityView<'a>>,
    #[serde(borrow)]
    target: Option<TargetView<'a>>,
    #[serde(borrow)]
    decision: Option<DecisionView<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct IdentityView<'a> {
    pid: Option<i64>,
    #[serde(borrow)]
    exe: Option<Cow<'a, str>>,
    #[serde(borrow)]
    process: Option<ProcessView<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ProcessView<'a> {
    #[serde(borrow)]
    exe: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TargetView<'a> {
    Name(#[serde(borrow)] Cow<'a, str>),
    Object {
        #[serde(borrow, default)]
        name: Option<Cow<'a, str>>,
    },
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DecisionView<'a> {
    #[serde(borrow)]
    outcome: Option<Cow<'a, str>>,
    #[serde(borrow)]
    policies: Option<Vec<Cow<'a, str>>>,
}

/// Derives the search columns from an event's JSON text.
pub fn columns_of(body: &str) -> Result<Columns, serde_json::Error> {
    let Ok(v) = serde_json::from_str::<View<'_>>(body) else {
        return serde_json::from_str::<Value>(body).map(|v| columns(&v));
    };
    let own = |c: Option<Cow<'_, str>>| c.map(Cow::into_owned);
    let (pid, exe) = match v.identity {
        Some(id) => (id.pid, own(id.process.and_then(|p| p.exe)).or(own(id.exe))),
        None => (None, None),
    };
    let decision = v.decision.unwrap_or_default();
    Ok(Columns {
        kind: v.event.map_or_else(|| "unknown".to_owned(), Cow::into_owned),
        time: own(v.time).unwrap_or_default(),
        agent: own(v.agent),
        pid,
        exe,
        target: match v.target {
            Some(TargetView::Name(n)) => Some(n.into_owned()),
            Some(TargetView::Object { name }) => own(name),
            None => None,
        },
        decision: own(decision.outcome),
        policies: decision.policies.map(|p| p.join(",")).unwrap_or_default(),
    })
}

/// Derives the search columns from an event's JSON.
fn columns(body: &Value) -> Columns {
    let text = |v: &Value| v.as_str().map(str::to_owned);
    let target = match &body["target"] {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("name").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    };
    let decision = &body["decision"];
    Columns {
        kind: body["event"].as_str().unwrap_or("unknown").to_owned(),
        time: body["time"].as_str().unwrap_or_default().to_owned(),
        agent: text(&body["agent"]),
        pid: body["identity"]["pid"].as_i64(),
        exe: text(&body["identity"]["process"]["exe"]).or_else(|| text(&body["identity"]["exe"])),
        target,
        decision: text(&decision["outcome"]),
        policies: decision["policies"]
            .as_array()
            .map(|ids| ids.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","))
            .unwrap_or_default(),
    }
}

/// The hash of a record's content and its predecessor.
pub fn hash(instance: &str, seq: i64, time: &str, kind: &str, body: &str, prev_hash: &str) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for part in [instance, &seq.to_string(), time, kind, body, prev_hash] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part.as_bytes());
    }
    hex(ctx.finish().as_ref())
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

/// Bytes from lower-case hex.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Record {
    /// Builds the next record of a chain from an event's JSON text.
    pub fn next(
        instance: &str,
        host: &str,
        seq: i64,
        prev_hash: &str,
        body: String,
    ) -> Result<Self, serde_json::Error> {
        let c = columns_of(&body)?;
        Ok(Self::next_with(instance, host, seq, prev_hash, body, c))
    }

    /// [`Record::next`] with the event's columns already known (they must
    /// be what [`columns_of`] gives for `body`).
    pub fn next_with(instance: &str, host: &str, seq: i64, prev_hash: &str, body: String, c: Columns) -> Self {
        // Every test run checks the typed columns against the parser's.
        debug_assert_eq!(columns_of(&body).ok().as_ref(), Some(&c), "typed columns of {body}");
        let hash = hash(instance, seq, &c.time, &c.kind, &body, prev_hash);
        Self {
            id: 0,
            instance: instance.to_owned(),
            seq,
            time: c.time,
            host: host.to_owned(),
            kind: c.kind,
            agent: c.agent,
            pid: c.pid,
            exe: c.exe,
            target: c.target,
            decision: c.decision,
            policies: c.policies,
            body,
            prev_hash: prev_hash.to_owned(),
            hash,
        }
    }

    /// What is wrong with this record on its own (hash, derived columns), if anything.
    pub fn defect(&self) -> Option<String> {
        let expected = hash(
            &self.instance,
            self.seq,
            &self.time,
            &self.kind,
            &self.body,
            &self.prev_hash,
        );
        if expected != self.hash {
            return Some("its content does not match its hash (modified)".into());
        }
        let Ok(c) = columns_of(&self.body) else {
            return Some("its event is not valid JSON".into());
        };
        let stored = Columns {
            kind: self.kind.clone(),
            time: self.time.clone(),
            agent: self.agent.clone(),
            pid: self.pid,
            exe: self.exe.clone(),
            target: self.target.clone(),
            decision: self.decision.clone(),
            policies: self.policies.clone(),
        };
        (c != stored).then(|| "its search columns do not match its event (modified)".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_come_from_the_event_and_the_hash_covers_it() {
        let event = serde_json::json!({
            "event": "http_exchange", "time": "2026-01-01T00:00:00Z", "agent": "bot",
            "identity": {"pid": 42, "exe": "/usr/bin/python3"}, "target": "openai",
            "decision": {"outcome": "deny", "policies": ["a", "b"]}
        });
        let r = Record::next("i1", "h", 1, GENESIS, event.to_string()).unwrap();
        assert_eq!(r.kind, "http_exchange");
        assert_eq!(r.pid, Some(42));
        assert_eq!(r.policies, "a,b");
        assert_eq!(r.decision.as_deref(), Some("deny"));
        assert!(r.defect().is_none());
        let mut changed = r.clone();
        changed.body = changed.body.replace("bot", "other");
        assert!(changed.defect().unwrap().contains("hash"));
        let mut column = r.clone();
        column.agent = Some("other".into());
        assert!(column.defect().unwrap().contains("search columns"));
        assert_eq!(unhex(&hex(&[0, 255, 16])), Some(vec![0, 255, 16]));
    }

    #[test]
    fn the_quick_column_reader_agrees_with_the_general_one() {
        let bodies = [
            r#"{"event":"http_exchange","time":"t","agent":"bot","identity":{"pid":7,"process":{"exe":"/bin/a"}},"target":"web","decision":{"outcome":"allow","policies":["p1","p2"]}}"#,
            r#"{"event":"connection","target":{"name":"db","ip":"127.0.0.1"},"identity":{"pid":1,"exe":"/old"}}"#,
            r#"{"event":"x","agent":"a\"b\u00e9","target":5,"decision":"allow"}"#,
            r#"{"event":"x","identity":null,"decision":{"outcome":null,"policies":["a",3]}}"#,
            r#"{"event":"x","identity":{"pid":"12"},"agent":{"name":"n"}}"#,
            r#"{"event":"x","agent":"first","agent":"second"}"#,
            r#"{"time":"only"}"#,
            r#"{}"#,
        ];
        for body in bodies {
            let value: Value = serde_json::from_str(body).unwrap();
            assert_eq!(columns_of(body).unwrap(), columns(&value), "{body}");
        }
        assert!(columns_of("not json").is_err());
    }
}
