//! Operator state and the local control socket. `control` owns what
//! operators change at runtime (for now, redirect rules); the CLI and the
//! kernel maps are views of it, and it persists across restarts.
mod client;
mod grant_ops;
mod grants;
mod protocol;
mod review_ops;
mod revocations;
mod revoke_ops;
mod rulebook;
mod server;

pub use client::{request, ClientError};
pub use grant_ops::{apply as apply_grants, now_unix, sweep as sweep_grants};
pub use grants::{Grant, GrantBook, GrantError, GrantRequest};
pub use protocol::{Request, Response, RuleView, StatusReport};
pub use revocations::{Revocation, RevocationBook, RevocationError, Selector};
pub use revoke_ops::{apply as apply_revocation, check_exec, sweep as sweep_revocations, RevokeRequest};
pub use rulebook::{RuleBook, RuleBookError, RuleSource};
pub use server::{handle_as, label, serve, ControlState};
