//! Declared targets: naming a destination so policies can refer to it.
//!
//! A connection is judged by its original address; a name the agent gave
//! (TLS SNI, HTTP Host) changes that only when it is bound to the address:
//! the address is inside the named target's `cidrs`, or the name resolves
//! to it (see [`names`]). Anything else would let an agent pick a target's
//! treatment, and its credential, for an address of its own choosing.
use std::sync::Arc;

use crate::{
    config::TargetSpec,
    types::{OrigDst, TargetRef, Wire},
};

pub mod learned;
pub mod names;

pub use learned::{BindingView, Learned};
pub use names::Names;

/// What a connection was judged as.
#[derive(Debug, Clone, Default)]
pub struct Judged {
    /// The declared target, if any.
    pub spec: Option<Arc<TargetSpec>>,
    /// The name the agent gave, when it is bound to the original address.
    pub bound: Option<String>,
    /// The name the agent gave, bound or not.
    pub claimed: Option<String>,
    /// The target was found by a name of its `hosts` that the agent
    /// resolved to this address through the gateway (see [`Learned`]).
    pub resolved: bool,
}

impl Judged {
    /// The name a session speaks to its upstream with: the agent's, when it
    /// is bound or the target declares no names of its own (any name is the
    /// operator's choice then); otherwise none.
    pub fn session_name(&self) -> Option<&str> {
        let free = self.spec.as_ref().is_some_and(|s| s.hosts.is_empty());
        self.bound.as_deref().or(self.claimed.as_deref().filter(|_| free))
    }

    /// Why the connection is refused before policy: its target has
    /// `require_resolution` and was not reached by a name the agent resolved.
    pub fn unresolved(&self) -> Option<String> {
        let spec = self.spec.as_ref().filter(|s| s.require_resolution && !self.resolved)?;
        Some(format!(
            "target `{}` requires that the agent resolve one of its hosts to this address through the gateway first",
            spec.name
        ))
    }

    /// Why the agent's name may not be used with this target: it names
    /// something the target does not declare.
    pub fn name_mismatch(&self) -> Option<String> {
        let spec = self.spec.as_ref()?;
        let claimed = self.claimed.as_deref()?;
        if spec.hosts.is_empty()
            || spec
                .hosts
                .iter()
                .any(|p| host_matches(p, &claimed.to_ascii_lowercase()))
        {
            return None;
        }
        Some(format!("the name {claimed} is not a host of target {}", spec.name))
    }
}

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

    /// The target spec a destination belongs to, given a name already
    /// bound to it (see [`judge`](Self::judge)). A bound name's target wins
    /// over an address match.
    pub fn find(&self, dst: OrigDst, bound: Option<&str>) -> Option<&Arc<TargetSpec>> {
        bound
            .and_then(|h| self.by_host(dst.0.port(), h))
            .or_else(|| self.by_addr(dst))
    }

    /// The first target on `port` that declares `host`.
    fn by_host(&self, port: u16, host: &str) -> Option<&Arc<TargetSpec>> {
        let host = host.to_ascii_lowercase();
        self.targets
            .iter()
            .filter(|t| t.ports.lo <= port && port <= t.ports.hi)
            .find(|t| t.hosts.iter().any(|p| host_matches(p, &host)))
    }

    /// The first target, on any port, that declares `host` among its hosts.
    pub fn declaring(&self, host: &str) -> Option<&Arc<TargetSpec>> {
        let host = host.to_ascii_lowercase();
        self.targets
            .iter()
            .find(|t| t.hosts.iter().any(|p| host_matches(p, &host)))
    }

    /// The first target whose networks and ports hold `dst`.
    pub fn by_addr(&self, dst: OrigDst) -> Option<&Arc<TargetSpec>> {
        let (ip, port) = (dst.0.ip(), dst.0.port());
        self.targets
            .iter()
            .filter(|t| t.ports.lo <= port && port <= t.ports.hi)
            .find(|t| t.cidrs.iter().any(|c| c.contains(&ip.to_canonical())))
    }

    /// Judges a connection by its address, the name the agent gave and the
    /// names it resolved to the address through the gateway (`learned`,
    /// most recent first). A given name is bound when the address is inside
    /// the named target's networks, the agent resolved it to the address,
    /// or the name resolves to it; the gateway's own lookup is made only
    /// when that can change something: it names a declared target the
    /// address is not a network of, or the address belongs to no target
    /// (policies may read `resource.host` of undeclared destinations).
    /// Without a given name, the most recent learned name that declares a
    /// target on the port is bound, else the most recent learned name.
    pub async fn judge(&self, dst: OrigDst, claimed: Option<&str>, names: &Names, learned: &[String]) -> Judged {
        let Some(claim) = claimed.map(str::to_ascii_lowercase) else {
            return self.judge_unnamed(dst, learned);
        };
        let ip = dst.0.ip();
        let by_addr = self.by_addr(dst).cloned();
        let named = self.by_host(dst.0.port(), &claim).cloned();
        let in_networks = named
            .as_ref()
            .is_some_and(|t| t.cidrs.iter().any(|c| c.contains(&ip.to_canonical())));
        let learned_here = learned.contains(&claim);
        let bound = in_networks
            || learned_here
            || ((named.is_some() || by_addr.is_none()) && names.resolves_to(&claim, ip).await);
        let resolved = learned_here && named.is_some();
        let spec = if bound { named.or(by_addr) } else { by_addr };
        Judged {
            spec,
            bound: bound.then(|| claim.clone()),
            claimed: Some(claim),
            resolved,
        }
    }

    /// [`judge`](Self::judge) for a connection that gave no name: the most
    /// recent learned name that declares a target on the port is bound,
    /// else the most recent learned name (the address decides the target).
    pub fn judge_unnamed(&self, dst: OrigDst, learned: &[String]) -> Judged {
        let declared = learned
            .iter()
            .find_map(|n| self.by_host(dst.0.port(), n).map(|t| (n, t.clone())));
        match declared {
            Some((name, spec)) => Judged {
                spec: Some(spec),
                bound: Some(name.clone()),
                claimed: None,
                resolved: true,
            },
            None => Judged {
                spec: self.by_addr(dst).cloned(),
                bound: learned.first().cloned(),
                claimed: None,
                resolved: false,
            },
        }
    }

    /// The target a destination belongs to; an undeclared destination is
    /// named `ip:port` so policies can still match it by address.
    pub fn resolve(&self, dst: OrigDst, protocol: Wire) -> TargetRef {
        self.resolve_host(dst, None, protocol)
    }

    /// As [`resolve`](Self::resolve), with a name bound to the destination.
    pub fn resolve_host(&self, dst: OrigDst, bound: Option<&str>, protocol: Wire) -> TargetRef {
        let name = self
            .find(dst, bound)
            .map_or_else(|| dst.to_string(), |t| t.name.clone());
        TargetRef {
            name,
            ip: dst.0.ip(),
            port: dst.0.port(),
            host: bound.unwrap_or_default().to_owned(),
            protocol,
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
            protocol: Wire::Tcp,
        })
    }
}

