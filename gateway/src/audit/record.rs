//! One stored audit record: the event (as JSON), the columns searches use,
//! and its place in the gateway instance's hash chain. The hash covers the
//! instance, sequence number, time, kind, event and the previous hash; the
//! search columns are derived from the event, so verification recomputes
//! them too.
use ring::digest;
use serde::{Deserialize, Serialize};
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

/// Derives the search columns from an event's JSON.
pub fn columns(body: &Value) -> Columns {
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
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
    /// Builds the next record of a chain from an event.
    pub fn next(instance: &str, host: &str, seq: i64, prev_hash: &str, body: String, value: &Value) -> Self {
        let c = columns(value);
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
        let Ok(value) = serde_json::from_str::<Value>(&self.body) else {
            return Some("its event is not valid JSON".into());
        };
        let c = columns(&value);
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
        let r = Record::next("i1", "h", 1, GENESIS, event.to_string(), &event);
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
}
