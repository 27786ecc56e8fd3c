//! Changing what is in force while running: SIGHUP re-reads the config file
//! (rules, agents, targets) and the policies; policy files are also watched.
//! Whatever fails to load is logged and recorded, and what works stays.
use std::{path::Path, time::Duration};

use tokio::signal::unix::{signal, SignalKind};

use super::DaemonError;
use crate::{
    audit::{self, Event, EventSink},
    config::Config,
    control::ControlState,
    identity::AgentMatcher,
    policy::Gate,
    targets::TargetTable,
};

/// Waits for SIGTERM/SIGINT; SIGHUP reloads.
pub(super) async fn wait_for_shutdown(
    config_path: Option<&Path>,
    state: &ControlState,
    gate: &Gate,
) -> Result<(), DaemonError> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = hup.recv() => {
                reload_config(config_path, state, gate).await;
                reload_policies(gate, &state.events).await;
            }
        }
    }
}

async fn reload_config(config_path: Option<&Path>, state: &ControlState, gate: &Gate) {
    let Some(path) = config_path else {
        tracing::info!("SIGHUP: running on embedded defaults, no config file to reload");
        return;
    };
    let config = match Config::load(Some(path)) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("SIGHUP: keeping the current rules, agents and targets: {e}");
            return;
        }
    };
    match AgentMatcher::new(&config.agents) {
        Ok(agents) => gate.replace_naming(agents, TargetTable::new(&config.targets)),
        Err(e) => {
            tracing::error!("SIGHUP: keeping the current rules, agents and targets: {e}");
            return;
        }
    }
    let mut book = state.book.lock().await;
    match book.replace_config(&config) {
        Ok((compiled, fresh)) => {
            let mut kernel = state.kernel.lock().await;
            for slot in fresh {
                let _ = kernel.maps.reset_stats(slot);
            }
            match kernel.maps.apply_rules(&compiled) {
                Ok(()) => {
                    tracing::info!(
                        "SIGHUP: rules, agents and targets reloaded from {} (other sections apply at restart)",
                        path.display()
                    );
                    let change = format!("reloaded rules from {}", path.display());
                    let _ = state
                        .events
                        .record(Event::RulesChanged {
                            time: audit::now(),
                            change,
                        })
                        .await;
                }
                Err(e) => tracing::error!("SIGHUP: kernel rejected the reloaded rules: {e}"),
            }
        }
        Err(e) => tracing::error!("SIGHUP: keeping the current rules: {e}"),
    }
}

/// Reloads the policies and records the outcome.
async fn reload_policies(gate: &Gate, events: &EventSink) {
    let source = gate.policies.current().source.clone();
    let (policies, error) = match gate.policies.reload() {
        Ok(set) => {
            tracing::info!(source = %set.source, count = set.len(), "policies reloaded");
            (set.len(), None)
        }
        Err(e) => {
            tracing::error!("policy reload refused, the previous policies stay in force: {e}");
            (gate.policies.current().len(), Some(e.to_string()))
        }
    };
    let _ = events
        .record(Event::PolicyReloaded {
            time: audit::now(),
            source,
            policies,
            error,
        })
        .await;
}

/// What the policy directory looks like: names, sizes and modification times.
fn fingerprint(dir: &Path) -> Vec<(String, u64, Option<std::time::SystemTime>)> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            Some((
                e.file_name().to_string_lossy().into_owned(),
                meta.len(),
                meta.modified().ok(),
            ))
        })
        .collect();
    entries.sort();
    entries
}

/// Polls the policy directory and reloads when a file changes. Polling (every
/// 500 ms) works on every filesystem and survives editors that replace files.
pub(super) async fn watch_policies(gate: &Gate, events: &EventSink) {
    let Some(dir) = gate.policies.dir().map(Path::to_owned) else {
        return;
    };
    let mut seen = fingerprint(&dir);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = fingerprint(&dir);
        if now != seen {
            seen = now;
            // Let a writer finish a burst of changes before reading.
            tokio::time::sleep(Duration::from_millis(100)).await;
            seen = fingerprint(&dir).max(seen);
            reload_policies(gate, events).await;
        }
    }
}
