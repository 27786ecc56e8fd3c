//! The drain at shutdown: the listeners are closed first (new connections
//! are refused by the kernel's redirect to a closed port, so agents fail
//! closed), open sessions get `listener.drain_timeout` to finish, and what
//! is left is then closed by the gateway. Each session records its own
//! `connection` event as it ends, so when this returns every session that
//! was accepted has its event, and `gateway_stopped` comes after them all.
use std::time::Duration;

use tokio_util::task::TaskTracker;

use crate::proxy::LiveTable;

/// How often idle kept-alive HTTP connections are closed during the drain.
const IDLE_SWEEP: Duration = Duration::from_millis(100);

/// How long sessions closed by the gateway get to record their events.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Waits for `sessions` to end, for up to `timeout`, then closes the rest;
/// the listeners must be closed already.
pub(super) async fn drain(sessions: &TaskTracker, live: &LiveTable, timeout: Duration) {
    sessions.close();
    live.begin_drain();
    if sessions.is_empty() {
        return;
    }
    tracing::info!(
        sessions = sessions.len(),
        "draining: no new connections; open sessions have {} to finish",
        humantime::format_duration(timeout)
    );
    let finished = tokio::time::timeout(timeout, async {
        let mut sweep = tokio::time::interval(IDLE_SWEEP);
        loop {
            tokio::select! {
                () = sessions.wait() => return,
                _ = sweep.tick() => {
                    live.close_idle();
                }
            }
        }
    });
    if finished.await.is_ok() {
        tracing::info!("drained: every session ended");
        return;
    }
    let closed = live.close();
    tracing::warn!(
        closed,
        "closing the sessions still open after the drain timeout (recorded as shutdown)"
    );
    if tokio::time::timeout(CLOSE_GRACE, sessions.wait()).await.is_err() {
        tracing::error!(
            left = sessions.len(),
            "sessions did not end after being closed; their connection events are lost"
        );
    }
}
