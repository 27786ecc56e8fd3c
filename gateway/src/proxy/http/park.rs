//! Idle HTTP/1.1 keep-alive connections parked outside hyper. Between
//! requests hyper keeps a connection's read and write buffers (8 KiB each),
//! its cached header map and its dispatcher: ~20 KB per idle connection,
//! and agents' HTTP clients keep pools of keep-alive connections that sit
//! idle most of the time (an LLM call every few seconds). A connection that
//! has been quiet for `listener.park_idle` (no exchange in flight, no bytes
//! either way, hyper waiting to read the next request) is taken back from
//! hyper with a graceful shutdown that leaves the socket open. The session
//! then waits for the agent's next bytes holding nothing but the stream,
//! and serves them with a new hyper connection that starts from the bytes
//! already read.
use std::{
    future::poll_fn,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU32, Ordering::Relaxed},
        Arc,
    },
    task::{ready, Context, Poll},
    time::Duration,
};

use bytes::{Buf, Bytes, BytesMut};
use http::Response;
use http_body_util::BodyExt;
use hyper::{
    body::{Frame, Incoming, SizeHint},
    server::conn::http1,
    service::HttpService,
};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::Body;
use crate::proxy::RelayStats;

/// What the session's loop and the stream under hyper share.
#[derive(Default)]
pub(super) struct ParkState {
    /// hyper's last read found nothing: it waits for the agent.
    read_waiting: AtomicBool,
    /// hyper's last write or flush could not finish: the agent is not reading.
    write_blocked: AtomicBool,
    /// The next shutdown hands the stream back instead of closing it.
    parking: AtomicBool,
    /// Exchanges begun on the current hyper connection.
    begun: AtomicU32,
    /// Exchanges whose response body hyper has not finished with.
    in_flight: AtomicU32,
}

impl ParkState {
    /// An exchange begins; it ends when the returned guard is dropped.
    pub(super) fn begin(self: &Arc<Self>) -> InFlight {
        self.begun.fetch_add(1, Relaxed);
        self.in_flight.fetch_add(1, Relaxed);
        InFlight(self.clone())
    }

    /// Whether hyper sits between requests: an exchange has been served on
    /// this hyper connection, none is in flight, its last read waits for
    /// the agent and nothing is left to write. (Before its first exchange a
    /// hyper connection is not "idle" to hyper: a shutdown then would end
    /// the coming exchange with `Connection: close`.)
    fn between_requests(&self) -> bool {
        self.begun.load(Relaxed) > 0
            && self.in_flight.load(Relaxed) == 0
            && self.read_waiting.load(Relaxed)
            && !self.write_blocked.load(Relaxed)
    }
}

