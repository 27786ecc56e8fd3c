//! Secrets the gateway holds for targets. Agents never see them: the
//! gateway reads them by reference (an environment variable of its own, or a
//! root-only file that is re-read within a second of a change, so rotation needs no
//! restart) and never logs them or puts them in errors.
use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::SystemTime,
};

use http::{HeaderName, HeaderValue};

use crate::config::{CredentialSpec, SecretSource};

mod oauth2;

pub use oauth2::client_credentials;

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
    /// The token endpoint did not give a token (upstream side, or the
    /// secret file is unreadable).
    #[error("credential: token from {url}: {message}")]
    Token {
        /// The token endpoint.
        url: String,
        /// Why (never the secret).
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

/// How often a credential file is looked at for a change (its mtime). A
/// rotated key is in use within this; looking on every request cost a
/// `stat` per request on the data path.
const FILE_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// A credential's current value, ready to send. Not `Debug`: it is the secret.
pub struct Material {
    /// The header it goes in.
    pub name: HeaderName,
    /// The header's value (scheme and secret), marked sensitive.
    pub value: HeaderValue,
    /// The secret itself, for scrubbing echoes of it from responses. Never log it.
    pub(crate) secret: String,
}

/// The value last read and what says whether it is still current.
struct Cached {
    /// Source-specific: the file's mtime, the token's expiry, or when the
    /// command ran.
    stamp: Option<SystemTime>,
    /// When the source was last looked at (files only).
    checked: std::time::Instant,
    material: Arc<Material>,
}

/// One target's credential.
pub struct Credential {
    header: String,
    scheme: Option<String>,
    source: Source,
    /// Files: how long a read value is used before the file is looked at again.
    recheck: std::time::Duration,
    cached: Mutex<Option<Cached>>,
}

impl Credential {
    /// From validated config.
    pub fn new(spec: &CredentialSpec) -> Self {
        let source = match spec.source() {
            Some(SecretSource::Env(var)) => Source::Env(var.to_owned()),
            Some(SecretSource::File(path)) => Source::File(path.to_owned()),
            Some(SecretSource::Command(argv)) => Source::Command(argv.to_vec(), spec.refresh),
            Some(SecretSource::OAuth2(o)) => Source::OAuth2(o.clone()),
            // Validation refuses such a spec; should one get here, every use
            // fails (an unnamed variable is never set) and nothing is sent.
            None => Source::Env(String::new()),
        };
        Self {
            header: spec.header.to_ascii_lowercase(),
            scheme: spec.scheme.clone(),
            source,
            recheck: FILE_RECHECK,
            cached: Mutex::new(None),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Option<Cached>> {
        self.cached.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The secret itself, for scrubbing echoes of it from responses. Never log it.
    pub(crate) fn secret(&self) -> Result<String, CredentialError> {
        Ok(self.material()?.secret.clone())
    }

    /// The current value: the header built once per value read, shared by
    /// every request until the source changes.
    pub fn material(&self) -> Result<Arc<Material>, CredentialError> {
        match &self.source {
            Source::Env(var) => {
                let secret = std::env::var(var).map_err(|_| CredentialError::MissingEnv(var.clone()))?;
                let mut cached = self.cache();
                match cached.as_ref() {
                    Some(c) if c.material.secret == secret => Ok(c.material.clone()),
                    _ => self.keep(&mut cached, None, secret),
                }
            }
            Source::OAuth2(o) => {
                // Tokens are fetched by the proxy (it owns the network path);
                // here only an unexpired one is handed out.
                let cached = self.cache();
                match cached.as_ref() {
                    Some(c) if c.stamp.is_some_and(|expires| SystemTime::now() < expires) => Ok(c.material.clone()),
                    _ => Err(CredentialError::TokenMissing(o.token_url.clone())),
                }
            }
            Source::Command(argv, refresh) => {
                let mut cached = self.cache();
                if let Some(c) = cached.as_ref() {
                    if c.stamp
                        .and_then(|at| at.elapsed().ok())
                        .is_some_and(|age| age < *refresh)
                    {
                        return Ok(c.material.clone());
                    }
                }
                let secret = run_command(argv)?;
                self.keep(&mut cached, Some(SystemTime::now()), secret)
            }
            Source::File(path) => {
                let mut cached = self.cache();
                if let Some(c) = cached.as_ref() {
                    if c.checked.elapsed() < self.recheck {
                        return Ok(c.material.clone());
                    }
                }
                let err = |e: std::io::Error| CredentialError::File {
                    path: path.clone(),
                    message: e.kind().to_string(),
                };
                let mtime = std::fs::metadata(path).map_err(err)?.modified().ok();
                if let Some(c) = cached.as_mut() {
                    if c.stamp == mtime && mtime.is_some() {
                        c.checked = std::time::Instant::now();
                        return Ok(c.material.clone());
                    }
                }
                let secret = std::fs::read_to_string(path).map_err(err)?.trim().to_owned();
                self.keep(&mut cached, mtime, secret)
            }
        }
    }

    /// Builds the header for `secret` and keeps it as the current value. A
    /// secret that cannot be a header value is not kept (the next request
    /// reads the source again).
    fn keep(
        &self,
        cached: &mut Option<Cached>,
        stamp: Option<SystemTime>,
        secret: String,
    ) -> Result<Arc<Material>, CredentialError> {
        let material = Arc::new(self.build(secret)?);
        *cached = Some(Cached {
            stamp,
            checked: std::time::Instant::now(),
            material: material.clone(),
        });
        Ok(material)
    }

    fn build(&self, secret: String) -> Result<Material, CredentialError> {
        let scheme = self
            .scheme
            .as_deref()
            .or(matches!(self.source, Source::OAuth2(_)).then_some("Bearer"));
        let value = match scheme {
            Some(scheme) => format!("{scheme} {secret}"),
            None => secret.clone(),
        };
        let name =
            HeaderName::from_bytes(self.header.as_bytes()).map_err(|_| CredentialError::Invalid(self.origin()))?;
        let mut value = HeaderValue::from_str(&value).map_err(|_| CredentialError::Invalid(self.origin()))?;
        value.set_sensitive(true);
        Ok(Material { name, value, secret })
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
        // Refresh 30 s before expiry.
        let fresh = self.cache().as_ref().is_some_and(|c| {
            c.stamp
                .is_some_and(|e| SystemTime::now() + std::time::Duration::from_secs(30) < e)
        });
        (!fresh).then_some(o)
    }

    /// Stores a fetched token and its lifetime.
    pub fn store_token(&self, token: String, lifetime: std::time::Duration) -> Result<(), CredentialError> {
        let mut cached = self.cache();
        self.keep(&mut cached, Some(SystemTime::now() + lifetime), token)
            .map(drop)
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
        let mut c = Credential::new(&spec);
        assert_eq!(c.material().unwrap().value, "Bearer sk-first");
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&path, "sk-second").unwrap();
        let t = SystemTime::now() + std::time::Duration::from_secs(1);
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(t).unwrap();
        // Within the recheck interval the value read stays in use...
        assert_eq!(c.material().unwrap().value, "Bearer sk-first");
        assert_eq!(c.secret().unwrap(), "sk-first");
        // ...and once it has passed, the changed file is read.
        c.recheck = std::time::Duration::ZERO;
        assert_eq!(c.material().unwrap().value, "Bearer sk-second");
        assert_eq!(c.secret().unwrap(), "sk-second");
        // One build per value: requests share it.
        assert!(Arc::ptr_eq(&c.material().unwrap(), &c.material().unwrap()));
        std::fs::write(&path, "bad\nvalue").unwrap();
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(t + std::time::Duration::from_secs(1)).unwrap();
        let err = c.material().err().expect("an error").to_string();
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
            .material()
            .err()
            .expect("an error")
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
                .material()
                .unwrap()
                .value,
            "sk-from-command"
        );
        let e = Credential::new(&spec(&["/bin/sh", "-c", "echo secret-out; exit 3"]))
            .material()
            .err()
            .expect("an error")
            .to_string();
        assert!(e.contains("failed") && !e.contains("secret-out"), "{e}");
        let e = Credential::new(&spec(&["/no/such/program"]))
            .material()
            .err()
            .expect("an error")
            .to_string();
        assert!(e.contains("could not start"), "{e}");
    }
}
