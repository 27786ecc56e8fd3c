//! Process-lifecycle tracepoints that keep revocations exact.
//!
//! sched_process_fork: a child of a revoked process is revoked too, so a
//! revoked agent cannot escape by forking. FAILS OPEN only if the revocation
//! map is full (userspace sizes it and reports the count).
//!
//! sched_process_exec: while exe or agent revocations exist, every new image
//! is held in EXEC_PENDING (its connects refused) and announced to
//! userspace, which checks it and releases or revokes it. FAILS CLOSED: a
//! process whose announcement is lost stays held until userspace's sweep
//! checks it directly.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated::bpf_ktime_get_boot_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use gateway_common::ExecEvent;

use crate::maps::{settings, EXEC_EVENTS, EXEC_PENDING, REVOKED_PIDS};

#[tracepoint]
pub fn interlock_fork(ctx: TracePointContext) -> u32 {
    try_fork(&ctx);
    0
}

fn try_fork(ctx: &TracePointContext) {
    let Some(settings) = settings() else { return };
    let offset = settings.fork_child_pid_offset;
    if offset == 0 {
        return;
    }
    // During fork, current is the parent.
    let parent = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: REVOKED_PIDS values are plain u32s; copied out at once.
    let Some(revocation) = (unsafe { REVOKED_PIDS.get(&parent) }).copied() else {
        return;
    };
    // SAFETY: the offset comes from this kernel's tracepoint format file.
    let Ok(child) = (unsafe { ctx.read_at::<i32>(usize::from(offset)) }) else {
        return;
    };
    if child > 0 {
        let _ = REVOKED_PIDS.insert(&(child as u32), &revocation, 0);
    }
}

#[tracepoint]
pub fn interlock_exec(_ctx: TracePointContext) -> u32 {
    try_exec();
    0
}

fn try_exec() {
    let Some(settings) = settings() else { return };
    if settings.watch_exec == 0 {
        return;
    }
    // After exec, current is the new image; its tgid is the process id.
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let _ = EXEC_PENDING.insert(&tgid, &now, 0);
    let _ = EXEC_EVENTS.output::<ExecEvent>(&ExecEvent { tgid, _pad: 0 }, 0);
}
