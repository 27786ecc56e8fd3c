//! The masking engine, shared by the HTTP and PostgreSQL paths: detectors
//! for personal data and secrets, masking styles, and a streaming matcher
//! that catches values split across chunk boundaries. Findings record which
//! detector fired and where, never the value.
use serde::{Deserialize, Serialize};

mod catalog;
mod detectors;
mod sse;
mod stream;

pub use crate::types::{FieldPath, Style};
pub use catalog::{Catalog, MaskPlan};
pub use detectors::{Detector, DetectorKind, BUILTIN_NAMES};
pub use sse::SseMasker;
pub use stream::StreamMasker;

/// Why masking rules could not be built (the gateway's own config, which
/// validation checked: a request meeting one is denied, not passed unmasked).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaskError {
    /// No built-in or configured detector has this name.
    #[error("unknown detector `{0}` (known: {known})", known = BUILTIN_NAMES.join(", "))]
    Unknown(String),
    /// A detector's pattern does not compile.
    #[error("detector {name}: {message}")]
    Pattern {
        /// The detector.
        name: String,
        /// The regex engine's complaint.
        message: String,
    },
    /// A rule's field path is malformed.
    #[error("{0}")]
    Field(String),
}

impl MaskError {
    fn pattern(name: &str, e: regex::Error) -> Self {
        Self::Pattern {
            name: name.to_owned(),
            message: e.to_string(),
        }
    }
}

/// One masked value: which detector, and where in the output it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Detector name.
    pub detector: String,
    /// Byte offset in the input where the value started.
    pub offset: usize,
    /// Length in bytes of the value.
    pub len: usize,
    /// The JSON field it was in, when masking a JSON document.
    pub field: Option<String>,
    /// The value itself, only for detectors whose rule keeps originals
    /// (to be sealed before it is stored; never serialized).
    #[serde(skip)]
    pub original: Option<Vec<u8>>,
}

/// Where something was masked, for the audit trail (never the value in
/// plaintext: only sealed, where its rule keeps originals).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaskedValue {
    /// Detector that fired.
    pub detector: String,
    /// JSON field path, or `byte N` in a text body.
    pub at: String,
    /// The original, encrypted with the gateway's sealing key (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<String>,
}

impl From<Finding> for MaskedValue {
    fn from(f: Finding) -> Self {
        let at = f.field.unwrap_or_else(|| format!("byte {}", f.offset));
        Self {
            detector: f.detector,
            at,
            sealed: None,
        }
    }
}

impl MaskedValue {
    /// From a finding, sealing its original (if kept) with `seal`.
    pub fn sealed_with(f: Finding, seal: impl Fn(&[u8]) -> Option<String>) -> Self {
        let sealed = f.original.as_deref().and_then(seal);
        Self {
            sealed,
            ..Self::from(f)
        }
    }
}

/// Detectors, each with the style its values are replaced in.
#[derive(Debug, Clone)]
pub struct Masker {
    detectors: Vec<(Detector, Style)>,
    /// Detectors whose originals are kept (sealed) in the audit trail.
    keep: Vec<String>,
    /// Every detector's pattern in one automaton: one pass tells which
    /// detectors can match at all, so text with nothing to mask (most of it)
    /// is scanned once rather than once per detector.
    prefilter: Option<regex::bytes::RegexSet>,
}

fn prefilter(detectors: &[(Detector, Style)]) -> Option<regex::bytes::RegexSet> {
    // Too large a set (many custom patterns) just means no prefilter.
    regex::bytes::RegexSet::new(detectors.iter().map(|(d, _)| d.pattern())).ok()
}

impl Masker {
    /// Detectors by name (see [`DetectorKind`]) plus custom (name, regex) pairs, all in one style.
    pub fn new(names: &[String], custom: &[(String, String)], style: Style) -> Result<Self, MaskError> {
        let mut detectors = Vec::new();
        for name in names {
            detectors.push((Detector::builtin(name)?, style));
        }
        for (name, pattern) in custom {
            detectors.push((Detector::custom(name, pattern)?, style));
        }
        Ok(Self::from_parts(detectors))
    }

    /// From detectors with their styles.
    pub fn from_parts(detectors: Vec<(Detector, Style)>) -> Self {
        Self {
            prefilter: prefilter(&detectors),
            detectors,
            keep: Vec::new(),
        }
    }

    /// Keeps the originals of these detectors' values (for sealing).
    pub fn keeping(mut self, detectors: Vec<String>) -> Self {
        self.keep = detectors;
        self
    }

