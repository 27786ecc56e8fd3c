//! Attaching the programs to cgroups and pinning the links, so that agents
//! stay intercepted (or refused) when the gateway is gone. A restart attaches
//! fresh links next to the old ones, swaps the pins, and only then lets the old
//! links go: there is never a moment with no program attached.
use std::{
    fs,
    path::{Path, PathBuf},
};

use aya::{
    programs::{links::FdLink, links::PinnedLink, CgroupAttachMode, CgroupSkbAttachType, Program},
    Ebpf,
};

use super::{chain, pins::PinLayout, KernelError};
use crate::cgroup;

/// Programs attached host-wide, once: (program, tracepoint category, name).
pub const GLOBAL_PROGRAMS: [(&str, &str, &str); 2] = [
    (gateway_common::PROG_FORK, "sched", "sched_process_fork"),
    (gateway_common::PROG_EXEC, "sched", "sched_process_exec"),
];

/// Pin suffix for host-wide programs (cgroup ids are never 0).
const GLOBAL: u64 = 0;

/// Every program attached to each cgroup.
pub const PROGRAMS: [&str; 12] = [
    gateway_common::PROG_SOCK_CREATE,
    gateway_common::PROG_SOCK_RELEASE,
    gateway_common::PROG_CONNECT4,
    gateway_common::PROG_CONNECT6,
    gateway_common::PROG_GETPEERNAME4,
    gateway_common::PROG_GETPEERNAME6,
    gateway_common::PROG_SENDMSG4,
    gateway_common::PROG_SENDMSG6,
    gateway_common::PROG_RECVMSG4,
    gateway_common::PROG_RECVMSG6,
    gateway_common::PROG_UDP_EGRESS,
    gateway_common::PROG_SOCK_OPS,
];

/// The links on one cgroup.
#[derive(Debug, Clone)]
pub struct Attachment {
    /// The cgroup directory.
    pub cgroup: PathBuf,
    /// Its id.
    pub cgroup_id: u64,
}

/// A pinned link as found on the bpf filesystem.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AttachedLink {
    /// Pin file name: `program@cgroup_id`.
    pub name: String,
    /// Kernel link id.
    pub link_id: u32,
    /// Kernel program id.
    pub program_id: u32,
}

/// Attaches every program to every cgroup in `cgroups`, pins the links, and
/// removes pinned links that are no longer wanted.
pub fn attach_all(ebpf: &mut Ebpf, layout: &PinLayout, cgroups: &[PathBuf]) -> Result<Vec<Attachment>, KernelError> {
    let mut wanted = Vec::new();
    let mut attachments = Vec::new();
    for cg in cgroups {
        let cgroup_id = cgroup::id(cg)?;
        let dir = cgroup::open(cg)?;
        for program in PROGRAMS {
            let link = attach_one(ebpf, program, &dir).map_err(|message| KernelError::Attach {
                program: program.to_owned(),
                cgroup: cg.clone(),
                message,
            })?;
            let pin = layout.link(program, cgroup_id);
            swap_pin(link, &pin).map_err(|message| KernelError::Attach {
                program: program.to_owned(),
                cgroup: cg.clone(),
                message,
            })?;
            wanted.push(pin);
        }
        tracing::info!(cgroup = %cg.display(), cgroup_id, "programs attached and pinned");
        attachments.push(Attachment {
            cgroup: cg.clone(),
            cgroup_id,
        });
    }
    for (program, category, name) in GLOBAL_PROGRAMS {
        let err = |message: String| KernelError::Attach {
            program: program.to_owned(),
            cgroup: PathBuf::from("(host-wide tracepoint)"),
            message,
        };
        let link = match ebpf.program_mut(program) {
            Some(Program::TracePoint(p)) => {
                let id = p.attach(category, name).map_err(|e| err(chain(&e)))?;
                FdLink::try_from(p.take_link(id).map_err(|e| err(chain(&e)))?).map_err(|e| err(chain(&e)))?
            }
            _ => return Err(err("tracepoint program missing from the eBPF object".into())),
        };
        let pin = layout.link(program, GLOBAL);
        swap_pin(link, &pin).map_err(err)?;
        wanted.push(pin);
    }
    for (name, path) in layout.existing_links() {
        if !wanted.contains(&path) {
            release(&path)?;
            tracing::warn!(link = %name, "detached a pinned link no longer in the configuration");
        }
    }
    Ok(attachments)
}

