//! Compiling an ordered rule list into the LPM trie entries the hooks read.
//!
//! The kernel does a single longest-prefix lookup and then scans the entry's
//! port ranges. So each CIDR's entry carries its own rules and, after them, the
//! rules of every CIDR that covers it: a port the specific CIDR does not
//! mention still falls through to the broader rules, exactly as if the kernel
//! had walked up the tree.
use std::collections::BTreeMap;

use gateway_common::{Action, RuleEntry, RuleSet, MAX_RULES_PER_PREFIX};
use ipnet::IpNet;

use super::KernelError;

/// A rule as the kernel needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRule {
    /// Counter slot.
    pub slot: u16,
    /// Destination network (canonical: no host bits).
    pub cidr: IpNet,
    /// First port.
    pub port_lo: u16,
    /// Last port (inclusive).
    pub port_hi: u16,
    /// What to do.
    pub action: Action,
    /// The transport (`IPPROTO_TCP` or `IPPROTO_UDP`).
    pub protocol: u8,
}

/// Trie contents per family, keyed by (prefix length, address bytes).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CompiledRules {
    /// IPv4 entries.
    pub v4: BTreeMap<(u32, [u8; 4]), RuleSet>,
    /// IPv6 entries.
    pub v6: BTreeMap<(u32, [u8; 16]), RuleSet>,
}

/// Precedence: a longer prefix first, then a narrower port range, then the
/// order the rules were given in.
fn precedence(rule: &KernelRule, index: usize) -> (std::cmp::Reverse<u8>, u32, usize) {
    let width = u32::from(rule.port_hi) - u32::from(rule.port_lo);
    (std::cmp::Reverse(rule.cidr.prefix_len()), width, index)
}

/// Compiles `rules` (in priority order for equal CIDR and port width).
pub fn compile(rules: &[KernelRule]) -> Result<CompiledRules, KernelError> {
    let mut out = CompiledRules::default();
    for rule in rules {
        let prefix = rule.cidr;
        let mut covering: Vec<(usize, &KernelRule)> = rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.cidr.contains(&prefix))
            .collect();
        covering.sort_by_key(|(i, r)| precedence(r, *i));
        if covering.len() > MAX_RULES_PER_PREFIX {
            return Err(KernelError::Rules(format!(
                "{prefix} is covered by {} rules; at most {MAX_RULES_PER_PREFIX} can apply to one network",
                covering.len()
            )));
        }
        let mut set = RuleSet {
            len: covering.len() as u32,
            ..RuleSet::default()
        };
        for (slot, (_, r)) in set.entries.iter_mut().zip(&covering) {
            *slot = RuleEntry {
                port_lo: r.port_lo,
                port_hi: r.port_hi,
                action: r.action as u8,
                protocol: r.protocol,
                slot: r.slot,
            };
        }
        let len = u32::from(prefix.prefix_len());
        match prefix {
            IpNet::V4(net) => {
                out.v4.insert((len, net.network().octets()), set);
            }
            IpNet::V6(net) => {
                out.v6.insert((len, net.network().octets()), set);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(slot: u16, cidr: &str, lo: u16, hi: u16, action: Action) -> KernelRule {
        KernelRule {
            slot,
            cidr: cidr.parse().unwrap(),
            port_lo: lo,
            port_hi: hi,
            action,
            protocol: gateway_common::IPPROTO_TCP,
        }
    }

    /// What the kernel would decide for TCP: longest prefix present, first port match.
    fn decide(c: &CompiledRules, addr: [u8; 4], port: u16) -> Option<(u8, u16)> {
        decide_for(c, addr, port, gateway_common::IPPROTO_TCP)
    }

    fn decide_for(c: &CompiledRules, addr: [u8; 4], port: u16, protocol: u8) -> Option<(u8, u16)> {
        let best =
            c.v4.iter()
                .filter(|((len, net), _)| {
                    let mask = if *len == 0 { 0 } else { u32::MAX << (32 - len) };
                    u32::from_be_bytes(addr) & mask == u32::from_be_bytes(*net)
                })
                .max_by_key(|((len, _), _)| *len)?;
        let set = best.1;
        set.entries[..set.len as usize]
            .iter()
            .find(|e| e.protocol == protocol && port >= e.port_lo && port <= e.port_hi)
            .map(|e| (e.action, e.slot))
    }

    #[test]
    fn udp_rules_apply_to_udp_only() {
        let mut ntp = rule(5, "10.0.0.0/8", 123, 123, Action::Pass);
        ntp.protocol = gateway_common::IPPROTO_UDP;
        let c = compile(&[rule(4, "0.0.0.0/0", 1, 65535, Action::Redirect), ntp]).unwrap();
        let udp = gateway_common::IPPROTO_UDP;
        assert_eq!(decide_for(&c, [10, 1, 2, 3], 123, udp), Some((Action::Pass as u8, 5)));
        assert_eq!(decide(&c, [10, 1, 2, 3], 123), Some((Action::Redirect as u8, 4)));
        // The TCP catch-all says nothing about UDP: no rule, so refused.
        assert_eq!(decide_for(&c, [192, 0, 2, 1], 123, udp), None);
    }

    #[test]
    fn specific_network_inherits_broader_rules() {
        let c = compile(&[
            rule(2, "0.0.0.0/0", 1, 65535, Action::Redirect),
            rule(3, "0.0.0.0/0", 53, 53, Action::Pass),
            rule(4, "10.0.0.0/8", 5432, 5432, Action::Deny),
        ])
        .unwrap();
        assert_eq!(decide(&c, [10, 1, 2, 3], 5432), Some((Action::Deny as u8, 4)));
        assert_eq!(decide(&c, [10, 1, 2, 3], 443), Some((Action::Redirect as u8, 2)));
        assert_eq!(decide(&c, [10, 1, 2, 3], 53), Some((Action::Pass as u8, 3)));
        assert_eq!(decide(&c, [192, 0, 2, 1], 53), Some((Action::Pass as u8, 3)));
        assert_eq!(decide(&c, [192, 0, 2, 1], 5432), Some((Action::Redirect as u8, 2)));
    }

    #[test]
    fn narrower_port_range_wins_on_the_same_network() {
        let c = compile(&[
            rule(2, "10.0.0.0/8", 1, 65535, Action::Pass),
            rule(3, "10.0.0.0/8", 80, 80, Action::Deny),
        ])
        .unwrap();
        assert_eq!(decide(&c, [10, 0, 0, 1], 80), Some((Action::Deny as u8, 3)));
        assert_eq!(decide(&c, [10, 0, 0, 1], 81), Some((Action::Pass as u8, 2)));
    }

    #[test]
    fn ipv6_rules_go_to_the_v6_trie() {
        let c = compile(&[
            rule(2, "::1/128", 1, 65535, Action::Pass),
            rule(3, "10.0.0.0/8", 1, 65535, Action::Pass),
        ])
        .unwrap();
        assert_eq!(c.v6.len(), 1);
        assert_eq!(c.v4.len(), 1);
        let (key, set) = c.v6.iter().next().unwrap();
        assert_eq!(key.0, 128);
        assert_eq!(set.len, 1);
    }

    #[test]
    fn too_many_covering_rules_is_an_error_naming_the_network() {
        let rules: Vec<_> = (0..17)
            .map(|i| rule(2 + i, "10.0.0.0/8", 1000 + i, 1000 + i, Action::Deny))
            .collect();
        let err = compile(&rules).unwrap_err().to_string();
        assert!(err.contains("10.0.0.0/8"), "{err}");
    }
}
