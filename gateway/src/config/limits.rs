//! `[limits]`: what one agent may take of the gateway, so a flooding or
//! misbehaving agent is refused while the others are served.
use serde::{Deserialize, Serialize};

/// Per-agent shares and rates.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Connections one agent may hold at once; by default a quarter of
    /// `listener.max_connections` (at least one), so one agent holding its
    /// whole share leaves three quarters for the others.
    pub max_connections_per_agent: Option<usize>,
    /// New connections per second one agent may open (a token bucket).
    pub connection_rate: Rate,
    /// HTTP requests per second one agent may send, over all its connections.
    pub request_rate: Rate,
}

/// A token bucket: `per_second` on average, `burst` at once; a
/// `per_second` of 0 turns it off.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Sustained rate.
    pub per_second: f64,
    /// How many may come at once after a quiet spell.
    pub burst: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_connections_per_agent: None,
            connection_rate: Rate {
                per_second: 1000.0,
                burst: 2000,
            },
            request_rate: Rate {
                per_second: 10_000.0,
                burst: 20_000,
            },
        }
    }
}

impl LimitsConfig {
    /// The per-agent connection share, given the global maximum.
    pub fn connections_per_agent(&self, max_connections: usize) -> usize {
        self.max_connections_per_agent.unwrap_or((max_connections / 4).max(1))
    }

    /// Checks the values; errors name the field.
    pub fn validate(&self, max_connections: usize) -> Result<(), (String, String)> {
        if let Some(n) = self.max_connections_per_agent {
            if n == 0 || n > max_connections {
                return Err((
                    "limits.max_connections_per_agent".into(),
                    format!("must be between 1 and listener.max_connections ({max_connections})"),
                ));
            }
        }
        for (field, rate) in [
            ("connection_rate", self.connection_rate),
            ("request_rate", self.request_rate),
        ] {
            if !rate.per_second.is_finite() || rate.per_second < 0.0 {
                return Err((format!("limits.{field}.per_second"), "must be 0 (off) or more".into()));
            }
            if rate.per_second > 0.0 && rate.burst == 0 {
                return Err((format!("limits.{field}.burst"), "must be at least 1".into()));
            }
        }
        Ok(())
    }
}
