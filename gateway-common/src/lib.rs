//! Types shared between Interlock's kernel programs and its userspace daemon.
//!
//! Everything here crosses the kernel/user boundary through BPF maps, so every
//! struct is `#[repr(C)]`, uses fixed-width integers only, spells out its
//! padding, never uses `bool`, and has its size pinned by a compile-time
//! assertion. Changing a layout means bumping [`MAP_ABI_VERSION`], because maps
//! are pinned and outlive the binary that created them.
#![no_std]

/// Version of the map layouts below. Pinned maps live in a directory named
/// after it, so a gateway built with another layout never reads old maps.
pub const MAP_ABI_VERSION: u32 = 3;

/// LPM trie of IPv4 redirect rules: `Key<[u8; 4]>` -> [`RuleSet`].
pub const MAP_RULES_V4: &str = "RULES_V4";
/// LPM trie of IPv6 redirect rules: `Key<[u8; 16]>` -> [`RuleSet`].
pub const MAP_RULES_V6: &str = "RULES_V6";
/// Per-CPU array of [`RuleStats`], indexed by rule slot.
pub const MAP_RULE_STATS: &str = "RULE_STATS";
/// One-element array holding the [`Settings`].
pub const MAP_SETTINGS: &str = "SETTINGS";
/// LRU hash: socket cookie (u64) -> [`ConnRecord`], for every redirected socket.
pub const MAP_SOCKETS: &str = "SOCKETS";
/// LRU hash: [`HandoffKey`] -> [`ConnRecord`], read by the proxy after accept().
pub const MAP_HANDOFF: &str = "HANDOFF";
/// LRU hash: [`HandoffKey`] -> [`ConnRecord`] for DNS datagrams sent to the
/// gateway, keyed by the sender's address as the gateway receives it.
pub const MAP_UDP_HANDOFF: &str = "UDP_HANDOFF";
/// Hash: cgroup id (u64) -> u8, cgroups whose processes are agents.
pub const MAP_SELECTED_CGROUPS: &str = "SELECTED_CGROUPS";
/// Hash: uid (u32) -> u8, users whose processes are agents.
pub const MAP_SELECTED_UIDS: &str = "SELECTED_UIDS";

/// Hash: tgid (u32) -> revocation number (u32); connects from it are refused.
pub const MAP_REVOKED_PIDS: &str = "REVOKED_PIDS";
/// Hash: uid (u32) -> revocation number (u32).
pub const MAP_REVOKED_UIDS: &str = "REVOKED_UIDS";
/// Hash: cgroup id (u64) -> revocation number (u32); covers descendants.
pub const MAP_REVOKED_CGROUPS: &str = "REVOKED_CGROUPS";
/// LRU hash: tgid (u32) -> CLOCK_BOOTTIME of its exec (u64): processes that
/// exec'd while exe/agent revocations are active and are not yet checked.
pub const MAP_EXEC_PENDING: &str = "EXEC_PENDING";
/// Ring buffer of [`ExecEvent`]s for the userspace checker.
pub const MAP_EXEC_EVENTS: &str = "EXEC_EVENTS";

/// Every map that is pinned and therefore survives a gateway restart.
pub const PINNED_MAPS: [&str; 13] = [
    MAP_RULES_V4,
    MAP_RULES_V6,
    MAP_RULE_STATS,
    MAP_SETTINGS,
    MAP_SOCKETS,
    MAP_HANDOFF,
    MAP_UDP_HANDOFF,
    MAP_SELECTED_CGROUPS,
    MAP_SELECTED_UIDS,
    MAP_REVOKED_PIDS,
    MAP_REVOKED_UIDS,
    MAP_REVOKED_CGROUPS,
    MAP_EXEC_PENDING,
];

/// Program names as they appear in the eBPF object.
pub const PROG_CONNECT4: &str = "interlock_connect4";
/// connect6 hook.
pub const PROG_CONNECT6: &str = "interlock_connect6";
/// getpeername4 hook.
pub const PROG_GETPEERNAME4: &str = "interlock_getpeername4";
/// getpeername6 hook.
pub const PROG_GETPEERNAME6: &str = "interlock_getpeername6";
/// UDP sendmsg4 hook.
pub const PROG_SENDMSG4: &str = "interlock_sendmsg4";
/// UDP sendmsg6 hook.
pub const PROG_SENDMSG6: &str = "interlock_sendmsg6";
/// UDP recvmsg4 hook: answers from the gateway's DNS listener appear to come
/// from the server the agent asked.
pub const PROG_RECVMSG4: &str = "interlock_recvmsg4";
/// UDP recvmsg6 hook.
pub const PROG_RECVMSG6: &str = "interlock_recvmsg6";
/// sock_create hook: agents may open only TCP and UDP sockets.
pub const PROG_SOCK_CREATE: &str = "interlock_sock_create";
/// sock_release hook: a closed agent socket's record is forgotten.
pub const PROG_SOCK_RELEASE: &str = "interlock_sock_release";
/// cgroup_skb egress hook: publishes the record of each DNS datagram sent to
/// the gateway under the sender's address.
pub const PROG_UDP_EGRESS: &str = "interlock_udp_egress";
/// sched_process_fork tracepoint: children of revoked processes are revoked.
pub const PROG_FORK: &str = "interlock_fork";
/// sched_process_exec tracepoint: new images are checked against revocations.
pub const PROG_EXEC: &str = "interlock_exec";
/// sock_ops hand-off program (not named `sockops`: bpf-linker clashes with the section name).
pub const PROG_SOCK_OPS: &str = "interlock_handoff";

