//! A stream wrapper that counts the bytes an inspected connection moves, so
//! its connection event reports them like a raw relay's does.
use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::RelayStats;

/// Counts reads as agent -> gateway and writes as gateway -> agent.
pub struct Counted<IO> {
    inner: IO,
    stats: Arc<RelayStats>,
}

impl<IO> Counted<IO> {
    /// Wraps `inner`.
    pub fn new(inner: IO, stats: Arc<RelayStats>) -> Self {
        Self { inner, stats }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Counted<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.stats.add_up((buf.filled().len() - before) as u64);
        result
    }
}

impl<IO> Counted<IO> {
    /// Counts what a write passed on.
    fn wrote(&self, result: Poll<std::io::Result<usize>>) -> Poll<std::io::Result<usize>> {
        if let Poll::Ready(Ok(n)) = &result {
            self.stats.add_down(*n as u64);
        }
        result
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Counted<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        self.wrote(result)
    }

    /// Passed on, so that hyper writes a response's head and body chunks
    /// with one `writev` instead of copying them into a buffer of its own
    /// (it picks that by `is_write_vectored`).
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
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
