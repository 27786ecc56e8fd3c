//! The `interlock` subcommands other than `run`. Each talks to the daemon's
//! control socket or, where that makes sense with the daemon down, reads the
//! pinned kernel state directly.
use std::path::Path;

use crate::{
    config::{Config, ConfigError},
    control::{self, ClientError, Request, Response},
    kernel::KernelError,
};

mod approvals;
mod audit;
mod ca;
mod detach;
mod exec;
mod grants;
mod names;
mod policy;
mod revoke;
mod rules;
mod status;
mod table;

pub use approvals::{approvals_approve, approvals_deny, approvals_list, approvals_show};
pub use audit::{audit, AuditCommand};
pub use ca::ca_export;
pub use detach::detach;
pub use exec::exec;
pub use grants::{grant, grants_list, grants_revoke};
pub use names::names;
pub use policy::{policy_check, policy_explain, Subject};
pub use revoke::{revocations, revoke, unrevoke};
pub use rules::{rules_add, rules_list, rules_remove};
pub use status::status;

/// Errors of CLI commands.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The configuration is bad.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The daemon could not be reached or answered badly.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The daemon refused the request.
    #[error("{0}")]
    Refused(String),
    /// Reading or changing kernel state failed.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// Cgroup handling failed.
    #[error(transparent)]
    Cgroup(#[from] crate::cgroup::CgroupError),
    /// Anything else, with context.
    #[error("{0}")]
    Other(String),
}

/// Loads the config the CLI was pointed at (or the embedded defaults).
pub fn load_config(path: Option<&Path>) -> Result<Config, CliError> {
    Ok(Config::load(path)?)
}

/// Sends a request and turns a refusal into an error.
pub(crate) async fn ask(config: &Config, request: Request) -> Result<Response, CliError> {
    match control::request(&config.paths.control_socket(), &request).await? {
        Response::Error { message } => Err(CliError::Refused(message)),
        other => Ok(other),
    }
}
