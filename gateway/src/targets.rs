//! Declared targets: naming a destination so policies can refer to it.
use crate::{config::TargetSpec, policy::TargetRef, types::OrigDst};

/// The configured targets, in order (first match wins).
#[derive(Debug, Clone, Default)]
pub struct TargetTable {
    targets: Vec<TargetSpec>,
}

impl TargetTable {
    /// From validated config.
    pub fn new(targets: &[TargetSpec]) -> Self {
        Self {
            targets: targets.to_vec(),
        }
    }

    /// The target a destination belongs to; an undeclared destination is
    /// named `ip:port` so policies can still match it by address.
    pub fn resolve(&self, dst: OrigDst, protocol: &str) -> TargetRef {
        let (ip, port) = (dst.0.ip(), dst.0.port());
        let name = self
            .targets
            .iter()
            .find(|t| t.ports.lo <= port && port <= t.ports.hi && t.cidrs.iter().any(|c| c.contains(&ip)))
            .map_or_else(|| dst.to_string(), |t| t.name.clone());
        TargetRef {
            name,
            ip,
            port,
            host: String::new(),
            protocol: protocol.to_owned(),
        }
    }

    /// A target by name, for `policy explain` (first address of its first network).
    pub fn by_name(&self, name: &str) -> Option<TargetRef> {
        let t = self.targets.iter().find(|t| t.name == name)?;
        let net = t.cidrs.first()?;
        Some(TargetRef {
            name: t.name.clone(),
            ip: net.network(),
            port: t.ports.lo,
            host: String::new(),
            protocol: "tcp".into(),
        })
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
}
