//! The PostgreSQL v3 wire format for the gateway's two roles. Towards the
//! upstream the gateway is a client, and postgres-protocol covers that role
//! whole (frontend writers, backend parser, SCRAM, md5). Towards the agent it
//! is a server, a role postgres-protocol leaves out: frames are still cut
//! with its `Header`, and this file reads the few frontend bodies policy
//! needs and writes the few backend messages the gateway originates.
use bytes::{Buf, BufMut, Bytes, BytesMut};
use postgres_protocol::message::backend::Header;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::types::Side;

/// Largest message accepted from either side (PostgreSQL's own limit is 1 GiB
/// for a field; the gateway keeps memory per session bounded).
pub const MAX_MESSAGE: usize = 256 << 20;
/// Largest untagged startup-phase message.
const MAX_STARTUP: usize = 10_000;

/// A protocol error on the wire; `side` tells who sent the bad bytes.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The connection failed or closed mid-message.
    #[error("{side}: connection lost mid-message: {source}")]
    Io {
        /// Who sent the bytes.
        side: Side,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A message broke the protocol.
    #[error("{side} broke the PostgreSQL protocol: {message}")]
    Malformed {
        /// Who sent the bytes.
        side: Side,
        /// What was wrong.
        message: String,
    },
    /// A message the gateway would have to hold does not fit its buffer
    /// budget (SQLSTATE 54000 to the agent).
    #[error("{side}: {source}")]
    OverBudget {
        /// Who sent the bytes.
        side: Side,
        /// What did not fit.
        source: crate::limits::OverBudget,
    },
}

impl WireError {
    /// A malformed-message error.
    pub fn malformed(side: Side, message: impl Into<String>) -> Self {
        Self::Malformed {
            side,
            message: message.into(),
        }
    }

    /// Which side caused it.
    pub fn side(&self) -> Side {
        match self {
            Self::Io { side, .. } | Self::Malformed { side, .. } | Self::OverBudget { side, .. } => *side,
        }
    }
}

/// One tagged message, whole (tag, length and body), as it arrived.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The message type byte.
    pub tag: u8,
    /// The whole message.
    pub raw: Bytes,
}

impl Frame {
    /// The body after tag and length.
    pub fn body(&self) -> &[u8] {
        &self.raw[5..]
    }
}

/// Messages at least this long reserve their room in the buffer budget
/// before they are read whole; smaller ones are a session's ordinary buffer.
pub const HELD_FROM: usize = 64 << 10;

/// The length the next message in `buf` announces, once its header is there.
pub fn announced_len(buf: &[u8], side: Side) -> Result<Option<usize>, WireError> {
    let header = Header::parse(buf).map_err(|e| WireError::malformed(side, e.to_string()))?;
    Ok(header.map(|h| h.len() as usize + 1))
}

/// The length of the next whole message in `buf`, if it is all there.
pub fn complete_len(buf: &[u8], side: Side) -> Result<Option<usize>, WireError> {
    let header = Header::parse(buf).map_err(|e| WireError::malformed(side, e.to_string()))?;
    let Some(header) = header else { return Ok(None) };
    let total = header.len() as usize + 1;
    if total > MAX_MESSAGE {
        return Err(WireError::malformed(
            side,
            format!("message of {total} bytes exceeds the gateway's limit of {MAX_MESSAGE}"),
        ));
    }
    Ok((buf.len() >= total).then_some(total))
}

/// Reads one untagged startup-phase message (length, then body).
pub async fn read_startup<R: AsyncRead + Unpin>(io: &mut R) -> Result<Option<Bytes>, WireError> {
    let side = Side::Agent;
    let io_err = |source| WireError::Io { side, source };
    let mut len = [0u8; 4];
    match io.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(io_err(e)),
    }
    let len = u32::from_be_bytes(len) as usize;
    if !(8..=MAX_STARTUP).contains(&len) {
        return Err(WireError::malformed(side, format!("startup message length {len}")));
    }
    let mut body = vec![0u8; len - 4];
    io.read_exact(&mut body).await.map_err(io_err)?;
    Ok(Some(Bytes::from(body)))
}

/// A reader over a message body that reports truncation as the agent's error.
pub struct Cursor<'a> {
    buf: &'a [u8],
    side: Side,
}

impl<'a> Cursor<'a> {
    /// Over `buf`, sent by `side`.
    pub fn new(buf: &'a [u8], side: Side) -> Self {
        Self { buf, side }
    }

    fn short(&self, what: &str) -> WireError {
        WireError::malformed(self.side, format!("message too short for its {what}"))
    }

