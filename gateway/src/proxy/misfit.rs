//! Whether what an agent sent fits the target its connection was judged
//! as. A target declared `http`, `https` or `postgres` is never relayed
//! raw: bytes that are not its protocol within the wait (a slow first byte,
//! an oversized ClientHello, anything else) are refused with the clearest
//! answer the agent's side can read, and the reason is recorded. Raw relay
//! is for `tcp` targets and undeclared destinations only.
use std::time::Duration;

use tokio::{io::AsyncWriteExt, net::TcpStream};

use crate::{
    config::{TargetProtocol, TargetSpec},
    detect::Protocol,
    targets::Judged,
};

/// How a fitting connection is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fit {
    /// Relayed as bytes (a `tcp` target).
    Raw,
    /// Inspected request by request.
    Http,
    /// The PostgreSQL gateway (which refuses what is not PostgreSQL itself).
    Postgres,
}

/// A connection refused for not fitting its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Misfit {
    /// Why, for the event and the log.
    pub reason: String,
    /// What the agent is told.
    pub answer: Answer,
}

/// What a refused agent is told, in terms its side can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    /// An HTTP/1.1 response with this status, the reason as its body.
    Http(u16),
    /// A fatal TLS alert with this description code.
    TlsAlert(u8),
    /// A reset.
    Reset,
}

/// TLS alert descriptions (RFC 8446, 6).
const HANDSHAKE_FAILURE: u8 = 40;
const PROTOCOL_VERSION: u8 = 70;
const UNRECOGNIZED_NAME: u8 = 112;

/// Whether `protocol`, with the name in `judged`, fits `spec`.
pub(super) fn fit(spec: &TargetSpec, protocol: &Protocol, judged: &Judged) -> Result<Fit, Misfit> {
    let refuse = |answer, reason: String| Err(Misfit { reason, answer });
    let target = &spec.name;
    match (spec.protocol, protocol) {
        (TargetProtocol::Tcp, _) => Ok(Fit::Raw),
        (TargetProtocol::Postgres, _) => Ok(Fit::Postgres),
        (TargetProtocol::Https, Protocol::Tls { .. }) => match judged.name_mismatch() {
            Some(why) => refuse(Answer::TlsAlert(UNRECOGNIZED_NAME), format!("TLS SNI: {why}")),
            None => Ok(Fit::Http),
        },
        (TargetProtocol::Http, Protocol::Http1 { .. }) => match judged.name_mismatch() {
            Some(why) => refuse(Answer::Http(421), format!("HTTP Host: {why}")),
            None => Ok(Fit::Http),
        },
        (TargetProtocol::Http, Protocol::Http2) => Ok(Fit::Http),
        (TargetProtocol::Https, Protocol::Http1 { .. } | Protocol::Http2) => refuse(
            Answer::Http(400),
            format!("plaintext HTTP to a TLS target: {target} requires TLS (https://)"),
        ),
        (TargetProtocol::Http, Protocol::Tls { .. }) => refuse(
            Answer::TlsAlert(PROTOCOL_VERSION),
            format!("TLS to plaintext HTTP target {target}"),
        ),
        (_, Protocol::Postgres) => refuse(Answer::Reset, format!("a PostgreSQL client to HTTP(S) target {target}")),
        (TargetProtocol::Https, Protocol::Raw(why)) => refuse(
            Answer::TlsAlert(HANDSHAKE_FAILURE),
            format!("no TLS ClientHello for HTTPS target {target}: {why}"),
        ),
        (TargetProtocol::Http, Protocol::Raw(why)) => refuse(
            Answer::Http(400),
            format!("no HTTP request for HTTP target {target}: {why}"),
        ),
    }
}

