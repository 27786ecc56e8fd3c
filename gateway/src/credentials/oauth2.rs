//! OAuth2 client credentials: the gateway fetches an access token for a
//! target from its token endpoint, with its own HTTP client.
use std::{sync::Arc, time::Duration};

use oauth2::{basic::BasicClient, ClientId, ClientSecret, Scope, TokenResponse, TokenUrl};

use super::CredentialError;
use crate::{
    config::OAuth2Spec,
    net::{GatewayHttp, Net},
};

/// Fetches an access token with the client-credentials grant; returns it and
/// its lifetime (an hour when the endpoint does not say). Errors never
/// contain the client secret.
pub async fn client_credentials(net: &Arc<Net>, spec: &OAuth2Spec) -> Result<(String, Duration), CredentialError> {
    let err = |message: String| CredentialError::Token {
        url: spec.token_url.clone(),
        message,
    };
    let secret = std::fs::read_to_string(&spec.client_secret_file).map_err(|e| {
        err(format!(
            "client secret {}: {}",
            spec.client_secret_file.display(),
            e.kind()
        ))
    })?;
    let token_url = TokenUrl::new(spec.token_url.clone()).map_err(|e| err(e.to_string()))?;
    let client = BasicClient::new(ClientId::new(spec.client_id.clone()))
        .set_client_secret(ClientSecret::new(secret.trim().to_owned()))
        .set_token_uri(token_url);
    let http = GatewayHttp::new(net.clone(), spec.ca_file.clone());
    let mut request = client.exchange_client_credentials();
    for scope in &spec.scopes {
        request = request.add_scope(Scope::new(scope.clone()));
    }
    let token = request.request_async(&http).await.map_err(|e| {
        err(match e {
            oauth2::RequestTokenError::ServerResponse(r) => format!("token endpoint refused: {}", r.error()),
            oauth2::RequestTokenError::Request(e) => e.to_string(),
            oauth2::RequestTokenError::Parse(e, _) => format!("token endpoint answer: {e}"),
            oauth2::RequestTokenError::Other(m) => m,
        })
    })?;
    let lifetime = token.expires_in().unwrap_or(Duration::from_secs(3600));
    Ok((token.access_token().secret().clone(), lifetime))
}
