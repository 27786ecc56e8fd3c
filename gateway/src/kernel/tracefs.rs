//! Reading tracepoint record layouts from tracefs: the sched_process_fork
//! layout differs between kernels (6.18 stores comms as __data_loc, older
//! kernels inline them), so the child pid's offset is read at run time.
use std::{fs, path::PathBuf};

use super::KernelError;

/// The tracefs mount, mounting it at /sys/kernel/tracing if needed.
fn tracefs() -> Result<PathBuf, KernelError> {
    for candidate in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        let p = PathBuf::from(candidate);
        if p.join("events").is_dir() {
            return Ok(p);
        }
    }
    let target = "/sys/kernel/tracing";
    nix::mount::mount(
        Some("nodev"),
        target,
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| {
        KernelError::Load(format!(
            "tracefs is not mounted and mounting it at {target} failed: {e}"
        ))
    })?;
    Ok(PathBuf::from(target))
}

/// Offset of `field` in the record of tracepoint `category/name`.
pub fn field_offset(category: &str, name: &str, field: &str) -> Result<u16, KernelError> {
    let path = tracefs()?.join("events").join(category).join(name).join("format");
    let text = fs::read_to_string(&path).map_err(|e| KernelError::Load(format!("{}: {e}", path.display())))?;
    parse_offset(&text, field).ok_or_else(|| KernelError::Load(format!("{}: no field `{field}`", path.display())))
}

/// Finds `field:<type> <field>;\toffset:N;` in a format file.
fn parse_offset(format: &str, field: &str) -> Option<u16> {
    format.lines().find_map(|line| {
        let decl = line.trim().strip_prefix("field:")?;
        let (decl, rest) = decl.split_once(';')?;
        let name = decl.split_whitespace().last()?.split('[').next()?;
        if name != field {
            return None;
        }
        rest.trim()
            .strip_prefix("offset:")?
            .split(';')
            .next()?
            .trim()
            .parse()
            .ok()
    })
}

#[cfg(test)]
mod tests {
    use super::parse_offset;

    #[test]
    fn offsets_from_old_and_new_layouts() {
        let new = "\tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;\n\tfield:pid_t parent_pid;\toffset:12;\tsize:4;\tsigned:1;\n\tfield:__data_loc char[] child_comm;\toffset:16;\tsize:4;\tsigned:0;\n\tfield:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;\n";
        let old = "\tfield:char parent_comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\tfield:pid_t parent_pid;\toffset:24;\tsize:4;\tsigned:1;\n\tfield:char child_comm[16];\toffset:28;\tsize:16;\tsigned:0;\n\tfield:pid_t child_pid;\toffset:44;\tsize:4;\tsigned:1;\n";
        assert_eq!(parse_offset(new, "child_pid"), Some(20));
        assert_eq!(parse_offset(old, "child_pid"), Some(44));
        assert_eq!(parse_offset(old, "child_comm"), Some(28));
        assert_eq!(parse_offset(old, "nope"), None);
    }

    #[test]
    fn this_kernel_has_a_fork_child_pid() {
        // Reading tracefs needs root; the integration suite runs as root.
        if nix::unistd::geteuid().is_root() {
            assert!(super::field_offset("sched", "sched_process_fork", "child_pid").unwrap() >= 8);
        }
    }
}