/// Capacity of the rule trie maps (distinct CIDRs per family).
pub const MAX_PREFIXES: u32 = 1024;
/// Number of rule slots (counters); slots below [`FIRST_RULE_SLOT`] are reserved.
pub const MAX_RULE_SLOTS: u32 = 1024;
/// Counter slot for connections no rule matched (the default action).
pub const SLOT_DEFAULT: u16 = 0;
/// Counter slot for UDP/443 (QUIC) sends refused so clients fall back to TCP.
pub const SLOT_QUIC: u16 = 1;
/// Counter slot for connects and sends refused because the process is revoked.
pub const SLOT_REVOKED: u16 = 2;
/// Counter slot for DNS (port 53, UDP and TCP) sent to the gateway's resolver.
pub const SLOT_DNS: u16 = 3;
/// Counter slot for agent UDP no rule opened (refused).
pub const SLOT_UDP_DEFAULT: u16 = 4;
/// Counter slot for agent sockets of a type the gateway does not carry
/// (ICMP "ping", raw, SCTP...), refused at socket().
pub const SLOT_SOCKET: u16 = 5;
/// Counter slot for agent DNS over TLS (TCP/853) connects, refused while
/// the gateway resolves for agents (it could not read those names).
pub const SLOT_DOT: u16 = 6;
/// First slot handed to a configured rule.
pub const FIRST_RULE_SLOT: u16 = 7;
/// Capacity of the revocation maps.
pub const MAX_REVOKED: u32 = 16384;
/// Most port-range entries one CIDR can carry, inherited ones included.
pub const MAX_RULES_PER_PREFIX: usize = 16;
/// Capacity of the per-socket record maps.
pub const MAX_TRACKED_SOCKETS: u32 = 65536;
/// How deep the kernel looks up the cgroup tree for a selected ancestor.
pub const MAX_CGROUP_DEPTH: i32 = 16;

/// [`RuleEntry::protocol`] of a TCP rule (the IP protocol number).
pub const IPPROTO_TCP: u8 = 6;
/// [`RuleEntry::protocol`] of a UDP rule.
pub const IPPROTO_UDP: u8 = 17;

/// What a matching rule does to a connect() or, for UDP, a send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Action {
    /// Let the connection go to its destination untouched.
    Pass = 1,
    /// Rewrite the destination to the gateway's listener.
    Redirect = 2,
    /// Fail connect() with EPERM.
    Deny = 3,
}

impl Action {
    /// Decodes a raw action byte; unknown values are `None` (the kernel treats them as deny).
    pub fn from_raw(raw: u8) -> Option<Self> {
        match raw {
            1 => Some(Self::Pass),
            2 => Some(Self::Redirect),
            3 => Some(Self::Deny),
            _ => None,
        }
    }
}

/// One port range of a rule, as stored in a trie value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct RuleEntry {
    /// First port of the range, host byte order.
    pub port_lo: u16,
    /// Last port of the range (inclusive), host byte order.
    pub port_hi: u16,
    /// An [`Action`] as u8.
    pub action: u8,
    /// The transport it applies to: [`IPPROTO_TCP`] or [`IPPROTO_UDP`].
    pub protocol: u8,
    /// Counter slot in [`MAP_RULE_STATS`].
    pub slot: u16,
}
const _: () = assert!(core::mem::size_of::<RuleEntry>() == 8);

/// Value of a rule trie entry: the port-range rules for one CIDR, most specific
/// first, followed by the rules inherited from every covering CIDR. The kernel
/// takes the first entry whose port range holds the destination port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct RuleSet {
    /// Number of valid entries.
    pub len: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// The entries; only the first `len` are meaningful.
    pub entries: [RuleEntry; MAX_RULES_PER_PREFIX],
}
const _: () = assert!(core::mem::size_of::<RuleSet>() == 8 + 8 * MAX_RULES_PER_PREFIX);

impl Default for RuleSet {
    fn default() -> Self {
        Self {
            len: 0,
            _pad: 0,
            entries: [RuleEntry::default(); MAX_RULES_PER_PREFIX],
        }
    }
}

