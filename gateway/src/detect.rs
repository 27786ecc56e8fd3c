//! Protocol detection: peek at the first bytes an agent sends, without
//! consuming them, and say what protocol it speaks. TLS ClientHellos are
//! parsed with rustls (for the SNI and ALPN offer).
use std::time::Duration;

use tokio::net::TcpStream;

/// What the agent speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protocol {
    /// A TLS ClientHello, with the name and ALPN protocols it asked for.
    Tls {
        /// Server Name Indication.
        sni: Option<String>,
        /// ALPN protocols offered.
        alpn: Vec<String>,
    },
    /// Plaintext HTTP/1.x, with the Host header of its first request.
    Http1 {
        /// The `Host` header (port removed), if present.
        host: Option<String>,
    },
    /// HTTP/2 with prior knowledge (the connection preface).
    Http2,
    /// A PostgreSQL SSLRequest, GSSENCRequest or StartupMessage.
    Postgres,
    /// Anything else, or nothing within the wait: relayed as raw TCP to
    /// a `tcp` target or an undeclared destination, refused by any other.
    Raw(Unknown),
}

/// Why the first bytes named no protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unknown {
    /// Nothing arrived within the wait (or the agent closed at once).
    Silent,
    /// Some bytes arrived, but not enough to tell within the wait.
    Incomplete,
    /// The bytes are no protocol the gateway knows.
    Unrecognised,
    /// A ClientHello or request head longer than the most looked at.
    TooLong,
}

impl std::fmt::Display for Unknown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Silent => "nothing was sent within the detection wait",
            Self::Incomplete => "the first message did not arrive whole within the detection wait",
            Self::Unrecognised => "the first bytes are not a protocol the gateway knows",
            Self::TooLong => "the first message is longer than 16 KiB",
        })
    }
}

impl Protocol {
    /// The host the agent named (TLS SNI or HTTP Host), if any.
    pub fn host(&self) -> Option<&str> {
        match self {
            Self::Tls { sni, .. } => sni.as_deref(),
            Self::Http1 { host } => host.as_deref(),
            _ => None,
        }
    }
}

/// The most bytes looked at (a ClientHello with many extensions fits).
const PEEK: usize = 16 * 1024;
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const METHODS: [&str; 9] = [
    "GET ", "POST ", "PUT ", "DELETE ", "HEAD ", "OPTIONS ", "PATCH ", "CONNECT ", "TRACE ",
];

/// Classifies a prefix of the stream. `None`: not enough bytes to tell yet.
pub fn classify(buf: &[u8]) -> Option<Protocol> {
    if buf.is_empty() {
        return None;
    }
    if buf[0] == 0x16 {
        return tls(buf);
    }
    if H2_PREFACE.starts_with(&buf[..buf.len().min(H2_PREFACE.len())]) {
        return (buf.len() >= H2_PREFACE.len()).then_some(Protocol::Http2);
    }
    for m in METHODS {
        let n = buf.len().min(m.len());
        if buf[..n] == m.as_bytes()[..n] {
            // Wait for the whole request head to read Host: a head longer
            // than the peek names no host anyone could check.
            if buf.len() < m.len() {
                return None;
            }
            if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                return Some(Protocol::Http1 { host: http_host(buf) });
            }
            return (buf.len() >= PEEK).then_some(Protocol::Raw(Unknown::TooLong));
        }
    }
    if buf.len() >= 8 {
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let code = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        // SSLRequest, GSSENCRequest, CancelRequest, protocol 3.x StartupMessage.
        if (8..=10_000).contains(&len) && (matches!(code, 80_877_102..=80_877_104) || code >> 16 == 3) {
            return Some(Protocol::Postgres);
        }
        return Some(Protocol::Raw(Unknown::Unrecognised));
    }
    None
}

/// The Host header of a request head, without a port.
fn http_host(head: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(head);
    text.split("\r\n")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            if !name.trim().eq_ignore_ascii_case("host") {
                return None;
            }
            let value = value.trim();
            let host = if let Some(rest) = value.strip_prefix('[') {
                rest.split(']').next().unwrap_or(rest)
            } else {
                value.rsplit_once(':').map_or(value, |(h, p)| {
                    if p.chars().all(|c| c.is_ascii_digit()) {
                        h
                    } else {
                        value
                    }
                })
            };
            (!host.is_empty()).then(|| host.to_ascii_lowercase())
        })
}

