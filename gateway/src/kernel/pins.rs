//! Where pinned maps and links live on the bpf filesystem, mounting it when
//! needed, and removing everything on an explicit detach.
use std::{
    fs,
    path::{Path, PathBuf},
};

use aya::{maps::MapData, programs::links::PinnedLink};
use gateway_common::MAP_ABI_VERSION;

use super::KernelError;

/// The directory layout under the configured pin directory.
#[derive(Debug, Clone)]
pub struct PinLayout {
    root: PathBuf,
}

impl PinLayout {
    /// Layout rooted at `pin_dir`.
    pub fn new(pin_dir: &Path) -> Self {
        Self {
            root: pin_dir.to_owned(),
        }
    }

    /// The configured pin directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Pinned maps, versioned by map layout so an incompatible build never adopts them.
    pub fn maps_dir(&self) -> PathBuf {
        self.root.join(format!("maps-v{MAP_ABI_VERSION}"))
    }

    /// Pinned links, one file per (program, cgroup).
    pub fn links_dir(&self) -> PathBuf {
        self.root.join("links")
    }

    /// Pin path of a map.
    pub fn map(&self, name: &str) -> PathBuf {
        self.maps_dir().join(name)
    }

    /// Pin path of the link of `program` on the cgroup with id `cgroup_id`.
    pub fn link(&self, program: &str, cgroup_id: u64) -> PathBuf {
        self.links_dir().join(format!("{program}@{cgroup_id}"))
    }

    /// Pinned links present now, as (file name, path).
    pub fn existing_links(&self) -> Vec<(String, PathBuf)> {
        let Ok(dir) = fs::read_dir(self.links_dir()) else {
            return Vec::new();
        };
        let mut links: Vec<_> = dir
            .filter_map(Result::ok)
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .collect();
        links.sort();
        links
    }

    /// Creates the directories, mounting bpffs on /sys/fs/bpf first if needed.
    pub fn create(&self) -> Result<(), KernelError> {
        ensure_bpffs(&self.root)?;
        for dir in [self.maps_dir(), self.links_dir()] {
            fs::create_dir_all(&dir).map_err(|e| KernelError::Pin {
                path: dir.clone(),
                message: super::chain(&e),
            })?;
        }
        Ok(())
    }
}

/// Mounts bpffs at /sys/fs/bpf when `dir` lies under it and nothing is mounted there.
fn ensure_bpffs(dir: &Path) -> Result<(), KernelError> {
    const BPFFS: &str = "/sys/fs/bpf";
    if !dir.starts_with(BPFFS) {
        return Ok(());
    }
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mounted = mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        f.nth(1) == Some(BPFFS) && f.next() == Some("bpf")
    });
    if mounted {
        return Ok(());
    }
    tracing::info!("mounting the bpf filesystem at {BPFFS}");
    nix::mount::mount(
        Some("bpf"),
        BPFFS,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| KernelError::Pin {
        path: BPFFS.into(),
        message: format!("mount bpffs: {e}"),
    })
}

/// Detaches every pinned link and removes every pinned map under `layout`.
/// Returns what was removed, for the operator and the log.
pub fn detach_all(layout: &PinLayout) -> Result<Vec<String>, KernelError> {
    let mut removed = Vec::new();
    for (name, path) in layout.existing_links() {
        let link = PinnedLink::from_pin(&path).map_err(|e| KernelError::Pin {
            path: path.clone(),
            message: super::chain(&e),
        })?;
        // Unpinning drops the last reference, which detaches the program.
        drop(link.unpin().map_err(|e| KernelError::Pin {
            path: path.clone(),
            message: super::chain(&e),
        })?);
        tracing::warn!(link = %name, "detached pinned program link");
        removed.push(format!("link {name}"));
    }
    if let Ok(dir) = fs::read_dir(layout.root()) {
        for maps_dir in dir.filter_map(Result::ok).map(|e| e.path()) {
            if !maps_dir.is_dir() || maps_dir == layout.links_dir() {
                continue;
            }
            for entry in fs::read_dir(&maps_dir).into_iter().flatten().filter_map(Result::ok) {
                let path = entry.path();
                // Opening first proves it is a map pin and not something else.
                if MapData::from_pin(&path).is_ok() {
                    fs::remove_file(&path).map_err(|e| KernelError::Pin {
                        path: path.clone(),
                        message: super::chain(&e),
                    })?;
                    removed.push(format!("map {}", path.display()));
                }
            }
            let _ = fs::remove_dir(&maps_dir);
        }
    }
    let _ = fs::remove_dir(layout.links_dir());
    let _ = fs::remove_dir(layout.root());
    Ok(removed)
}
