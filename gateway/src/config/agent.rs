//! Named agents and declared targets, as written in config.
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::PortRange;

/// A named agent: every field given must match (first matching agent wins).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    /// The agent's name, as policies see it (`Interlock::Agent::"name"`).
    pub name: String,
    /// Exact executable path.
    pub exe: Option<String>,
    /// Regular expression over the command line (arguments joined by spaces).
    pub cmdline: Option<String>,
    /// Real uid at connect().
    pub uid: Option<u32>,
    /// User name of that uid.
    pub user: Option<String>,
    /// Cgroup path prefix (relative to the cgroup2 mount, e.g. `/interlock.agents/research`).
    pub cgroup: Option<String>,
    /// systemd unit.
    pub unit: Option<String>,
    /// Container id, or a prefix of it (at least 12 characters).
    pub container: Option<String>,
    /// The parent process is this agent.
    pub parent: Option<String>,
}

/// A destination policies can name (`Interlock::Target::"name"`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    /// Name.
    pub name: String,
    /// Networks it lives on.
    #[serde(default)]
    pub cidrs: Vec<IpNet>,
    /// Host names (TLS SNI) that identify it; `*.example.com` matches subdomains.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Ports.
    #[serde(default)]
    pub ports: PortRange,
    /// How the gateway treats its traffic.
    #[serde(default)]
    pub protocol: TargetProtocol,
    /// Send its traffic here instead of the original destination.
    pub upstream: Option<std::net::SocketAddr>,
    /// Extra CA bundle (PEM) to trust for its upstream TLS, on top of the system roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// The credential the gateway injects (the agent never holds it).
    pub credential: Option<CredentialSpec>,
    /// An LLM API: JSON request bodies are read (up to 8 MiB) so policy sees
    /// their `model`.
    #[serde(default)]
    pub llm: bool,
    /// PostgreSQL settings; required with `protocol = "postgres"`.
    pub postgres: Option<super::PostgresSpec>,
    /// Announce reviews of requests to this target here (Slack-compatible JSON).
    pub review_webhook: Option<String>,
    /// HTTP(S): pass `%2F` and `%5C` in request paths (kept encoded) instead
    /// of refusing them; for APIs that put encoded slashes in path
    /// segments. Off: such paths are answered 400, since servers disagree
    /// on whether they separate segments.
    #[serde(default)]
    pub encoded_slashes: bool,
    /// Connections are refused unless the agent resolved one of `hosts` to
    /// the address through the gateway first (no hard-coded addresses).
    #[serde(default)]
    pub require_resolution: bool,
}

/// How traffic to a target is handled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetProtocol {
    /// Relay bytes (TLS is passed through untouched).
    #[default]
    Tcp,
    /// Plaintext HTTP, inspected per request.
    Http,
    /// HTTPS: TLS is terminated with a certificate from the local CA,
    /// inspected per request, and re-encrypted (verified) upstream.
    Https,
    /// PostgreSQL: the gateway logs in upstream with the held credential and
    /// inspects every statement.
    Postgres,
}

/// Where a secret comes from and how it is sent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialSpec {
    /// Header to set (`authorization`, `x-api-key`, ...).
    #[serde(default = "default_header")]
    pub header: String,
    /// Prefix before the secret, e.g. `Bearer` (none for `x-api-key`).
    pub scheme: Option<String>,
    /// Read the secret from this environment variable of the gateway.
    pub env: Option<String>,
    /// Read the secret from this root-only file (re-read within a second of a change).
    pub file: Option<std::path::PathBuf>,
    /// Run this command (program and arguments, no shell) and use its output;
    /// it is run again after `refresh`.
    pub command: Option<Vec<String>>,
    /// Fetch short-lived tokens with the OAuth2 client-credentials grant.
    pub oauth2: Option<OAuth2Spec>,
    /// How long a command's secret is used before the command runs again.
    #[serde(default = "default_refresh", with = "humantime_serde")]
    pub refresh: std::time::Duration,
}

