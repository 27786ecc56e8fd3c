//! Keeping the first bytes of each body for the audit trail. Bodies stream
//! through untouched; up to the configured cap of each (as sent upstream,
//! after request masking, and as delivered, after response masking, so no
//! credential or masked value is kept) is copied aside, and when the
//! response body ends an `http_body` event records both.
use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, SizeHint};

use super::{Body, HttpSession};
use crate::audit::{self, Event, ExchangeBodies, HttpBodyEvent};

/// The most of a response taken at hand to record it with its exchange
/// (or the body cap, if larger); a longer one streams as it comes.
const SETTLE_MAX: usize = 64 << 10;

/// How long the rest of a small announced body is waited for (see
/// [`Bodies::settle`]); the agent's answer waits that long at most.
const SETTLE_WAIT: std::time::Duration = std::time::Duration::from_millis(2);

/// What was seen of one body.
#[derive(Debug, Default, Clone)]
struct Seen {
    bytes: Vec<u8>,
    total: u64,
    complete: bool,
}

type Done = Box<dyn FnOnce(Seen) + Send + Sync>;

/// A body that copies its first `cap` bytes aside.
struct Capture {
    inner: Body,
    cap: usize,
    seen: Seen,
    done: Option<Done>,
}

impl Capture {
    fn finish(&mut self, complete: bool) {
        if let Some(done) = self.done.take() {
            self.seen.complete = complete;
            done(std::mem::take(&mut self.seen));
        }
    }
}

impl hyper::body::Body for Capture {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let room = this.cap.saturating_sub(this.seen.bytes.len());
                    this.seen.bytes.extend_from_slice(&data[..room.min(data.len())]);
                    this.seen.total += data.len() as u64;
                }
            }
            Poll::Ready(None) => this.finish(true),
            Poll::Ready(Some(Err(_))) => this.finish(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        // Cut short (the agent or upstream went away): recorded as incomplete.
        self.finish(false);
    }
}

/// The bodies of one exchange.
pub(super) struct Bodies {
    request: Arc<Mutex<Option<Seen>>>,
    session: Arc<HttpSession>,
    exchange: u64,
    path: String,
}

fn text(seen: &Seen) -> String {
    String::from_utf8_lossy(&seen.bytes).into_owned()
}

impl Bodies {
    /// For exchange number `exchange` of a session.
    pub(super) fn new(session: &Arc<HttpSession>, exchange: u64, path: &str) -> Self {
        Self {
            request: Arc::new(Mutex::new(None)),
            session: session.clone(),
            exchange,
            path: path.to_owned(),
        }
    }

    /// The request path.
    pub(super) fn path(&self) -> &str {
        &self.path
    }

    fn cap(&self) -> usize {
        self.session.ctx.settings.body_cap
    }

    /// Wraps the request body as it goes upstream.
    pub(super) fn request(&self, body: Body) -> Body {
        if self.cap() == 0 {
            return body;
        }
        let slot = self.request.clone();
        Capture {
            inner: body,
            cap: self.cap(),
            seen: Seen::default(),
            done: Some(Box::new(move |seen| {
                *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(seen);
            })),
        }
        .boxed()
    }

    /// The request body as captured, once its capture has finished (the
    /// body went upstream to its end); taken: only one event records it.
    fn take_request(&self) -> Option<Seen> {
        self.request.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// The response body as it goes to the agent, with the bodies for the
    /// exchange event when the whole response is at hand already (most
    /// answers of an API: the body came with the head). Then no `http_body`
    /// event follows: one chained event per exchange instead of two (the
    /// second cost ~30% of the gateway's CPU per request). A response still
    /// streaming goes on as [`Bodies::response`] has it.
    ///
    /// A body announced small (`Content-Length` up to the limit) that has
    /// not all come with the head is waited for up to `SETTLE_WAIT`: many
    /// servers write the head and the body apart, microseconds from each
    /// other. A streamed body (no length: SSE, chunked) is never waited for.
    pub(super) async fn settle(self, body: Body, length: Option<u64>) -> (Body, Option<ExchangeBodies>) {
        let cap = self.cap();
        if cap == 0 {
            return (body, None);
        }
        let max = cap.max(SETTLE_MAX);
        let mut taken = super::ready::take_ready(body, max);
        if !taken.ended() && length.is_some_and(|n| n <= max as u64) {
            let deadline = tokio::time::Instant::now() + SETTLE_WAIT;
            taken = super::ready::take_until(taken, max, deadline).await;
        }
        // An upstream may answer before the request body has gone (or
        // ended): then its bodies wait for the `http_body` event, which
        // comes once the response has ended.
        let request = match taken.ended() {
            true => self.take_request(),
            false => None,
        };
        let Some(request) = request else {
            return (self.response(taken.into_body()), None);
        };
        let (kept, total) = taken.data(cap);
        let bodies = ExchangeBodies {
            request_body: text(&request),
            request_bytes: request.total,
            response_body: String::from_utf8_lossy(&kept).into_owned(),
            response_bytes: total,
            response_complete: true,
        };
        (taken.into_body(), Some(bodies))
    }

    /// Wraps the response body as it goes to the agent; its end records the event.
    /// With `body_cap = 0` bodies are not kept and no event is recorded.
    pub(super) fn response(self, body: Body) -> Body {
        let cap = self.cap();
        if cap == 0 {
            return body;
        }
        Capture {
            inner: body,
            cap,
            seen: Seen::default(),
            done: Some(Box::new(move |response| {
                // Empty when the request body never went upstream.
                let request = self.take_request().unwrap_or_default();
                let s = &self.session;
                let event = HttpBodyEvent {
                    time: audit::now(),
                    conn_id: s.conn_id,
                    exchange: self.exchange,
                    agent: s.agent.clone(),
                    identity: s.identity.clone(),
                    target: s.target.name.clone(),
                    path: self.path,
                    request_body: text(&request),
                    request_bytes: request.total,
                    response_body: text(&response),
                    response_bytes: response.total,
                    response_complete: response.complete,
                };
                // Follows the exchange event, which the agent's answer waited for.
                s.ctx.events.submit(Event::HttpBody(Box::new(event)));
            })),
        }
        .boxed()
    }
}
