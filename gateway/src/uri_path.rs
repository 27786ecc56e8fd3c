//! Request paths as policy sees them and as they go upstream: one
//! normal form, so a permit written `like "/ok*"` or a review rule on
//! `/v1/files*` cannot be walked around with `/ok/../admin`,
//! `/v1/chat/%2e%2e/files` or `//v1/files`.
//!
//! The form: percent-encoded unreserved characters decoded (RFC 3986,
//! 6.2.2.2), other escapes kept with upper-case hex, dot segments removed
//! (5.2.4), runs of slashes merged (servers such as nginx merge them, so
//! policy must see what they serve). Encodings servers read in different
//! ways are refused: an encoded slash or backslash (unless the target
//! allows encoded slashes, which are then kept encoded), NUL, a literal
//! backslash, a malformed escape, and dot segments carrying `;` parameters.
use std::fmt;

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/` (and is not `*`).
    #[error("the request path must start with '/'")]
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    #[error("malformed percent-encoding at byte {0}")]
    BadEscape(usize),
    /// `%2F` or `%5C`: one server reads a separator, another a name.
    #[error("an encoded slash or backslash ({0}) is ambiguous")]
    EncodedSeparator(String),
    /// `%00`.
    #[error("an encoded NUL is not allowed in a path")]
    Nul,
    /// A literal backslash, a separator to some servers.
    #[error("a backslash is not allowed in a path")]
    Backslash,
    /// `..;x` or `.;x`: a dot segment to some servers, a name to others.
    #[error("a dot segment with parameters ({0}) is ambiguous")]
    DotParameters(String),
}

/// A path in normal form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalPath(String);

impl NormalPath {
    /// The path.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NormalPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Normalises a request path (without its query). `encoded_slashes`
/// keeps `%2F` and `%5C` (encoded, never decoded) instead of refusing them.
pub fn normalise(path: &str, encoded_slashes: bool) -> Result<NormalPath, PathError> {
    if path == "*" {
        return Ok(NormalPath(path.to_owned()));
    }
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let decoded = decode_unreserved(path, encoded_slashes)?;
    let mut out: Vec<&str> = Vec::new();
    let mut trailing = false;
    for segment in decoded.split('/').skip(1) {
        trailing = false;
        match segment {
            "" => trailing = true,
            "." => trailing = true,
            ".." => {
                out.pop();
                trailing = true;
            }
            s if s.starts_with(".;") || s.starts_with("..;") => {
                return Err(PathError::DotParameters(s.to_owned()));
            }
            s => out.push(s),
        }
    }
    let mut normal = String::with_capacity(decoded.len());
    for s in &out {
        normal.push('/');
        normal.push_str(s);
    }
    if trailing || out.is_empty() {
        normal.push('/');
    }
    Ok(NormalPath(normal))
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).map(|d| d as u8)
}

/// Decodes escapes of unreserved characters; refuses the ambiguous ones.
fn decode_unreserved(path: &str, encoded_slashes: bool) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => return Err(PathError::Backslash),
            0 => return Err(PathError::Nul),
            b'%' => {
                let (Some(hi), Some(lo)) = (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathError::BadEscape(i));
                };
                let value = hi << 4 | lo;
                match value {
                    0 => return Err(PathError::Nul),
                    b'/' | b'\\' if !encoded_slashes => {
                        return Err(PathError::EncodedSeparator(path[i..i + 3].to_owned()))
                    }
                    v if is_unreserved(v) => out.push(char::from(v)),
                    v => {
                        out.push('%');
                        out.push_str(&format!("{v:02X}"));
                    }
                }
                i += 3;
            }
            _ => {
                // Whole UTF-8 characters (the http crate allows some bytes
                // above 0x7f in paths): copied as they are.
                let len = utf8_len(bytes[i]);
                let end = (i + len).min(bytes.len());
                out.push_str(path.get(i..end).unwrap_or_default());
                i = end;
            }
        }
    }
    Ok(out)
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xf0.. => 4,
        0xe0.. => 3,
        0xc0.. => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> Result<String, PathError> {
        normalise(p, false).map(|p| p.0)
    }

    #[test]
    fn dot_segments_and_slash_runs_are_removed() {
        assert_eq!(n("/ok/../forbidden").unwrap(), "/forbidden");
        assert_eq!(n("/v1/chat/completions/../../files").unwrap(), "/v1/files");
        assert_eq!(n("/a/./b/.").unwrap(), "/a/b/");
        assert_eq!(n("/a/b/..").unwrap(), "/a/");
        assert_eq!(n("/../../etc").unwrap(), "/etc");
        assert_eq!(n("//v1///files").unwrap(), "/v1/files");
        assert_eq!(n("/").unwrap(), "/");
        assert_eq!(n("/v1/models/").unwrap(), "/v1/models/");
        assert_eq!(n("/..").unwrap(), "/");
        assert_eq!(n("*").unwrap(), "*");
        assert_eq!(n("/a..b/c.d").unwrap(), "/a..b/c.d");
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_others_kept() {
        assert_eq!(n("/v1/chat/%2e%2E/files").unwrap(), "/v1/files");
        assert_eq!(n("/%76%31/files").unwrap(), "/v1/files");
        assert_eq!(n("/a%20b%3f").unwrap(), "/a%20b%3F");
        assert_eq!(n("/caf%C3%A9").unwrap(), "/caf%C3%A9");
        assert_eq!(n("/café").unwrap(), "/café");
    }

    #[test]
    fn ambiguous_forms_are_refused() {
        assert!(matches!(n("/v1%2Ffiles"), Err(PathError::EncodedSeparator(_))));
        assert!(matches!(n("/v1%5cfiles"), Err(PathError::EncodedSeparator(_))));
        assert_eq!(n("/a%00b"), Err(PathError::Nul));
        assert_eq!(n("/a\\..\\b"), Err(PathError::Backslash));
        assert_eq!(n("/a%2"), Err(PathError::BadEscape(2)));
        assert_eq!(n("/a%zz"), Err(PathError::BadEscape(2)));
        assert!(matches!(n("/ok/..;/admin"), Err(PathError::DotParameters(_))));
        assert_eq!(n("v1/files"), Err(PathError::NotAbsolute));
        // Kept encoded when the target allows encoded slashes.
        assert_eq!(normalise("/a%2fb/../c", true).unwrap().0, "/c");
        assert_eq!(normalise("/pkg/a%2Fb", true).unwrap().0, "/pkg/a%2Fb");
    }
}
