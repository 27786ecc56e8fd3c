//! A redirect rule as written by an operator.
use std::{fmt, str::FromStr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// What a rule does, as written in config and on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleAction {
    /// Send the connection through the gateway.
    Redirect,
    /// Let it go directly.
    Pass,
    /// Refuse connect() with EPERM.
    Deny,
}

impl RuleAction {
    /// The kernel's encoding.
    pub fn to_kernel(self) -> gateway_common::Action {
        match self {
            Self::Redirect => gateway_common::Action::Redirect,
            Self::Pass => gateway_common::Action::Pass,
            Self::Deny => gateway_common::Action::Deny,
        }
    }
}

impl fmt::Display for RuleAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Redirect => "redirect",
            Self::Pass => "pass",
            Self::Deny => "deny",
        })
    }
}

impl FromStr for RuleAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "redirect" => Ok(Self::Redirect),
            "pass" => Ok(Self::Pass),
            "deny" => Ok(Self::Deny),
            _ => Err(format!("unknown action `{s}`: expected redirect, pass or deny")),
        }
    }
}

/// The transport a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// TCP connections (the default).
    #[default]
    Tcp,
    /// UDP datagrams: such a rule can only `pass` or `deny` (UDP is not
    /// proxied; without a rule an agent's UDP is refused, DNS aside).
    Udp,
}

impl Transport {
    /// The IP protocol number the kernel compares.
    pub fn ip_protocol(self) -> u8 {
        match self {
            Self::Tcp => gateway_common::IPPROTO_TCP,
            Self::Udp => gateway_common::IPPROTO_UDP,
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        })
    }
}

impl FromStr for Transport {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tcp" => Ok(Self::Tcp),
            "udp" => Ok(Self::Udp),
            _ => Err(format!("unknown protocol `{s}`: expected tcp or udp")),
        }
    }
}

/// An inclusive port range, written `443` or `1024-65535`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PortRangeRepr", into = "String")]
pub struct PortRange {
    /// First port.
    pub lo: u16,
    /// Last port (inclusive).
    pub hi: u16,
}

impl PortRange {
    /// Every port.
    pub const ALL: Self = Self { lo: 1, hi: 65535 };

    /// Number of ports covered (for ordering: narrower ranges win).
    pub fn width(&self) -> u32 {
        u32::from(self.hi) - u32::from(self.lo) + 1
    }
}

impl Default for PortRange {
    fn default() -> Self {
        Self::ALL
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum PortRangeRepr {
    One(u16),
    Text(String),
}

impl TryFrom<PortRangeRepr> for PortRange {
    type Error = String;
    fn try_from(repr: PortRangeRepr) -> Result<Self, String> {
        match repr {
            PortRangeRepr::One(p) => PortRange::from_str(&p.to_string()),
            PortRangeRepr::Text(s) => PortRange::from_str(&s),
        }
    }
}

impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parse = |p: &str| {
            p.trim()
                .parse::<u16>()
                .map_err(|_| format!("`{p}` is not a port number (1-65535)"))
        };
        let (lo, hi) = match s.split_once('-') {
            Some((lo, hi)) => (parse(lo)?, parse(hi)?),
            None => {
                let p = parse(s)?;
                (p, p)
            }
        };
        if lo == 0 || lo > hi {
            return Err(format!("port range `{s}` must be within 1-65535 with low <= high"));
        }
        Ok(Self { lo, hi })
    }
}

impl From<PortRange> for String {
    fn from(r: PortRange) -> String {
        r.to_string()
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

/// One redirect rule: destination CIDR, port range, action.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Unique name, used by `interlock rules remove` and in counters.
    pub name: String,
    /// Destination network, IPv4 or IPv6.
    pub cidr: IpNet,
    /// Destination ports.
    #[serde(default)]
    pub ports: PortRange,
    /// What happens to matching connections (or, for UDP, datagrams).
    pub action: RuleAction,
    /// The transport: `tcp` (default) or `udp`.
    #[serde(default)]
    pub protocol: Transport,
}

impl RuleSpec {
    /// Checks what serde cannot: a usable name and a canonical network.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(format!(
                "rule name `{}` must be non-empty and use only letters, digits, '-', '_' and '.'",
                self.name
            ));
        }
        if self.protocol == Transport::Udp && self.action == RuleAction::Redirect {
            return Err(
                "a udp rule can only pass or deny: UDP is not proxied (DNS goes to the gateway's resolver by itself)"
                    .to_owned(),
            );
        }
        if self.cidr.trunc() != self.cidr {
            return Err(format!(
                "cidr `{}` has host bits set; did you mean `{}`?",
                self.cidr,
                self.cidr.trunc()
            ));
        }
        if let IpNet::V6(net) = self.cidr {
            if net.prefix_len() >= 96 && net.network().to_ipv4_mapped().is_some() {
                return Err(format!(
                    "cidr `{}` is IPv4-mapped; write the IPv4 network instead (mapped destinations are judged by IPv4 rules)",
                    self.cidr
                ));
            }
        }
        Ok(())
    }
}
