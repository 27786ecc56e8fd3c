//! Operator state and the local control socket. `control` owns what
//! operators change at runtime (for now, redirect rules); the CLI and the
//! kernel maps are views of it, and it persists across restarts.
mod client;
mod protocol;
mod rulebook;
mod server;

pub use client::{request, ClientError};
pub use protocol::{Request, Response, RuleView, StatusReport};
pub use rulebook::{RuleBook, RuleBookError, RuleSource};
pub use server::{serve, ControlState};
