//! `[targets.postgres]`: how the gateway logs in to a PostgreSQL target, how
//! it answers the agent's TLS request, and which result columns it masks.
use serde::{Deserialize, Serialize};

use crate::types::BUILTIN_NAMES;

/// PostgreSQL settings of a target with `protocol = "postgres"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSpec {
    /// The role the gateway logs in as upstream (with the target's credential).
    pub user: String,
    /// Log in to this database whatever the agent asks for; by default the
    /// agent's choice is used.
    pub database: Option<String>,
    /// Upstream TLS.
    #[serde(default)]
    pub tls: UpstreamTls,
    /// How an agent's SSLRequest is answered.
    #[serde(default)]
    pub agent_tls: AgentTls,
    /// What happens to SQL the parser cannot read.
    #[serde(default)]
    pub unparsed: Unparsed,
    /// Value detectors applied to every text value in results (built-in or
    /// custom detector names), on top of the policy's `@mask`.
    #[serde(default)]
    pub detectors: Vec<String>,
    /// Column rules: `table.column`, `schema.table.column` or `*.column`.
    #[serde(default)]
    pub columns: Vec<ColumnRule>,
    /// How long an upstream session stays open for reuse after an agent's
    /// session ended cleanly (reset with `DISCARD ALL`, reused only by the
    /// same agent with the same login); `0s` closes every one at once.
    #[serde(default = "default_pool_idle", with = "humantime_serde")]
    pub pool_idle: std::time::Duration,
}

fn default_pool_idle() -> std::time::Duration {
    std::time::Duration::from_secs(30)
}

/// Upstream TLS mode (verified against the system roots plus `ca_file`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamTls {
    /// Never ask for TLS.
    Disable,
    /// Use TLS when the server offers it (and then verify it).
    #[default]
    Prefer,
    /// Refuse to log in without verified TLS.
    Require,
}

/// The answer to an agent's SSLRequest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentTls {
    /// Answer `N`: the agent continues in plaintext (on the local hop only).
    #[default]
    Refuse,
    /// Answer `S` and terminate TLS with a certificate from the local CA.
    Terminate,
}

/// Policy for statements the SQL parser rejects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unparsed {
    /// Deny them.
    #[default]
    Deny,
    /// Ask policy, with `kind = "unparsed"` and no tables (a policy must
    /// permit that kind explicitly).
    Policy,
}

/// How a masked column's values are replaced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnStyle {
    /// `[REDACTED]`.
    #[default]
    Full,
    /// Shape kept, most characters hidden: `j***@example.com`, `****1234`.
    Partial,
    /// NULL.
    Null,
}

/// One column rule.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnRule {
    /// `table.column`, `schema.table.column` or `*.column`.
    pub column: String,
    /// Replacement.
    #[serde(default)]
    pub style: ColumnStyle,
}

/// A column rule split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnPattern {
    /// Schema, when given.
    pub schema: Option<String>,
    /// Table, `None` for `*`.
    pub table: Option<String>,
    /// Column.
    pub column: String,
}

impl ColumnRule {
    /// Splits `[schema.]table.column`; names are compared as PostgreSQL
    /// stores unquoted identifiers (lower case).
    pub fn pattern(&self) -> Result<ColumnPattern, String> {
        let parts: Vec<&str> = self.column.split('.').collect();
        let bad = || {
            format!(
                "column rule `{}`: write `table.column`, `schema.table.column` or `*.column`",
                self.column
            )
        };
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        let name = |s: &str| s.to_ascii_lowercase();
        match parts.as_slice() {
            ["*", column] => Ok(ColumnPattern {
                schema: None,
                table: None,
                column: name(column),
            }),
            [table, column] if *column != "*" => Ok(ColumnPattern {
                schema: None,
                table: Some(name(table)),
                column: name(column),
            }),
            [schema, table, column] if *table != "*" && *column != "*" && *schema != "*" => Ok(ColumnPattern {
                schema: Some(name(schema)),
                table: Some(name(table)),
                column: name(column),
            }),
            _ => Err(bad()),
        }
    }
}

impl PostgresSpec {
    /// Checks names, detectors and column rules; `custom` are the operator's
    /// own detector names.
    pub fn validate(&self, custom: &[&str]) -> Result<(), String> {
        if self.user.is_empty() {
            return Err("postgres.user must name the role the gateway logs in as".into());
        }
        if let Some(bad) = self
            .detectors
            .iter()
            .find(|d| !BUILTIN_NAMES.contains(&d.as_str()) && !custom.contains(&d.as_str()))
        {
            return Err(format!("postgres.detectors: unknown detector `{bad}`"));
        }
        for (n, rule) in self.columns.iter().enumerate() {
            rule.pattern().map_err(|e| format!("postgres.columns[{n}]: {e}"))?;
        }
        Ok(())
    }
}
