//! `[listener]`: where agents' connections arrive. Normally only through the
//! kernel's redirect (a connection without a kernel record is refused); two
//! opt-in ways in for hosts or agents where the eBPF redirect is not used:
//! a NAT REDIRECT rule (iptables/nftables), and listeners dialled
//! explicitly, each standing for one destination.
use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use serde::{Deserialize, Serialize};

/// The loopback listener the kernel redirects agents to.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerConfig {
    /// Port on both loopback addresses. Below 1024 by default, so that while the
    /// gateway is down no unprivileged process can bind it and pose as the gateway.
    pub port: u16,
    /// IPv4 listen address (must be loopback).
    pub ipv4: Ipv4Addr,
    /// IPv6 listen address (must be loopback).
    pub ipv6: Ipv6Addr,
    /// How long to wait for an upstream TCP connect.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// A connection with no bytes either way for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Connections relayed at once; further ones are refused and logged.
    pub max_connections: usize,
    /// How long to wait for an agent's first bytes to detect its protocol;
    /// server-first protocols (SSH, SMTP, MySQL) send nothing and are relayed
    /// as raw TCP after this wait.
    #[serde(with = "humantime_serde")]
    pub detect_timeout: Duration,
    /// Time allowed for an HTTP request head on inspected connections
    /// (slow clients are cut off).
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Largest HTTP/1.1 request head (request line and headers) accepted on
    /// inspected connections, in bytes; a larger one is answered 431. It is
    /// also the read buffer an idle keep-alive connection keeps: at 16 KiB
    /// (or hyper's default, ~400 KiB) 1,000 idle connections held 12 MiB
    /// more than at the default 8 KiB (measured). At least 8192.
    pub max_request_head: usize,
    /// An inspected HTTP/1.1 keep-alive connection quiet for this long (no
    /// request in flight, no bytes either way) is parked: hyper's state and
    /// buffers (~20 KB) are freed, and a new hyper connection takes over at
    /// the agent's next request. Agents' HTTP clients keep pools of idle
    /// connections; parking costs a few microseconds per request that
    /// follows a pause. Parked or not, a kept-alive connection whose next
    /// request head has not fully arrived within `header_timeout` of the
    /// last exchange is closed (a head begun just before that gets at least
    /// twice `park_idle` to end). `0s`: never park.
    #[serde(with = "humantime_serde")]
    pub park_idle: Duration,
    /// At SIGTERM the gateway stops accepting and lets open sessions finish
    /// for up to this long (idle kept-alive HTTP connections are closed at
    /// once); then it closes the rest. Every session's `connection` event
    /// is recorded before `gateway_stopped`.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Also accept connections a NAT REDIRECT rule (iptables/nftables) sent
    /// to the listener: the original destination comes from conntrack
    /// (SO_ORIGINAL_DST) and the caller from sock_diag and /proc. The rule
    /// must not match the gateway's own connections (they are refused as a
    /// loop). Off by default: then only the kernel redirect gets in.
    pub nat_redirect: bool,
    /// A port of its own (on both loopback addresses) for NAT-redirected
    /// connections: NAT rules point here (`--to-ports`) and `port` then
    /// takes only the kernel's redirects. Needs `nat_redirect`. Keeping the
    /// two apart matters when both ways in are used on one host: conntrack
    /// keeps a NAT binding (client port -> listener) for 120 s after the
    /// connection closes, and a kernel-redirected connection from the same
    /// client port to the same listener address clashes with it and loses
    /// its SYN (a 1 s retry).
    pub nat_port: Option<u16>,
    /// Listeners agents dial explicitly (no redirect), each standing for
    /// one destination.
    pub explicit: Vec<ExplicitListener>,
}

/// A listener that agents dial on purpose, e.g. a DSN or base URL pointing
/// at the gateway. Its connections are handled as if they had been made to
/// `destination`: the same targets, policy, credentials and audit.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ExplicitListener {
    /// Where to listen (loopback).
    pub listen: SocketAddr,
    /// The destination connections to it stand for.
    pub destination: SocketAddr,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            port: 977,
            ipv4: Ipv4Addr::LOCALHOST,
            ipv6: Ipv6Addr::LOCALHOST,
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(3600),
            max_connections: 4096,
            detect_timeout: Duration::from_millis(200),
            header_timeout: Duration::from_secs(30),
            max_request_head: 8 << 10,
            park_idle: Duration::from_millis(200),
            drain_timeout: Duration::from_secs(10),
            nat_redirect: false,
            nat_port: None,
            explicit: Vec::new(),
        }
    }
}

impl ListenerConfig {
    /// `port` on both loopback addresses (IPv4, IPv6).
    fn on_loopback(&self, port: u16) -> [SocketAddr; 2] {
        [
            SocketAddr::new(self.ipv4.into(), port),
            SocketAddr::new(self.ipv6.into(), port),
        ]
    }

    /// The redirect listeners' addresses (IPv4, IPv6).
    pub fn addresses(&self) -> [SocketAddr; 2] {
        self.on_loopback(self.port)
    }

    /// The NAT-only listeners' addresses, when `nat_port` is set.
    pub fn nat_addresses(&self) -> Vec<SocketAddr> {
        self.nat_port.map(|p| self.on_loopback(p).to_vec()).unwrap_or_default()
    }

    /// Checks the section; the error names the field.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |field: &str, message: String| Err((format!("listener.{field}"), message));
        if self.port == 0 {
            return bad("port", "must not be 0".into());
        }
        if !self.ipv4.is_loopback() {
            return bad("ipv4", format!("{} is not a loopback address", self.ipv4));
        }
        if !self.ipv6.is_loopback() {
            return bad("ipv6", format!("{} is not a loopback address", self.ipv6));
        }
        if !(8 << 10..=1 << 20).contains(&self.max_request_head) {
            return bad(
                "max_request_head",
                format!("{} is not between 8192 and 1048576 bytes", self.max_request_head),
            );
        }
        if self.max_connections == 0 {
            return bad("max_connections", "must be at least 1".into());
        }
        if self.connect_timeout.is_zero() || self.idle_timeout.is_zero() {
            return Err(("listener".into(), "timeouts must be greater than zero".into()));
        }
        match self.nat_port {
            Some(0) => return bad("nat_port", "must not be 0".into()),
            Some(p) if p == self.port => return bad("nat_port", format!("{p} is already `port`")),
            Some(_) if !self.nat_redirect => {
                return bad("nat_port", "needs `nat_redirect = true`".into());
            }
            _ => {}
        }
        let mut own = self.addresses().to_vec();
        own.extend(self.nat_addresses());
        let mut seen = std::collections::HashSet::new();
        for (n, e) in self.explicit.iter().enumerate() {
            let field = |f: &str| format!("explicit[{n}].{f}");
            if !e.listen.ip().is_loopback() || e.listen.port() == 0 {
                return bad(
                    &field("listen"),
                    format!("{} is not a loopback address with a port", e.listen),
                );
            }
            if own.contains(&e.listen) || !seen.insert(e.listen) {
                return bad(&field("listen"), format!("{} is already a listener", e.listen));
            }
            if e.destination.port() == 0 || e.destination.ip().is_unspecified() {
                return bad(&field("destination"), format!("{} is not a destination", e.destination));
            }
            let to_gateway = |a: &SocketAddr| a == &e.destination;
            if own.iter().any(to_gateway) || self.explicit.iter().any(|x| to_gateway(&x.listen)) {
                return bad(
                    &field("destination"),
                    format!("{} is the gateway itself", e.destination),
                );
            }
        }
        Ok(())
    }
}
