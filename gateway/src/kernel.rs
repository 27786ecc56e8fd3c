//! Everything that touches the kernel side: loading and attaching the
//! programs, pinning and adopting them, and reading and writing their maps.
//! This is the only module that uses aya; the rest of the gateway sees typed
//! rules, records and counters.
use std::path::PathBuf;

mod attach;
mod load;
mod maps;
mod pins;
pub mod rules;
mod tracefs;

pub use attach::{AttachedLink, Attachment};
pub use load::{pinned_links, Kernel, LoadOptions};
pub use maps::{Handoff, KernelMaps, KernelView};
pub use pins::{detach_all, PinLayout};
pub use tracefs::field_offset;

/// Errors from the kernel side. All are the gateway's own (or the host's).
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// Loading the eBPF object or a program into the kernel failed.
    #[error("loading eBPF programs: {0}")]
    Load(String),
    /// Attaching, pinning or unpinning a program link failed.
    #[error("attaching {program} to cgroup {cgroup}: {message}")]
    Attach {
        /// Program name.
        program: String,
        /// Cgroup path.
        cgroup: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A map could not be opened, read or written.
    #[error("map {map}: {message}")]
    Map {
        /// Map name.
        map: &'static str,
        /// What went wrong.
        message: String,
    },
    /// A pin path could not be created, read or removed.
    #[error("pins at {path}: {message}")]
    Pin {
        /// The pin path.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The rule set cannot be expressed in the kernel maps.
    #[error("rules: {0}")]
    Rules(String),
    /// A cgroup could not be found or opened.
    #[error(transparent)]
    Cgroup(#[from] crate::cgroup::CgroupError),
}

/// An error and its sources on one line: aya's top-level messages name only
/// the syscall, the errno is in the source.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
