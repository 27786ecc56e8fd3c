//! The vocabulary of masking that configuration validates against: the
//! built-in detectors' names, the replacement styles, and JSON field paths.
use serde::{Deserialize, Serialize};

/// Names of the built-in detectors (`masking` compiles each of them).
pub const BUILTIN_NAMES: [&str; 9] = [
    "credit_card",
    "email",
    "us_ssn",
    "iban",
    "phone",
    "api_key",
    "aws_access_key",
    "jwt",
    "bearer_token",
];

/// How a found value is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Style {
    /// `[REDACTED:email]`.
    #[default]
    Redact,
    /// Everything but the last four characters replaced by `*`.
    KeepLast4,
    /// Same length and shape: digits become `0`, letters `x`, other characters kept.
    Placeholder,
}

/// A JSON field path: `messages[].content` is `messages`, any element, `content`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath(Vec<PathSegment>);

/// One step of a [`FieldPath`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSegment {
    /// A named member.
    Key(String),
    /// Any element of an array.
    Any,
}

impl FieldPath {
    /// Parses `a.b[].c`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut segments = Vec::new();
        for part in text.split('.') {
            let (name, arrays) = match part.find("[]") {
                Some(i) => (&part[..i], &part[i..]),
                None => (part, ""),
            };
            if name.is_empty() || !arrays.replace("[]", "").is_empty() {
                return Err(format!("bad field path `{text}` (write e.g. `messages[].content`)"));
            }
            segments.push(PathSegment::Key(name.to_owned()));
            for _ in 0..arrays.len() / 2 {
                segments.push(PathSegment::Any);
            }
        }
        Ok(Self(segments))
    }

    /// True when the path to a value is exactly this one.
    pub fn matches(&self, at: &[PathSegment]) -> bool {
        self.0 == at
    }
}
