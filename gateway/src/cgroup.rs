//! cgroup v2 helpers: find the mount, resolve configured paths, create
//! cgroups, move processes, and read cgroup ids.
use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

/// Errors touching the cgroup filesystem (all on the gateway's side).
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// /proc/mounts has no cgroup2 entry.
    #[error("no cgroup2 filesystem is mounted (looked in /proc/mounts)")]
    NoCgroup2,
    /// A filesystem operation on a cgroup failed.
    #[error("cgroup {path}: {action}: {source}")]
    Io {
        /// The cgroup directory or file.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The cgroup2 mount point, read from /proc/mounts (`/sys/fs/cgroup` on most
/// hosts, `/sys/fs/cgroup/unified` on hybrid ones).
pub fn cgroup2_mount() -> Result<PathBuf, CgroupError> {
    let mounts = fs::read_to_string("/proc/mounts").map_err(|source| CgroupError::Io {
        path: "/proc/mounts".into(),
        action: "read",
        source,
    })?;
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, dir, fstype) = (fields.next()?, fields.next()?, fields.next()?);
            (fstype == "cgroup2").then(|| PathBuf::from(unescape_mount(dir)))
        })
        .next()
        .ok_or(CgroupError::NoCgroup2)
}

/// /proc/mounts escapes spaces and the like as octal.
fn unescape_mount(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let digits: String = chars.clone().take(3).collect();
            if let Ok(v) = u8::from_str_radix(&digits, 8) {
                out.push(v as char);
                chars.nth(2);
                continue;
            }
        }
        out.push(c);
    }
    out
}

/// Resolves a configured cgroup: an absolute path inside the mount is kept, a
/// path like `/a/b` or `a/b` is taken relative to the mount.
pub fn resolve(mount: &Path, configured: &str) -> PathBuf {
    let p = Path::new(configured);
    if p.starts_with(mount) {
        return p.to_owned();
    }
    mount.join(configured.trim_start_matches('/'))
}

/// Creates the cgroup directory (and parents) if missing.
pub fn ensure(path: &Path) -> Result<(), CgroupError> {
    fs::create_dir_all(path).map_err(|source| CgroupError::Io {
        path: path.to_owned(),
        action: "create",
        source,
    })
}

/// Moves process `pid` (0 = the caller) into the cgroup.
pub fn move_pid(path: &Path, pid: u32) -> Result<(), CgroupError> {
    let procs = path.join("cgroup.procs");
    fs::write(&procs, format!("{pid}\n")).map_err(|source| CgroupError::Io {
        path: procs,
        action: "move process into",
        source,
    })
}

/// The cgroup id the kernel reports for tasks in it: the directory's inode.
pub fn id(path: &Path) -> Result<u64, CgroupError> {
    fs::metadata(path).map(|m| m.ino()).map_err(|source| CgroupError::Io {
        path: path.to_owned(),
        action: "stat",
        source,
    })
}

/// Opens a cgroup directory for attaching programs to it.
pub fn open(path: &Path) -> Result<fs::File, CgroupError> {
    fs::File::open(path).map_err(|source| CgroupError::Io {
        path: path.to_owned(),
        action: "open",
        source,
    })
}
