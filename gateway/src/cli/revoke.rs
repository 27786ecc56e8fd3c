//! `interlock revoke`, `interlock revocations`, `interlock unrevoke`.
use super::{ask, CliError};
use crate::{
    config::Config,
    control::{Request, Response, RevokeRequest},
};

fn done(response: Response) -> Result<(), CliError> {
    match response {
        Response::Ok { message } => {
            println!("{message}");
            Ok(())
        }
        other => Err(CliError::Other(format!("unexpected answer: {other:?}"))),
    }
}

/// Revokes processes: the kernel refuses their new connections and their
/// live sessions are cut.
pub async fn revoke(config: &Config, request: RevokeRequest) -> Result<(), CliError> {
    done(ask(config, Request::Revoke { revoke: request }).await?)
}

/// Lifts a revocation.
pub async fn unrevoke(config: &Config, id: String) -> Result<(), CliError> {
    done(ask(config, Request::Unrevoke { id }).await?)
}

/// Lists revocations in force.
pub async fn revocations(config: &Config, json: bool) -> Result<(), CliError> {
    let Response::Revocations { revocations } = ask(config, Request::RevocationsList).await? else {
        return Err(CliError::Other("unexpected answer to revocations".into()));
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&revocations).unwrap_or_default());
        return Ok(());
    }
    println!(
        "{:<6} {:<40} {:<20} {:<24} {:<12} REASON",
        "ID", "WHAT", "BY", "SINCE", "UNTIL"
    );
    for r in revocations {
        let until = r
            .expires_unix
            .map_or_else(|| "lifted".to_owned(), |t| format!("unix {t}"));
        println!(
            "{:<6} {:<40} {:<20} {:<24} {:<12} {}",
            r.id,
            r.selector.to_string(),
            r.by,
            r.created_at,
            until,
            r.reason
        );
    }
    Ok(())
}
