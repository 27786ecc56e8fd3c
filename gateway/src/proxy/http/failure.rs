//! Why an allowed exchange failed, whose fault it was, and what the agent
//! gets: the status and body of every such error are chosen here, once
//! (pingora's `fail_to_proxy`). Refusals by policy or a limit are not
//! failures; they are answered where they are decided.
use http::StatusCode;

use super::{json_response, Body};
use crate::{
    credentials::CredentialError,
    masking::MaskError,
    net::{TlsConfigError, UpstreamError},
    types::Side,
};

/// An allowed exchange that could not be completed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The upstream could not be connected to (or the socket prepared).
    #[error(transparent)]
    Connect(#[from] UpstreamError),
    /// The upstream TLS configuration could not be built (an operator's CA bundle).
    #[error(transparent)]
    TlsConfig(#[from] TlsConfigError),
    /// The upstream's TLS failed: verification, the handshake, or its time limit.
    #[error("upstream TLS: {0}")]
    Tls(String),
    /// The upstream broke off or spoke badly during the exchange.
    #[error("{0}")]
    Exchange(String),
    /// The agent's request cannot be addressed to the upstream (its Host).
    #[error("request: {0}")]
    Address(String),
    /// The target's credential is withheld: the upstream is not proven to
    /// be the target's.
    #[error("credential withheld: {0}")]
    Withheld(String),
    /// The target's credential is unavailable (a missing secret, a failed
    /// token request).
    #[error(transparent)]
    Secret(#[from] CredentialError),
    /// The masking rules for the exchange could not be built.
    #[error("masking: {0}")]
    Masking(#[from] MaskError),
}

impl Failure {
    /// Whose fault it was.
    pub fn side(&self) -> Side {
        match self {
            Self::Connect(UpstreamError::Socket(_))
            | Self::TlsConfig(_)
            | Self::Withheld(_)
            | Self::Secret(_)
            | Self::Masking(_) => Side::Gateway,
            Self::Connect(_) | Self::Tls(_) | Self::Exchange(_) => Side::Upstream,
            Self::Address(_) => Side::Agent,
        }
    }

    /// The status the agent gets.
    pub fn status(&self) -> StatusCode {
        match self.side() {
            Side::Agent => StatusCode::BAD_REQUEST,
            Side::Upstream | Side::Gateway => StatusCode::BAD_GATEWAY,
        }
    }

    /// The agent's answer: the status, and JSON naming the side, the
    /// target and what failed (never a secret: none of these carry one).
    pub fn response(&self, target: &str) -> http::Response<Body> {
        let body = serde_json::json!({
            "error": {"type": self.side().as_str(), "target": target, "message": self.to_string()}
        });
        json_response(self.status(), body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_names_its_side_and_status() {
        let dst = crate::types::OrigDst("127.0.0.1:1".parse().unwrap());
        let refused = UpstreamError::Connect {
            dst,
            source: std::io::ErrorKind::ConnectionRefused.into(),
        };
        let cases = [
            (Failure::from(refused), Side::Upstream, 502),
            (
                Failure::Connect(UpstreamError::Socket(std::io::ErrorKind::Other.into())),
                Side::Gateway,
                502,
            ),
            (Failure::Tls("bad certificate".into()), Side::Upstream, 502),
            (Failure::Exchange("reset".into()), Side::Upstream, 502),
            (Failure::Withheld("not the target's address".into()), Side::Gateway, 502),
            (
                Failure::from(CredentialError::MissingEnv("KEY".into())),
                Side::Gateway,
                502,
            ),
            (Failure::from(MaskError::Unknown("rule".into())), Side::Gateway, 502),
            (Failure::Address("bad host".into()), Side::Agent, 400),
        ];
        for (failure, side, status) in cases {
            assert_eq!((failure.side(), failure.status().as_u16()), (side, status), "{failure}");
            let resp = failure.response("t");
            assert_eq!(resp.status().as_u16(), status);
        }
    }
}