/// Counters of one rule slot (per CPU in the kernel; summed in userspace).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct RuleStats {
    /// connect() calls rewritten to the gateway.
    pub redirected: u64,
    /// connect() calls let through.
    pub passed: u64,
    /// connect() / sendmsg() calls refused with EPERM.
    pub denied: u64,
}
const _: () = assert!(core::mem::size_of::<RuleStats>() == 24);

/// [`Settings::dns`] value: DNS goes through the gateway.
pub const DNS_VIA_GATEWAY: u8 = 1;

/// `select_all` value: every process in an attached cgroup is an agent.
pub const SELECT_ALL_ATTACHED: u8 = 1;

/// Gateway-wide settings the hooks read on every call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Settings {
    /// Non-zero once userspace has written real settings; zero makes every hook deny.
    pub configured: u32,
    /// Socket mark (SO_MARK) the gateway puts on its own upstream sockets; such
    /// sockets are never redirected. Zero disables the exemption.
    pub bypass_mark: u32,
    /// Listener IPv4 address, network byte order (as in `bpf_sock_addr.user_ip4`).
    pub proxy_ip4: u32,
    /// Listener IPv6 address, four network-order words.
    pub proxy_ip6: [u32; 4],
    /// Listener port, host byte order.
    pub proxy_port: u16,
    /// [`Action`] when no rule matches.
    pub default_action: u8,
    /// [`SELECT_ALL_ATTACHED`] or 0 (then only selected cgroups/uids are agents).
    pub select_all: u8,
    /// Offset of `child_pid` in the sched_process_fork tracepoint record on
    /// this kernel (the layout changes between kernels); 0 disables propagation.
    pub fork_child_pid_offset: u16,
    /// Non-zero while exe or agent revocations exist: new images are held
    /// (connects refused) until userspace has checked them.
    pub watch_exec: u8,
    /// [`DNS_VIA_GATEWAY`]: agents' port-53 traffic (UDP and TCP) goes to the
    /// gateway's resolver on `proxy_port`; 0: port 53 follows the rules.
    pub dns: u8,
    /// Explicit padding.
    pub _pad1: u32,
}
const _: () = assert!(core::mem::size_of::<Settings>() == 40);

/// A process that exec'd while exe/agent revocations are active.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ExecEvent {
    /// Its tgid.
    pub tgid: u32,
    /// Explicit padding.
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<ExecEvent>() == 8);

/// What the kernel remembers about one redirected connect().
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ConnRecord {
    /// Cgroup id (cgroup2 inode number) of the calling task.
    pub cgroup_id: u64,
    /// Cookie of the agent's socket.
    pub socket_cookie: u64,
    /// Cookie of the network namespace the agent's socket lives in.
    pub netns_cookie: u64,
    /// CLOCK_BOOTTIME at connect(), to detect a pid reused before lookup.
    pub connect_boot_ns: u64,
    /// Original destination address; IPv4 in the first four bytes.
    pub orig_addr: [u8; 16],
    /// `comm` of the calling thread, NUL padded.
    pub comm: [u8; 16],
    /// Process id (tgid) of the caller.
    pub pid: u32,
    /// Thread id of the caller.
    pub tid: u32,
    /// Real uid of the caller.
    pub uid: u32,
    /// Real gid of the caller.
    pub gid: u32,
    /// Original destination port, host byte order.
    pub orig_port: u16,
    /// Address family of the original destination (2 = IPv4, 10 = IPv6); an
    /// IPv4-mapped IPv6 destination is recorded as IPv4.
    pub orig_family: u16,
    /// Counter slot of the rule that redirected it.
    pub rule_slot: u16,
    /// Explicit padding.
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<ConnRecord>() == 88);

/// Key under which sock_ops publishes a record for the proxy: the agent
/// socket's local address as the proxy will see it as the accepted peer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct HandoffKey {
    /// Network namespace cookie (ports collide across namespaces).
    pub netns_cookie: u64,
    /// Agent-side address; IPv4 in the first four bytes.
    pub addr: [u8; 16],
    /// Agent-side port, host byte order.
    pub port: u16,
    /// 2 = IPv4, 10 = IPv6 (IPv4-mapped addresses are stored as IPv4).
    pub family: u16,
    /// Explicit padding.
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<HandoffKey>() == 32);

/// AF_INET as stored in records.
pub const FAMILY_V4: u16 = 2;
/// AF_INET6 as stored in records.
pub const FAMILY_V6: u16 = 10;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C), made of integers and arrays of integers,
    // with every padding byte spelled out as a field, so any bit pattern is valid.
    unsafe impl aya::Pod for super::RuleEntry {}
    unsafe impl aya::Pod for super::RuleSet {}
    unsafe impl aya::Pod for super::RuleStats {}
    unsafe impl aya::Pod for super::Settings {}
    unsafe impl aya::Pod for super::ConnRecord {}
    unsafe impl aya::Pod for super::HandoffKey {}
    unsafe impl aya::Pod for super::ExecEvent {}
}
