//! Typed handles on the pinned maps, for the daemon and for CLI commands that
//! read kernel state while the daemon is down.
use std::{collections::BTreeMap, sync::Mutex};

use aya::{
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, Map, MapData, PerCpuArray},
    Ebpf,
};
use gateway_common::{
    ConnRecord, HandoffKey, RuleSet, RuleStats, Settings, MAP_EXEC_PENDING, MAP_HANDOFF, MAP_REVOKED_CGROUPS,
    MAP_REVOKED_PIDS, MAP_REVOKED_UIDS, MAP_RULES_V4, MAP_RULES_V6, MAP_RULE_STATS, MAP_SELECTED_CGROUPS,
    MAP_SELECTED_UIDS, MAP_SETTINGS, MAP_SOCKETS, MAP_UDP_HANDOFF,
};

use super::{pins::PinLayout, rules::CompiledRules, KernelError};

/// Where a map handle comes from.
enum Source<'a> {
    Loaded(&'a mut Ebpf),
    Pinned(&'a PinLayout),
}

impl Source<'_> {
    fn take(&mut self, name: &'static str) -> Result<Map, KernelError> {
        let err = |message: String| KernelError::Map { map: name, message };
        match self {
            Source::Loaded(ebpf) => ebpf
                .take_map(name)
                .ok_or_else(|| err("missing from the eBPF object".into())),
            Source::Pinned(layout) => {
                let path = layout.map(name);
                let data = MapData::from_pin(&path).map_err(|e| err(format!("open pin {}: {e}", path.display())))?;
                Map::from_map_data(data).map_err(|e| err(super::chain(&e)))
            }
        }
    }
}

macro_rules! typed {
    ($src:expr, $name:expr, $ty:ty) => {{
        let map = $src.take($name)?;
        <$ty>::try_from(map).map_err(|e| KernelError::Map {
            map: $name,
            message: super::chain(&e),
        })?
    }};
}

/// The rule, settings, selection and counter maps.
pub struct KernelMaps {
    rules_v4: LpmTrie<MapData, [u8; 4], RuleSet>,
    rules_v6: LpmTrie<MapData, [u8; 16], RuleSet>,
    stats: PerCpuArray<MapData, RuleStats>,
    settings: Array<MapData, Settings>,
    sockets: HashMap<MapData, u64, ConnRecord>,
    selected_cgroups: HashMap<MapData, u64, u8>,
    selected_uids: HashMap<MapData, u32, u8>,
    revoked_pids: HashMap<MapData, u32, u32>,
    revoked_uids: HashMap<MapData, u32, u32>,
    revoked_cgroups: HashMap<MapData, u64, u32>,
    exec_pending: HashMap<MapData, u32, u64>,
}

/// The hand-off map the listener consumes after each accept().
pub struct Handoff {
    map: Mutex<HashMap<MapData, HandoffKey, ConnRecord>>,
}

impl Handoff {
    /// Removes and returns the record for an accepted peer, if the kernel left one.
    pub fn take(&self, key: &HandoffKey) -> Option<ConnRecord> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let record = map.get(key, 0).ok()?;
        let _ = map.remove(key);
        Some(record)
    }

    /// Records published by the kernel and not yet consumed (should be ~0).
    pub fn pending(&self) -> usize {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.keys().filter(Result::is_ok).count()
    }
}

/// The listener's read-only view of kernel state: the revocation maps, for
/// connections that reached the gateway without passing the kernel hooks
/// (dialled explicitly, or sent by a NAT rule; the kernel never checked
/// their caller, so the listener does), and the redirected sockets' records
/// by socket cookie (where a record is found when its hand-off entry is).
pub struct KernelView {
    sockets: HashMap<MapData, u64, ConnRecord>,
    udp_handoff: HashMap<MapData, HandoffKey, ConnRecord>,
    pids: HashMap<MapData, u32, u32>,
    uids: HashMap<MapData, u32, u32>,
    cgroups: HashMap<MapData, u64, u32>,
    exec_pending: HashMap<MapData, u32, u64>,
}

