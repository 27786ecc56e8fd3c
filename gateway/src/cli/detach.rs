//! `interlock detach`: the explicit, logged way to take the hooks away.
use std::io::Write as _;

use crate::{
    audit::{self, Event},
    config::Config,
    kernel::{detach_all, PinLayout},
};

use super::CliError;

/// Unpins every link and map. Agents are no longer intercepted afterwards.
pub fn detach(config: &Config) -> Result<(), CliError> {
    let layout = PinLayout::new(&config.paths.pin_dir);
    let removed = detach_all(&layout)?;
    if removed.is_empty() {
        println!("nothing pinned at {}", config.paths.pin_dir.display());
        return Ok(());
    }
    let who = std::env::var("SUDO_USER").unwrap_or_else(|_| format!("uid {}", nix::unistd::getuid()));
    tracing::warn!(by = %who, "detached Interlock from the kernel: {} objects removed; agents are no longer intercepted", removed.len());
    let event = Event::Detached {
        time: audit::now(),
        by: who,
        removed: removed.clone(),
    };
    // Appended directly: the daemon may be down, and detach must leave a trace.
    let path = config.paths.events_file();
    let line = serde_json::to_string(&event).unwrap_or_default() + "\n";
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        tracing::error!("could not record the detach in {}: {e}", path.display());
    }
    if let Err(e) = audit::append_direct(config, &event) {
        tracing::error!("could not record the detach in the audit trail: {e}");
    }
    for r in removed {
        println!("removed {r}");
    }
    Ok(())
}