fn attach_one(ebpf: &mut Ebpf, name: &str, cgroup: &fs::File) -> Result<FdLink, String> {
    let program = ebpf
        .program_mut(name)
        .ok_or_else(|| "program missing from the eBPF object".to_owned())?;
    // Mode `Single` means flags = 0, which is all BPF_LINK_CREATE accepts for
    // cgroups; cgroup links always run alongside other links (the kernel
    // attaches them as multi), which is what lets a new link run beside the
    // one it replaces.
    match program {
        Program::CgroupSockAddr(p) => {
            let id = p.attach(cgroup, CgroupAttachMode::Single).map_err(|e| chain(&e))?;
            let link = p.take_link(id).map_err(|e| chain(&e))?;
            FdLink::try_from(link).map_err(|e| chain(&e))
        }
        Program::SockOps(p) => {
            let id = p.attach(cgroup, CgroupAttachMode::Single).map_err(|e| chain(&e))?;
            let link = p.take_link(id).map_err(|e| chain(&e))?;
            FdLink::try_from(link).map_err(|e| chain(&e))
        }
        Program::CgroupSock(p) => {
            let id = p.attach(cgroup, CgroupAttachMode::Single).map_err(|e| chain(&e))?;
            let link = p.take_link(id).map_err(|e| chain(&e))?;
            FdLink::try_from(link).map_err(|e| chain(&e))
        }
        Program::CgroupSkb(p) => {
            let id = p
                .attach(cgroup, CgroupSkbAttachType::Egress, CgroupAttachMode::Single)
                .map_err(|e| chain(&e))?;
            let link = p.take_link(id).map_err(|e| chain(&e))?;
            FdLink::try_from(link).map_err(|e| chain(&e))
        }
        other => Err(format!("unexpected program type {:?}", other.prog_type())),
    }
}

/// Pins `link` at `pin`, replacing (and so detaching) whatever link was pinned
/// there before. The new link is pinned under a temporary name first and then
/// renamed over the old pin, so a crash at any point leaves a link in place.
fn swap_pin(link: FdLink, pin: &Path) -> Result<(), String> {
    let previous = PinnedLink::from_pin(pin).ok().map(FdLink::from);
    // bpffs refuses names with a '.', so the staging name uses a suffix.
    let mut staging = pin.as_os_str().to_owned();
    staging.push("-new");
    let staging = PathBuf::from(staging);
    let _ = fs::remove_file(&staging);
    link.pin(&staging)
        .map_err(|e| format!("pin {}: {e}", staging.display()))?;
    fs::rename(&staging, pin).map_err(|e| format!("rename {} to {}: {e}", staging.display(), pin.display()))?;
    // The old pin file is gone; dropping our handle detaches the old link.
    drop(previous);
    Ok(())
}

/// Unpins (and so detaches) one link.
fn release(path: &Path) -> Result<(), KernelError> {
    let link = PinnedLink::from_pin(path).map_err(|e| KernelError::Pin {
        path: path.to_owned(),
        message: super::chain(&e),
    })?;
    link.unpin().map(drop).map_err(|e| KernelError::Pin {
        path: path.to_owned(),
        message: super::chain(&e),
    })
}

/// Pinned links with their kernel ids, for `interlock status`.
pub fn list_links(layout: &PinLayout) -> Vec<AttachedLink> {
    layout
        .existing_links()
        .into_iter()
        .filter_map(|(name, path)| {
            let link = FdLink::from(PinnedLink::from_pin(&path).ok()?);
            let info = link.info().ok()?;
            Some(AttachedLink {
                name,
                link_id: info.id(),
                program_id: info.program_id(),
            })
        })
        .collect()
}
