//! Masking phases of an HTTP exchange: the request body (prompt redaction,
//! buffered up to a bound because its length must be known) and the response
//! body (streamed, event-aware for server-sent events).
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

use super::{
    held::{self, HeldBody, Unheld},
    json_response, Body,
};
use crate::{
    limits::Budget,
    masking::{MaskPlan, MaskedValue, SseMasker, StreamMasker},
};

/// Where a response's masking findings go. A masker that finished before
/// the exchange's event is built (the whole response was at hand) puts
/// them into that event; one still streaming then hands them to a `masked`
/// event of their own when the stream ends, which is after the exchange's.
#[derive(Clone, Default)]
pub(super) struct Findings(Arc<Mutex<FindingsState>>);

#[derive(Default)]
enum FindingsState {
    /// The masker runs and the exchange's event is not built yet.
    #[default]
    Open,
    /// The masker finished first: these go into the exchange's event.
    Done(Vec<MaskedValue>),
    /// The exchange's event is built: later findings get an event of their own.
    Detached,
}

impl Findings {
    /// The masker's end: keeps the findings for the exchange's event, or,
    /// once that is built, hands the non-empty ones to `late`.
    pub(super) fn finish(&self, fired: Vec<MaskedValue>, late: impl FnOnce(Vec<MaskedValue>)) {
        let mut state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if matches!(*state, FindingsState::Detached) {
            drop(state);
            if !fired.is_empty() {
                late(fired);
            }
        } else {
            *state = FindingsState::Done(fired);
        }
    }

    /// For the exchange's event: what the masker found if it has finished
    /// (nothing otherwise: its findings come later, on their own).
    pub(super) fn for_exchange(&self) -> Vec<MaskedValue> {
        let mut state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match std::mem::replace(&mut *state, FindingsState::Detached) {
            FindingsState::Done(fired) => fired,
            FindingsState::Open | FindingsState::Detached => Vec::new(),
        }
    }
}

fn announced(headers: &http::HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// What policy needs from a request body: for LLM targets the JSON body is
/// read (bounded) for its `model`; otherwise only Content-Length is used.
/// Returns the request (with the body put back), the model, and the size.
pub(super) async fn body_facts(
    req: Request<Body>,
    llm: bool,
    budget: &Arc<Budget>,
) -> Result<(Request<Body>, String, i64), Response<Body>> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(-1);
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.contains("json"));
    if !llm || !json || req.method() == http::Method::GET {
        return Ok((req, String::new(), declared));
    }
    let (parts, body) = req.into_parts();
    let (bytes, held) = read_request(body, announced(&parts.headers), budget).await?;
    let model = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("model").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_default();
    let size = bytes.len() as i64;
    Ok((
        Request::from_parts(parts, HeldBody::boxed(bytes.to_vec(), Some(held))),
        model,
        size,
    ))
}

/// A request body held whole; 413 past the per-body limit or the budget.
async fn read_request(
    body: Body,
    announced: Option<u64>,
    budget: &Arc<Budget>,
) -> Result<(Bytes, crate::limits::Reserved), Response<Body>> {
    held::collect(body, announced, budget).await.map_err(|e| {
        let status = match e {
            Unheld::TooLarge | Unheld::OverBudget(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Unheld::Read(_) => StatusCode::BAD_REQUEST,
        };
        json_response(
            status,
            serde_json::json!({"error": {"type": "agent", "message": format!("request body: {e}")}}),
        )
    })
}

/// Masks a request body (JSON field by field when it is JSON); a body over
/// the bound is refused with 413.
pub(super) async fn request(
    req: Request<Body>,
    plan: &MaskPlan,
    seal: &(dyn Fn(&[u8]) -> Option<String> + Sync),
    budget: &Arc<Budget>,
) -> Result<(Request<Body>, Vec<MaskedValue>), Response<Body>> {
    let (mut parts, body) = req.into_parts();
    let (collected, held) = read_request(body, announced(&parts.headers), budget).await?;
    let (masked, fired) = mask_bytes(&collected, plan, is_json(&parts.headers), seal);
    drop(collected);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(masked.len()));
    Ok((Request::from_parts(parts, HeldBody::boxed(masked, Some(held))), fired))
}

fn is_json(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.contains("json"))
}

