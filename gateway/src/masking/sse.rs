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

    /// Feeds bytes; returns the events ready to go out.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(end) = find_event_end(&self.buf) {
            let event: Vec<u8> = self.buf.drain(..end).collect();
            out.extend(self.event(&event));
        }
        out
    }

    /// Ends the stream: releases what is held.
    pub fn finish(&mut self) -> Vec<u8> {
        let rest = std::mem::take(&mut self.buf);
        let mut out = self.flush_event();
        out.extend(self.masker.mask(&rest).0);
        out
    }

    fn event(&mut self, event: &[u8]) -> Vec<u8> {
        let text = String::from_utf8_lossy(event);
        let Some(data) = text.lines().find_map(|l| l.strip_prefix("data:")).map(str::trim) else {
            return self.masker.mask(event).0;
        };
        if data == "[DONE]" {
            let mut out = self.flush_event();
            out.extend_from_slice(event);
            return out;
        }
        let Ok(mut json) = serde_json::from_str::<Value>(data) else {
            return self.masker.mask(event).0;
        };
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
            return self.masker.mask(event).0;
        }
        self.last_chunk = Some(json.clone());
        format!("data: {json}\n\n").into_bytes()
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

/// End (exclusive) of the first complete event: a blank line.
fn find_event_end(buf: &[u8]) -> Option<usize> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|p| p + 2);
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
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
}
