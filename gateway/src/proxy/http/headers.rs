//! Header rules shared by both directions: what never crosses the gateway.
use http::{header, HeaderMap, HeaderName};

/// Headers an agent might carry a placeholder secret in; all are removed.
pub(super) const SECRET_HEADERS: [&str; 3] = ["authorization", "x-api-key", "api-key"];
/// Connection-specific headers that must not cross to the other side.
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
];

/// Removes connection-specific headers (RFC 9110, 7.6.1): the fixed set and
/// any the `Connection` header names. `upgrading` keeps the two an upgrade
/// request needs.
pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap, upgrading: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    let kept = |name: &str| upgrading && (name == "connection" || name == "upgrade");
    for name in named.iter().map(HeaderName::as_str).chain(HOP_BY_HOP) {
        if !kept(name) {
            headers.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, HeaderValue};

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn connection_headers_and_the_ones_they_name_are_removed() {
        let mut h = headers(&[
            ("connection", "close, x-hop"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("content-length", "12"),
            ("x-end", "2"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["content-length", "x-end"]);
    }

    #[test]
    fn an_upgrade_keeps_what_asks_for_it() {
        let mut h = headers(&[("connection", "Upgrade"), ("upgrade", "websocket"), ("te", "trailers")]);
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get("connection").unwrap(), "Upgrade");
        assert_eq!(h.get("upgrade").unwrap(), "websocket");
        assert!(h.get("te").is_none());
    }
}