/// One exchange in flight, held by its response body (or by the service's
/// future, when it never answers).
pub(super) struct InFlight(Arc<ParkState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

/// A response body that keeps its exchange in flight until hyper is done
/// with it.
pub(super) fn tracked(resp: Response<Body>, exchange: InFlight) -> Response<Body> {
    resp.map(|body| {
        Tracked {
            body,
            _exchange: exchange,
        }
        .boxed()
    })
}

struct Tracked {
    body: Body,
    _exchange: InFlight,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The agent's stream as hyper sees it: bytes read while it was parked come
/// first; reads and writes tell the loop whether hyper waits.
pub(super) struct Parkable<IO> {
    inner: IO,
    ahead: Bytes,
    state: Arc<ParkState>,
}

impl<IO> Parkable<IO> {
    /// Wraps `inner`, with `ahead` to be read first.
    pub(super) fn new(inner: IO, ahead: Bytes, state: Arc<ParkState>) -> Self {
        Self { inner, ahead, state }
    }

    /// Notes whether a write or flush had to wait for the agent.
    fn wrote<T>(&self, result: Poll<T>) -> Poll<T> {
        self.state.write_blocked.store(result.is_pending(), Relaxed);
        result
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Parkable<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if !self.ahead.is_empty() {
            let n = buf.remaining().min(self.ahead.len());
            let head = self.ahead.split_to(n);
            buf.put_slice(&head);
            self.state.read_waiting.store(false, Relaxed);
            return Poll::Ready(Ok(()));
        }
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.state.read_waiting.store(result.is_pending(), Relaxed);
        result
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Parkable<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        self.wrote(result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.wrote(result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.state.parking.load(Relaxed) {
            // Parking: the stream goes back to the session, open.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Waits for the agent's next bytes with no buffer held while waiting (the
/// read lands on the poller's stack and is copied out). Empty at EOF.
pub(super) async fn next_bytes<IO: AsyncRead + Unpin>(io: &mut IO) -> std::io::Result<Bytes> {
    poll_fn(|cx| {
        let mut space = [0u8; 4096];
        let mut buf = ReadBuf::new(&mut space);
        ready!(Pin::new(&mut *io).poll_read(cx, &mut buf))?;
        Poll::Ready(Ok(Bytes::copy_from_slice(buf.filled())))
    })
    .await
}

/// How an HTTP/1.1 connection ended without error.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Ended {
    /// The agent or hyper closed it.
    Closed,
    /// Parked, and no next request within the header timeout.
    IdleTimeout,
}

/// How to serve an HTTP/1.1 connection.
pub(super) struct H1<S> {
    /// hyper's settings for each connection it is given.
    pub builder: http1::Builder,
    /// The exchange handler.
    pub service: S,
    /// Park after this long quiet; zero: never.
    pub park_after: Duration,
    /// A kept-alive connection's next request must begin within this long
    /// (hyper's header timeout, which parking must not extend).
    pub header_timeout: Duration,
    /// Shared with the stream wrapper and the service.
    pub state: Arc<ParkState>,
    /// Byte counters (quiet means unchanged) and the parked flag.
    pub stats: Arc<RelayStats>,
}

/// Serves HTTP/1.1 on `io`, starting with the bytes in `ahead`, parking
/// the connection whenever it goes quiet. An error is the agent side's.
pub(super) async fn serve_h1<IO, S>(mut io: IO, mut ahead: Bytes, h1: H1<S>) -> Result<Ended, String>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: HttpService<Incoming, ResBody = Body> + Clone + Unpin + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    loop {
        // A fresh hyper connection times its first head with the whole
        // header timeout, unless it takes over from a park (below).
        let mut resumed = None;
        if ahead.is_empty() {
            h1.stats.set_parked(true);
            // hyper's header timer ran while the connection was quiet
            // before parking: the wait here is what is left of it.
            let left = h1.header_timeout.saturating_sub(h1.park_after);
            let parked_at = tokio::time::Instant::now();
            let next = tokio::time::timeout(left, next_bytes(&mut io)).await;
            h1.stats.set_parked(false);
            ahead = match next {
                Err(_) => return Ok(Ended::IdleTimeout),
                Ok(Err(e)) => return Err(e.to_string()),
                Ok(Ok(bytes)) if bytes.is_empty() => return Ok(Ended::Closed),
                Ok(Ok(bytes)) => bytes,
            };
            resumed = Some(head_budget(left.saturating_sub(parked_at.elapsed()), &h1));
        }
        h1.state.begun.store(0, Relaxed);
        h1.state.parking.store(false, Relaxed);
        let stream = Parkable::new(io, ahead, h1.state.clone());
        let taken_over;
        let builder = match resumed {
            // The head begun while parked must still end within the header
            // timeout of the connection going quiet: a byte now and the rest
            // much later must not get hyper's whole timeout again.
            Some(budget) => {
                let mut b = h1.builder.clone();
                b.header_read_timeout(budget);
                taken_over = b;
                &taken_over
            }
            None => &h1.builder,
        };
        let conn = Box::new(
            builder
                .serve_connection(TokioIo::new(stream), h1.service.clone())
                .with_upgrades(),
        );
        let Some(parts) = until_quiet(conn, &h1).await.map_err(|e| e.to_string())? else {
            return Ok(Ended::Closed);
        };
        let stream = parts.io.into_inner();
        // What hyper read but did not parse comes before what it never read.
        ahead = if stream.ahead.is_empty() {
            parts.read_buf
        } else {
            let mut joined = BytesMut::from(parts.read_buf.chunk());
            joined.extend_from_slice(&stream.ahead);
            joined.freeze()
        };
        io = stream.inner;
    }
}

/// hyper's header timer for a connection taken over from a park: what is
/// left of the agent's time for its next head, but never less than twice
/// the park delay. hyper times every head of the connection with it, idle
/// waits included, and an idle connection is parked only after
/// `park_after`: the floor keeps hyper from closing it first.
fn head_budget<S>(left: Duration, h1: &H1<S>) -> Duration {
    left.max(h1.park_after * 2).min(h1.header_timeout)
}

type Conn<IO, S> = http1::UpgradeableConnection<TokioIo<Parkable<IO>>, S>;

/// Drives one hyper connection until it ends (`None`) or has been parked
/// (its parts, the stream still open).
async fn until_quiet<IO, S>(
    mut conn: Box<Conn<IO, S>>,
    h1: &H1<S>,
) -> hyper::Result<Option<http1::Parts<TokioIo<Parkable<IO>>, S>>>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: HttpService<Incoming, ResBody = Body> + Unpin + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if h1.park_after.is_zero() {
        (&mut *conn).await?;
        return Ok(None);
    }
    let mut seen = h1.stats.totals();
    let check = tokio::time::sleep(h1.park_after);
    tokio::pin!(check);
    loop {
        tokio::select! {
            result = &mut *conn => {
                result?;
                return Ok(if h1.state.parking.load(Relaxed) { conn.into_parts() } else { None });
            }
            () = &mut check, if !h1.state.parking.load(Relaxed) => {
                let now = h1.stats.totals();
                if now == seen && h1.state.between_requests() {
                    // Idle to hyper: it closes its side at once, and the
                    // shutdown leaves the socket open (see `Parkable`).
                    h1.state.parking.store(true, Relaxed);
                    Pin::new(&mut *conn).graceful_shutdown();
                } else {
                    seen = now;
                    check.as_mut().reset(tokio::time::Instant::now() + h1.park_after);
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "park_tests.rs"]
mod tests;