    /// A NUL-terminated string (UTF-8 checked).
    pub fn cstr(&mut self) -> Result<&'a str, WireError> {
        let bytes = self.cbytes()?;
        std::str::from_utf8(bytes).map_err(|_| WireError::malformed(self.side, "string is not UTF-8"))
    }

    /// A NUL-terminated string as bytes: query text and object names are in
    /// the session's client_encoding, which need not be UTF-8.
    pub fn cbytes(&mut self) -> Result<&'a [u8], WireError> {
        let end = self
            .buf
            .iter()
            .position(|b| *b == 0)
            .ok_or_else(|| self.short("string"))?;
        let s = &self.buf[..end];
        self.buf = &self.buf[end + 1..];
        Ok(s)
    }

    /// A big-endian i16.
    pub fn i16(&mut self) -> Result<i16, WireError> {
        if self.buf.len() < 2 {
            return Err(self.short("16-bit field"));
        }
        Ok(self.buf.get_i16())
    }

    /// A big-endian i32.
    pub fn i32(&mut self) -> Result<i32, WireError> {
        if self.buf.len() < 4 {
            return Err(self.short("32-bit field"));
        }
        Ok(self.buf.get_i32())
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, WireError> {
        if self.buf.is_empty() {
            return Err(self.short("type byte"));
        }
        Ok(self.buf.get_u8())
    }

    /// `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(self.short("value"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Fails unless the body was consumed exactly.
    pub fn end(&self) -> Result<(), WireError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(WireError::malformed(self.side, "trailing bytes after the message"))
        }
    }
}

/// Writes one backend message: tag, length (patched), body.
pub fn message(out: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    out.put_u8(tag);
    let at = out.len();
    out.put_i32(0);
    body(out);
    let len = (out.len() - at) as i32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// Writes a NUL-terminated string.
pub fn put_cstr(out: &mut BytesMut, s: &[u8]) {
    out.put_slice(s);
    out.put_u8(0);
}

/// `AuthenticationOk`.
pub fn authentication_ok(out: &mut BytesMut) {
    message(out, b'R', |b| b.put_i32(0));
}

/// `BackendKeyData`.
pub fn backend_key_data(out: &mut BytesMut, pid: i32, key: i32) {
    message(out, b'K', |b| {
        b.put_i32(pid);
        b.put_i32(key);
    });
}

/// `ReadyForQuery` with a transaction status (`I`, `T` or `E`).
pub fn ready_for_query(out: &mut BytesMut, status: u8) {
    message(out, b'Z', |b| b.put_u8(status));
}

/// `NegotiateProtocolVersion`: the newest minor version served (0) and the
/// protocol options not recognised.
pub fn negotiate_protocol_version(out: &mut BytesMut, unrecognised: &[String]) {
    message(out, b'v', |b| {
        b.put_i32(196_608);
        b.put_i32(unrecognised.len() as i32);
        for option in unrecognised {
            put_cstr(b, option.as_bytes());
        }
    });
}

/// An ErrorResponse (or, with `tag = b'N'`, a NoticeResponse).
#[derive(Debug, Clone)]
pub struct ErrorFields {
    /// ERROR or FATAL.
    pub severity: &'static str,
    /// SQLSTATE.
    pub code: &'static str,
    /// Primary message.
    pub message: String,
    /// Detail line, if any.
    pub detail: Option<String>,
    /// Hint line, if any.
    pub hint: Option<String>,
}

impl ErrorFields {
    /// An ERROR.
    pub fn error(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            severity: "ERROR",
            code,
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    /// A FATAL error (the session ends).
    pub fn fatal(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            severity: "FATAL",
            ..Self::error(code, message)
        }
    }

    /// Appends it as an ErrorResponse.
    pub fn write(&self, out: &mut BytesMut) {
        message(out, b'E', |b| {
            for (kind, value) in [
                (b'S', Some(self.severity)),
                (b'V', Some(self.severity)),
                (b'C', Some(self.code)),
                (b'M', Some(self.message.as_str())),
                (b'D', self.detail.as_deref()),
                (b'H', self.hint.as_deref()),
            ] {
                if let Some(value) = value {
                    b.put_u8(kind);
                    put_cstr(b, value.as_bytes());
                }
            }
            b.put_u8(0);
        });
    }

    /// The message as bytes, ready to send.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.write(&mut out);
        out.freeze()
    }
}

/// The agent's StartupMessage, or the request that came in its place.
#[derive(Debug)]
pub enum Hello {
    /// SSLRequest.
    Ssl,
    /// GSSENCRequest.
    Gss,
    /// CancelRequest with the key the agent was given.
    Cancel {
        /// Process id the agent saw.
        pid: i32,
        /// Secret key the agent saw.
        key: i32,
    },
    /// StartupMessage.
    Startup {
        /// Minor protocol version asked for.
        minor: u16,
        /// Parameters, in order.
        params: Vec<(String, String)>,
    },
}

