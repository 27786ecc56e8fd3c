//! Exfiltration guards on query names: data leaves through DNS as long
//! names, long random-looking labels, or many distinct names under one
//! domain (each a few bytes of a file). Each guard names what it found;
//! `[dns] over_limit` says whether that refuses the query or goes to policy.
use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::{config::DnsConfig, types::AgentName};

/// Window of the distinct-names count.
const WINDOW: Duration = Duration::from_secs(60);
/// (agent, domain) windows kept before they are all dropped (bounds memory
/// against an agent that asks under ever new domains; each is also capped).
const WINDOWS: usize = 16_384;

/// Distinct names one agent asked under one domain in the current window.
struct Window {
    start: Instant,
    names: HashSet<String>,
}

/// The guards, with the per-agent counts they keep, and the servers whose
/// answers are trusted to bind names to addresses.
pub struct Guards {
    config: DnsConfig,
    windows: Mutex<HashMap<(AgentName, String), Window>>,
    trusted: HashSet<SocketAddr>,
    /// Idle upstream sockets (the resolver's state lives here with the counts).
    pub upstream_sockets: super::forward::UdpPool,
    /// Answers kept for their TTL.
    pub cache: super::cache::AnswerCache,
}

/// The `nameserver` lines of a resolv.conf, as port-53 addresses (a
/// scoped IPv6 `fe80::1%eth0` loses its scope; unreadable lines are skipped).
pub fn nameservers(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver")).then_some(())?;
            let addr = words.next()?.split('%').next()?;
            addr.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53))
        })
        .collect()
}

