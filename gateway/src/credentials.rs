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
    /// No unexpired OAuth2 token is held (fetch one first).
    #[error("credential: no valid token from {0}")]
    TokenMissing(String),
    /// The secret cannot be sent in a header.
    #[error("credential: command {program} {message}")]
    Command {
        /// The program.
        program: String,
        /// What happened (exit status or spawn error; never the output).
        message: String,
    },
    /// The secret cannot be sent in a header.
    #[error("credential from {0} is not a valid header value")]
    Invalid(String),
}

enum Source {
    Env(String),
    File(PathBuf),
    Command(Vec<String>, std::time::Duration),
    OAuth2(crate::config::OAuth2Spec),
}

/// Longest a credential command may run.
const COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

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
        let source = match (&spec.env, &spec.file, &spec.command) {
            (Some(var), _, _) => Source::Env(var.clone()),
            (None, Some(path), _) => Source::File(path.clone()),
            (None, None, Some(argv)) => Source::Command(argv.clone(), spec.refresh),
            (None, None, None) => match &spec.oauth2 {
                Some(o) => Source::OAuth2(o.clone()),
                None => Source::Env(String::new()),
            },
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
            Source::OAuth2(o) => {
                // Tokens are fetched by the proxy (it owns the network path);
                // here only an unexpired one is handed out.
                let cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
                match cached.as_ref() {
                    Some((Some(expires), token)) if SystemTime::now() < *expires => Ok(token.clone()),
                    _ => Err(CredentialError::TokenMissing(o.token_url.clone())),
                }
            }
            Source::Command(argv, refresh) => {
                let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
                if let Some((Some(at), secret)) = cached.as_ref() {
                    if at.elapsed().is_ok_and(|age| age < *refresh) {
                        return Ok(secret.clone());
                    }
                }
                let secret = run_command(argv)?;
                *cached = Some((Some(SystemTime::now()), secret.clone()));
                Ok(secret)
            }
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
            Source::Command(argv, _) => format!("command {}", argv.first().map_or("", String::as_str)),
            Source::OAuth2(o) => format!("token endpoint {}", o.token_url),
        }
    }

    /// The OAuth2 source, when the secret is a token the gateway must fetch and
    /// no unexpired one is held.
    pub fn needs_token(&self) -> Option<&crate::config::OAuth2Spec> {
        let Source::OAuth2(o) = &self.source else { return None };
        let cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        // Refresh 30 s before expiry.
        let fresh = cached
            .as_ref()
            .is_some_and(|(exp, _)| exp.is_some_and(|e| SystemTime::now() + std::time::Duration::from_secs(30) < e));
        (!fresh).then_some(o)
    }

    /// Stores a fetched token and its lifetime.
    pub fn store_token(&self, token: String, lifetime: std::time::Duration) {
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = Some((Some(SystemTime::now() + lifetime), token));
    }

    /// The header to inject.
    pub fn header(&self) -> Result<(HeaderName, HeaderValue), CredentialError> {
        let secret = self.secret()?;
        let scheme = self
            .scheme
            .as_deref()
            .or(matches!(self.source, Source::OAuth2(_)).then_some("Bearer"));
        let value = match scheme {
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

/// Runs a credential command (no shell) with a time limit; returns its
/// trimmed standard output.
fn run_command(argv: &[String]) -> Result<String, CredentialError> {
    let program = argv.first().cloned().unwrap_or_default();
    let err = |message: String| CredentialError::Command {
        program: program.clone(),
        message,
    };
    let run = || -> Result<String, CredentialError> {
        let mut child = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| err(format!("could not start: {}", e.kind())))?;
        let deadline = std::time::Instant::now() + COMMAND_TIMEOUT;
        loop {
            match child.try_wait().map_err(|e| err(e.kind().to_string()))? {
                Some(status) if status.success() => break,
                Some(status) => return Err(err(format!("failed: {status}"))),
                None if std::time::Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(err(format!("timed out after {COMMAND_TIMEOUT:?}")));
                }
                None => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        }
        let mut out = String::new();
        if let Some(mut stdout) = child.stdout.take() {
            std::io::Read::read_to_string(&mut stdout, &mut out).map_err(|e| err(e.kind().to_string()))?;
        }
        Ok(out.trim().to_owned())
    };
    // Inside the gateway's multi-threaded runtime, let other tasks move on
    // while the command runs.
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(run),
        _ => run(),
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
            command: None,
            oauth2: None,
            refresh: std::time::Duration::from_secs(300),
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
            command: None,
            oauth2: None,
            refresh: std::time::Duration::from_secs(300),
        });
        assert!(env
            .header()
            .unwrap_err()
            .to_string()
            .contains("INTERLOCK_TEST_NO_SUCH_VAR"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn command_credentials_and_their_failures() {
        let spec = |argv: &[&str]| CredentialSpec {
            header: "x-api-key".into(),
            scheme: None,
            env: None,
            file: None,
            command: Some(argv.iter().map(|s| (*s).to_owned()).collect()),
            oauth2: None,
            refresh: std::time::Duration::from_secs(60),
        };
        assert_eq!(
            Credential::new(&spec(&["/bin/echo", "sk-from-command"]))
                .header()
                .unwrap()
                .1,
            "sk-from-command"
        );
        let e = Credential::new(&spec(&["/bin/sh", "-c", "echo secret-out; exit 3"]))
            .header()
            .unwrap_err()
            .to_string();
        assert!(e.contains("failed") && !e.contains("secret-out"), "{e}");
        let e = Credential::new(&spec(&["/no/such/program"]))
            .header()
            .unwrap_err()
            .to_string();
        assert!(e.contains("could not start"), "{e}");
    }
}