/// Reads one startup-phase body (after its length).
pub fn parse_hello(body: &[u8]) -> Result<Hello, WireError> {
    let mut c = Cursor::new(body, Side::Agent);
    let code = c.i32()?;
    match code {
        80_877_103 => Ok(Hello::Ssl),
        80_877_104 => Ok(Hello::Gss),
        80_877_102 => {
            let pid = c.i32()?;
            let key = c.i32()?;
            // Protocol 3.2 allows longer keys; the gateway hands out 4 bytes.
            Ok(Hello::Cancel { pid, key })
        }
        v if (v >> 16) == 3 => {
            let mut params = Vec::new();
            loop {
                let name = c.cstr()?;
                if name.is_empty() {
                    break;
                }
                params.push((name.to_owned(), c.cstr()?.to_owned()));
            }
            c.end()?;
            Ok(Hello::Startup {
                minor: (v & 0xffff) as u16,
                params,
            })
        }
        other => Err(WireError::malformed(
            Side::Agent,
            format!(
                "unsupported protocol version {}.{} (the gateway speaks 3.0)",
                other >> 16,
                other & 0xffff
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn startup(version: i32, params: &[(&str, &str)]) -> Vec<u8> {
        let mut body = version.to_be_bytes().to_vec();
        for (k, v) in params {
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        body
    }

    #[test]
    fn hellos_of_every_kind_parse() {
        assert!(matches!(parse_hello(&80_877_103i32.to_be_bytes()), Ok(Hello::Ssl)));
        assert!(matches!(parse_hello(&80_877_104i32.to_be_bytes()), Ok(Hello::Gss)));
        let mut cancel = 80_877_102i32.to_be_bytes().to_vec();
        cancel.extend_from_slice(&7i32.to_be_bytes());
        cancel.extend_from_slice(&(-9i32).to_be_bytes());
        assert!(matches!(parse_hello(&cancel), Ok(Hello::Cancel { pid: 7, key: -9 })));
        let body = startup(3 << 16 | 2, &[("user", "app"), ("database", "shop")]);
        match parse_hello(&body) {
            Ok(Hello::Startup { minor, params }) => {
                assert_eq!(minor, 2);
                assert_eq!(
                    params,
                    [("user".into(), "app".into()), ("database".into(), "shop".into())]
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn truncated_and_hostile_hellos_are_the_agents_errors() {
        let body = startup(3 << 16, &[("user", "app")]);
        // Every cut short of the whole message is refused, never a panic.
        for cut in 0..body.len() {
            let e = parse_hello(&body[..cut]).expect_err("truncated startup accepted");
            assert_eq!(e.side(), Side::Agent, "{e}");
        }
        // Bytes after the terminating empty name.
        let mut trailing = body.clone();
        trailing.push(b'x');
        assert!(parse_hello(&trailing).is_err());
        // A version the gateway does not speak (protocol 2.0), and not UTF-8.
        assert!(parse_hello(&startup(2 << 16, &[])).is_err());
        let mut bad = (3i32 << 16).to_be_bytes().to_vec();
        bad.extend_from_slice(b"us\xffer\0app\0\0");
        assert!(parse_hello(&bad).is_err());
    }

    #[test]
    fn message_lengths_wait_for_the_whole_message_and_bound_it() {
        let mut out = BytesMut::new();
        message(&mut out, b'Q', |b| put_cstr(b, b"SELECT 1"));
        let whole = out.len();
        assert_eq!(whole, 1 + 4 + 9);
        for cut in 0..whole {
            assert_eq!(complete_len(&out[..cut], Side::Agent).unwrap(), None, "cut at {cut}");
        }
        assert_eq!(complete_len(&out, Side::Agent).unwrap(), Some(whole));
        assert_eq!(announced_len(&out[..5], Side::Agent).unwrap(), Some(whole));
        // A length below its own four bytes is malformed.
        let e = complete_len(&[b'Q', 0, 0, 0, 3], Side::Agent).unwrap_err();
        assert!(matches!(e, WireError::Malformed { side: Side::Agent, .. }), "{e}");
        // A message over the gateway's limit is refused before it is read.
        let huge = (MAX_MESSAGE as u32).to_be_bytes();
        let e = complete_len(&[b'Q', huge[0], huge[1], huge[2], huge[3]], Side::Upstream).unwrap_err();
        assert_eq!(e.side(), Side::Upstream);
    }

    #[test]
    fn a_cursor_reports_truncation_and_leftovers() {
        let mut c = Cursor::new(b"ab\0\x00\x01\x00\x00\x00\x02z", Side::Upstream);
        assert_eq!(c.cstr().unwrap(), "ab");
        assert_eq!(c.i16().unwrap(), 1);
        assert_eq!(c.i32().unwrap(), 2);
        assert!(c.end().is_err(), "one byte left over");
        assert_eq!(c.u8().unwrap(), b'z');
        c.end().unwrap();
        assert!(c.i32().is_err());
        assert!(c.bytes(1).is_err());
        let mut unterminated = Cursor::new(b"abc", Side::Agent);
        assert_eq!(unterminated.cstr().unwrap_err().side(), Side::Agent);
    }

    #[test]
    fn error_fields_encode_as_an_error_response() {
        let mut e = ErrorFields::fatal("57P01", "cut");
        e.detail = Some("why".into());
        let bytes = e.to_bytes();
        assert_eq!(bytes[0], b'E');
        assert_eq!(complete_len(&bytes, Side::Upstream).unwrap(), Some(bytes.len()));
        let body = &bytes[5..];
        assert_eq!(body, b"SFATAL\0VFATAL\0C57P01\0Mcut\0Dwhy\0\0");
    }
}
