//! Redirect-rule lookup: longest CIDR match, then the first port range that
//! holds the port. Userspace copies every covering CIDR's rules into each
//! entry, so one trie lookup is enough.
use aya_ebpf::maps::lpm_trie::Key;
use gateway_common::{RuleSet, Settings, MAX_RULES_PER_PREFIX, SLOT_DEFAULT};

use crate::maps::{RULES_V4, RULES_V6};

/// A rule decision: a raw action byte and the counter slot it is charged to.
pub(crate) struct Verdict {
    pub(crate) action: u8,
    pub(crate) slot: u16,
}

/// Decision for an IPv4 destination (address bytes in network order).
#[inline(always)]
pub(crate) fn lookup_v4(addr: [u8; 4], port: u16, settings: &Settings) -> Verdict {
    pick(RULES_V4.get(Key::new(32, addr)), port, settings)
}

/// Decision for an IPv6 destination (address bytes in network order).
#[inline(always)]
pub(crate) fn lookup_v6(addr: [u8; 16], port: u16, settings: &Settings) -> Verdict {
    pick(RULES_V6.get(Key::new(128, addr)), port, settings)
}

#[inline(always)]
fn pick(set: Option<&RuleSet>, port: u16, settings: &Settings) -> Verdict {
    if let Some(set) = set {
        let len = set.len as usize;
        for i in 0..MAX_RULES_PER_PREFIX {
            if i >= len {
                break;
            }
            let entry = &set.entries[i];
            if port >= entry.port_lo && port <= entry.port_hi {
                return Verdict {
                    action: entry.action,
                    slot: entry.slot,
                };
            }
        }
    }
    Verdict {
        action: settings.default_action,
        slot: SLOT_DEFAULT,
    }
}
