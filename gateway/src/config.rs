//! The gateway's configuration: one serde tree, embedded defaults, validated at
//! load. A file that fails to parse or validate is rejected with its path,
//! line and field; nothing half-loaded is ever used.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod agent;
mod api;
mod audit;
mod dns;
mod limits;
mod listener;
mod masking;
mod postgres;
mod review;
mod rule;

pub use agent::{AgentSpec, CredentialSpec, OAuth2Spec, SecretSource, TargetProtocol, TargetSpec, UNKNOWN_AGENT};
pub use api::{ApiConfig, Roles};
pub use audit::{AuditBackend, AuditConfig, AuditPostgres, OnFailure};
pub use dns::{DnsConfig, OverLimit, RefuseWith};
pub use limits::{ByteSize, LimitsConfig, Rate};
pub use listener::{ExplicitListener, ListenerConfig};
pub use masking::{CustomDetector, MaskRule, MaskingConfig};
pub use postgres::{AgentTls, ColumnPattern, ColumnRule, ColumnStyle, PostgresSpec, Unparsed, UpstreamTls};
pub use review::{ControlConfig, ReviewConfig};
pub use rule::{PortRange, RuleAction, RuleSpec, Transport};

/// Errors loading or validating configuration. All are the operator's input.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config {path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// TOML syntax error or a field with a bad value or an unknown name.
    #[error("config {path}:{line}:{column}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What was wrong, as the parser says it.
        message: String,
    },
    /// The file parsed but a value breaks a rule the gateway depends on.
    #[error("config {path}: field `{field}`: {message}")]
    Invalid {
        /// The file (or `<embedded defaults>`).
        path: PathBuf,
        /// Dotted path of the field.
        field: String,
        /// What is wrong and what is expected.
        message: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the proxy listens.
    pub listener: ListenerConfig,
    /// Which processes are agents and how their traffic is steered.
    pub intercept: InterceptConfig,
    /// Redirect rules, in addition to the built-in loopback passes.
    pub rules: Vec<RuleSpec>,
    /// Where state, pins and the event log live.
    pub paths: PathsConfig,
    /// Named agents, matched in order against each caller's identity.
    pub agents: Vec<AgentSpec>,
    /// Named destinations for policies.
    pub targets: Vec<TargetSpec>,
    /// The policy files.
    pub policy: PolicyConfig,
    /// Masking detectors and rules.
    pub masking: MaskingConfig,
    /// The audit trail.
    pub audit: AuditConfig,
    /// Held requests.
    pub review: ReviewConfig,
    /// The operator socket.
    pub control: ControlConfig,
    /// The operator HTTP API.
    pub api: ApiConfig,
    /// What one agent may take of the gateway.
    pub limits: LimitsConfig,
    /// The resolver agents' DNS goes through.
    pub dns: DnsConfig,
}

/// Where the Cedar policies come from.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Directory with one `*.cedarschema` and any number of `*.cedar` files.
    /// Without it, the policies shipped in the binary apply (default deny).
    pub dir: Option<PathBuf>,
}

/// Selection of agent processes and the kernel-side defaults.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct InterceptConfig {
    /// Cgroups whose processes (and descendants) are agents; relative paths are
    /// under the cgroup2 mount. The first one is where `interlock exec` puts commands.
    pub cgroups: Vec<String>,
    /// Users whose processes are agents, wherever they run under `uid_scope`.
    pub uids: Vec<u32>,
    /// Cgroup the hooks attach to for uid selection ("/" is the whole host).
    pub uid_scope: String,
    /// SO_MARK on the gateway's own upstream sockets, which the hooks never redirect.
    pub bypass_mark: u32,
    /// Action when no rule matches a TCP destination.
    pub default_action: RuleAction,
    /// Let agents reach loopback directly (127.0.0.0/8 and ::1).
    pub pass_loopback: bool,
    /// Removed: DNS goes through the gateway's resolver (`[dns]`). Kept
    /// only to say so when an old config sets it.
    #[serde(skip_serializing)]
    pub pass_dns: Option<bool>,
}

impl Default for InterceptConfig {
    fn default() -> Self {
        Self {
            cgroups: vec![DEFAULT_AGENT_CGROUP.to_owned()],
            uids: Vec::new(),
            uid_scope: "/".to_owned(),
            bypass_mark: 0x1e57_0001,
            default_action: RuleAction::Redirect,
            pass_loopback: true,
            pass_dns: None,
        }
    }
}

/// The gateway-managed agent cgroup `interlock exec` uses by default.
pub const DEFAULT_AGENT_CGROUP: &str = "interlock.agents";

/// Filesystem locations.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PathsConfig {
    /// Persistent state (runtime rules, event log).
    pub state_dir: PathBuf,
    /// Runtime files (control socket).
    pub run_dir: PathBuf,
    /// Directory on the bpf filesystem for pinned links and maps.
    pub pin_dir: PathBuf,
    /// JSON-lines connection event log; defaults to `<state_dir>/events.jsonl`.
    pub events: Option<PathBuf>,
}

