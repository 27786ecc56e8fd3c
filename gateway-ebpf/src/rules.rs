//! Redirect-rule lookup: longest CIDR match, then the first port range of the
//! caller's transport that holds the port. Userspace copies every covering
//! CIDR's rules into each entry, so one trie lookup is enough.
use aya_ebpf::maps::lpm_trie::Key;
use gateway_common::{RuleSet, MAX_RULES_PER_PREFIX};

use crate::maps::{RULES_V4, RULES_V6};

/// A rule decision: a raw action byte and the counter slot it is charged to.
pub(crate) struct Verdict {
    pub(crate) action: u8,
    pub(crate) slot: u16,
}

/// `pick`'s answer when no rule matches.
const NO_RULE: u32 = u32::MAX;

/// The rule for an IPv4 destination (address bytes in network order) and
/// transport (`IPPROTO_TCP` or `IPPROTO_UDP`), if one matches.
#[inline(always)]
pub(crate) fn lookup_v4(addr: [u8; 4], port: u16, protocol: u8) -> Option<Verdict> {
    unpack(pick(RULES_V4.get(Key::new(32, addr)), port, protocol))
}

/// The rule for an IPv6 destination (address bytes in network order).
#[inline(always)]
pub(crate) fn lookup_v6(addr: [u8; 16], port: u16, protocol: u8) -> Option<Verdict> {
    unpack(pick(RULES_V6.get(Key::new(128, addr)), port, protocol))
}

#[inline(always)]
fn unpack(packed: u32) -> Option<Verdict> {
    if packed == NO_RULE {
        return None;
    }
    Some(Verdict {
        action: (packed >> 16) as u8,
        slot: packed as u16,
    })
}

/// The first matching entry as `action << 16 | slot`, or [`NO_RULE`].
/// A plain integer, because LLVM may return an `Option` of a small struct
/// with bytes left unset on the `None` path, and the verifier refuses to read
/// a register no path wrote ("R5 !read_ok").
#[inline(always)]
fn pick(set: Option<&RuleSet>, port: u16, protocol: u8) -> u32 {
    let Some(set) = set else {
        return NO_RULE;
    };
    let len = set.len as usize;
    for i in 0..MAX_RULES_PER_PREFIX {
        if i >= len {
            break;
        }
        let entry = &set.entries[i];
        if entry.protocol == protocol && port >= entry.port_lo && port <= entry.port_hi {
            return (u32::from(entry.action) << 16) | u32::from(entry.slot);
        }
    }
    NO_RULE
}
