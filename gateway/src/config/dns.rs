//! `[dns]`: the gateway's resolver for agents. Every port-53 datagram and
//! TCP connection of an agent is sent to it; each query is judged by policy
//! (action `dns_query`) and by the exfiltration guards below, then forwarded
//! to the server the agent asked (or to `upstreams`) or refused.
use std::{net::SocketAddr, time::Duration};

use serde::{Deserialize, Serialize};

/// How a refused query is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RefuseWith {
    /// RCODE 5, REFUSED: the resolver stops at once and says why it failed.
    #[default]
    Refused,
    /// RCODE 3, NXDOMAIN: the name looks absent.
    Nxdomain,
}

/// What a query over a guard's limit gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OverLimit {
    /// Refused before policy is asked.
    #[default]
    Refuse,
    /// Judged by policy, which sees the guard's finding in `context.guard`
    /// (a `@review` forbid can hold it for a person).
    Policy,
}

/// The gateway's resolver for agents.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// Agents' port-53 traffic (UDP and TCP) goes to the gateway's resolver,
    /// on the listener's addresses and port. `false`: port 53 is like any
    /// other port (TCP follows the rules; UDP is refused unless a `udp` rule
    /// passes it) and no query is seen.
    pub enabled: bool,
    /// Servers allowed queries go to, tried in order; empty: the server the
    /// agent asked.
    pub upstreams: Vec<SocketAddr>,
    /// Servers whose answers bind names to addresses for the agent that
    /// asked (so a connect to the address is judged as the name), besides
    /// `upstreams` and the nameservers in this host's /etc/resolv.conf.
    /// Answers from any other server reach the agent but bind nothing: an
    /// agent's own server could otherwise give a target's name to an
    /// address of the agent's choosing.
    pub trusted_servers: Vec<SocketAddr>,
    /// How long a learned binding outlives its answer's TTL.
    #[serde(with = "humantime_serde")]
    pub binding_grace: Duration,
    /// Names agents may resolve besides their targets' `hosts`
    /// (`*.pypi.org` matches subdomains); policies see `context.listed`, and
    /// the shipped base policy permits them.
    pub names: Vec<String>,
    /// The answer to a refused query.
    pub refuse_with: RefuseWith,
    /// How long an upstream may take to answer (then SERVFAIL).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Longest query name, in characters (without the final dot).
    pub max_name: usize,
    /// Longest label.
    pub max_label: usize,
    /// Labels at least this long are checked for entropy.
    pub entropy_min_label: usize,
    /// Highest Shannon entropy, in bits per character, of such a label
    /// (hex is at most 4, base32 5, base64 6; words are near 3).
    pub max_label_entropy: f64,
    /// Distinct names one agent may ask under one domain (its last two
    /// labels) per minute; 0: no limit.
    pub names_per_domain: u32,
    /// What a query over one of these limits gets.
    pub over_limit: OverLimit,
    /// Answers kept (per agent and server asked) to serve a name asked
    /// again within its TTL without a trip upstream; 0: none kept. A
    /// served answer is still guarded, judged, bound and audited.
    pub cache_entries: usize,
    /// Longest an answer is kept, whatever its TTL says.
    #[serde(with = "humantime_serde")]
    pub cache_max_ttl: Duration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            upstreams: Vec::new(),
            trusted_servers: Vec::new(),
            names: Vec::new(),
            binding_grace: Duration::from_secs(30),
            refuse_with: RefuseWith::Refused,
            timeout: Duration::from_secs(5),
            max_name: 253,
            max_label: 63,
            entropy_min_label: 24,
            max_label_entropy: 4.0,
            names_per_domain: 120,
            over_limit: OverLimit::Refuse,
            cache_entries: 4096,
            cache_max_ttl: Duration::from_secs(300),
        }
    }
}

impl DnsConfig {
    /// Checks what serde cannot; errors name the field.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |field: &str, message: &str| Err((format!("dns.{field}"), message.to_owned()));
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(60) {
            return bad("timeout", "must be between 1ms and 60s");
        }
        if !(1..=253).contains(&self.max_name) {
            return bad("max_name", "must be 1-253 (the longest name DNS allows)");
        }
        if !(1..=63).contains(&self.max_label) {
            return bad("max_label", "must be 1-63 (the longest label DNS allows)");
        }
        if self.entropy_min_label == 0 {
            return bad("entropy_min_label", "must be at least 1");
        }
        if !self.max_label_entropy.is_finite() || self.max_label_entropy <= 0.0 {
            return bad("max_label_entropy", "must be a positive number of bits per character");
        }
        if self.cache_entries > 1_000_000 {
            return bad("cache_entries", "must be at most 1000000 (each holds up to 4 KiB)");
        }
        if self.cache_max_ttl.is_zero() || self.cache_max_ttl > Duration::from_secs(86_400) {
            return bad(
                "cache_max_ttl",
                "must be between 1s and 1d (set cache_entries = 0 to keep nothing)",
            );
        }
        for (n, name) in self.names.iter().enumerate() {
            let bare = name.strip_prefix("*.").unwrap_or(name);
            let ok = !bare.is_empty()
                && bare.len() <= 253
                && bare.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                });
            if !ok {
                return bad(
                    &format!("names[{n}]"),
                    &format!("`{name}` is not a host name (or `*.` and one)"),
                );
            }
        }
        for (n, up) in self.upstreams.iter().enumerate() {
            if up.port() == 0 || up.ip().is_unspecified() {
                return bad(&format!("upstreams[{n}]"), "must be a reachable address and port");
            }
        }
        Ok(())
    }
}
