//! The session's `client_encoding`: the encoding the server reads the
//! agent's query text in, followed from the server's ParameterStatus (at
//! login and after every `SET client_encoding`). Query and Parse text is
//! decoded with it for classification and the audit trail; the bytes sent
//! upstream are always the agent's own.
//!
//! Decoding must agree with the server, or policy would judge other text
//! than the server runs: in SJIS, BIG5, GBK, UHC and GB18030 the second
//! byte of a character can be `\` or another ASCII byte. Text in an
//! encoding the gateway cannot decode exactly (JOHAB, SHIFT_JIS_2004,
//! EUC_JIS_2004, EUC_TW, MULE_INTERNAL) is judged only when it is all
//! ASCII; anything else in those is refused, never guessed at.
use std::{
    borrow::Cow,
    sync::atomic::{AtomicU8, Ordering},
};

use encoding_rs::Encoding;

/// A `client_encoding` as the gateway reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientEncoding {
    /// UTF8, the default.
    Utf8,
    /// SQL_ASCII: bytes past 127 have no encoding; read as UTF-8 where they
    /// are, replaced where not (the statement's structure is ASCII).
    SqlAscii,
    /// LATIN1: each byte is the code point of the same value.
    Latin1,
    /// An encoding decoded exactly.
    Exact(&'static Encoding),
    /// An encoding the gateway cannot decode: ASCII text only.
    AsciiOnly(&'static str),
}

/// Text the session's encoding cannot give (SQLSTATE 22021 or 0A000 to the agent).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not valid in the encoding (the server refuses them too).
    #[error("invalid byte sequence for encoding \"{0}\"")]
    Invalid(&'static str),
    /// Non-ASCII text in an encoding the gateway cannot decode.
    #[error("the gateway cannot read non-ASCII text in client_encoding {0}; use UTF8")]
    Unsupported(&'static str),
    /// Text that reads differently in another encoding, sent while an
    /// earlier statement the server has not answered may change it.
    #[error("non-ASCII query text sent before the server answered an earlier statement, which may change client_encoding; send it after that answer")]
    Changing,
}

/// Whether `bytes` could read differently in another server encoding: a
/// byte past ASCII followed by one of `0`..`~`, which SJIS, BIG5, GBK, UHC,
/// GB18030 and JOHAB take as the second half of a character (`\` among
/// them). Bytes past ASCII never read as ASCII in any of them, and bytes
/// below `0` never end a character, so text without such a pair has one
/// structure in every encoding.
pub fn ambiguous(bytes: &[u8]) -> bool {
    bytes.windows(2).any(|w| w[0] >= 0x80 && (0x30..=0x7e).contains(&w[1]))
}

/// Server encodings by the name ParameterStatus reports, with what decodes them.
const TABLE: &[(&str, ClientEncoding)] = {
    use encoding_rs as e;
    use ClientEncoding::{AsciiOnly, Exact};
    &[
        ("UTF8", ClientEncoding::Utf8),
        ("SQL_ASCII", ClientEncoding::SqlAscii),
        ("LATIN1", ClientEncoding::Latin1),
        ("LATIN2", Exact(e::ISO_8859_2)),
        ("LATIN3", Exact(e::ISO_8859_3)),
        ("LATIN4", Exact(e::ISO_8859_4)),
        // WHATWG reads ISO-8859-9 as windows-1254, which differs in C1 controls only.
        ("LATIN5", Exact(e::WINDOWS_1254)),
        ("LATIN6", Exact(e::ISO_8859_10)),
        ("LATIN7", Exact(e::ISO_8859_13)),
        ("LATIN8", Exact(e::ISO_8859_14)),
        ("LATIN9", Exact(e::ISO_8859_15)),
        ("LATIN10", Exact(e::ISO_8859_16)),
        ("ISO_8859_5", Exact(e::ISO_8859_5)),
        ("ISO_8859_6", Exact(e::ISO_8859_6)),
        ("ISO_8859_7", Exact(e::ISO_8859_7)),
        ("ISO_8859_8", Exact(e::ISO_8859_8)),
        ("KOI8R", Exact(e::KOI8_R)),
        ("KOI8U", Exact(e::KOI8_U)),
        ("WIN866", Exact(e::IBM866)),
        ("WIN874", Exact(e::WINDOWS_874)),
        ("WIN1250", Exact(e::WINDOWS_1250)),
        ("WIN1251", Exact(e::WINDOWS_1251)),
        ("WIN1252", Exact(e::WINDOWS_1252)),
        ("WIN1253", Exact(e::WINDOWS_1253)),
        ("WIN1254", Exact(e::WINDOWS_1254)),
        ("WIN1255", Exact(e::WINDOWS_1255)),
        ("WIN1256", Exact(e::WINDOWS_1256)),
        ("WIN1257", Exact(e::WINDOWS_1257)),
        ("WIN1258", Exact(e::WINDOWS_1258)),
        ("EUC_JP", Exact(e::EUC_JP)),
        // WHATWG's EUC-KR is UHC (a superset of EUC-KR).
        ("EUC_KR", Exact(e::EUC_KR)),
        ("UHC", Exact(e::EUC_KR)),
        // EUC-CN is GB2312, which GBK extends.
        ("EUC_CN", Exact(e::GBK)),
        ("GBK", Exact(e::GBK)),
        ("GB18030", Exact(e::GB18030)),
        ("SJIS", Exact(e::SHIFT_JIS)),
        ("BIG5", Exact(e::BIG5)),
        ("EUC_TW", AsciiOnly("EUC_TW")),
        ("EUC_JIS_2004", AsciiOnly("EUC_JIS_2004")),
        ("SHIFT_JIS_2004", AsciiOnly("SHIFT_JIS_2004")),
        ("JOHAB", AsciiOnly("JOHAB")),
        ("MULE_INTERNAL", AsciiOnly("MULE_INTERNAL")),
    ]
};

impl ClientEncoding {
    /// The encoding ParameterStatus names; one the gateway does not know is
    /// read as ASCII only.
    pub fn named(name: &str) -> Self {
        TABLE
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map_or(ClientEncoding::AsciiOnly("an unknown encoding"), |(_, e)| *e)
    }

    fn index(self) -> u8 {
        TABLE.iter().position(|(_, e)| *e == self).unwrap_or(TABLE.len()) as u8
    }

    fn name(self) -> &'static str {
        match self {
            ClientEncoding::AsciiOnly(name) => name,
            other => TABLE.iter().find(|(_, e)| *e == other).map_or("?", |(n, _)| n),
        }
    }

    /// `bytes` as text, or why they cannot be read.
    pub fn decode(self, bytes: &[u8]) -> Result<Cow<'_, str>, DecodeError> {
        if bytes.is_ascii() {
            // Every server encoding is ASCII-compatible.
            return Ok(Cow::Borrowed(std::str::from_utf8(bytes).unwrap_or_default()));
        }
        match self {
            ClientEncoding::Utf8 => std::str::from_utf8(bytes)
                .map(Cow::Borrowed)
                .map_err(|_| DecodeError::Invalid("UTF8")),
            ClientEncoding::SqlAscii => Ok(String::from_utf8_lossy(bytes)),
            ClientEncoding::Latin1 => Ok(Cow::Owned(bytes.iter().map(|&b| char::from(b)).collect())),
            ClientEncoding::Exact(e) => e
                .decode_without_bom_handling_and_without_replacement(bytes)
                .ok_or(DecodeError::Invalid(self.name())),
            ClientEncoding::AsciiOnly(name) => Err(DecodeError::Unsupported(name)),
        }
    }
}