impl Default for PathsConfig {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("/var/lib/interlock"),
            run_dir: PathBuf::from("/run/interlock"),
            pin_dir: PathBuf::from("/sys/fs/bpf/interlock"),
            events: None,
        }
    }
}

impl Config {
    /// The SQLite audit store's file.
    pub fn audit_db(&self) -> PathBuf {
        self.audit
            .path
            .clone()
            .unwrap_or_else(|| self.paths.state_dir.join("audit.db"))
    }
}

impl PathsConfig {
    /// The event log file.
    pub fn events_file(&self) -> PathBuf {
        self.events
            .clone()
            .unwrap_or_else(|| self.state_dir.join("events.jsonl"))
    }

    /// The operator control socket.
    pub fn control_socket(&self) -> PathBuf {
        self.run_dir.join("control.sock")
    }
}

const EMBEDDED: &str = "<embedded defaults>";

impl Config {
    /// Loads `path`, or the embedded defaults when `None`.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let Some(path) = path else {
            let config = Self::default();
            config.validate(Path::new(EMBEDDED))?;
            return Ok(config);
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Self::parse(&text, path)?;
        // A relative policy directory is relative to the config file.
        if let (Some(dir), Some(base)) = (&config.policy.dir, path.parent()) {
            if dir.is_relative() {
                config.policy.dir = Some(base.join(dir));
            }
        }
        Ok(config)
    }

    /// Parses and validates TOML text; `path` is only used in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|span| line_col(text, span.start)).unwrap_or((0, 0));
            ConfigError::Parse {
                path: path.to_owned(),
                line,
                column,
                message: e.message().to_owned(),
            }
        })?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |field: &str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            field: field.to_owned(),
            message,
        };
        self.listener
            .validate()
            .map_err(|(field, message)| invalid(&field, message))?;
        let i = &self.intercept;
        if i.cgroups.is_empty() && i.uids.is_empty() {
            return Err(invalid(
                "intercept",
                "select agents with `cgroups` or `uids`; with neither, nothing is intercepted".into(),
            ));
        }
        for (n, cg) in i.cgroups.iter().enumerate() {
            if cg.split('/').any(|part| part == "..") {
                return Err(invalid(
                    &format!("intercept.cgroups[{n}]"),
                    format!("`{cg}` must not contain `..`"),
                ));
            }
        }
        if i.pass_dns.is_some() {
            return Err(invalid(
                "intercept.pass_dns",
                "was removed: agents' DNS now goes through the gateway's resolver, judged query by query; \
                 see `[dns]` (`enabled = false` makes port 53 like any other port)"
                    .into(),
            ));
        }
        if i.bypass_mark == 0 {
            return Err(invalid(
                "intercept.bypass_mark",
                "must be non-zero: it keeps the gateway's own connections from looping".into(),
            ));
        }
        let mut agents: Vec<&str> = Vec::new();
        for (n, agent) in self.agents.iter().enumerate() {
            agent
                .validate(&agents)
                .map_err(|m| invalid(&format!("agents[{n}]"), m))?;
            if agents.contains(&agent.name.as_str()) {
                return Err(invalid(
                    &format!("agents[{n}].name"),
                    format!("duplicate agent `{}`", agent.name),
                ));
            }
            agents.push(&agent.name);
        }
        let mut targets = std::collections::HashSet::new();
        let custom: Vec<&str> = self.masking.detectors.iter().map(|d| d.name.as_str()).collect();
        for (n, target) in self.targets.iter().enumerate() {
            target
                .validate(&custom)
                .map_err(|m| invalid(&format!("targets[{n}]"), m))?;
            if !targets.insert(target.name.as_str()) {
                return Err(invalid(
                    &format!("targets[{n}].name"),
                    format!("duplicate target `{}`", target.name),
                ));
            }
        }
        self.masking
            .validate()
            .map_err(|(field, message)| invalid(&field, message))?;
        self.audit
            .validate()
            .map_err(|(field, message)| invalid(&field, message))?;
        self.api
            .validate()
            .map_err(|(field, message)| invalid(&field, message))?;
        self.limits
            .validate(self.listener.max_connections)
            .map_err(|(field, message)| invalid(&field, message))?;
        self.dns
            .validate()
            .map_err(|(field, message)| invalid(&field, message))?;
        self.control
            .admin_gid()
            .map_err(|message| invalid("control.admin_group", message))?;
        let mut names = std::collections::HashSet::new();
        for (n, rule) in self.rules.iter().enumerate() {
            rule.validate().map_err(|m| invalid(&format!("rules[{n}]"), m))?;
            if !names.insert(rule.name.as_str()) {
                return Err(invalid(
                    &format!("rules[{n}].name"),
                    format!("duplicate rule name `{}`", rule.name),
                ));
            }
        }
        Ok(())
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(before.len(), |nl| before.len() - nl - 1) + 1;
    (line, column)
}

#[cfg(test)]
mod tests;
