//! Host names the agent gave (TLS SNI, HTTP Host), checked against the
//! address it actually connected to. A name is chosen by the agent and
//! proves nothing by itself: it counts only when it resolves, through the
//! gateway's own resolver, to the connection's original address (the way
//! Squid's `host_verify_strict` guards intercepted traffic). Answers are
//! cached; addresses seen for a name stay valid for a while after a newer
//! answer, since CDNs rotate them and the agent may have resolved earlier.
use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

/// How long addresses a name resolved to are trusted.
const POSITIVE_TTL: Duration = Duration::from_secs(60);
/// How long a name that did not resolve is not asked again.
const NEGATIVE_TTL: Duration = Duration::from_secs(10);
/// Longest wait for one lookup; a resolver slower than this binds nothing.
const LOOKUP_LIMIT: Duration = Duration::from_secs(2);
/// Names cached before the cache is cleared (bounds memory against an agent
/// that sends a new name on every connection).
const CACHE_LIMIT: usize = 4096;
/// Longest name looked up (RFC 1035).
const MAX_NAME: usize = 253;

/// One name's cached answer.
#[derive(Debug, Clone)]
struct Entry {
    /// Addresses, each with the time until which it is trusted.
    addrs: Vec<(IpAddr, Instant)>,
    /// When to ask the resolver again.
    refresh: Instant,
}

/// The gateway's view of which names resolve to which addresses.
#[derive(Debug, Default)]
pub struct Names {
    cache: Mutex<HashMap<String, Entry>>,
}

impl Names {
    /// Whether `name` resolves to `ip`. An IP literal binds only to itself;
    /// a lookup that fails or times out binds nothing (fail closed).
    pub async fn resolves_to(&self, name: &str, ip: IpAddr) -> bool {
        if let Ok(literal) = name.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            return literal == ip || literal.to_canonical() == ip.to_canonical();
        }
        if !plausible(name) {
            return false;
        }
        let now = Instant::now();
        if let Some(hit) = self.cached(name, now) {
            return hit.iter().any(|a| same(*a, ip));
        }
        let found = lookup(name).await;
        let now = Instant::now();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_LIMIT && !cache.contains_key(name) {
            cache.clear();
        }
        let entry = cache.entry(name.to_owned()).or_insert_with(|| Entry {
            addrs: Vec::new(),
            refresh: now,
        });
        entry.addrs.retain(|(_, until)| *until > now);
        let ttl = if found.is_empty() { NEGATIVE_TTL } else { POSITIVE_TTL };
        entry.refresh = now + ttl;
        for a in found {
            match entry.addrs.iter_mut().find(|(known, _)| *known == a) {
                Some(known) => known.1 = now + POSITIVE_TTL,
                None => entry.addrs.push((a, now + POSITIVE_TTL)),
            }
        }
        entry.addrs.iter().any(|(a, _)| same(*a, ip))
    }

    /// The trusted addresses of a name, unless it is due for a new lookup.
    fn cached(&self, name: &str, now: Instant) -> Option<Vec<IpAddr>> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let entry = cache.get(name).filter(|e| e.refresh > now)?;
        Some(
            entry
                .addrs
                .iter()
                .filter(|(_, until)| *until > now)
                .map(|(a, _)| *a)
                .collect(),
        )
    }
}

fn same(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

/// Only names a resolver could answer: letters, digits, '-', '_' and dots.
fn plausible(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
}

/// The system resolver's answer (getaddrinfo, off the async threads).
async fn lookup(name: &str) -> Vec<IpAddr> {
    match tokio::time::timeout(LOOKUP_LIMIT, tokio::net::lookup_host((name, 0))).await {
        Ok(Ok(addrs)) => addrs.map(|a| a.ip()).collect(),
        Ok(Err(e)) => {
            tracing::debug!(name, "name did not resolve: {e}");
            Vec::new()
        }
        Err(_) => {
            tracing::warn!(name, "name lookup timed out after {LOOKUP_LIMIT:?}");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn literals_bind_to_themselves_and_names_through_the_resolver() {
        let names = Names::default();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "127.0.0.9".parse().unwrap();
        assert!(names.resolves_to("127.0.0.1", lo).await);
        assert!(names.resolves_to("[::ffff:127.0.0.1]", lo).await);
        assert!(!names.resolves_to("127.0.0.1", other).await);
        // /etc/hosts names localhost on every machine of this kind.
        assert!(names.resolves_to("localhost", lo).await);
        assert!(!names.resolves_to("localhost", other).await);
        // Cached: the same answer again.
        assert!(names.resolves_to("localhost", lo).await);
        assert!(!names.resolves_to("bad name\0", lo).await);
        assert!(!names.resolves_to(&"a".repeat(300), lo).await);
    }
}
