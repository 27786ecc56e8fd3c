//! Background upkeep: expiring grants and revocations, checking processes
//! held at exec against exe/agent revocations, and forgetting revoked pids
//! of processes that have exited (so a reused pid is not refused).
use std::{sync::Arc, time::Duration};

use aya::maps::{MapData, RingBuf};
use gateway_common::ExecEvent;
use tokio::{io::unix::AsyncFd, task::JoinSet};

use crate::{control, control::ControlState};

/// Held processes older than this are checked directly (their announcement
/// may have been lost when the ring buffer was full).
const HELD_TOO_LONG_NS: u64 = 100_000_000;

/// Starts the upkeep tasks.
pub(super) fn spawn(tasks: &mut JoinSet<()>, state: &Arc<ControlState>, exec_events: Option<RingBuf<MapData>>) {
    let s = state.clone();
    tasks.spawn(async move {
        let mut tick = 0u64;
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            tick += 1;
            check_held(&s).await;
            if tick.is_multiple_of(5) {
                control::sweep_grants(&s).await;
                control::sweep_revocations(&s).await;
                forget_exited(&s).await;
            }
        }
    });
    if let Some(ring) = exec_events {
        let s = state.clone();
        tasks.spawn(async move { watch_execs(ring, &s).await });
    }
}

/// Reads exec announcements and checks each new image.
async fn watch_execs(ring: RingBuf<MapData>, state: &ControlState) {
    // SAFETY: the ring buffer owns its fd for as long as the AsyncFd lives.
    let registered = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) };
    let mut ring = match registered {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("exec checker unavailable ({e}); held processes are checked by the sweep");
            return;
        }
    };
    loop {
        let Ok(mut guard) = ring.readable_mut().await else {
            return;
        };
        let mut tgids = Vec::new();
        while let Some(item) = guard.get_inner_mut().next() {
            if item.len() >= std::mem::size_of::<ExecEvent>() {
                tgids.push(u32::from_ne_bytes([item[0], item[1], item[2], item[3]]));
            }
        }
        guard.clear_ready();
        if tgids.is_empty() {
            continue;
        }
        let book = state.revocations.lock().await;
        let mut kernel = state.kernel.lock().await;
        for tgid in tgids {
            control::check_exec(&mut kernel.maps, &state.gate, &book, tgid);
        }
    }
}

/// Checks processes held longer than expected.
async fn check_held(state: &ControlState) {
    let book = state.revocations.lock().await;
    if !book.watches_exec() {
        // Nothing is held while no exe/agent revocation exists (the hooks
        // ignore leftover entries then, and the LRU map ages them out).
        return;
    }
    let mut kernel = state.kernel.lock().await;
    let now = crate::identity::boot_ns();
    let stale: Vec<u32> = kernel
        .maps
        .exec_pending()
        .into_iter()
        .filter(|(_, at)| now.saturating_sub(*at) > HELD_TOO_LONG_NS)
        .map(|(tgid, _)| tgid)
        .collect();
    for tgid in stale {
        control::check_exec(&mut kernel.maps, &state.gate, &book, tgid);
    }
}

/// Drops revoked-pid entries of processes that no longer exist.
async fn forget_exited(state: &ControlState) {
    let mut kernel = state.kernel.lock().await;
    for (pid, _) in kernel.maps.revoked_pids() {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            kernel.maps.forget_pid(pid);
        }
    }
}