    /// Adds a detector for one exact value (redacted).
    pub fn with_literal(mut self, name: &str, value: &str) -> Result<Self, MaskError> {
        self.detectors.push((Detector::literal(name, value)?, Style::Redact));
        self.prefilter = prefilter(&self.detectors);
        Ok(self)
    }

    /// Bytes at the end of `held` that a stream must hold back (see
    /// [`Detector::holdback`]).
    pub fn holdback(&self, held: &[u8]) -> usize {
        self.detectors.iter().map(|(d, _)| d.holdback(held)).max().unwrap_or(0)
    }

    /// Where a stream's release ending at `cut` in `held` must end so that
    /// it splits no detector's run (see [`Detector::settle`]).
    pub fn settle(&self, held: &[u8], cut: usize) -> usize {
        self.detectors
            .iter()
            .map(|(d, _)| d.settle(held, cut))
            .min()
            .unwrap_or(cut)
    }

    /// Masks `input`; returns the output and what was masked.
    pub fn mask(&self, input: &[u8]) -> (Vec<u8>, Vec<Finding>) {
        self.mask_after(input, 0)
    }

    /// Masks `input[skip..]` as it would be masked right after
    /// `input[..skip]`, which is context only (already released by a
    /// stream): a word boundary, or a multi-byte character, at the joint is
    /// then read as in the whole text. Offsets are from `skip`.
    pub fn mask_after(&self, input: &[u8], skip: usize) -> (Vec<u8>, Vec<Finding>) {
        self.mask_within(input, skip, input.len())
    }

    /// Masks `input[skip..limit]` as it would be masked inside the whole
    /// text: `input[..skip]` was released before it and `input[limit..]`
    /// comes after it (a stream's next character, so that a word boundary
    /// at the end reads as in the whole text). Values reaching past
    /// `limit` are left to the next release. Offsets are from `skip`.
    pub fn mask_within(&self, input: &[u8], skip: usize, limit: usize) -> (Vec<u8>, Vec<Finding>) {
        let mut spans = self.styled_spans(input, skip);
        spans.retain(|s| s.1 <= limit);
        spans.sort_by_key(|s| (s.0, std::cmp::Reverse(s.1)));
        let mut out = Vec::with_capacity(limit - skip);
        let mut findings = Vec::new();
        let mut at = skip;
        for (start, end, name, style) in spans {
            if start < at {
                continue; // overlaps a value already masked
            }
            out.extend_from_slice(&input[at..start]);
            out.extend_from_slice(&replace(&input[start..end], name, style));
            findings.push(Finding {
                detector: name.to_owned(),
                offset: start - skip,
                len: end - start,
                field: None,
                original: self.keep.iter().any(|k| k == name).then(|| input[start..end].to_vec()),
            });
            at = end;
        }
        out.extend_from_slice(&input[at.min(limit)..limit]);
        (out, findings)
    }

    fn styled_spans<'a>(&'a self, input: &[u8], start: usize) -> Vec<(usize, usize, &'a str, Style)> {
        let candidates = self.prefilter.as_ref().map(|set| set.matches(input));
        self.detectors
            .iter()
            .enumerate()
            .filter(|(i, _)| candidates.as_ref().is_none_or(|c| c.matched(*i)))
            .flat_map(|(_, (d, style))| {
                d.find_from(input, start)
                    .into_iter()
                    .map(move |(s, e)| (s, e, d.name(), *style))
            })
            .collect()
    }

    /// Every (start, end, detector) match in `input`.
    pub(crate) fn spans<'a>(&'a self, input: &[u8], start: usize) -> Vec<(usize, usize, &'a str)> {
        self.styled_spans(input, start)
            .into_iter()
            .map(|(s, e, n, _)| (s, e, n))
            .collect()
    }
}

fn replace(value: &[u8], detector: &str, style: Style) -> Vec<u8> {
    match style {
        Style::Redact => format!("[REDACTED:{detector}]").into_bytes(),
        Style::KeepLast4 => {
            let keep = value.len().saturating_sub(4);
            value
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    if i < keep && b.is_ascii_alphanumeric() {
                        b'*'
                    } else {
                        *b
                    }
                })
                .collect()
        }
        Style::Placeholder => value
            .iter()
            .map(|b| match b {
                b'0'..=b'9' => b'0',
                b'a'..=b'z' | b'A'..=b'Z' => b'x',
                other => *other,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests;
