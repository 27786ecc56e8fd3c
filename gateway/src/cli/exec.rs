//! `interlock exec -- CMD`: run a command as an agent, inside a cgroup the
//! gateway's hooks are attached to. It refuses to start the command if no
//! hooks cover that cgroup, because the command would then run unwatched.
use std::{ffi::OsString, os::unix::process::CommandExt as _, path::Path};

use crate::{cgroup, config::Config, kernel::pinned_links};

use super::CliError;

/// Moves this process into the agent cgroup and replaces it with `command`.
pub fn exec(config: &Config, cgroup_arg: Option<&str>, command: &[OsString]) -> Result<(), CliError> {
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
