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
    /// Memory for messages the gateway holds whole, across all sessions: a
    /// PostgreSQL message (up to 256 MiB each) before it is judged, an HTTP
    /// body read to be masked or for its `model` (up to 8 MiB each). Each
    /// held byte counts 4 times (its copies); a message that does not fit
    /// is refused (SQLSTATE 54000, HTTP 413). Bytes, or a string such as
    /// `"512MiB"`.
    pub buffer_budget: ByteSize,
}

/// A size in bytes, written as a number or with a unit (`KiB`, `MiB`, `GiB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ByteSize(pub usize);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => usize::try_from(n).map(Self).map_err(serde::de::Error::custom),
            Raw::Text(t) => parse_size(&t).map(Self).map_err(serde::de::Error::custom),
        }
    }
}

/// `"64MiB"`, `"512 KiB"`, `"1GiB"`, `"4096"`.
fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: usize = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size (a number, then B, KiB, MiB or GiB)"))?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        other => return Err(format!("unknown size unit `{other}` (use B, KiB, MiB or GiB)")),
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("`{text}` is too large"))
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
            buffer_budget: ByteSize(512 << 20),
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
        if self.buffer_budget.0 < 1 << 20 {
            return Err(("limits.buffer_budget".into(), "must be at least 1MiB".into()));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_with_and_without_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size(" 2 GiB "), Ok(2 << 30));
        assert!(parse_size("64MB").unwrap_err().contains("unknown size unit"));
        assert!(parse_size("lots").is_err());
        let l: LimitsConfig = toml::from_str("buffer_budget = \"256MiB\"").unwrap();
        assert_eq!(l.buffer_budget, ByteSize(256 << 20));
        let l: LimitsConfig = toml::from_str("buffer_budget = 1048576").unwrap();
        assert_eq!(l.buffer_budget, ByteSize(1 << 20));
    }
}