/// Where a credential's secret comes from: exactly one of the four.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretSource<'a> {
    /// An environment variable of the gateway.
    Env(&'a str),
    /// A root-only file.
    File(&'a std::path::Path),
    /// A command's output (program and arguments).
    Command(&'a [String]),
    /// OAuth2 client-credentials tokens.
    OAuth2(&'a OAuth2Spec),
}

impl CredentialSpec {
    /// The one source the spec names; `None` when it names none or several
    /// (which validation refuses).
    pub fn source(&self) -> Option<SecretSource<'_>> {
        match (&self.env, &self.file, &self.command, &self.oauth2) {
            (Some(var), None, None, None) => Some(SecretSource::Env(var)),
            (None, Some(path), None, None) => Some(SecretSource::File(path)),
            (None, None, Some(argv), None) => Some(SecretSource::Command(argv)),
            (None, None, None, Some(o)) => Some(SecretSource::OAuth2(o)),
            _ => None,
        }
    }
}

/// An OAuth2 client-credentials token source.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Spec {
    /// Token endpoint.
    pub token_url: String,
    /// Client id.
    pub client_id: String,
    /// Root-only file holding the client secret.
    pub client_secret_file: std::path::PathBuf,
    /// Scopes to ask for.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Extra CA bundle for the token endpoint's TLS.
    pub ca_file: Option<std::path::PathBuf>,
}

fn default_refresh() -> std::time::Duration {
    std::time::Duration::from_secs(300)
}

fn default_header() -> String {
    "authorization".into()
}

/// Reserved agent name for processes no agent matches.
pub const UNKNOWN_AGENT: &str = "unknown";

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

impl AgentSpec {
    /// Checks the spec on its own; `known` are the names of agents defined before it.
    pub fn validate(&self, known: &[&str]) -> Result<(), String> {
        if !valid_name(&self.name) || self.name == UNKNOWN_AGENT {
            return Err(format!(
                "agent name `{}` must use letters, digits, '-', '_' or '.', and not be `{UNKNOWN_AGENT}`",
                self.name
            ));
        }
        if let Some(re) = &self.cmdline {
            regex::Regex::new(re).map_err(|e| format!("cmdline pattern: {e}"))?;
        }
        if self.container.as_ref().is_some_and(|c| c.len() < 12) {
            return Err("container id prefix must be at least 12 characters".into());
        }
        if let Some(parent) = &self.parent {
            if !known.contains(&parent.as_str()) {
                return Err(format!(
                    "parent agent `{parent}` must be defined before `{}`",
                    self.name
                ));
            }
        }
        let any = self.exe.is_some()
            || self.cmdline.is_some()
            || self.uid.is_some()
            || self.user.is_some()
            || self.cgroup.is_some()
            || self.unit.is_some()
            || self.container.is_some()
            || self.parent.is_some();
        if !any {
            return Err(format!(
                "agent `{}` has no match fields; it would match every process",
                self.name
            ));
        }
        Ok(())
    }
}

impl TargetSpec {
    /// Checks the spec; `custom` are the operator's own detector names.
    pub fn validate(&self, custom: &[&str]) -> Result<(), String> {
        if !valid_name(&self.name) {
            return Err(format!(
                "target name `{}` must use letters, digits, '-', '_' or '.'",
                self.name
            ));
        }
        if self.cidrs.is_empty() && self.hosts.is_empty() {
            return Err(format!("target `{}` needs cidrs or hosts", self.name));
        }
        if self.require_resolution && self.hosts.is_empty() {
            return Err(format!(
                "target `{}`: require_resolution needs `hosts` (the names agents must resolve)",
                self.name
            ));
        }
        match (&self.postgres, self.protocol) {
            (Some(pg), TargetProtocol::Postgres) => {
                pg.validate(custom)
                    .map_err(|e| format!("target `{}`: {e}", self.name))?;
            }
            (None, TargetProtocol::Postgres) => {
                return Err(format!(
                    "target `{}`: protocol postgres needs a [targets.postgres] section (at least `user`)",
                    self.name
                ))
            }
            (Some(_), _) => {
                return Err(format!(
                    "target `{}`: a [targets.postgres] section needs protocol = \"postgres\"",
                    self.name
                ))
            }
            (None, _) => {}
        }
        if let Some(c) = &self.credential {
            let Some(source) = c.source() else {
                return Err(format!(
                    "target `{}`: credential needs exactly one of `env`, `file`, `command` or `oauth2`",
                    self.name
                ));
            };
            match source {
                SecretSource::OAuth2(o) => {
                    oauth2::TokenUrl::new(o.token_url.clone())
                        .map_err(|e| format!("target `{}`: oauth2 token_url: {e}", self.name))?;
                }
                SecretSource::Command([]) => {
                    return Err(format!("target `{}`: credential `command` is empty", self.name));
                }
                _ => {}
            }
            if http::HeaderName::from_bytes(c.header.as_bytes()).is_err() {
                return Err(format!("target `{}`: `{}` is not a header name", self.name, c.header));
            }
            if self.protocol == TargetProtocol::Tcp {
                return Err(format!(
                    "target `{}`: credentials need protocol http, https or postgres",
                    self.name
                ));
            }
            if self.protocol == TargetProtocol::Postgres && matches!(source, SecretSource::OAuth2(_)) {
                return Err(format!(
                    "target `{}`: a PostgreSQL password comes from `env`, `file` or `command`, not `oauth2`",
                    self.name
                ));
            }
            // Plaintext HTTP cannot prove who the upstream is: matched by Host
            // alone, an agent could aim the credential at any address.
            if self.protocol == TargetProtocol::Http && self.cidrs.is_empty() && self.upstream.is_none() {
                return Err(format!(
                    "target `{}`: a credential on a plaintext target needs `cidrs` or `upstream`, or an agent could send it anywhere by naming the host",
                    self.name
                ));
            }
        }
        Ok(())
    }
}
