//! `interlock approvals`: held requests, and approving or denying them as
//! the person at the terminal (root or the admin group, by socket peer).
use super::{ask, CliError};
use crate::{
    config::Config,
    control::{Request, Response},
    review::{ReviewRecord, Scope},
};

/// `interlock approvals list`.
pub async fn approvals_list(config: &Config, json: bool) -> Result<(), CliError> {
    let Response::Reviews { reviews } = ask(config, Request::ApprovalsList).await? else {
        return Err(CliError::Other("unexpected answer".into()));
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&reviews).unwrap_or_default());
        return Ok(());
    }
    println!(
        "{:<8} {:<9} {:<16} {:>7} {:<16} {:<9} REQUEST",
        "ID", "STATE", "AGENT", "PID", "TARGET", "APPROVALS"
    );
    for r in reviews {
        let request: String = r.request.chars().take(60).collect();
        println!(
            "{:<8} {:<9} {:<16} {:>7} {:<16} {:<9} {request}",
            r.id,
            r.state,
            r.agent,
            r.pid,
            r.target,
            format!("{}/{}", r.approvals.len(), r.approvals_needed)
        );
    }
    Ok(())
}

/// `interlock approvals show ID`.
pub async fn approvals_show(config: &Config, id: String) -> Result<(), CliError> {
    let Response::Review { review } = ask(config, Request::ApprovalShow { id }).await? else {
        return Err(CliError::Other("unexpected answer".into()));
    };
    let review: &ReviewRecord = &review;
    println!("{}", serde_json::to_string_pretty(review).unwrap_or_default());
    Ok(())
}

/// `interlock approvals approve ID [--identical-for D | --grant-for D]`.
pub async fn approvals_approve(config: &Config, id: String, scope: Scope) -> Result<(), CliError> {
    say(ask(config, Request::Approve { id, scope }).await?)
}

/// `interlock approvals deny ID --reason R`.
pub async fn approvals_deny(config: &Config, id: String, reason: String) -> Result<(), CliError> {
    say(ask(config, Request::Deny { id, reason }).await?)
}

fn say(response: Response) -> Result<(), CliError> {
    match response {
        Response::Ok { message } => {
            println!("{message}");
            Ok(())
        }
        _ => Err(CliError::Other("unexpected answer".into())),
    }
}