/// Why a connect to a `require_resolution` target was refused.
pub fn unresolved_reason(target: &str) -> String {
    format!(
        "target `{target}` requires that the agent resolve one of its hosts to this address through the gateway first"
    )
}

/// `api.openai.com` matches itself; `*.openai.com` matches any subdomain.
pub(crate) fn host_matches(pattern: &str, host: &str) -> bool {
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
        let name = |s: &str| table.resolve(OrigDst(s.parse().unwrap()), Wire::Tcp).name;
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
                .resolve_host(OrigDst(dst.parse().unwrap()), Some(host), Wire::Tls)
                .name
        };
        assert_eq!(name("10.1.1.1:443", "API.openai.com"), "openai");
        assert_eq!(name("10.1.1.1:443", "x.openai.azure.com"), "openai");
        assert_eq!(name("10.1.1.1:443", "openai.azure.com"), "net10");
        assert_eq!(name("10.1.1.1:80", "api.openai.com"), "net10");
    }

    #[tokio::test]
    async fn a_name_counts_only_when_bound_to_the_address() {
        // Only names this machine's /etc/hosts answers (or literals): a unit
        // test must not send a DNS query anywhere.
        let specs: Vec<TargetSpec> = toml::from_str::<toml::Value>(
            r#"
[[t]]
name = "internal"
hosts = ["*.internal"]
cidrs = ["10.1.0.0/16"]
[[t]]
name = "local-api"
hosts = ["localhost"]
ports = "443"
[[t]]
name = "net10"
cidrs = ["10.0.0.0/8"]
"#,
        )
        .unwrap()["t"]
            .clone()
            .try_into()
            .unwrap();
        let table = TargetTable::new(&specs);
        let names = Names::default();
        let judge = |dst: &'static str, host: &'static str| {
            let (table, names) = (&table, &names);
            async move { table.judge(OrigDst(dst.parse().unwrap()), Some(host), names, &[]).await }
        };
        let j = judge("10.1.2.3:443", "db.internal").await;
        assert_eq!(j.spec.unwrap().name, "internal");
        assert_eq!(j.bound.as_deref(), Some("db.internal"));
        // The same name sent to another network: judged by the address.
        let j = judge("10.9.9.9:443", "localhost").await;
        assert_eq!(j.spec.as_ref().unwrap().name, "net10");
        assert_eq!(j.bound, None);
        assert_eq!(j.claimed.as_deref(), Some("localhost"));
        assert!(
            j.name_mismatch().is_none(),
            "net10 declares no names: {:?}",
            j.name_mismatch()
        );
        // A declared name that resolves to the address binds.
        let j = judge("127.0.0.1:443", "LOCALHOST").await;
        assert_eq!(j.spec.unwrap().name, "local-api");
        assert_eq!(j.bound.as_deref(), Some("localhost"));
        // ... and one that does not is ignored: an undeclared destination.
        let j = judge("127.0.0.9:443", "localhost").await;
        assert!(j.spec.is_none());
        assert_eq!(j.bound, None);
        assert_eq!(
            table
                .resolve_host(OrigDst("127.0.0.9:443".parse().unwrap()), j.bound.as_deref(), Wire::Tls)
                .name,
            "127.0.0.9:443"
        );
        // A name the address's target does not declare is a mismatch.
        let j = judge("10.1.2.3:443", "localhost").await;
        assert_eq!(j.spec.as_ref().unwrap().name, "internal");
        assert!(j.name_mismatch().unwrap().contains("not a host of target internal"));
    }
}
