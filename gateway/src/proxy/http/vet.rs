//! A request's target, checked before policy sees it: the name it is sent
//! to must agree with the TLS SNI and with the target the connection was
//! judged as (else 421: a credential must not follow an agent-chosen
//! `Host` behind a shared front end), and its path is put in normal form
//! (see [`crate::uri_path`]), which is what policy reads and what goes
//! upstream.
use http::{header, uri::PathAndQuery, Request, StatusCode, Uri};

use super::HttpSession;
use crate::uri_path;

/// A request refused before policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Vetoed {
    /// 400 or 421.
    pub status: StatusCode,
    /// Why, for the agent and the event.
    pub reason: String,
    /// Recorded as an exchange (false: counted into a burst of refusals).
    pub record: bool,
}

impl Vetoed {
    fn new(status: StatusCode, reason: String) -> Self {
        Self {
            status,
            reason,
            record: true,
        }
    }
}

/// Checks the request's authority and normalises its path in place;
/// returns the normal path.
pub(super) fn vet<B>(req: &mut Request<B>, s: &HttpSession) -> Result<String, Vetoed> {
    let names = Names {
        sni: s.sni.as_deref(),
        hosts: &s.spec.hosts,
        target: &s.spec.name,
    };
    names.check(req)?;
    let encoded_slashes = s.spec.encoded_slashes;
    let bad =
        |what: &str, e: &dyn std::fmt::Display| Vetoed::new(StatusCode::BAD_REQUEST, format!("{what} refused: {e}"));
    let path = uri_path::normalise(req.uri().path(), encoded_slashes).map_err(|e| bad("request path", &e))?;
    if path.as_str() != req.uri().path() {
        let joined = match req.uri().query() {
            Some(q) => format!("{path}?{q}"),
            None => path.to_string(),
        };
        let mut parts = req.uri().clone().into_parts();
        parts.path_and_query = Some(PathAndQuery::try_from(joined).map_err(|e| bad("request path", &e))?);
        *req.uri_mut() = Uri::from_parts(parts).map_err(|e| bad("request target", &e))?;
    }
    Ok(path.to_string())
}

/// What a request's name must agree with.
struct Names<'a> {
    sni: Option<&'a str>,
    hosts: &'a [String],
    target: &'a str,
}

impl Names<'_> {
    fn check<B>(&self, req: &Request<B>) -> Result<(), Vetoed> {
        let misdirected = |reason: String| Vetoed::new(StatusCode::MISDIRECTED_REQUEST, reason);
        let mut host_headers = req.headers().get_all(header::HOST).iter();
        let header = host_headers.next();
        if host_headers.next().is_some() {
            return Err(Vetoed::new(StatusCode::BAD_REQUEST, "more than one Host header".into()));
        }
        let header = match header.map(|h| h.to_str()) {
            Some(Ok(h)) => Some(host_of(h)),
            Some(Err(_)) => {
                return Err(Vetoed::new(
                    StatusCode::BAD_REQUEST,
                    "the Host header is not text".into(),
                ))
            }
            None => None,
        };
        let authority = req.uri().authority().map(|a| host_of(a.as_str()));
        if let (Some(h), Some(a)) = (&header, &authority) {
            if h != a {
                return Err(misdirected(format!(
                    "the Host header {h} and the request target's authority {a} differ"
                )));
            }
        }
        let Some(name) = authority.or(header) else {
            return Ok(());
        };
        if let Some(sni) = self.sni {
            if !name.eq_ignore_ascii_case(sni) {
                return Err(misdirected(format!("Host {name} does not match the TLS SNI {sni}")));
            }
        }
        if !self.hosts.is_empty() && !self.hosts.iter().any(|p| crate::targets::host_matches(p, &name)) {
            return Err(misdirected(format!(
                "Host {name} is not a host of target {}",
                self.target
            )));
        }
        Ok(())
    }
}

/// The host of an authority (`name`, `name:port`, `[v6]:port`), lower-cased.
fn host_of(authority: &str) -> String {
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let host = if let Some(rest) = authority.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        authority
            .rsplit_once(':')
            .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
            .map_or(authority, |(h, _)| h)
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str, hosts: &[&str]) -> Request<()> {
        let mut b = Request::builder().uri(uri);
        for h in hosts {
            b = b.header(header::HOST, *h);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn names_must_agree_with_sni_and_target() {
        let hosts = vec!["api.test".to_owned(), "*.api.test".to_owned()];
        let tls = Names {
            sni: Some("api.test"),
            hosts: &hosts,
            target: "api",
        };
        assert!(tls.check(&req("/x", &["API.test:443"])).is_ok());
        assert!(tls.check(&req("/x", &[])).is_ok());
        assert!(tls.check(&req("https://api.test/x", &[])).is_ok());
        let e = tls.check(&req("/x", &["evil.example"])).unwrap_err();
        assert_eq!(e.status, StatusCode::MISDIRECTED_REQUEST);
        assert!(e.reason.contains("does not match the TLS SNI"), "{}", e.reason);
        let e = tls.check(&req("https://evil.example/x", &["api.test"])).unwrap_err();
        assert!(e.reason.contains("differ"), "{}", e.reason);
        assert_eq!(
            tls.check(&req("/x", &["api.test", "api.test"])).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        let plain = Names {
            sni: None,
            hosts: &hosts,
            target: "api",
        };
        assert!(plain.check(&req("/x", &["eu.api.test"])).is_ok());
        assert!(plain
            .check(&req("/x", &["evil.example"]))
            .unwrap_err()
            .reason
            .contains("not a host of target api"));
        let free = Names {
            sni: None,
            hosts: &[],
            target: "net",
        };
        assert!(free.check(&req("/x", &["anything.example"])).is_ok());
    }

    #[test]
    fn hosts_of_authorities() {
        assert_eq!(host_of("Api.Test:8443"), "api.test");
        assert_eq!(host_of("[::1]:443"), "::1");
        assert_eq!(host_of("user@api.test"), "api.test");
        assert_eq!(host_of("api.test."), "api.test");
    }
}
