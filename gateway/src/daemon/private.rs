//! The gateway's state and run directories are private to root: the audit
//! store, journal and mirror hold every agent's command lines, targets and
//! masked bodies, and the state files hold keys. On start the process
//! umask becomes 077 (so whatever the gateway creates is 0600 or 0700),
//! and what an existing install left more open is closed again: every
//! directory 0700, every file 0600. Two openings are the operator's
//! explicit choice: `control.admin_group` may reach the control socket
//! (its run directory then 0710 for that group), and `audit.mirror_group`
//! may read the JSON-lines mirror (the state directory 0710, the mirror
//! files 0640 for that group).
use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

/// A directory or file whose permissions could not be set (gateway side).
#[derive(Debug, thiserror::Error)]
#[error("making {path} private: {source}")]
pub struct PrivateError {
    /// The path.
    pub path: PathBuf,
    /// The error.
    pub source: std::io::Error,
}

/// Who besides root may reach into the directories.
#[derive(Debug, Clone, Copy, Default)]
pub struct Openings {
    /// May use the control socket in the run directory.
    pub admin_gid: Option<u32>,
    /// May read the mirror in the state directory.
    pub mirror_gid: Option<u32>,
}

/// Sets the umask and closes up the state and run directories (creating
/// them if missing). `mirror` is the mirror file's path.
pub fn lock_down(state_dir: &Path, run_dir: &Path, mirror: &Path, open: Openings) -> Result<(), PrivateError> {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let mirrors = mirror_files(mirror);
    close_up(state_dir, &|path| {
        mirrors.iter().any(|m| m == path).then_some(open.mirror_gid).flatten()
    })?;
    close_up(run_dir, &|_| None)?;
    opening(state_dir, open.mirror_gid)?;
    opening(run_dir, open.admin_gid)
}

/// The mirror and its rotated copy.
fn mirror_files(mirror: &Path) -> [PathBuf; 2] {
    let mut rotated = mirror.as_os_str().to_owned();
    rotated.push(".1");
    [mirror.to_owned(), PathBuf::from(rotated)]
}

/// Makes a mirror file readable by `gid`, when one is configured (called
/// for each new mirror file too).
pub fn share_mirror(path: &Path, gid: Option<u32>) -> std::io::Result<()> {
    let Some(gid) = gid else {
        return Ok(());
    };
    std::os::unix::fs::chown(path, Some(0), Some(gid))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o640))
}

/// `dir` and everything in it: directories 0700, files 0600, except the
/// files `shared` names a group for.
fn close_up(dir: &Path, shared: &dyn Fn(&Path) -> Option<u32>) -> Result<(), PrivateError> {
    let err = |path: &Path| {
        let path = path.to_owned();
        move |source| PrivateError { path, source }
    };
    std::fs::create_dir_all(dir).map_err(err(dir))?;
    set_mode(dir, 0o700).map_err(err(dir))?;
    for entry in std::fs::read_dir(dir).map_err(err(dir))? {
        let entry = entry.map_err(err(dir))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(err(&path))?;
        if kind.is_dir() {
            close_up(&path, shared)?;
        } else if kind.is_file() {
            match shared(&path) {
                Some(gid) => share_mirror(&path, Some(gid)).map_err(err(&path))?,
                None => set_mode(&path, 0o600).map_err(err(&path))?,
            }
        } else if !kind.is_symlink() {
            // Sockets and the like: root only.
            set_mode(&path, 0o600).map_err(err(&path))?;
        }
    }
    Ok(())
}

/// Lets `gid` traverse `dir` (not list it), when one is configured.
fn opening(dir: &Path, gid: Option<u32>) -> Result<(), PrivateError> {
    let Some(gid) = gid else {
        return Ok(());
    };
    let err = |source| PrivateError {
        path: dir.to_owned(),
        source,
    };
    std::os::unix::fs::chown(dir, Some(0), Some(gid)).map_err(err)?;
    set_mode(dir, 0o710).map_err(err)
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    let current = std::fs::symlink_metadata(path)?.permissions().mode() & 0o7777;
    if current == mode {
        return Ok(());
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn an_open_install_is_closed_up_and_the_mirror_shared_only_when_asked() {
        let top = std::env::temp_dir().join(format!("interlock-private-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&top);
        let (state, run) = (top.join("state"), top.join("run"));
        std::fs::create_dir_all(state.join("ca")).unwrap();
        for f in ["audit.db", "events.jsonl", "events.jsonl.1", "ca/ca.key"] {
            std::fs::write(state.join(f), "x").unwrap();
            std::fs::set_permissions(state.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
        let mirror = state.join("events.jsonl");
        lock_down(&state, &run, &mirror, Openings::default()).unwrap();
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&run), 0o700);
        assert_eq!(mode(&state.join("ca")), 0o700);
        for f in ["audit.db", "events.jsonl", "events.jsonl.1", "ca/ca.key"] {
            assert_eq!(mode(&state.join(f)), 0o600, "{f}");
        }
        // Files created from now on are private too (the umask).
        std::fs::write(state.join("new"), "y").unwrap();
        assert_eq!(mode(&state.join("new")), 0o600);
        // The operator's explicit choice: a group may read the mirror.
        let gid = 65534;
        let open = Openings {
            admin_gid: Some(gid),
            mirror_gid: Some(gid),
        };
        lock_down(&state, &run, &mirror, open).unwrap();
        assert_eq!(mode(&state), 0o710);
        assert_eq!(std::fs::metadata(&state).unwrap().gid(), gid);
        assert_eq!(mode(&mirror), 0o640);
        assert_eq!(mode(&state.join("events.jsonl.1")), 0o640);
        assert_eq!(mode(&state.join("audit.db")), 0o600);
        assert_eq!(mode(&run), 0o710);
        let _ = std::fs::remove_dir_all(&top);
    }
}
