//! `interlock rules list|add|remove`: live edits through the daemon.
use crate::{
    config::{Config, RuleSpec},
    control::{Request, Response},
};

use super::{ask, CliError};

/// Lists the rules with their counters.
pub async fn rules_list(config: &Config, json: bool) -> Result<(), CliError> {
    let Response::Rules { rules } = ask(config, Request::RulesList).await? else {
        return Err(CliError::Other("unexpected answer to rules list".into()));
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&rules).unwrap_or_default());
        return Ok(());
    }
    print!("{}", super::table::rules("", &rules, None));
    Ok(())
}

/// Adds a runtime rule.
pub async fn rules_add(config: &Config, rule: RuleSpec) -> Result<(), CliError> {
    rule.validate().map_err(CliError::Other)?;
    report(ask(config, Request::RulesAdd { rule }).await?)
}

/// Removes a runtime rule.
pub async fn rules_remove(config: &Config, name: String) -> Result<(), CliError> {
    report(ask(config, Request::RulesRemove { name }).await?)
}

fn report(response: Response) -> Result<(), CliError> {
    match response {
        Response::Ok { message } => {
            println!("{message}");
            Ok(())
        }
        other => Err(CliError::Other(format!("unexpected answer: {other:?}"))),
    }
}