fn tls(buf: &[u8]) -> Option<Protocol> {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut rd = buf;
    if acceptor.read_tls(&mut rd).is_err() {
        return Some(Protocol::Raw(Unknown::Unrecognised));
    }
    match acceptor.accept() {
        Ok(Some(accepted)) => {
            let hello = accepted.client_hello();
            let sni = hello.server_name().map(str::to_owned);
            let alpn = hello
                .alpn()
                .map(|protocols| protocols.map(|p| String::from_utf8_lossy(p).into_owned()).collect())
                .unwrap_or_default();
            Some(Protocol::Tls { sni, alpn })
        }
        // A partial ClientHello: wait for more, unless the peek is full.
        Ok(None) if buf.len() < PEEK => None,
        Ok(None) => Some(Protocol::Raw(Unknown::TooLong)),
        Err(_) => Some(Protocol::Raw(Unknown::Unrecognised)),
    }
}

/// Peeks until the protocol is known, the agent stops sending, or `wait`
/// passes (server-first protocols send nothing: they are raw TCP).
pub async fn sniff(stream: &TcpStream, wait: Duration) -> Protocol {
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = vec![0u8; PEEK];
    let mut last = 0;
    loop {
        let peeked = tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await;
        let silent = |n: usize| Protocol::Raw(if n == 0 { Unknown::Silent } else { Unknown::Incomplete });
        let n = match peeked {
            Ok(Ok(n)) => n,
            _ => return silent(last),
        };
        if let Some(p) = classify(&buf[..n]) {
            return p;
        }
        if n == 0 {
            // The agent closed without a byte.
            return silent(0);
        }
        if n == last {
            // Nothing new arrived yet: wait for readiness again, briefly.
            if tokio::time::timeout_at(deadline, tokio::time::sleep(Duration::from_millis(5)))
                .await
                .is_err()
            {
                return silent(n);
            }
        }
        last = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_hello(sni: &str) -> Vec<u8> {
        let roots = rustls::RootCertStore::empty();
        let config =
            rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        let mut config = config;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let mut conn =
            rustls::ClientConnection::new(std::sync::Arc::new(config), sni.to_owned().try_into().unwrap()).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn tls_sni_and_alpn_are_read() {
        let hello = client_hello("api.openai.com");
        assert_eq!(
            classify(&hello),
            Some(Protocol::Tls {
                sni: Some("api.openai.com".into()),
                alpn: vec!["h2".into(), "http/1.1".into()]
            })
        );
        // Half a ClientHello: not decided yet.
        assert_eq!(classify(&hello[..hello.len() / 2]), None);
    }

    #[test]
    fn plaintext_protocols() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), None, "head not complete yet");
        assert_eq!(
            classify(b"GET / HTTP/1.1\r\nHost: Api.Example.test:8080\r\n\r\n"),
            Some(Protocol::Http1 {
                host: Some("api.example.test".into())
            })
        );
        assert_eq!(
            classify(b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n"),
            Some(Protocol::Http1 { host: None })
        );
        assert_eq!(classify(b"GE"), None);
        assert_eq!(classify(H2_PREFACE), Some(Protocol::Http2));
        assert_eq!(classify(b"PRI * HT"), None);
        let mut startup = vec![0, 0, 0, 8];
        startup.extend_from_slice(&80_877_103u32.to_be_bytes());
        assert_eq!(classify(&startup), Some(Protocol::Postgres));
        assert_eq!(
            classify(b"SSH-2.0-OpenSSH_9.2\r\n"),
            Some(Protocol::Raw(Unknown::Unrecognised))
        );
        assert_eq!(
            classify(&[0x16, 0x03, 0x01, 0x00, 0x05, 0xff, 0xff, 0xff, 0xff, 0xff]),
            Some(Protocol::Raw(Unknown::Unrecognised))
        );
        let mut long = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long.resize(PEEK, b'a');
        assert_eq!(classify(&long), Some(Protocol::Raw(Unknown::TooLong)));
    }
}
