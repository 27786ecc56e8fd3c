//! Names learned from the answers the gateway's resolver passed to agents:
//! per agent, which names an address was given for, until the answer's TTL
//! (plus a grace) runs out. A connect to such an address is judged as that
//! name, so targets declared by `hosts` alone work for any protocol.
//!
//! Only answers from servers the operator trusts are learned (see
//! `[dns] trusted_servers`): an agent that could bind a target's name to an
//! address of its choosing through its own DNS server would get that
//! target's treatment, and its credential, there.
use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::types::AgentName;

/// Names kept per (agent, address); CDNs put many names on one address.
const NAMES_PER_ADDRESS: usize = 16;
/// The longest a binding lasts, whatever TTL the answer carried.
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// One name an address was given for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The name the agent asked (lower case, no final dot).
    pub name: String,
    /// When the binding ends.
    pub until: Instant,
}

/// A binding as `status` and `policy explain` show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BindingView {
    /// The agent that resolved the name.
    pub agent: AgentName,
    /// The address.
    pub ip: IpAddr,
    /// The name.
    pub name: String,
    /// Seconds left.
    pub expires_in: u64,
}

/// The learned bindings of every agent, bounded in number.
#[derive(Debug)]
pub struct Learned {
    map: Mutex<HashMap<(AgentName, IpAddr), Vec<Binding>>>,
    limit: usize,
}

impl Default for Learned {
    fn default() -> Self {
        Self::new(65_536)
    }
}

impl Learned {
    /// Keeps at most `limit` (agent, address) pairs.
    pub fn new(limit: usize) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            limit,
        }
    }

    /// Binds `addresses` (with their TTLs, seconds) to `name` for `agent`,
    /// each for its TTL plus `grace`. Returns how many were bound: when the
    /// table is full of live bindings, new ones are dropped (the address is
    /// then judged by itself, the stricter way) and a warning is logged.
    pub fn learn(&self, agent: &AgentName, name: &str, addresses: &[(IpAddr, u32)], grace: Duration) -> usize {
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let mut bound = 0;
        for &(ip, ttl) in addresses {
            let key = (agent.clone(), ip.to_canonical());
            if !map.contains_key(&key) && map.len() >= self.limit {
                map.retain(|_, v| {
                    v.retain(|b| b.until > now);
                    !v.is_empty()
                });
                if map.len() >= self.limit {
                    tracing::warn!(limit = self.limit, %agent, %ip, name, "learned-name table full: binding dropped");
                    continue;
                }
            }
            let until = now + Duration::from_secs(u64::from(ttl)).min(MAX_TTL) + grace;
            let names = map.entry(key).or_default();
            names.retain(|b| b.until > now && b.name != name);
            if names.len() >= NAMES_PER_ADDRESS {
                // The one ending soonest makes room.
                if let Some(i) = names.iter().enumerate().min_by_key(|(_, b)| b.until).map(|(i, _)| i) {
                    names.remove(i);
                }
            }
            names.push(Binding {
                name: name.to_owned(),
                until,
            });
            bound += 1;
        }
        bound
    }

    /// The live names `agent` resolved to `ip`, most recent first.
    pub fn names(&self, agent: &AgentName, ip: IpAddr) -> Vec<String> {
        let now = Instant::now();
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&(agent.clone(), ip.to_canonical()))
            .map(|v| {
                v.iter()
                    .rev()
                    .filter(|b| b.until > now)
                    .map(|b| b.name.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every live binding, optionally only for one address, sorted by
    /// agent, address and name.
    pub fn view(&self, ip: Option<IpAddr>) -> Vec<BindingView> {
        let now = Instant::now();
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<BindingView> = map
            .iter()
            .filter(|((_, addr), _)| ip.is_none_or(|want| want.to_canonical() == *addr))
            .flat_map(|((agent, addr), names)| {
                names.iter().filter(|b| b.until > now).map(|b| BindingView {
                    agent: agent.clone(),
                    ip: *addr,
                    name: b.name.clone(),
                    expires_in: b.until.duration_since(now).as_secs(),
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.agent, a.ip, &a.name).cmp(&(&b.agent, b.ip, &b.name)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(s: &str) -> AgentName {
        AgentName(s.to_owned())
    }

    #[test]
    fn names_are_per_agent_and_expire() {
        let l = Learned::new(8);
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        assert_eq!(l.learn(&agent("a"), "db.example", &[(ip, 0)], Duration::ZERO), 1);
        // TTL 0 and no grace: over at once.
        assert!(l.names(&agent("a"), ip).is_empty());
        l.learn(&agent("a"), "db.example", &[(ip, 60)], Duration::ZERO);
        assert_eq!(l.names(&agent("a"), ip), vec!["db.example".to_owned()]);
        assert!(l.names(&agent("b"), ip).is_empty(), "another agent's resolution");
        // An IPv4-mapped address is the same address.
        assert_eq!(l.names(&agent("a"), "::ffff:10.0.0.5".parse().unwrap()).len(), 1);
        l.learn(&agent("a"), "other.example", &[(ip, 60)], Duration::ZERO);
        assert_eq!(
            l.names(&agent("a"), ip),
            vec!["other.example".to_owned(), "db.example".to_owned()]
        );
        assert_eq!(l.view(Some(ip)).len(), 2);
    }

    #[test]
    fn the_table_is_bounded_and_keeps_what_it_has() {
        let l = Learned::new(2);
        let ips: Vec<IpAddr> = (1..=3).map(|i| IpAddr::from([10, 0, 0, i])).collect();
        let all: Vec<(IpAddr, u32)> = ips.iter().map(|ip| (*ip, 60)).collect();
        assert_eq!(l.learn(&agent("a"), "n.example", &all, Duration::ZERO), 2);
        assert!(l.names(&agent("a"), ips[2]).is_empty());
        // Names on one address are bounded too.
        for i in 0..40 {
            l.learn(&agent("a"), &format!("n{i}.example"), &[(ips[0], 60)], Duration::ZERO);
        }
        assert_eq!(l.names(&agent("a"), ips[0]).len(), NAMES_PER_ADDRESS);
        assert_eq!(l.names(&agent("a"), ips[0])[0], "n39.example");
    }
}
