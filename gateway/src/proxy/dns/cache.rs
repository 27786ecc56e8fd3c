//! Answers kept for their TTL, per agent and per server asked, so a name an
//! agent asks again is answered without a second trip upstream (the trip
//! was most of what the gateway added to a query). Only the forward is
//! skipped: every question is still guarded, judged, bound and audited as
//! if it had gone upstream, and its event says the answer was cached.
//!
//! What is kept is exactly what the upstream answered to the query the
//! gateway built (the same for every question with this key: see
//! [`super::message::upstream_query`]); when served, each record's TTL is
//! lowered by the time it was kept, as a caching resolver does. Kept per
//! agent so one agent cannot learn from timing or TTLs what another asked.
//! Bounded by entry count and by `cache_max_ttl`; when full, expired
//! entries are swept (at most once a second: a sweep walks every entry,
//! and a flood of new names would otherwise make every question pay for
//! one) and, failing that, nothing new is kept.
use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use hickory_proto::op::{Message, ResponseCode};

use super::message::{self, Answer, Question};
use crate::types::{AgentName, OrigDst};

/// Largest answer kept.
const MAX_KEPT: usize = 4096;
/// The payload a resolver without EDNS accepts over UDP.
const PLAIN_UDP: usize = 512;

/// What makes two questions the same question upstream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    agent: AgentName,
    /// The server (or the first of `[dns] upstreams`) the query went to.
    route: OrigDst,
    /// The name's labels as asked, each with its length (case kept: the
    /// upstream echoes the question as sent).
    name: Vec<u8>,
    qtype: u16,
    qclass: u16,
    /// RD, CD, EDNS present, DO.
    flags: u8,
}

impl Key {
    fn new(agent: &AgentName, route: OrigDst, q: &Question) -> Self {
        let mut name = Vec::with_capacity(q.text.len() + 2);
        for label in &q.labels {
            name.push(label.len() as u8);
            name.extend_from_slice(label);
        }
        let (edns, dnssec_ok) = q.edns.map_or((false, false), |(_, d)| (true, d));
        let flags = u8::from(q.recursion_desired)
            | u8::from(q.checking_disabled) << 1
            | u8::from(edns) << 2
            | u8::from(dnssec_ok) << 3;
        Self {
            agent: agent.clone(),
            route,
            name,
            qtype: u16::from(q.qtype),
            qclass: u16::from(q.qclass),
            flags,
        }
    }
}

struct Entry {
    /// The upstream's answer as it came (the gateway's query id in it).
    bytes: Vec<u8>,
    /// Which upstream gave it.
    upstream: OrigDst,
    kept: Instant,
    /// How long it may be served.
    ttl: Duration,
}

/// An answer served from the cache.
pub struct Hit {
    /// The answer for the agent: its id, TTLs lowered.
    pub bytes: Vec<u8>,
    /// What it says (TTLs as served).
    pub answer: Answer,
    /// The upstream that gave it.
    pub upstream: OrigDst,
}

/// How often a full cache may be swept.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Entries {
    map: HashMap<Key, Entry>,
    swept: Option<Instant>,
}

/// The answer cache (see the module doc).
pub struct AnswerCache {
    entries: Mutex<Entries>,
    capacity: usize,
    max_ttl: Duration,
}

impl AnswerCache {
    /// A cache of at most `capacity` answers (0: none), each kept at most
    /// `max_ttl`.
    pub fn new(capacity: usize, max_ttl: Duration) -> Self {
        Self {
            entries: Mutex::default(),
            capacity,
            max_ttl,
        }
    }

    /// Answers kept now (expired ones included until swept).
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).map.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The kept answer to `q` for `agent` via `route`, made the agent's,
    /// if one is fresh and fits what the agent can receive (`udp`: its
    /// EDNS payload size, or 512).
    pub fn get(&self, agent: &AgentName, route: OrigDst, q: &Question, udp: bool) -> Option<Hit> {
        self.get_at(Instant::now(), agent, route, q, udp)
    }

    fn get_at(&self, now: Instant, agent: &AgentName, route: OrigDst, q: &Question, udp: bool) -> Option<Hit> {
        if self.capacity == 0 {
            return None;
        }
        let key = Key::new(agent, route, q);
        let (bytes, upstream, age) = {
            let map = &mut self.entries.lock().unwrap_or_else(|p| p.into_inner()).map;
            let entry = map.get(&key)?;
            let age = now.saturating_duration_since(entry.kept);
            if age >= entry.ttl {
                map.remove(&key);
                return None;
            }
            (entry.bytes.clone(), entry.upstream, age)
        };
        let limit = q
            .edns
            .map_or(PLAIN_UDP, |(payload, _)| usize::from(payload).max(PLAIN_UDP));
        if udp && bytes.len() > limit {
            return None;
        }
        let mut msg = Message::from_vec(&bytes).ok()?;
        let spent = u32::try_from(age.as_secs()).unwrap_or(u32::MAX);
        for r in msg
            .answers
            .iter_mut()
            .chain(msg.authorities.iter_mut())
            .chain(msg.additionals.iter_mut())
        {
            r.ttl = r.ttl.saturating_sub(spent);
        }
        msg.metadata.id = q.id;
        let answer = message::describe(&msg);
        let bytes = msg.to_vec().ok()?;
        Some(Hit {
            bytes,
            answer,
            upstream,
        })
    }

    /// Keeps `bytes`, the upstream's checked answer to `q`, if it may be
    /// kept: NOERROR or NXDOMAIN, not truncated, not too large, and with
    /// records whose least TTL is above zero.
    pub fn put(&self, agent: &AgentName, route: OrigDst, q: &Question, upstream: OrigDst, bytes: &[u8]) {
        self.put_at(Instant::now(), agent, route, q, upstream, bytes);
    }

    fn put_at(&self, now: Instant, agent: &AgentName, route: OrigDst, q: &Question, upstream: OrigDst, bytes: &[u8]) {
        if self.capacity == 0 || bytes.len() > MAX_KEPT {
            return;
        }
        let Some(ttl) = keepable(bytes) else {
            return;
        };
        let ttl = Duration::from_secs(u64::from(ttl)).min(self.max_ttl);
        let key = Key::new(agent, route, q);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let Entries { map, swept } = &mut *entries;
        if map.len() >= self.capacity && !map.contains_key(&key) {
            if swept.is_some_and(|at| now.saturating_duration_since(at) < SWEEP_EVERY) {
                return;
            }
            *swept = Some(now);
            map.retain(|_, e| now.saturating_duration_since(e.kept) < e.ttl);
            if map.len() >= self.capacity {
                return;
            }
        }
        map.insert(
            key,
            Entry {
                bytes: bytes.to_vec(),
                upstream,
                kept: now,
                ttl,
            },
        );
    }
}

/// The TTL an answer may be kept for, if it may be.
fn keepable(bytes: &[u8]) -> Option<u32> {
    let msg = Message::from_vec(bytes).ok()?;
    let rcode = msg.metadata.response_code;
    if msg.metadata.truncation || !matches!(rcode, ResponseCode::NoError | ResponseCode::NXDomain) {
        return None;
    }
    let least = (msg.answers.iter())
        .chain(&msg.authorities)
        .chain(&msg.additionals)
        .map(|r| r.ttl)
        .min()?;
    (least > 0).then_some(least)
}

#[cfg(test)]
mod tests;
