//! `[review]` (how held requests are run) and `[control]` (who may operate
//! the gateway besides root).
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Held requests.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReviewConfig {
    /// How long a request is held when its policy sets no `@review_timeout`.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Base URL people open reviews at (for webhook links).
    pub public_url: Option<String>,
}

impl Default for ReviewConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(300),
            public_url: None,
        }
    }
}

/// The operator socket.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// A group (name or number) whose members may use the socket besides root.
    pub admin_group: Option<String>,
}

impl ControlConfig {
    /// The admin group's gid.
    pub fn admin_gid(&self) -> Result<Option<u32>, String> {
        self.admin_group.as_deref().map(group_gid).transpose()
    }
}

/// A group's gid, from its number or its name on this host.
pub(crate) fn group_gid(group: &str) -> Result<u32, String> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(format!("no group named `{group}` on this host")),
        Err(e) => Err(format!("looking up group `{group}`: {e}")),
    }
}
