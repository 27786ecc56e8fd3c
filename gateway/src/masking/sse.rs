//! Masking server-sent events of LLM streaming APIs: the text an agent sees
//! arrives as `delta.content` pieces spread over many events, so a card
//! number can be split between two events. Each choice's content runs
//! through its own [`StreamMasker`]; held-back text is released in later
//! events, and whatever is still held at `[DONE]` goes out in one extra
//! chunk just before it.
use std::{collections::BTreeMap, sync::Arc};

use serde_json::Value;

use super::{Masker, StreamMasker};

/// Masking state over one event stream.
pub struct SseMasker {
    masker: Arc<Masker>,
    buf: Vec<u8>,
    choices: BTreeMap<u64, StreamMasker>,
    last_chunk: Option<Value>,
    /// What was masked, in order.
    pub fired: Vec<super::MaskedValue>,
}

impl SseMasker {
    /// A fresh stream.
    pub fn new(masker: Arc<Masker>) -> Self {
        Self {
            masker,
            buf: Vec::new(),
            choices: BTreeMap::new(),
            last_chunk: None,
            fired: Vec::new(),
        }
    }

    /// Feeds bytes; returns the events ready to go out. Consecutive events
    /// that carry no choice deltas are masked together, in one pass (each is
    /// complete, so nothing is split; a value spanning two of them is only
    /// masked more, never less).
    pub fn push(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.buf.extend_from_slice(bytes);
        let buf = std::mem::take(&mut self.buf);
        let mut out = Vec::new();
        let (mut at, mut plain_from) = (0, 0);
        while let Some(len) = find_event_end(&buf[at..]) {
            let event = &buf[at..at + len];
            if let Some(masked) = self.choice_event(event) {
                out.extend(self.masker.mask(&buf[plain_from..at]).0);
                out.extend(masked);
                plain_from = at + len;
            }
            at += len;
        }
        out.extend(self.masker.mask(&buf[plain_from..at]).0);
        self.buf = buf[at..].to_vec();
        out
    }

    /// Ends the stream: releases what is held.
    pub fn finish(&mut self) -> Vec<u8> {
        let rest = std::mem::take(&mut self.buf);
        let mut out = self.flush_event();
        out.extend(self.masker.mask(&rest).0);
        out
    }

    /// An event that needs handling of its own (a chunk with choice deltas,
    /// or `[DONE]`), handled; `None` for any other event, which the caller
    /// masks as text.
    fn choice_event(&mut self, event: &[u8]) -> Option<Vec<u8>> {
        let text = String::from_utf8_lossy(event);
        let data = text.lines().find_map(|l| l.strip_prefix("data:")).map(str::trim)?;
        if data == "[DONE]" {
            let mut out = self.flush_event();
            out.extend_from_slice(event);
            return Some(out);
        }
        // Only chunks with choices are parsed as JSON.
        if !data.contains("\"choices\"") {
            return None;
        }
        let mut json = serde_json::from_str::<Value>(data).ok()?;
        let mut touched = false;
        if let Some(choices) = json.get_mut("choices").and_then(Value::as_array_mut) {
            for choice in choices {
                let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
                let Some(content) = choice.pointer_mut("/delta/content") else {
                    continue;
                };
                let Some(piece) = content.as_str() else { continue };
                let masker = self
                    .choices
                    .entry(index)
                    .or_insert_with(|| StreamMasker::new(self.masker.clone()));
                let (released, findings) = masker.push(piece.as_bytes());
                let at = format!("choices[{index}].delta.content");
                self.fired.extend(findings.into_iter().map(|f| super::MaskedValue {
                    detector: f.detector,
                    at: at.clone(),
                    sealed: None,
                }));
                *content = Value::String(String::from_utf8_lossy(&released).into_owned());
                touched = true;
            }
        }
        if !touched {
            return None;
        }
        self.last_chunk = Some(json.clone());
        Some(format!("data: {json}\n\n").into_bytes())
    }

    /// One extra chunk carrying every choice's held-back text, if any.
    fn flush_event(&mut self) -> Vec<u8> {
        let mut pieces = Vec::new();
        for (index, masker) in &mut self.choices {
            let (released, findings) = masker.finish();
            let at = format!("choices[{index}].delta.content");
            self.fired.extend(findings.into_iter().map(|f| super::MaskedValue {
                detector: f.detector,
                at: at.clone(),
                sealed: None,
            }));
            if !released.is_empty() {
                let content = String::from_utf8_lossy(&released).into_owned();
                pieces.push(serde_json::json!({"index": index, "delta": {"content": content}, "finish_reason": null}));
            }
        }
        if pieces.is_empty() {
            return Vec::new();
        }
        let mut chunk = self
            .last_chunk
            .clone()
            .unwrap_or_else(|| serde_json::json!({"object": "chat.completion.chunk"}));
        chunk["choices"] = Value::Array(pieces);
        format!("data: {chunk}\n\n").into_bytes()
    }
}

/// End (exclusive) of the first complete event: a blank line (`\n\n` or
/// `\r\n\r\n`). One pass over the bytes: searching for each form over the
/// whole buffer made every event cost the length of the rest of the chunk.
fn find_event_end(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(found) = buf[from..].iter().position(|b| *b == b'\n') {
        let p = from + found;
        if buf.get(p + 1) == Some(&b'\n') {
            return Some(p + 2);
        }
        if p >= 1 && buf[p - 1] == b'\r' && buf.get(p + 1..p + 3) == Some(b"\r\n".as_slice()) {
            return Some(p + 3);
        }
        from = p + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::masking::Style;

    fn chunk(content: &str) -> String {
        format!(
            "data: {}\n\n",
            serde_json::json!({"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]})
        )
    }

    fn contents(stream: &[u8]) -> String {
        String::from_utf8_lossy(stream)
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .flat_map(|v| v["choices"].as_array().cloned().unwrap_or_default())
            .filter_map(|c| c["delta"]["content"].as_str().map(str::to_owned))
            .collect()
    }

    #[test]
    fn a_card_split_across_two_events_is_masked() {
        let masker = Arc::new(Masker::new(&["credit_card".into()], &[], Style::Redact).unwrap());
        let mut sse = SseMasker::new(masker);
        let input = [
            chunk("Your card is 4111 1111"),
            chunk(" 1111 1111, keep it safe."),
            "data: [DONE]\n\n".to_owned(),
        ]
        .concat();
        let mut out = Vec::new();
        // Arbitrary network chunking on top of the event split.
        for piece in input.as_bytes().chunks(7) {
            out.extend(sse.push(piece));
        }
        out.extend(sse.finish());
        assert_eq!(contents(&out), "Your card is [REDACTED:credit_card], keep it safe.");
        assert!(String::from_utf8_lossy(&out).ends_with("data: [DONE]\n\n"));
        assert!(!String::from_utf8_lossy(&out).contains("4111"));
        assert_eq!(
            sse.fired.iter().map(|f| f.detector.as_str()).collect::<Vec<_>>(),
            vec!["credit_card"]
        );
        assert_eq!(sse.fired[0].at, "choices[0].delta.content");
    }

    #[test]
    fn events_end_at_the_first_blank_line_of_either_form() {
        assert_eq!(find_event_end(b"data: a\n\ndata: b\n\n"), Some(9));
        assert_eq!(find_event_end(b"data: a\r\n\r\ndata: b"), Some(11));
        assert_eq!(find_event_end(b"data: a\r\n\r\n\n\n"), Some(11));
        assert_eq!(find_event_end(b"data: a\ndata: b\n"), None);
        assert_eq!(find_event_end(b"\n\n"), Some(2));
    }
}
