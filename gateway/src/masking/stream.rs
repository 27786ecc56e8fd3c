//! Masking a stream: bytes are released only once no value that could still
//! be growing overlaps them, so a card number or key split across two
//! chunks (or two reads) is caught whole.
use std::sync::Arc;

use super::{Finding, Masker};

/// Streaming state over one direction of one exchange.
pub struct StreamMasker {
    masker: Arc<Masker>,
    held: Vec<u8>,
    /// Bytes already released (for finding offsets).
    released: usize,
    /// The last released bytes (a character at most), read as context
    /// before what is held: a value right after the joint is then masked as
    /// in the whole text (found by fuzzing: `...\xdf` released, then
    /// `\x86sk-...` masked alone saw a word boundary the whole text does
    /// not have, inside the character U+07C6).
    context: Vec<u8>,
}

/// Bytes of context kept: one UTF-8 character.
const CONTEXT: usize = 4;

impl StreamMasker {
    /// A fresh stream.
    pub fn new(masker: Arc<Masker>) -> Self {
        Self {
            masker,
            held: Vec::new(),
            released: 0,
            context: Vec::new(),
        }
    }

    /// Feeds a chunk; returns the bytes safe to release now and their findings.
    pub fn push(&mut self, chunk: &[u8]) -> (Vec<u8>, Vec<Finding>) {
        self.held.extend_from_slice(chunk);
        // Release up to `cut`: everything but a trailing run that could still
        // grow into a value, moved back to the start of any match that reaches
        // past that point.
        // A character not whole yet is held with the run before it: what
        // it turns out to be (a letter, or not) decides the word boundary
        // a value there ends at (found by fuzzing: a card number before a
        // split `\xd1\x9c` was masked, in the whole text it is no value).
        let whole = self.held.len() - incomplete_tail(&self.held);
        let mut cut = whole - self.masker.holdback(&self.held[..whole]);
        let mut joined = self.context.clone();
        joined.extend_from_slice(&self.held);
        let skip = self.context.len();
        let spans: Vec<(usize, usize)> = (self.masker.spans(&joined, skip).into_iter())
            .map(|(start, end, _)| (start.saturating_sub(skip), end.saturating_sub(skip)))
            .collect();
        // Until settled: moving back out of a run can land inside a match.
        loop {
            let before = cut;
            for (start, end) in &spans {
                if *start < cut && *end > cut {
                    cut = *start;
                }
            }
            cut = self.masker.settle(&self.held, cut);
            if cut == before {
                break;
            }
        }
        // Never split a UTF-8 character between two releases.
        while cut > 0 && cut < self.held.len() && self.held[cut] & 0xC0 == 0x80 {
            cut -= 1;
        }
        self.release(cut)
    }

    /// Ends the stream: masks and releases everything held.
    pub fn finish(&mut self) -> (Vec<u8>, Vec<Finding>) {
        let all = self.held.len();
        self.release(all)
    }

    fn release(&mut self, cut: usize) -> (Vec<u8>, Vec<Finding>) {
        let rest = self.held.split_off(cut);
        let head = std::mem::replace(&mut self.held, rest);
        let mut joined = std::mem::take(&mut self.context);
        let skip = joined.len();
        joined.extend_from_slice(&head);
        let limit = joined.len();
        // The next character, read as what follows the head.
        joined.extend_from_slice(&self.held[..first_char(&self.held)]);
        let (out, mut findings) = self.masker.mask_within(&joined, skip, limit);
        joined.truncate(limit);
        for f in &mut findings {
            f.offset += self.released;
        }
        self.released += head.len();
        self.context = joined[joined.len().saturating_sub(CONTEXT)..].to_vec();
        (out, findings)
    }
}

/// How many bytes at the end of `bytes` begin a UTF-8 character whose
/// continuation bytes have not come yet.
fn incomplete_tail(bytes: &[u8]) -> usize {
    let from = bytes.len().saturating_sub(3);
    for (i, b) in bytes.iter().enumerate().skip(from).rev() {
        if b & 0xC0 == 0x80 {
            continue;
        }
        let want = utf8_len(*b);
        let have = bytes.len() - i;
        return if have < want { have } else { 0 };
    }
    0
}

/// The length of the first character of `bytes` (a stray byte counts as one).
fn first_char(bytes: &[u8]) -> usize {
    let Some(lead) = bytes.first() else { return 0 };
    let want = utf8_len(*lead);
    let continued = bytes[1..]
        .iter()
        .take(want - 1)
        .take_while(|b| *b & 0xC0 == 0x80)
        .count();
    1 + continued
}

/// The length a UTF-8 character starting with `lead` has (a byte that
/// starts none counts as one).
fn utf8_len(lead: u8) -> usize {
    match lead {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => 1,
    }
}