impl KernelView {
    /// Opens the pinned maps.
    pub fn open(layout: &PinLayout) -> Result<Self, KernelError> {
        let mut src = Source::Pinned(layout);
        Ok(Self {
            sockets: typed!(src, MAP_SOCKETS, HashMap<MapData, u64, ConnRecord>),
            udp_handoff: typed!(src, MAP_UDP_HANDOFF, HashMap<MapData, HandoffKey, ConnRecord>),
            pids: typed!(src, MAP_REVOKED_PIDS, HashMap<MapData, u32, u32>),
            uids: typed!(src, MAP_REVOKED_UIDS, HashMap<MapData, u32, u32>),
            cgroups: typed!(src, MAP_REVOKED_CGROUPS, HashMap<MapData, u64, u32>),
            exec_pending: typed!(src, MAP_EXEC_PENDING, HashMap<MapData, u32, u64>),
        })
    }

    /// The record connect() left for a redirected socket, by its cookie.
    pub fn socket_record(&self, cookie: u64) -> Option<ConnRecord> {
        self.sockets.get(&cookie, 0).ok()
    }

    /// The record the kernel published for the sender of a DNS datagram,
    /// by its address as received (left in place: a socket sends many).
    pub fn dns_sender(&self, key: &HandoffKey) -> Option<ConnRecord> {
        self.udp_handoff.get(key, 0).ok()
    }

    /// Why a process may not connect, the same checks the connect hooks make:
    /// its pid is revoked, it is held after an exec until checked, its uid is
    /// revoked, or its cgroup or an ancestor (`cgroups`, any order) is.
    pub fn refusal(&self, pid: u32, uid: u32, cgroups: &[u64]) -> Option<String> {
        if let Ok(n) = self.pids.get(&pid, 0) {
            return Some(format!("process {pid} is revoked (revocation #{n})"));
        }
        if self.exec_pending.get(&pid, 0).is_ok() {
            return Some(format!("process {pid} is held until its new executable is checked"));
        }
        if let Ok(n) = self.uids.get(&uid, 0) {
            return Some(format!("uid {uid} is revoked (revocation #{n})"));
        }
        cgroups.iter().find_map(|id| {
            self.cgroups
                .get(id, 0)
                .ok()
                .map(|n| format!("cgroup {id} is revoked (revocation #{n})"))
        })
    }
}

fn open(mut src: Source<'_>) -> Result<(KernelMaps, Handoff), KernelError> {
    let maps = KernelMaps {
        rules_v4: typed!(src, MAP_RULES_V4, LpmTrie<MapData, [u8; 4], RuleSet>),
        rules_v6: typed!(src, MAP_RULES_V6, LpmTrie<MapData, [u8; 16], RuleSet>),
        stats: typed!(src, MAP_RULE_STATS, PerCpuArray<MapData, RuleStats>),
        settings: typed!(src, MAP_SETTINGS, Array<MapData, Settings>),
        sockets: typed!(src, MAP_SOCKETS, HashMap<MapData, u64, ConnRecord>),
        selected_cgroups: typed!(src, MAP_SELECTED_CGROUPS, HashMap<MapData, u64, u8>),
        selected_uids: typed!(src, MAP_SELECTED_UIDS, HashMap<MapData, u32, u8>),
        revoked_pids: typed!(src, MAP_REVOKED_PIDS, HashMap<MapData, u32, u32>),
        revoked_uids: typed!(src, MAP_REVOKED_UIDS, HashMap<MapData, u32, u32>),
        revoked_cgroups: typed!(src, MAP_REVOKED_CGROUPS, HashMap<MapData, u64, u32>),
        exec_pending: typed!(src, MAP_EXEC_PENDING, HashMap<MapData, u32, u64>),
    };
    let handoff = Handoff {
        map: Mutex::new(typed!(src, MAP_HANDOFF, HashMap<MapData, HandoffKey, ConnRecord>)),
    };
    Ok((maps, handoff))
}

impl KernelMaps {
    /// Takes the maps out of a freshly loaded object.
    pub fn from_loaded(ebpf: &mut Ebpf) -> Result<(Self, Handoff), KernelError> {
        open(Source::Loaded(ebpf))
    }

