//! Bodies the gateway must hold whole (to mask them field by field, or to
//! read an LLM request's `model`): at most `MAX_HELD` bytes each, and each
//! within the buffer budget shared by all sessions (see
//! [`crate::limits::budget`]). The room stays reserved until the body made
//! from it has been sent on.
use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use super::Body;
use crate::limits::{Budget, OverBudget, Reserved};

/// Largest body held whole.
pub(super) const MAX_HELD: usize = 8 * 1024 * 1024;

/// Why a body could not be held.
#[derive(Debug, thiserror::Error)]
pub(super) enum Unheld {
    /// Longer than [`MAX_HELD`].
    #[error("a body over {MAX_HELD} bytes cannot be inspected")]
    TooLarge,
    /// It does not fit the buffer budget now.
    #[error(transparent)]
    OverBudget(#[from] OverBudget),
    /// Reading it failed.
    #[error("reading the body: {0}")]
    Read(String),
}

/// Reads `body` whole, reserving its room as it arrives (all of it at once
/// when its length was announced).
pub(super) async fn collect(
    mut body: Body,
    announced: Option<u64>,
    budget: &Arc<Budget>,
) -> Result<(Bytes, Reserved), Unheld> {
    let announced = match announced {
        Some(n) if n > MAX_HELD as u64 => return Err(Unheld::TooLarge),
        Some(n) => n as usize,
        None => 0,
    };
    let mut held = budget.reserve(announced)?;
    let mut buf = BytesMut::with_capacity(announced);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Unheld::Read(e.to_string()))?;
        let Ok(data) = frame.into_data() else { continue };
        let len = buf.len() + data.len();
        if len > MAX_HELD {
            return Err(Unheld::TooLarge);
        }
        held.grow_to(len)?;
        buf.extend_from_slice(&data);
    }
    Ok((buf.freeze(), held))
}

/// A whole body that keeps its room in the budget until it is dropped
/// (sent on, or abandoned).
pub(super) struct HeldBody {
    inner: Full<Bytes>,
    _held: Option<Reserved>,
}

impl HeldBody {
    /// `bytes` as a body, holding `held` while it lives.
    pub(super) fn boxed(bytes: Vec<u8>, held: Option<Reserved>) -> Body {
        Self {
            inner: Full::new(Bytes::from(bytes)),
            _held: held,
        }
        .map_err(|never| match never {})
        .boxed()
    }
}

impl HttpBody for HeldBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
