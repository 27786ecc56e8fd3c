//! `interlock ca export`: the local CA certificate, for agents' trust stores.
use super::CliError;
use crate::config::Config;

/// Prints the CA certificate (PEM). The CA is created by the first `interlock run`.
pub fn ca_export(config: &Config) -> Result<(), CliError> {
    let path = config.paths.state_dir.join("ca/ca.pem");
    let pem = std::fs::read_to_string(&path).map_err(|e| {
        CliError::Other(format!(
            "{}: {e} (the CA is created when the gateway first runs)",
            path.display()
        ))
    })?;
    print!("{pem}");
    Ok(())
}