/// Masks a whole body: a JSON document value by value (field rules apply),
/// anything else as text (only the any-value detectors apply).
/// Originals of rules that keep them are sealed with `seal`; others are dropped.
fn mask_bytes(
    bytes: &[u8],
    plan: &MaskPlan,
    json: bool,
    seal: &(dyn Fn(&[u8]) -> Option<String> + Sync),
) -> (Vec<u8>, Vec<MaskedValue>) {
    let record = |findings: Vec<crate::masking::Finding>| {
        findings
            .into_iter()
            .map(|f| MaskedValue::sealed_with(f, seal))
            .collect()
    };
    if json {
        if let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(bytes) {
            let findings = plan.mask_json(&mut value);
            let out = serde_json::to_vec(&value).unwrap_or_else(|_| bytes.to_vec());
            return (out, record(findings));
        }
    }
    match &plan.any {
        Some(m) => {
            let (out, findings) = m.mask(bytes);
            (out, record(findings))
        }
        None => (bytes.to_vec(), Vec::new()),
    }
}

enum Mode {
    Sse(SseMasker),
    Raw(StreamMasker),
}

impl Mode {
    fn push(&mut self, data: &[u8], fired: &mut Vec<MaskedValue>) -> Vec<u8> {
        match self {
            Self::Sse(m) => m.push(data),
            Self::Raw(m) => {
                let (out, findings) = m.push(data);
                fired.extend(findings.into_iter().map(MaskedValue::from));
                out
            }
        }
    }

    fn finish(&mut self, fired: &mut Vec<MaskedValue>) -> Vec<u8> {
        match self {
            Self::Sse(m) => {
                let out = m.finish();
                fired.append(&mut m.fired);
                out
            }
            Self::Raw(m) => {
                let (out, findings) = m.finish();
                fired.extend(findings.into_iter().map(MaskedValue::from));
                out
            }
        }
    }
}

/// Masks a textual response body; other bodies pass untouched. Event streams
/// and plain text are masked as they stream; JSON documents, when field rules
/// apply, are read whole (bounded) and masked field by field. `done`
/// receives the detectors that fired when the body ends.
pub(super) async fn response(
    resp: Response<Body>,
    plan: Arc<MaskPlan>,
    budget: &Arc<Budget>,
    done: impl FnOnce(Vec<MaskedValue>) + Send + Sync + 'static,
) -> Response<Body> {
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let textual = content_type.starts_with("text/") || content_type.contains("json") || content_type.is_empty();
    if !textual || resp.headers().contains_key(header::CONTENT_ENCODING) {
        return resp;
    }
    let sse = content_type.starts_with("text/event-stream");
    if !plan.fields.is_empty() && content_type.contains("json") && !sse {
        // Field rules need the whole document.
        let (mut parts, body) = resp.into_parts();
        let (bytes, held) = match held::collect(body, announced(&parts.headers), budget).await {
            Ok(whole) => whole,
            Err(e) => {
                // Unmasked is never an option: the agent gets an error instead.
                let status = match e {
                    Unheld::OverBudget(_) => StatusCode::SERVICE_UNAVAILABLE,
                    Unheld::TooLarge | Unheld::Read(_) => StatusCode::BAD_GATEWAY,
                };
                let message = format!("response could not be masked: {e}");
                return json_response(
                    status,
                    serde_json::json!({"error": {"type": "upstream", "message": message}}),
                );
            }
        };
        // Response originals are not kept.
        let (masked, fired) = mask_bytes(&bytes, &plan, true, &|_| None);
        drop(bytes);
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(masked.len()));
        done(fired);
        return Response::from_parts(parts, HeldBody::boxed(masked, Some(held)));
    }
    let Some(masker) = plan.any.clone() else { return resp };
    let mode = if sse {
        Mode::Sse(SseMasker::new(masker))
    } else {
        Mode::Raw(StreamMasker::new(masker))
    };
    let (mut parts, body) = resp.into_parts();
    // The length changes with masking.
    parts.headers.remove(header::CONTENT_LENGTH);
    let state = (body, mode, Vec::<MaskedValue>::new(), Some(done), false);
    let stream = futures_util::stream::unfold(state, |(mut body, mut mode, mut fired, mut done, ended)| async move {
        if ended {
            return None;
        }
        loop {
            match body.frame().await {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let out = mode.push(&data, &mut fired);
                        if !out.is_empty() {
                            return Some((Ok(Frame::data(Bytes::from(out))), (body, mode, fired, done, false)));
                        }
                    }
                    // Trailers pass through.
                    Err(frame) => return Some((Ok(frame), (body, mode, fired, done, false))),
                },
                Some(Err(e)) => return Some((Err(e), (body, mode, fired, done, true))),
                None => {
                    let out = mode.finish(&mut fired);
                    if let Some(done) = done.take() {
                        done(std::mem::take(&mut fired));
                    }
                    return Some((Ok(Frame::data(Bytes::from(out))), (body, mode, fired, done, true)));
                }
            }
        }
    });
    Response::from_parts(parts, BodyExt::boxed(StreamBody::new(stream)))
}
