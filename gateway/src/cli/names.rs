//! `interlock names`: the names agents resolved through the gateway, bound
//! to the addresses the answers gave (a connect to such an address is
//! judged as the name); also shown by `status` and `policy explain`.
use std::{fmt::Write as _, net::IpAddr};

use super::{ask, CliError};
use crate::{
    config::Config,
    control::{ClientError, Request, Response},
    targets::BindingView,
};

/// Renders bindings, one a line.
pub(super) fn table(indent: &str, names: &[BindingView]) -> String {
    let mut out = String::new();
    for b in names {
        let _ = writeln!(
            out,
            "{indent}{:<20} {:<40} {:<40} {:>6}s",
            b.agent.to_string(),
            b.ip.to_string(),
            b.name,
            b.expires_in
        );
    }
    out
}

/// Prints the live bindings (of one address when given).
pub async fn names(config: &Config, ip: Option<IpAddr>, json: bool) -> Result<(), CliError> {
    let names = fetch(config, ip).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&names).unwrap_or_default());
    } else if names.is_empty() {
        println!(
            "no names learned{}",
            ip.map(|i| format!(" for {i}")).unwrap_or_default()
        );
    } else {
        println!("{:<20} {:<40} {:<40} {:>7}", "AGENT", "ADDRESS", "NAME", "EXPIRES");
        print!("{}", table("", &names));
    }
    Ok(())
}

async fn fetch(config: &Config, ip: Option<IpAddr>) -> Result<Vec<BindingView>, CliError> {
    match ask(config, Request::Names { ip }).await? {
        Response::Names { names } => Ok(names),
        other => Err(CliError::Other(format!("unexpected answer: {other:?}"))),
    }
}

/// The bindings of `ip` from the running gateway, for commands that run
/// without a runtime of their own; `None` when the gateway is not running.
pub(super) fn live(config: &Config, ip: IpAddr) -> Result<Option<Vec<BindingView>>, CliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Other(format!("starting a runtime: {e}")))?;
    match runtime.block_on(fetch(config, Some(ip))) {
        Ok(names) => Ok(Some(names)),
        Err(CliError::Client(ClientError::NotRunning { .. })) => Ok(None),
        Err(e) => Err(e),
    }
}
