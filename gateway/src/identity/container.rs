//! Recognising containers and systemd units from a cgroup path.
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// A container, as far as the cgroup path tells.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub struct Container {
    /// `docker`, `containerd`, `cri-o`, `podman` or `kubernetes` (runtime unknown).
    pub runtime: String,
    /// The 64-hex container id.
    pub id: String,
    /// Kubernetes pod uid, when the path is under kubepods.
    pub pod_uid: Option<String>,
}

static SCOPE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(docker|cri-containerd|crio|libpod)-([0-9a-f]{64})\.scope").expect("static regex"));
static PLAIN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"/(docker|libpod|containerd|crio)/([0-9a-f]{64})(?:/|$)").expect("static regex"));
static KUBE_BARE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"/([0-9a-f]{64})$").expect("static regex"));
static POD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})").expect("static regex")
});

fn runtime_name(prefix: &str) -> &'static str {
    match prefix {
        "docker" => "docker",
        "cri-containerd" | "containerd" => "containerd",
        "crio" => "cri-o",
        "libpod" => "podman",
        _ => "unknown",
    }
}

/// The container of a cgroup path, for docker, containerd, CRI-O, podman and
/// Kubernetes layouts (cgroupfs and systemd drivers).
pub fn container_of(path: &str) -> Option<Container> {
    let pod_uid = path
        .contains("kubepods")
        .then(|| POD.captures(path).map(|c| c[1].replace('_', "-")))
        .flatten();
    let (runtime, id) = if let Some(c) = SCOPE.captures_iter(path).last() {
        (runtime_name(&c[1]).to_owned(), c[2].to_owned())
    } else if let Some(c) = PLAIN.captures_iter(path).last() {
        (runtime_name(&c[1]).to_owned(), c[2].to_owned())
    } else if pod_uid.is_some() {
        let c = KUBE_BARE.captures(path)?;
        ("kubernetes".to_owned(), c[1].to_owned())
    } else {
        return None;
    };
    Some(Container { runtime, id, pod_uid })
}

/// The systemd unit of a cgroup path: the innermost `.service` or `.scope`
/// component that is not a container scope.
pub fn systemd_unit_of(path: &str) -> Option<String> {
    path.split('/')
        .rev()
        .find(|c| (c.ends_with(".service") || c.ends_with(".scope")) && !SCOPE.is_match(c))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

    #[test]
    fn runtimes_are_recognised() {
        let cases = [
            (format!("/system.slice/docker-{ID}.scope"), "docker", None),
            (format!("/docker/{ID}"), "docker", None),
            (format!("/machine.slice/libpod-{ID}.scope/container"), "podman", None),
            (
                format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0a1b2c3d_4e5f_6789_abcd_ef0123456789.slice/cri-containerd-{ID}.scope"),
                "containerd",
                Some("0a1b2c3d-4e5f-6789-abcd-ef0123456789"),
            ),
            (
                format!("/kubepods/besteffort/pod0a1b2c3d-4e5f-6789-abcd-ef0123456789/{ID}"),
                "kubernetes",
                Some("0a1b2c3d-4e5f-6789-abcd-ef0123456789"),
            ),
            (format!("/kubepods.slice/kubepods-pod0a1b2c3d_4e5f_6789_abcd_ef0123456789.slice/crio-{ID}.scope"), "cri-o", Some("0a1b2c3d-4e5f-6789-abcd-ef0123456789")),
        ];
        for (path, runtime, pod) in cases {
            let c = container_of(&path).unwrap_or_else(|| panic!("no container in {path}"));
            assert_eq!(c.runtime, runtime, "{path}");
            assert_eq!(c.id, ID, "{path}");
            assert_eq!(c.pod_uid.as_deref(), pod, "{path}");
        }
    }

    #[test]
    fn plain_paths_have_no_container() {
        assert_eq!(container_of("/user.slice/user-1000.slice/session-3.scope"), None);
        assert_eq!(container_of("/interlock.agents"), None);
    }

    #[test]
    fn units() {
        assert_eq!(
            systemd_unit_of("/system.slice/nginx.service").as_deref(),
            Some("nginx.service")
        );
        assert_eq!(
            systemd_unit_of(&format!("/system.slice/docker-{ID}.scope")).as_deref(),
            None
        );
        assert_eq!(systemd_unit_of("/interlock.agents"), None);
    }
}
