//! `interlock grant` and `interlock grants`.
use std::time::Duration;

use super::{ask, CliError};
use crate::{
    config::Config,
    control::{GrantRequest, Request, Response},
};

/// Adds a time-limited grant.
pub async fn grant(
    config: &Config,
    agent: String,
    target: String,
    actions: Vec<String>,
    duration: Duration,
    reason: String,
) -> Result<(), CliError> {
    let request = GrantRequest {
        agent,
        target,
        actions,
        seconds: duration.as_secs(),
        reason,
    };
    match ask(config, Request::GrantAdd { grant: request }).await? {
        Response::Ok { message } => {
            println!("{message}");
            Ok(())
        }
        other => Err(CliError::Other(format!("unexpected answer: {other:?}"))),
    }
}

/// Lists grants in force.
pub async fn grants_list(config: &Config, json: bool) -> Result<(), CliError> {
    let Response::Grants { grants } = ask(config, Request::GrantsList).await? else {
        return Err(CliError::Other("unexpected answer to grants list".into()));
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&grants).unwrap_or_default());
        return Ok(());
    }
    let now = crate::control::now_unix();
    println!(
        "{:<8} {:<20} {:<24} {:<28} {:>9}  {:<20} REASON",
        "ID", "AGENT", "TARGET", "ACTIONS", "LEFT", "BY"
    );
    for g in grants {
        let left = humantime::format_duration(Duration::from_secs(g.expires_unix.saturating_sub(now)));
        println!(
            "{:<8} {:<20} {:<24} {:<28} {:>9}  {:<20} {}",
            g.id,
            g.agent,
            g.target,
            g.actions.join(","),
            left.to_string(),
            g.granted_by,
            g.reason
        );
    }
    Ok(())
}

/// Ends a grant early.
pub async fn grants_revoke(config: &Config, id: String) -> Result<(), CliError> {
    match ask(config, Request::GrantRevoke { id }).await? {
        Response::Ok { message } => {
            println!("{message}");
            Ok(())
        }
        other => Err(CliError::Other(format!("unexpected answer: {other:?}"))),
    }
}
