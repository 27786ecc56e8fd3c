//! The maps every hook shares. Names must match `gateway_common::MAP_*`;
//! userspace refuses to start when one is missing.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use gateway_common::{
    ConnRecord, HandoffKey, RuleSet, RuleStats, Settings, MAX_PREFIXES, MAX_REVOKED, MAX_RULE_SLOTS,
    MAX_TRACKED_SOCKETS,
};

#[map(name = "RULES_V4")]
pub(crate) static RULES_V4: LpmTrie<[u8; 4], RuleSet> = LpmTrie::with_max_entries(MAX_PREFIXES, 0);

#[map(name = "RULES_V6")]
pub(crate) static RULES_V6: LpmTrie<[u8; 16], RuleSet> = LpmTrie::with_max_entries(MAX_PREFIXES, 0);

#[map(name = "RULE_STATS")]
pub(crate) static RULE_STATS: PerCpuArray<RuleStats> = PerCpuArray::with_max_entries(MAX_RULE_SLOTS, 0);

#[map(name = "SETTINGS")]
pub(crate) static SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);

#[map(name = "SOCKETS")]
pub(crate) static SOCKETS: LruHashMap<u64, ConnRecord> = LruHashMap::with_max_entries(MAX_TRACKED_SOCKETS, 0);

#[map(name = "HANDOFF")]
pub(crate) static HANDOFF: LruHashMap<HandoffKey, ConnRecord> = LruHashMap::with_max_entries(MAX_TRACKED_SOCKETS, 0);

#[map(name = "UDP_HANDOFF")]
pub(crate) static UDP_HANDOFF: LruHashMap<HandoffKey, ConnRecord> =
    LruHashMap::with_max_entries(MAX_TRACKED_SOCKETS, 0);

#[map(name = "SELECTED_CGROUPS")]
pub(crate) static SELECTED_CGROUPS: HashMap<u64, u8> = HashMap::with_max_entries(256, 0);

#[map(name = "SELECTED_UIDS")]
pub(crate) static SELECTED_UIDS: HashMap<u32, u8> = HashMap::with_max_entries(256, 0);

#[map(name = "REVOKED_PIDS")]
pub(crate) static REVOKED_PIDS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_REVOKED, 0);

#[map(name = "REVOKED_UIDS")]
pub(crate) static REVOKED_UIDS: HashMap<u32, u32> = HashMap::with_max_entries(1024, 0);

#[map(name = "REVOKED_CGROUPS")]
pub(crate) static REVOKED_CGROUPS: HashMap<u64, u32> = HashMap::with_max_entries(1024, 0);

#[map(name = "EXEC_PENDING")]
pub(crate) static EXEC_PENDING: LruHashMap<u32, u64> = LruHashMap::with_max_entries(MAX_REVOKED, 0);

#[map(name = "EXEC_EVENTS")]
pub(crate) static EXEC_EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// The settings, or `None` when userspace has not configured the gateway yet
/// (every caller then fails closed).
#[inline(always)]
pub(crate) fn settings() -> Option<&'static Settings> {
    let settings = SETTINGS.get(0)?;
    if settings.configured == 0 {
        return None;
    }
    Some(settings)
}

/// Which counter of a rule slot to bump.
#[derive(Clone, Copy)]
pub(crate) enum Counter {
    Redirected,
    Passed,
    Denied,
}

/// Bumps one counter of a slot. Counting never changes a verdict.
#[inline(always)]
pub(crate) fn count(slot: u16, counter: Counter) {
    if let Some(stats) = RULE_STATS.get_ptr_mut(u32::from(slot)) {
        // SAFETY: per-CPU value, so no other CPU writes it concurrently.
        unsafe {
            match counter {
                Counter::Redirected => (*stats).redirected += 1,
                Counter::Passed => (*stats).passed += 1,
                Counter::Denied => (*stats).denied += 1,
            }
        }
    }
}
