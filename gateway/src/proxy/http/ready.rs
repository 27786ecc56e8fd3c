//! What of a body is at hand now, taken without waiting, and a body that
//! gives those frames back before the rest. Lets an exchange whose whole
//! response came with its head be recorded as one event (see
//! `capture::Bodies::settle`), while a response still streaming goes on
//! streaming untouched.
use std::{
    collections::VecDeque,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use hyper::body::{Body as _, Frame, SizeHint};

use super::Body;

/// Frames taken from a body without waiting.
pub(super) struct Taken {
    /// The frames, in order.
    pub frames: VecDeque<Frame<Bytes>>,
    /// Data bytes in them.
    bytes: usize,
    /// What the body is left with, when it did not end (an error it gave
    /// comes after the frames).
    rest: Rest,
}

enum Rest {
    /// Nothing: the body ended.
    Ended,
    /// The body still streaming.
    Body(Body),
    /// The body failed after the frames.
    Failed(hyper::Error),
}

/// Polls `body` with a waker that does nothing, taking frames while they
/// are ready and until `max` data bytes are taken. Polling without a real
/// waker is sound for the bodies here: each poll registers the caller's
/// waker again, and whoever polls next (hyper, writing to the agent) does.
pub(super) fn take_ready(body: Body, max: usize) -> Taken {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut taken = Taken {
        frames: VecDeque::new(),
        bytes: 0,
        rest: Rest::Body(body),
    };
    while let Some(body) = taken.streaming(max) {
        match Pin::new(body).poll_frame(&mut cx) {
            Poll::Ready(polled) => taken.push(polled),
            Poll::Pending => break,
        }
    }
    taken
}

/// Goes on taking frames from what `taken` left of its body until it ends,
/// more than `max` data bytes are taken, or `deadline` passes (the frames
/// taken so far stay taken either way).
pub(super) async fn take_until(mut taken: Taken, max: usize, deadline: tokio::time::Instant) -> Taken {
    use http_body_util::BodyExt;
    while let Some(body) = taken.streaming(max) {
        // `frame()` only polls the body: dropping it at the deadline loses nothing.
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(polled) => taken.push(polled),
            Err(_) => break,
        }
    }
    taken
}

impl Taken {
    /// The body to take more from: still streaming, and no more than `max`
    /// bytes taken yet.
    fn streaming(&mut self, max: usize) -> Option<&mut Body> {
        if matches!(&self.rest, Rest::Body(body) if body.is_end_stream()) {
            self.rest = Rest::Ended;
        }
        match &mut self.rest {
            Rest::Body(body) if self.bytes <= max => Some(body),
            _ => None,
        }
    }

    /// One poll's result: a frame kept, or how the body ended.
    fn push(&mut self, polled: Option<Result<Frame<Bytes>, hyper::Error>>) {
        match polled {
            Some(Ok(frame)) => {
                self.bytes += frame.data_ref().map_or(0, Bytes::len);
                self.frames.push_back(frame);
            }
            Some(Err(e)) => self.rest = Rest::Failed(e),
            None => self.rest = Rest::Ended,
        }
    }

    /// The body ended: the frames are all of it.
    pub(super) fn ended(&self) -> bool {
        matches!(self.rest, Rest::Ended)
    }

    /// The data frames' bytes, up to `cap` of them, and their full length.
    pub(super) fn data(&self, cap: usize) -> (Vec<u8>, u64) {
        let mut kept = Vec::new();
        let mut total = 0u64;
        for data in self.frames.iter().filter_map(Frame::data_ref) {
            let room = cap.saturating_sub(kept.len());
            kept.extend_from_slice(&data[..room.min(data.len())]);
            total += data.len() as u64;
        }
        (kept, total)
    }

    /// The body again: the taken frames, then whatever the body had left.
    pub(super) fn into_body(self) -> Body {
        use http_body_util::BodyExt;
        Replay {
            frames: self.frames,
            rest: self.rest,
        }
        .boxed()
    }
}

/// Gives back taken frames, then the rest of the body.
struct Replay {
    frames: VecDeque<Frame<Bytes>>,
    rest: Rest,
}

impl hyper::body::Body for Replay {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some(frame) = this.frames.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        match &mut this.rest {
            Rest::Ended => Poll::Ready(None),
            Rest::Body(body) => Pin::new(body).poll_frame(cx),
            Rest::Failed(_) => match std::mem::replace(&mut this.rest, Rest::Ended) {
                Rest::Failed(e) => Poll::Ready(Some(Err(e))),
                _ => Poll::Ready(None),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty()
            && match &self.rest {
                Rest::Ended => true,
                Rest::Body(body) => body.is_end_stream(),
                Rest::Failed(_) => false,
            }
    }

    fn size_hint(&self) -> SizeHint {
        let taken: u64 = self
            .frames
            .iter()
            .filter_map(Frame::data_ref)
            .map(|d| d.len() as u64)
            .sum();
        match &self.rest {
            Rest::Ended => SizeHint::with_exact(taken),
            Rest::Body(body) => {
                let rest = body.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + taken);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + taken);
                }
                hint
            }
            Rest::Failed(_) => {
                let mut hint = SizeHint::new();
                hint.set_lower(taken);
                hint
            }
        }
    }
}

#[cfg(test)]
#[path = "ready_tests.rs"]
mod tests;
