//! `interlock exec -- CMD`: run a command as an agent, inside a cgroup the
//! gateway's hooks are attached to. It refuses to start the command if no
//! hooks cover that cgroup, because the command would then run unwatched.
use std::{ffi::OsString, os::unix::process::CommandExt as _, path::Path};

use crate::{cgroup, config::Config, kernel::pinned_links};

use super::CliError;

/// Moves this process into the agent cgroup and replaces it with `command`.
/// Every inherited descriptor but stdin, stdout, stderr and `keep` is
/// closed first: a socket opened outside the cgroup (by the launcher or its
/// parent) would otherwise reach the agent unhooked.
pub fn exec(config: &Config, cgroup_arg: Option<&str>, keep: &[i32], command: &[OsString]) -> Result<(), CliError> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| CliError::Other("no command given".into()))?;
    let mount = cgroup::cgroup2_mount()?;
    let configured = cgroup_arg
        .or(config.intercept.cgroups.first().map(String::as_str))
        .ok_or_else(|| CliError::Other("no agent cgroup configured; pass --cgroup".into()))?;
    let target = cgroup::resolve(&mount, configured);
    cgroup::ensure(&target)?;
    if !covered(&mount, &target, &config.paths.pin_dir)? {
        return Err(CliError::Other(format!(
            "no Interlock hooks are attached to {} or its parents (pins: {}); refusing to run the command unintercepted. Start `interlock run` first.",
            target.display(),
            config.paths.pin_dir.display()
        )));
    }
    // Join the cgroup before the command opens any socket: a socket's cgroup
    // is fixed when it is created.
    cgroup::move_pid(&target, 0)?;
    close_inherited(keep)?;
    let err = std::process::Command::new(program).args(args).exec();
    Err(CliError::Other(format!("exec {}: {err}", program.to_string_lossy())))
}

/// True when a pinned connect4 link sits on `target` or an ancestor up to the mount.
fn covered(mount: &Path, target: &Path, pin_dir: &Path) -> Result<bool, CliError> {
    let links = pinned_links(pin_dir);
    let mut dir = Some(target);
    while let Some(d) = dir {
        if !d.starts_with(mount) {
            break;
        }
        let id = cgroup::id(d)?;
        let name = format!("{}@{id}", gateway_common::PROG_CONNECT4);
        if links.iter().any(|l| l.name == name) {
            return Ok(true);
        }
        dir = d.parent();
    }
    Ok(false)
}

/// Marks every open descriptor above stderr close-on-exec, except `keep`
/// (which are checked to be open and left inheritable). Marked rather than
/// closed, so that if exec itself fails this process can still say why.
fn close_inherited(keep: &[i32]) -> Result<(), CliError> {
    // Collected first: the directory being read is itself a descriptor.
    let open: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map_err(|e| CliError::Other(format!("listing /proc/self/fd: {e}")))?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for &fd in keep {
        if fd <= 2 {
            continue;
        }
        if !open.contains(&fd) {
            return Err(CliError::Other(format!("--keep-fd {fd}: no such open descriptor")));
        }
        // SAFETY: fcntl on a descriptor number; F_SETFD with 0 clears FD_CLOEXEC.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } != 0 {
            return Err(CliError::Other(format!(
                "--keep-fd {fd}: {}",
                std::io::Error::last_os_error()
            )));
        }
    }
    for fd in open.into_iter().filter(|fd| *fd > 2 && !keep.contains(fd)) {
        // SAFETY: as above; a descriptor closed meanwhile (the directory's) gives EBADF, which is fine.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}