    /// Opens the pinned maps (the daemon need not be running).
    pub fn from_pins(layout: &PinLayout) -> Result<Self, KernelError> {
        open(Source::Pinned(layout)).map(|(maps, _)| maps)
    }

    /// Writes the settings every hook reads.
    pub fn set_settings(&mut self, settings: Settings) -> Result<(), KernelError> {
        self.settings.set(0, settings, 0).map_err(|e| KernelError::Map {
            map: MAP_SETTINGS,
            message: super::chain(&e),
        })
    }

    /// The current settings.
    pub fn settings(&self) -> Result<Settings, KernelError> {
        self.settings.get(&0, 0).map_err(|e| KernelError::Map {
            map: MAP_SETTINGS,
            message: super::chain(&e),
        })
    }

    /// Turns holding of new images (for exe/agent revocations) on or off.
    pub fn set_watch_exec(&mut self, on: bool) -> Result<(), KernelError> {
        let mut settings = self.settings()?;
        settings.watch_exec = u8::from(on);
        self.set_settings(settings)
    }

    /// Replaces the selected cgroup ids and uids.
    pub fn set_selection(&mut self, cgroups: &[u64], uids: &[u32]) -> Result<(), KernelError> {
        let err = |map: &'static str| {
            move |e: aya::maps::MapError| KernelError::Map {
                map,
                message: super::chain(&e),
            }
        };
        for id in cgroups {
            self.selected_cgroups
                .insert(id, 1, 0)
                .map_err(err(MAP_SELECTED_CGROUPS))?;
        }
        let stale: Vec<u64> = self
            .selected_cgroups
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !cgroups.contains(k))
            .collect();
        for id in stale {
            self.selected_cgroups.remove(&id).map_err(err(MAP_SELECTED_CGROUPS))?;
        }
        for uid in uids {
            self.selected_uids.insert(uid, 1, 0).map_err(err(MAP_SELECTED_UIDS))?;
        }
        let stale: Vec<u32> = self
            .selected_uids
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !uids.contains(k))
            .collect();
        for uid in stale {
            self.selected_uids.remove(&uid).map_err(err(MAP_SELECTED_UIDS))?;
        }
        Ok(())
    }

    /// Makes the rule tries hold exactly `compiled`. New and changed entries are
    /// written before stale ones are removed; each entry changes atomically.
    pub fn apply_rules(&mut self, compiled: &CompiledRules) -> Result<(), KernelError> {
        let err = |map: &'static str| {
            move |e: aya::maps::MapError| KernelError::Map {
                map,
                message: super::chain(&e),
            }
        };
        for ((len, addr), set) in &compiled.v4 {
            self.rules_v4
                .insert(&Key::new(*len, *addr), set, 0)
                .map_err(err(MAP_RULES_V4))?;
        }
        for ((len, addr), set) in &compiled.v6 {
            self.rules_v6
                .insert(&Key::new(*len, *addr), set, 0)
                .map_err(err(MAP_RULES_V6))?;
        }
        let stale4: Vec<_> = self
            .rules_v4
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !compiled.v4.contains_key(&(k.prefix_len(), k.data())))
            .collect();
        for key in stale4 {
            self.rules_v4.remove(&key).map_err(err(MAP_RULES_V4))?;
        }
        let stale6: Vec<_> = self
            .rules_v6
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !compiled.v6.contains_key(&(k.prefix_len(), k.data())))
            .collect();
        for key in stale6 {
            self.rules_v6.remove(&key).map_err(err(MAP_RULES_V6))?;
        }
        Ok(())
    }

    /// The counters of every slot, summed over CPUs; slots never hit are left out.
    pub fn stats(&self) -> Result<BTreeMap<u16, RuleStats>, KernelError> {
        let mut out = BTreeMap::new();
        for (slot, values) in self.stats.iter().enumerate() {
            let values = values.map_err(|e| KernelError::Map {
                map: MAP_RULE_STATS,
                message: super::chain(&e),
            })?;
            let mut sum = RuleStats::default();
            for v in values.iter() {
                sum.redirected += v.redirected;
                sum.passed += v.passed;
                sum.denied += v.denied;
            }
            if sum != RuleStats::default() {
                out.insert(slot as u16, sum);
            }
        }
        Ok(out)
    }

    /// Zeroes one slot's counters (a slot handed to a new rule starts at zero).
    pub fn reset_stats(&mut self, slot: u16) -> Result<(), KernelError> {
        let err = |e: aya::maps::MapError| KernelError::Map {
            map: MAP_RULE_STATS,
            message: super::chain(&e),
        };
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| KernelError::Map {
            map: MAP_RULE_STATS,
            message: format!("{what}: {e}"),
        })?;
        let zeros =
            aya::maps::PerCpuValues::try_from(vec![RuleStats::default(); cpus]).map_err(|e| KernelError::Map {
                map: MAP_RULE_STATS,
                message: super::chain(&e),
            })?;
        self.stats.set(u32::from(slot), zeros, 0).map_err(err)
    }

    /// Refuses every connect and UDP send of a process (tgid), its future children included.
    pub fn revoke_pid(&mut self, tgid: u32, revocation: u32) -> Result<(), KernelError> {
        let err = |e: aya::maps::MapError| KernelError::Map {
            map: MAP_REVOKED_PIDS,
            message: super::chain(&e),
        };
        self.revoked_pids.insert(tgid, revocation, 0).map_err(err)
    }

    /// Refuses every connect and UDP send of a user's processes.
    pub fn revoke_uid(&mut self, uid: u32, revocation: u32) -> Result<(), KernelError> {
        let err = |e: aya::maps::MapError| KernelError::Map {
            map: MAP_REVOKED_UIDS,
            message: super::chain(&e),
        };
        self.revoked_uids.insert(uid, revocation, 0).map_err(err)
    }

    /// Refuses every connect and UDP send from a cgroup and its descendants.
    pub fn revoke_cgroup(&mut self, cgroup_id: u64, revocation: u32) -> Result<(), KernelError> {
        let err = |e: aya::maps::MapError| KernelError::Map {
            map: MAP_REVOKED_CGROUPS,
            message: super::chain(&e),
        };
        self.revoked_cgroups.insert(cgroup_id, revocation, 0).map_err(err)
    }

    /// Removes every kernel entry of one revocation; returns how many.
    pub fn unrevoke(&mut self, revocation: u32) -> usize {
        remove_valued(&mut self.revoked_pids, revocation)
            + remove_valued(&mut self.revoked_uids, revocation)
            + remove_valued(&mut self.revoked_cgroups, revocation)
    }

    /// (tgid, revocation) of every revoked process entry.
    pub fn revoked_pids(&self) -> Vec<(u32, u32)> {
        self.revoked_pids.iter().filter_map(Result::ok).collect()
    }

    /// Drops a revoked-pid entry (the process has exited).
    pub fn forget_pid(&mut self, tgid: u32) {
        let _ = self.revoked_pids.remove(&tgid);
    }

    /// Processes held since their exec, with the exec time (CLOCK_BOOTTIME ns).
    pub fn exec_pending(&self) -> Vec<(u32, u64)> {
        self.exec_pending.iter().filter_map(Result::ok).collect()
    }

    /// Releases a held process (checked and not revoked, or gone).
    pub fn release_exec(&mut self, tgid: u32) {
        let _ = self.exec_pending.remove(&tgid);
    }

    /// How many redirected sockets the kernel is tracking now.
    pub fn tracked_sockets(&self) -> usize {
        self.sockets.keys().filter(Result::is_ok).count()
    }
}

/// Removes the entries of `map` whose value is `value`; returns how many.
fn remove_valued<K: aya::Pod>(map: &mut HashMap<MapData, K, u32>, value: u32) -> usize {
    let keys: Vec<K> = map
        .iter()
        .filter_map(Result::ok)
        .filter(|(_, v)| *v == value)
        .map(|(k, _)| k)
        .collect();
    keys.iter().filter(|k| map.remove(k).is_ok()).count()
}
