//! Bearer tokens from the configured OIDC issuer, verified with the
//! openidconnect crate: the issuer's discovery document and JWKS (fetched
//! over the gateway's own marked, verified client, and fetched again when a
//! token names a key not seen yet), then signature, issuer, audience and
//! expiry. The person and their groups come from the claims.
use std::{
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use openidconnect::{
    core::{
        CoreGenderClaim, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
        CoreProviderMetadata,
    },
    AdditionalClaims, ClientId, IdToken, IdTokenVerifier, IssuerUrl, Nonce,
};
use serde::{Deserialize, Serialize};

use crate::{net::Net, types::Person};

/// Claims beyond the standard ones, kept whole so the groups claim can be named in config.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Extra(serde_json::Map<String, serde_json::Value>);

impl AdditionalClaims for Extra {}

type Token = IdToken<Extra, CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm>;

/// Why a token was refused (the caller's side, or the issuer's).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("a bearer token is required")]
    Missing,
    /// The token is not a well-formed JWT.
    #[error("the bearer token is malformed: {0}")]
    Malformed(String),
    /// Signature, issuer, audience or expiry did not verify.
    #[error("the bearer token does not verify: {0}")]
    Invalid(String),
    /// The issuer's keys could not be fetched.
    #[error("the token issuer is unavailable: {0}")]
    Issuer(String),
}

/// The discovery document (with its keys) and when it was fetched.
struct Discovered {
    metadata: CoreProviderMetadata,
    at: Instant,
}

/// Verifies tokens of one issuer for one audience.
pub struct Verifier {
    issuer: IssuerUrl,
    audience: ClientId,
    groups_claim: String,
    http: crate::net::GatewayHttp,
    discovered: RwLock<Option<Discovered>>,
}

/// A verified caller.
pub struct Caller {
    /// Who.
    pub person: Person,
    /// Their groups.
    pub groups: Vec<String>,
}

impl Verifier {
    /// For `issuer` and `audience`; keys are fetched on first use.
    pub fn new(net: Arc<Net>, config: &crate::config::ApiConfig) -> Result<Self, AuthError> {
        let issuer = config.issuer.clone().unwrap_or_default();
        Ok(Self {
            issuer: IssuerUrl::new(issuer).map_err(|e| AuthError::Issuer(e.to_string()))?,
            audience: ClientId::new(config.audience.clone().unwrap_or_default()),
            groups_claim: config.groups_claim.clone().unwrap_or_else(|| "groups".into()),
            http: crate::net::GatewayHttp::new(net, config.issuer_ca_file.clone()),
            discovered: RwLock::new(None),
        })
    }

    async fn discover(&self) -> Result<(), AuthError> {
        let metadata = CoreProviderMetadata::discover_async(self.issuer.clone(), &self.http)
            .await
            .map_err(|e| AuthError::Issuer(format!("discovery at {}: {e}", self.issuer.as_str())))?;
        *self.discovered.write().unwrap_or_else(|p| p.into_inner()) = Some(Discovered {
            metadata,
            at: Instant::now(),
        });
        Ok(())
    }

    fn check(&self, token: &Token) -> Option<Result<Caller, AuthError>> {
        let guard = self.discovered.read().unwrap_or_else(|p| p.into_inner());
        let d = guard.as_ref()?;
        let keys = d.metadata.jwks().clone();
        let verifier: IdTokenVerifier<'_, CoreJsonWebKey> =
            IdTokenVerifier::new_public_client(self.audience.clone(), self.issuer.clone(), keys);
        // Bearer tokens carry no nonce: there is no login round trip to bind.
        let no_nonce = |_: Option<&Nonce>| Ok(());
        Some(
            token
                .claims(&verifier, no_nonce)
                .map(|claims| {
                    let email = claims.email().map(|e| e.as_str().to_owned());
                    let username = claims.preferred_username().map(|u| u.as_str().to_owned());
                    let name = claims
                        .name()
                        .and_then(|n| n.get(None))
                        .map(|n| n.as_str().to_owned())
                        .or_else(|| username.clone())
                        .or_else(|| email.clone())
                        .unwrap_or_else(|| claims.subject().as_str().to_owned());
                    let groups = claims
                        .additional_claims()
                        .0
                        .get(&self.groups_claim)
                        .and_then(|g| g.as_array())
                        .map(|g| g.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
                        .unwrap_or_default();
                    Caller {
                        person: Person {
                            issuer: claims.issuer().as_str().to_owned(),
                            subject: claims.subject().as_str().to_owned(),
                            name,
                            email,
                            unix_user: username,
                        },
                        groups,
                    }
                })
                .map_err(|e| AuthError::Invalid(e.to_string())),
        )
    }

    /// Verifies a bearer token.
    pub async fn verify(&self, bearer: &str) -> Result<Caller, AuthError> {
        let token: Token = bearer
            .parse()
            .map_err(|e: serde_json::Error| AuthError::Malformed(e.to_string()))?;
        if self.check(&token).is_none() {
            self.discover().await?;
        }
        match self.check(&token) {
            Some(Err(AuthError::Invalid(e))) if e.contains("key") && self.stale() => {
                // Perhaps the issuer rotated its keys: fetch them again, once.
                self.discover().await?;
                self.check(&token).unwrap_or(Err(AuthError::Invalid(e)))
            }
            Some(result) => result,
            None => Err(AuthError::Issuer("no discovery document".into())),
        }
    }

    /// Keys older than a minute may be fetched again.
    fn stale(&self) -> bool {
        let guard = self.discovered.read().unwrap_or_else(|p| p.into_inner());
        guard.as_ref().is_none_or(|d| d.at.elapsed() > Duration::from_secs(60))
    }
}
