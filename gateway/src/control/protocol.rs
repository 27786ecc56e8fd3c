//! Requests and responses on the control socket: one JSON line each way.
use serde::{Deserialize, Serialize};

use super::{Grant, GrantRequest, Revocation, RevokeRequest, RuleSource};
use crate::{
    config::{PortRange, RuleAction, RuleSpec},
    kernel::AttachedLink,
    proxy::LiveConn,
    targets::BindingView,
};

/// What the CLI asks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// The full status report.
    Status,
    /// The rules with their counters.
    RulesList,
    /// Add a runtime rule.
    RulesAdd {
        /// The rule.
        rule: RuleSpec,
    },
    /// Remove a runtime rule.
    RulesRemove {
        /// Its name.
        name: String,
    },
    /// Add a time-limited grant.
    GrantAdd {
        /// What to grant.
        grant: GrantRequest,
    },
    /// List grants in force.
    GrantsList,
    /// End a grant early.
    GrantRevoke {
        /// Grant id.
        id: String,
    },
    /// Revoke processes (incident response).
    Revoke {
        /// What to revoke.
        revoke: RevokeRequest,
    },
    /// List revocations in force.
    RevocationsList,
    /// Lift a revocation.
    Unrevoke {
        /// Revocation id.
        id: String,
    },
    /// Reviews (held requests) of this run.
    ApprovalsList,
    /// One review.
    ApprovalShow {
        /// Review id.
        id: String,
    },
    /// Approve a held request.
    Approve {
        /// Review id.
        id: String,
        /// What the approval covers.
        scope: crate::review::Scope,
    },
    /// Deny a held request.
    Deny {
        /// Review id.
        id: String,
        /// Why (shown to the agent and recorded).
        reason: String,
    },
    /// Names agents resolved through the gateway, for one address or all.
    Names {
        /// Only this address.
        ip: Option<std::net::IpAddr>,
    },
}

/// What the daemon answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    /// Status report.
    Status(Box<StatusReport>),
    /// Learned names.
    Names {
        /// The live bindings.
        names: Vec<BindingView>,
    },
    /// Rule list.
    Rules {
        /// The rules in precedence order of their sources.
        rules: Vec<RuleView>,
    },
    /// Revocations in force.
    Revocations {
        /// The revocations.
        revocations: Vec<Revocation>,
    },
    /// Reviews.
    Reviews {
        /// The reviews.
        reviews: Vec<crate::review::ReviewRecord>,
    },
    /// One review.
    Review {
        /// The review.
        review: Box<crate::review::ReviewRecord>,
    },
    /// Grants in force.
    Grants {
        /// The grants.
        grants: Vec<Grant>,
    },
    /// Done.
    Ok {
        /// What happened.
        message: String,
    },
    /// Refused or failed.
    Error {
        /// Why.
        message: String,
    },
}

/// A rule with where it came from and its counters.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuleView {
    /// Name.
    pub name: String,
    /// Built-in, config file or runtime.
    pub source: RuleSource,
    /// Destination network.
    pub cidr: String,
    /// Ports.
    pub ports: PortRange,
    /// Action.
    pub action: RuleAction,
    /// tcp or udp.
    #[serde(default)]
    pub protocol: crate::config::Transport,
    /// Counter slot.
    pub slot: u16,
    /// connect() calls redirected.
    pub redirected: u64,
    /// connect() calls passed.
    pub passed: u64,
    /// connect() calls denied.
    pub denied: u64,
}

/// Learned names `status` lists (`interlock names` lists them all).
pub const STATUS_NAMES: usize = 50;

/// Everything `interlock status` shows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    /// Gateway pid.
    pub pid: u32,
    /// Listener addresses.
    pub listeners: Vec<String>,
    /// Cgroups the programs are attached to.
    pub cgroups: Vec<String>,
    /// Pinned links.
    pub links: Vec<AttachedLink>,
    /// Pin directory.
    pub pin_dir: String,
    /// Rules with counters.
    pub rules: Vec<RuleView>,
    /// Connections no rule matched: (redirected, passed, denied).
    pub default_counts: (u64, u64, u64),
    /// UDP/443 sends refused.
    pub quic_denied: u64,
    /// Agent port-53 sends and connects sent to the gateway's resolver.
    #[serde(default)]
    pub dns_redirected: u64,
    /// Agent UDP no rule opened, refused (QUIC aside).
    #[serde(default)]
    pub udp_denied: u64,
    /// Agent sockets of types the gateway does not carry (ICMP, raw,
    /// SCTP...), refused.
    #[serde(default)]
    pub socket_denied: u64,
    /// Agent DNS-over-TLS (TCP/853) connects refused.
    #[serde(default)]
    pub dot_denied: u64,
    /// Names agents resolved through the gateway, bound to addresses
    /// (the first [`STATUS_NAMES`] of them).
    #[serde(default)]
    pub names: Vec<BindingView>,
    /// How many bindings there are in all.
    #[serde(default)]
    pub names_total: usize,
    /// Redirected sockets the kernel tracks (removed when they close).
    pub tracked_sockets: usize,
    /// Hand-off records not yet consumed by the listener.
    pub pending_handoffs: usize,
    /// Live connections.
    pub connections: Vec<LiveConn>,
}

impl From<&RuleSpec> for RuleView {
    fn from(r: &RuleSpec) -> Self {
        Self {
            name: r.name.clone(),
            source: RuleSource::Runtime,
            cidr: r.cidr.to_string(),
            ports: r.ports,
            action: r.action,
            protocol: r.protocol,
            slot: 0,
            redirected: 0,
            passed: 0,
            denied: 0,
        }
    }
}