/// Shannon entropy of `label`, bits per byte.
pub fn entropy(label: &[u8]) -> f64 {
    if label.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in label {
        counts[usize::from(b.to_ascii_lowercase())] += 1;
    }
    let n = label.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

/// The domain a name is counted under: its last two labels.
fn domain_of(text: &str) -> &str {
    let mut dots = text.rmatch_indices('.');
    dots.next();
    match dots.next() {
        Some((i, _)) => &text[i + 1..],
        None => text,
    }
}

impl Guards {
    /// Guards with the configured limits; `system` are this host's own
    /// nameservers (trusted like `upstreams` and `trusted_servers`).
    pub fn new(config: &DnsConfig, system: &[SocketAddr]) -> Self {
        let trusted = (config.upstreams.iter())
            .chain(&config.trusted_servers)
            .chain(system)
            .map(|a| SocketAddr::new(a.ip().to_canonical(), a.port()))
            .collect();
        Self {
            config: config.clone(),
            windows: Mutex::default(),
            trusted,
            upstream_sockets: super::forward::UdpPool::default(),
            cache: super::cache::AnswerCache::new(config.cache_entries, config.cache_max_ttl),
        }
    }

    /// Whether answers from `server` may bind names to addresses.
    pub fn trusts(&self, server: SocketAddr) -> bool {
        self.trusted
            .contains(&SocketAddr::new(server.ip().to_canonical(), server.port()))
    }

    /// The limits.
    pub fn config(&self) -> &DnsConfig {
        &self.config
    }

    /// The first guard `name` is over, with why; counts it for `agent`.
    pub fn check(&self, agent: &AgentName, text: &str, labels: &[Vec<u8>]) -> Option<(&'static str, String)> {
        let c = &self.config;
        if text.len() > c.max_name {
            return Some((
                "name_length",
                format!("the name is {} characters long (limit {})", text.len(), c.max_name),
            ));
        }
        for label in labels {
            if label.len() > c.max_label {
                return Some((
                    "label_length",
                    format!("a label is {} bytes long (limit {})", label.len(), c.max_label),
                ));
            }
            if label.len() >= c.entropy_min_label {
                let bits = entropy(label);
                if bits > c.max_label_entropy {
                    return Some((
                        "label_entropy",
                        format!(
                            "a {}-byte label looks random ({bits:.2} bits per character, limit {})",
                            label.len(),
                            c.max_label_entropy
                        ),
                    ));
                }
            }
        }
        if c.names_per_domain > 0 {
            let domain = domain_of(text);
            let now = Instant::now();
            let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
            if windows.len() >= WINDOWS {
                windows.clear();
            }
            let window = windows
                .entry((agent.clone(), domain.to_owned()))
                .or_insert_with(|| Window {
                    start: now,
                    names: HashSet::new(),
                });
            if now.duration_since(window.start) >= WINDOW {
                window.start = now;
                window.names.clear();
            }
            if !window.names.contains(text) {
                if window.names.len() >= c.names_per_domain as usize {
                    return Some((
                        "names_per_domain",
                        format!(
                            "more than {} distinct names under {domain} in a minute",
                            c.names_per_domain
                        ),
                    ));
                }
                window.names.insert(text.to_owned());
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guards() -> Guards {
        Guards::new(
            &DnsConfig {
                names_per_domain: 3,
                trusted_servers: vec!["10.0.0.53:53".parse().unwrap()],
                ..DnsConfig::default()
            },
            &nameservers(
                "# comment\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\noptions edns0\nnameserver nonsense\n",
            ),
        )
    }

    #[test]
    fn trusted_servers_are_the_configured_and_the_systems() {
        let g = guards();
        for s in [
            "10.0.0.53:53",
            "127.0.0.53:53",
            "[fe80::1]:53",
            "[::ffff:127.0.0.53]:53",
        ] {
            assert!(g.trusts(s.parse().unwrap()), "{s}");
        }
        for s in ["10.0.0.53:5353", "127.0.0.54:53", "8.8.8.8:53"] {
            assert!(!g.trusts(s.parse().unwrap()), "{s}");
        }
    }

    fn labels(text: &str) -> Vec<Vec<u8>> {
        text.split('.').map(|l| l.as_bytes().to_vec()).collect()
    }

    #[test]
    fn ordinary_names_pass() {
        let g = guards();
        let agent = AgentName("a".into());
        for name in [
            "api.openai.com",
            "files.pythonhosted.org",
            "xn--bcher-kva.example",
            "db-primary-01.internal.example",
        ] {
            assert_eq!(g.check(&agent, name, &labels(name)), None, "{name}");
        }
    }

    #[test]
    fn long_random_labels_are_caught_and_words_are_not() {
        let g = guards();
        let agent = AgentName("a".into());
        let hex = "4a6f686e20446f652c2031323320";
        let b32 = "mfrggzdfmztwq2lknnwg23tpobyxe43u";
        assert_eq!(
            g.check(
                &agent,
                &format!("{b32}.t.example"),
                &labels(&format!("{b32}.t.example"))
            )
            .unwrap()
            .0,
            "label_entropy"
        );
        // Hex stays under 4 bits per character: caught by other guards, not this one.
        assert!(entropy(hex.as_bytes()) <= 4.0);
        let words = "productionwebserverstaging";
        assert!(entropy(words.as_bytes()) < 4.0, "{}", entropy(words.as_bytes()));
        let long = "a".repeat(64);
        assert_eq!(g.check(&agent, &long, &labels(&long)).unwrap().0, "label_length");
    }

    #[test]
    fn distinct_names_under_one_domain_are_counted_per_agent() {
        let g = guards();
        let (a, b) = (AgentName("a".into()), AgentName("b".into()));
        for i in 0..3 {
            let n = format!("c{i}.tunnel.example");
            assert_eq!(g.check(&a, &n, &labels(&n)), None);
        }
        // Asking a name again is not a new name.
        assert_eq!(g.check(&a, "c0.tunnel.example", &labels("c0.tunnel.example")), None);
        assert_eq!(
            g.check(&a, "c3.tunnel.example", &labels("c3.tunnel.example"))
                .unwrap()
                .0,
            "names_per_domain"
        );
        assert_eq!(g.check(&b, "c3.tunnel.example", &labels("c3.tunnel.example")), None);
        assert_eq!(domain_of("x.y.tunnel.example"), "tunnel.example");
        assert_eq!(domain_of("localhost"), "localhost");
    }
}
