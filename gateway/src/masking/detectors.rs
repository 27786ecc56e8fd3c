//! Detectors: a regular expression for candidates, and for some a checksum
//! (Luhn for cards, mod-97 for IBANs) so random digit runs are not masked.
use regex::bytes::Regex;

use super::MaskError;
pub use crate::types::BUILTIN_NAMES;

/// The built-in detectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetectorKind {
    /// Payment card numbers (13-19 digits, Luhn-valid).
    CreditCard,
    /// Email addresses.
    Email,
    /// US social security numbers.
    UsSsn,
    /// IBANs (mod-97 valid).
    Iban,
    /// Phone numbers in international or common national forms.
    Phone,
    /// OpenAI-style `sk-...` keys.
    OpenAiKey,
    /// AWS access key ids.
    AwsAccessKey,
    /// JSON web tokens.
    Jwt,
    /// `Bearer ...` tokens.
    BearerToken,
    /// An operator's regular expression.
    Custom,
}

/// Longest run of a built-in detector's alphabet a stream holds back whole
/// (a longer one is released from its start, as a window of this size).
pub const RUN_HELD: usize = 4096;

/// A compiled detector.
#[derive(Debug, Clone)]
pub struct Detector {
    name: String,
    kind: DetectorKind,
    regex: Regex,
    max_len: usize,
    /// For exact-value detectors, the value.
    literal: Option<Vec<u8>>,
}

/// Patterns name ASCII digits (`[0-9]`, not `\d`, which takes every
/// Unicode digit): every byte a value can hold must be in its detector's
/// alphabet, or a stream cannot tell what to hold back (found by fuzzing:
/// an NKo digit ended a card number in a read and not in the whole text).
const BUILTINS: [(&str, DetectorKind, &str, usize); 9] = [
    (
        BUILTIN_NAMES[0],
        DetectorKind::CreditCard,
        r"\b[0-9](?:[ -]?[0-9]){12,18}\b",
        40,
    ),
    (
        BUILTIN_NAMES[1],
        DetectorKind::Email,
        r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*\.[A-Za-z]{2,24}",
        254,
    ),
    (
        BUILTIN_NAMES[2],
        DetectorKind::UsSsn,
        r"\b[0-9]{3}-[0-9]{2}-[0-9]{4}\b",
        11,
    ),
    (
        BUILTIN_NAMES[3],
        DetectorKind::Iban,
        r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}\b",
        42,
    ),
    (
        BUILTIN_NAMES[4],
        DetectorKind::Phone,
        r"(?:\+[0-9]{1,3}[ .-]?)?\(?[0-9]{3}\)?[ .-][0-9]{3}[ .-][0-9]{4}\b",
        20,
    ),
    (
        BUILTIN_NAMES[5],
        DetectorKind::OpenAiKey,
        r"\bsk-[A-Za-z0-9_-]{20,200}",
        204,
    ),
    (
        BUILTIN_NAMES[6],
        DetectorKind::AwsAccessKey,
        r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
        20,
    ),
    (
        BUILTIN_NAMES[7],
        DetectorKind::Jwt,
        r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}",
        4096,
    ),
    (
        BUILTIN_NAMES[8],
        DetectorKind::BearerToken,
        r"\bBearer [A-Za-z0-9._~+/-]{16,512}=*",
        540,
    ),
];

impl Detector {
    /// A built-in detector by name.
    pub fn builtin(name: &str) -> Result<Self, MaskError> {
        let (n, kind, pattern, max_len) =
            (BUILTINS.iter().find(|(n, ..)| *n == name).copied()).ok_or_else(|| MaskError::Unknown(name.to_owned()))?;
        let regex = Regex::new(pattern).map_err(|e| MaskError::pattern(n, e))?;
        Ok(Self {
            name: n.to_owned(),
            kind,
            regex,
            max_len,
            literal: None,
        })
    }

    /// An operator's detector; its matches are capped at 256 bytes for streaming.
    pub fn custom(name: &str, pattern: &str) -> Result<Self, MaskError> {
        let regex = Regex::new(pattern).map_err(|e| MaskError::pattern(name, e))?;
        Ok(Self {
            name: name.to_owned(),
            kind: DetectorKind::Custom,
            regex,
            max_len: 256,
            literal: None,
        })
    }

    /// Matches one exact value (e.g. a secret the gateway injected, so an
    /// upstream echoing it back cannot hand it to the agent).
    pub fn literal(name: &str, value: &str) -> Result<Self, MaskError> {
        let regex = Regex::new(&regex::escape(value)).map_err(|e| MaskError::pattern(name, e))?;
        Ok(Self {
            name: name.to_owned(),
            kind: DetectorKind::Custom,
            regex,
            max_len: value.len(),
            literal: Some(value.as_bytes().to_vec()),
        })
    }

    /// Its name, as findings report it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its regular expression.
    pub fn pattern(&self) -> &str {
        self.regex.as_str()
    }

