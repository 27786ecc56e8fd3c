//! Declared targets: naming a destination so policies can refer to it.
use std::sync::Arc;

use crate::{config::TargetSpec, policy::TargetRef, types::OrigDst};

/// The configured targets, in order (first match wins). Shared: each
/// session holds its target's spec for its lifetime.
#[derive(Debug, Clone, Default)]
pub struct TargetTable {
    targets: Vec<Arc<TargetSpec>>,
}

impl TargetTable {
    /// From validated config.
    pub fn new(targets: &[TargetSpec]) -> Self {
        Self {
            targets: targets.iter().cloned().map(Arc::new).collect(),
        }
    }

    /// The target spec a destination (and SNI host, if any) belongs to. A
    /// host match wins over an address match.
    pub fn find(&self, dst: OrigDst, host: Option<&str>) -> Option<&Arc<TargetSpec>> {
        let (ip, port) = (dst.0.ip(), dst.0.port());
        let port_ok = |t: &&Arc<TargetSpec>| t.ports.lo <= port && port <= t.ports.hi;
        let by_host = host.and_then(|h| {
            let h = h.to_ascii_lowercase();
            self.targets
                .iter()
                .filter(port_ok)
                .find(|t| t.hosts.iter().any(|p| host_matches(p, &h)))
        });
        by_host.or_else(|| {
            self.targets
                .iter()
                .filter(port_ok)
                .find(|t| t.cidrs.iter().any(|c| c.contains(&ip)))
        })
    }

    /// The target a destination belongs to; an undeclared destination is
    /// named `ip:port` so policies can still match it by address.
    pub fn resolve(&self, dst: OrigDst, protocol: &str) -> TargetRef {
        self.resolve_host(dst, None, protocol)
    }

    /// As [`resolve`](Self::resolve), with the host the agent asked for.
    pub fn resolve_host(&self, dst: OrigDst, host: Option<&str>, protocol: &str) -> TargetRef {
        let name = self.find(dst, host).map_or_else(|| dst.to_string(), |t| t.name.clone());
        TargetRef {
            name,
            ip: dst.0.ip(),
            port: dst.0.port(),
            host: host.unwrap_or_default().to_owned(),
            protocol: protocol.to_owned(),
        }
    }

    /// A target by name, for `policy explain` (first address of its first network).
    pub fn by_name(&self, name: &str) -> Option<TargetRef> {
        let t = self.targets.iter().find(|t| t.name == name)?;
        let ip = t
            .cidrs
            .first()
            .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |n| n.network());
        let host = t.hosts.first().cloned().unwrap_or_default();
        Some(TargetRef {
            name: t.name.clone(),
            ip,
            port: t.ports.lo,
            host,
            protocol: "tcp".into(),
        })
    }
}

/// `api.openai.com` matches itself; `*.openai.com` matches any subdomain.
fn host_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(suffix) => host.len() > suffix.len() && host.ends_with(&format!(".{suffix}")),
        None => pattern == host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_matching_target_names_the_destination() {
        let specs: Vec<TargetSpec> = toml::from_str::<toml::Value>(
            r#"
[[t]]
name = "db"
cidrs = ["10.0.0.0/24"]
ports = "5432"
[[t]]
name = "net10"
cidrs = ["10.0.0.0/8", "fd00::/8"]
"#,
        )
        .unwrap()["t"]
            .clone()
            .try_into()
            .unwrap();
        let table = TargetTable::new(&specs);
        let name = |s: &str| table.resolve(OrigDst(s.parse().unwrap()), "tcp").name;
        assert_eq!(name("10.0.0.5:5432"), "db");
        assert_eq!(name("10.0.0.5:80"), "net10");
        assert_eq!(name("[fd00::1]:443"), "net10");
        assert_eq!(name("192.0.2.1:443"), "192.0.2.1:443");
    }

    #[test]
    fn hosts_win_over_addresses_and_wildcards_match_subdomains() {
        let specs: Vec<TargetSpec> = toml::from_str::<toml::Value>(
            r#"
[[t]]
name = "net10"
cidrs = ["10.0.0.0/8"]
[[t]]
name = "openai"
hosts = ["api.openai.com", "*.openai.azure.com"]
ports = "443"
"#,
        )
        .unwrap()["t"]
            .clone()
            .try_into()
            .unwrap();
        let table = TargetTable::new(&specs);
        let name = |dst: &str, host: &str| {
            table
                .resolve_host(OrigDst(dst.parse().unwrap()), Some(host), "tls")
                .name
        };
        assert_eq!(name("10.1.1.1:443", "API.openai.com"), "openai");
        assert_eq!(name("10.1.1.1:443", "x.openai.azure.com"), "openai");
        assert_eq!(name("10.1.1.1:443", "openai.azure.com"), "net10");
        assert_eq!(name("10.1.1.1:80", "api.openai.com"), "net10");
    }
}
