//! Secrets the gateway holds for targets. Agents never see them: the
//! gateway reads them by reference (an environment variable of its own, or a
//! root-only file that is re-read when it changes, so rotation needs no
//! restart) and never logs them or puts them in errors.
use std::{path::PathBuf, sync::Mutex, time::SystemTime};

use http::{HeaderName, HeaderValue};

use crate::config::CredentialSpec;

/// Why a credential is unavailable (gateway side). Never contains the secret.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The environment variable is not set.
    #[error("credential: environment variable {0} is not set")]
    MissingEnv(String),
    /// The file could not be read.
    #[error("credential: cannot read {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why (an I/O error; never the content).
        message: String,
    },
    /// The secret cannot be sent in a header.
    #[error("credential from {0} is not a valid header value")]
    Invalid(String),
}

enum Source {
    Env(String),
    File(PathBuf),
}

/// One target's credential.
pub struct Credential {
    header: String,
    scheme: Option<String>,
    source: Source,
    cached: Mutex<Option<(Option<SystemTime>, String)>>,
}

impl Credential {
    /// From validated config.
    pub fn new(spec: &CredentialSpec) -> Self {
        let source = match (&spec.env, &spec.file) {
            (Some(var), _) => Source::Env(var.clone()),
            (None, Some(path)) => Source::File(path.clone()),
            (None, None) => Source::Env(String::new()),
        };
        Self {
            header: spec.header.to_ascii_lowercase(),
            scheme: spec.scheme.clone(),
            source,
            cached: Mutex::new(None),
        }
    }

    /// The secret itself, for scrubbing echoes of it from responses. Never log it.
    pub(crate) fn secret(&self) -> Result<String, CredentialError> {
        match &self.source {
            Source::Env(var) => std::env::var(var).map_err(|_| CredentialError::MissingEnv(var.clone())),
            Source::File(path) => {
                let err = |e: std::io::Error| CredentialError::File {
                    path: path.clone(),
                    message: e.kind().to_string(),
                };
                let mtime = std::fs::metadata(path).map_err(err)?.modified().ok();
                let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
                if let Some((at, secret)) = cached.as_ref() {
                    if *at == mtime && mtime.is_some() {
                        return Ok(secret.clone());
                    }
                }
                let secret = std::fs::read_to_string(path).map_err(err)?.trim().to_owned();
                *cached = Some((mtime, secret.clone()));
                Ok(secret)
            }
        }
    }

    fn origin(&self) -> String {
        match &self.source {
            Source::Env(var) => format!("environment variable {var}"),
            Source::File(path) => path.display().to_string(),
        }
    }

    /// The header to inject.
    pub fn header(&self) -> Result<(HeaderName, HeaderValue), CredentialError> {
        let secret = self.secret()?;
        let value = match &self.scheme {
            Some(scheme) => format!("{scheme} {secret}"),
            None => secret,
        };
        let name =
            HeaderName::from_bytes(self.header.as_bytes()).map_err(|_| CredentialError::Invalid(self.origin()))?;
        let mut value = HeaderValue::from_str(&value).map_err(|_| CredentialError::Invalid(self.origin()))?;
        value.set_sensitive(true);
        Ok((name, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_credentials_rotate_without_restart_and_errors_hide_the_secret() {
        let dir = std::env::temp_dir().join(format!("interlock-cred-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key");
        std::fs::write(&path, "sk-first\n").unwrap();
        let spec = CredentialSpec {
            header: "Authorization".into(),
            scheme: Some("Bearer".into()),
            env: None,
            file: Some(path.clone()),
        };
        let c = Credential::new(&spec);
        assert_eq!(c.header().unwrap().1, "Bearer sk-first");
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&path, "sk-second").unwrap();
        let t = SystemTime::now() + std::time::Duration::from_secs(1);
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(t).unwrap();
        assert_eq!(c.header().unwrap().1, "Bearer sk-second");
        std::fs::write(&path, "bad\nvalue").unwrap();
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(t + std::time::Duration::from_secs(1)).unwrap();
        let err = c.header().unwrap_err().to_string();
        assert!(!err.contains("bad"), "{err}");
        let env = Credential::new(&CredentialSpec {
            header: "x-api-key".into(),
            scheme: None,
            env: Some("INTERLOCK_TEST_NO_SUCH_VAR".into()),
            file: None,
        });
        assert!(env
            .header()
            .unwrap_err()
            .to_string()
            .contains("INTERLOCK_TEST_NO_SUCH_VAR"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