    /// Every byte a value of this detector can hold.
    fn alphabet(&self) -> fn(u8) -> bool {
        match self.kind {
            DetectorKind::CreditCard => |b| b.is_ascii_digit() || b == b' ' || b == b'-',
            DetectorKind::Email => |b| b.is_ascii_alphanumeric() || b"._%+-@".contains(&b),
            DetectorKind::UsSsn => |b| b.is_ascii_digit() || b == b'-',
            DetectorKind::Iban => |b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b' ',
            DetectorKind::Phone => |b| b.is_ascii_digit() || b" .()+-".contains(&b),
            DetectorKind::OpenAiKey => |b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-',
            DetectorKind::AwsAccessKey => |b| b.is_ascii_uppercase() || b.is_ascii_digit(),
            DetectorKind::Jwt => |b| b.is_ascii_alphanumeric() || b"_.-".contains(&b),
            DetectorKind::BearerToken => |b| b.is_ascii_alphanumeric() || b"._~+/= -".contains(&b),
            // An operator's pattern could match anything.
            DetectorKind::Custom => |_| true,
        }
    }

    /// Whether a stream holds this detector's runs whole (up to
    /// [`RUN_HELD`]): where values of several detectors overlap in one run
    /// (a card number and a US SSN in `0-11-1110-1111…`), which one the
    /// whole text masks depends on where the run ends (found by fuzzing).
    /// An operator's pattern, and bearer tokens, whose alphabet takes
    /// prose (letters and spaces), keep a window of their longest value:
    /// holding their runs whole would hold back whole sentences.
    fn whole_runs(&self) -> bool {
        self.literal.is_none() && !matches!(self.kind, DetectorKind::Custom | DetectorKind::BearerToken)
    }

    /// How many bytes at the end of `held` could be part of a value not
    /// yet complete: a stream must hold them back. Every character a
    /// detector's pattern can match is in its alphabet, so a value that
    /// crosses the end lies entirely inside that trailing run.
    pub fn holdback(&self, held: &[u8]) -> usize {
        if let Some(value) = &self.literal {
            return (1..value.len())
                .rev()
                .find(|k| held.ends_with(&value[..*k]))
                .unwrap_or(0);
        }
        let in_alphabet = self.alphabet();
        let run = held.iter().rev().take_while(|b| in_alphabet(**b)).count();
        run.min(if self.whole_runs() { RUN_HELD } else { self.max_len })
    }

    /// Where a stream's release must end instead of `cut` so that it does
    /// not split one of this detector's runs (found by fuzzing: a release
    /// ending where another detector's run began, inside a card number's
    /// run, read the number's end differently from the whole text).
    pub fn settle(&self, held: &[u8], cut: usize) -> usize {
        if !self.whole_runs() || cut == 0 || cut >= held.len() {
            return cut;
        }
        let in_alphabet = self.alphabet();
        if !in_alphabet(held[cut]) || !in_alphabet(held[cut - 1]) {
            return cut;
        }
        let run = held[..cut]
            .iter()
            .rev()
            .take(RUN_HELD)
            .take_while(|b| in_alphabet(**b))
            .count();
        cut - run
    }

    /// Valid matches as (start, end), searched from `start` as a search of
    /// the whole input reaches it: what comes before is read only for word
    /// boundaries, and a match there does not hide one after `start`.
    pub fn find_from(&self, input: &[u8], start: usize) -> Vec<(usize, usize)> {
        let mut found = Vec::new();
        let mut at = start;
        while at <= input.len() {
            let Some(m) = self.regex.find_at(input, at) else { break };
            if m.len() <= self.max_len && self.valid(m.as_bytes()) {
                found.push((m.start(), m.end()));
            }
            // An empty match moves on by one, as `find_iter` does.
            at = if m.is_empty() { m.end() + 1 } else { m.end() };
        }
        found
    }

    fn valid(&self, value: &[u8]) -> bool {
        match self.kind {
            DetectorKind::CreditCard => luhn(value),
            DetectorKind::Iban => iban_ok(value),
            DetectorKind::UsSsn => {
                let area = &value[..3];
                area != b"000" && area != b"666" && area[0] != b'9' && &value[4..6] != b"00" && &value[7..] != b"0000"
            }
            _ => true,
        }
    }
}

fn luhn(value: &[u8]) -> bool {
    let digits: Vec<u32> = value
        .iter()
        .filter(|b| b.is_ascii_digit())
        .map(|b| u32::from(b - b'0'))
        .collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            if i % 2 == 1 {
                if d * 2 > 9 {
                    d * 2 - 9
                } else {
                    d * 2
                }
            } else {
                *d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn iban_ok(value: &[u8]) -> bool {
    let compact: Vec<u8> = value.iter().copied().filter(|b| *b != b' ').collect();
    if compact.len() < 15 {
        return false;
    }
    let rearranged = compact[4..].iter().chain(&compact[..4]);
    let mut rem: u32 = 0;
    for b in rearranged {
        let v = match b {
            b'0'..=b'9' => u32::from(b - b'0'),
            b'A'..=b'Z' => u32::from(b - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}