/// Tells the agent, briefly, and closes.
pub(super) async fn answer(mut agent: TcpStream, answer: Answer, reason: &str) {
    let bytes = match answer {
        Answer::Http(status) => {
            let text = match status {
                400 => "Bad Request",
                421 => "Misdirected Request",
                _ => "Refused",
            };
            let body = format!(
                "{{\"error\":{{\"type\":\"gateway\",\"message\":{}}}}}\n",
                serde_json::Value::from(reason)
            );
            format!(
                "HTTP/1.1 {status} {text}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        }
        // A TLS 1.2-framed fatal alert: every TLS version's client reads it.
        Answer::TlsAlert(code) => vec![0x15, 0x03, 0x03, 0x00, 0x02, 0x02, code],
        Answer::Reset => {
            let _ = socket2::SockRef::from(&agent).set_linger(Some(Duration::ZERO));
            return;
        }
    };
    // Bounded: an agent that does not read is not waited for.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        agent.write_all(&bytes).await?;
        agent.shutdown().await
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Unknown;

    fn spec(protocol: &str, hosts: &str) -> TargetSpec {
        toml::from_str(&format!(
            "name = \"t\"\ncidrs = [\"10.0.0.0/8\"]\nhosts = [{hosts}]\nprotocol = \"{protocol}\"\n"
        ))
        .unwrap()
    }

    fn judged(spec: &TargetSpec, claimed: Option<&str>) -> Judged {
        Judged {
            spec: Some(std::sync::Arc::new(spec.clone())),
            bound: None,
            claimed: claimed.map(str::to_owned),
            resolved: false,
        }
    }

    #[test]
    fn declared_protocols_are_never_relayed_raw() {
        let https = spec("https", "\"api.test\"");
        let http = spec("http", "");
        let tcp = spec("tcp", "");
        let hello = Protocol::Tls {
            sni: Some("api.test".into()),
            alpn: vec![],
        };
        for why in [
            Unknown::Silent,
            Unknown::Incomplete,
            Unknown::Unrecognised,
            Unknown::TooLong,
        ] {
            let raw = Protocol::Raw(why);
            let m = fit(&https, &raw, &judged(&https, None)).unwrap_err();
            assert_eq!(m.answer, Answer::TlsAlert(HANDSHAKE_FAILURE));
            assert!(m.reason.contains(&why.to_string()), "{}", m.reason);
            assert_eq!(
                fit(&http, &raw, &judged(&http, None)).unwrap_err().answer,
                Answer::Http(400)
            );
            assert_eq!(fit(&tcp, &raw, &judged(&tcp, None)), Ok(Fit::Raw));
        }
        assert_eq!(fit(&https, &hello, &judged(&https, Some("api.test"))), Ok(Fit::Http));
        assert_eq!(
            fit(&http, &hello, &judged(&http, Some("api.test"))).unwrap_err().answer,
            Answer::TlsAlert(PROTOCOL_VERSION)
        );
        let plain = Protocol::Http1 { host: None };
        assert_eq!(
            fit(&https, &plain, &judged(&https, None)).unwrap_err().answer,
            Answer::Http(400)
        );
        assert_eq!(fit(&http, &plain, &judged(&http, None)), Ok(Fit::Http));
        assert_eq!(
            fit(&http, &Protocol::Postgres, &judged(&http, None))
                .unwrap_err()
                .answer,
            Answer::Reset
        );
    }

    #[test]
    fn a_name_the_target_does_not_declare_is_refused() {
        let https = spec("https", "\"api.test\"");
        let hello = Protocol::Tls {
            sni: Some("evil.test".into()),
            alpn: vec![],
        };
        let m = fit(&https, &hello, &judged(&https, Some("evil.test"))).unwrap_err();
        assert_eq!(m.answer, Answer::TlsAlert(UNRECOGNIZED_NAME));
        assert!(m.reason.contains("evil.test is not a host of target t"), "{}", m.reason);
        let http = spec("http", "\"api.test\"");
        let plain = Protocol::Http1 {
            host: Some("evil.test".into()),
        };
        assert_eq!(
            fit(&http, &plain, &judged(&http, Some("evil.test")))
                .unwrap_err()
                .answer,
            Answer::Http(421)
        );
    }
}
