//! `[api]`: the operator HTTP API for remote people, who sign in with OIDC.
use std::{net::SocketAddr, path::PathBuf};

use serde::{Deserialize, Serialize};

/// The operator HTTP API (off unless `listen` is set).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Address to serve on.
    pub listen: Option<SocketAddr>,
    /// The OIDC issuer whose tokens are accepted (discovery at `/.well-known/openid-configuration`).
    pub issuer: Option<String>,
    /// The audience (client id) tokens must be issued for.
    pub audience: Option<String>,
    /// The claim that lists a person's groups.
    pub groups_claim: Option<String>,
    /// Roles granted by group.
    pub roles: Roles,
    /// Certificate (PEM) to serve TLS with; required unless `listen` is loopback.
    pub tls_cert: Option<PathBuf>,
    /// Its key (PEM).
    pub tls_key: Option<PathBuf>,
    /// Extra CA bundle for the issuer's TLS.
    pub issuer_ca_file: Option<PathBuf>,
}

/// Which groups hold which role.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Roles {
    /// May read reviews, grants, revocations and status.
    pub viewer: Vec<String>,
    /// May also approve and deny reviews.
    pub approver: Vec<String>,
    /// May also revoke and lift revocations.
    pub responder: Vec<String>,
    /// May do everything, grants included.
    pub admin: Vec<String>,
}

impl ApiConfig {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let Some(listen) = self.listen else { return Ok(()) };
        let need = |field: &str| {
            (
                format!("api.{field}"),
                format!("`api.{field}` is required when `api.listen` is set"),
            )
        };
        let issuer = self.issuer.as_deref().ok_or_else(|| need("issuer"))?;
        if self.audience.is_none() {
            return Err(need("audience"));
        }
        openidconnect::IssuerUrl::new(issuer.to_owned()).map_err(|e| ("api.issuer".into(), e.to_string()))?;
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(("api.tls_key".into(), "`tls_cert` and `tls_key` go together".into()));
        }
        if self.tls_cert.is_none() && !listen.ip().is_loopback() {
            return Err((
                "api.listen".into(),
                "serving bearer tokens in plaintext off this host is refused: set tls_cert and tls_key, or listen on loopback".into(),
            ));
        }
        Ok(())
    }
}