/// The session's current encoding, written by the response side (which
/// reads ParameterStatus) and read by the request side.
#[derive(Debug)]
pub struct EncodingCell(AtomicU8);

impl EncodingCell {
    /// Starting as `e`.
    pub fn new(e: ClientEncoding) -> Self {
        Self(AtomicU8::new(e.index()))
    }

    /// The encoding now.
    pub fn get(&self) -> ClientEncoding {
        let i = usize::from(self.0.load(Ordering::Acquire));
        TABLE
            .get(i)
            .map_or(ClientEncoding::AsciiOnly("an unknown encoding"), |(_, e)| *e)
    }

    /// The server reported a new `client_encoding`.
    pub fn set(&self, e: ClientEncoding) {
        self.0.store(e.index(), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latin9_reads_the_euro_sign() {
        let e = ClientEncoding::named("LATIN9");
        assert_eq!(e.decode(b"SELECT '\xa4'").unwrap(), "SELECT '€'");
        assert_eq!(ClientEncoding::named("latin1").decode(b"'\xe9'").unwrap(), "'é'");
    }

    #[test]
    fn utf8_refuses_what_is_not_utf8() {
        assert_eq!(
            ClientEncoding::Utf8.decode(b"SELECT '\xa4'"),
            Err(DecodeError::Invalid("UTF8"))
        );
        assert_eq!(
            ClientEncoding::Utf8.decode("SELECT 'é'".as_bytes()).unwrap(),
            "SELECT 'é'"
        );
    }

    #[test]
    fn a_trail_byte_that_looks_like_a_backslash_stays_inside_its_character() {
        // SJIS 0x95 0x5C is one character (表); read as bytes, 0x5C would be `\`.
        let text = ClientEncoding::named("SJIS").decode(b"SELECT E'\x95\x5c'").unwrap();
        assert_eq!(text, "SELECT E'表'");
        assert!(!text.contains('\\'));
        assert_eq!(
            ClientEncoding::named("SJIS").decode(b"SELECT '\x95'"),
            Err(DecodeError::Invalid("SJIS"))
        );
    }

    #[test]
    fn encodings_it_cannot_read_pass_ascii_only() {
        let e = ClientEncoding::named("JOHAB");
        assert_eq!(e.decode(b"SELECT 1").unwrap(), "SELECT 1");
        assert_eq!(e.decode(b"SELECT '\x88\x5c'"), Err(DecodeError::Unsupported("JOHAB")));
        assert!(matches!(ClientEncoding::named("KLINGON"), ClientEncoding::AsciiOnly(_)));
    }

    #[test]
    fn text_is_ambiguous_where_another_encoding_could_take_an_ascii_byte_into_a_character() {
        // UTF-8 "ā\\": in SJIS, 0x81 0x5C is one character and the backslash is gone.
        assert!(ambiguous("E'ā\\'".as_bytes()));
        assert!(ambiguous("été".as_bytes()));
        assert!(!ambiguous(b"SELECT 1"));
        // High bytes followed by high bytes, spaces, quotes or punctuation.
        assert!(!ambiguous("SELECT '€ ', 'é'".as_bytes()));
    }

    #[test]
    fn the_cell_follows_the_server() {
        let cell = EncodingCell::new(ClientEncoding::Utf8);
        cell.set(ClientEncoding::named("LATIN9"));
        assert_eq!(cell.get(), ClientEncoding::named("LATIN9"));
        cell.set(ClientEncoding::named("nonsense"));
        assert!(matches!(cell.get(), ClientEncoding::AsciiOnly(_)));
    }
}
