//! The relay of a running session: the request filter reads the agent and
//! writes the upstream, the response filter the other way, concurrently in
//! one task; whichever ends first (or a revocation) ends the session.
use std::{collections::VecDeque, sync::Arc, sync::Mutex};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{login, request, response, session::close_gently, wire, Io, Session};
use crate::{audit::Outcome, proxy::RelayStats};

/// Runs the request and response filters until either side ends, or the
/// session is cut. Returns how it ended and how many statements it ran.
pub async fn relay(s: &Session, agent: Box<dyn Io>, up: login::Upstream, stats: &Arc<RelayStats>) -> (Outcome, u64) {
    let pending = Mutex::new(VecDeque::new());
    let (mut agent_r, mut agent_w) = tokio::io::split(agent);
    let (mut up_r, mut up_w) = tokio::io::split(up.io);
    let mut up_buf = up.buf;
    let statements = std::sync::atomic::AtomicU64::new(0);
    let requests = async {
        let mut prepared = request::Prepared::default();
        let mut buf = BytesMut::with_capacity(8 << 10);
        let mut out = BytesMut::new();
        loop {
            while let Some(total) = wire::complete_len(&buf, "agent")? {
                let raw = buf.split_to(total).freeze();
                let frame = wire::Frame { tag: raw[0], raw };
                if matches!(frame.tag, b'Q' | b'E' | b'F') {
                    statements.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                let mut step = prepared.handle(s, &frame, &pending, &mut out, None)?;
                if let request::Step::Hold(held) = step {
                    // What came before it goes on; this statement waits for a person.
                    if !out.is_empty() {
                        up_w.write_all(&out).await.map_err(|e| io_err("upstream", e))?;
                        out.clear();
                    }
                    let (action, decision) = *held;
                    let settled = super::settle(s, &action, &decision).await;
                    step = prepared.handle(s, &frame, &pending, &mut out, Some(settled))?;
                }
                if matches!(step, request::Step::Terminate) {
                    up_w.write_all(&out).await.map_err(|e| io_err("upstream", e))?;
                    let _ = up_w.shutdown().await;
                    return Ok::<_, wire::WireError>(());
                }
            }
            if !out.is_empty() {
                up_w.write_all(&out).await.map_err(|e| io_err("upstream", e))?;
                out.clear();
            }
            if agent_r.read_buf(&mut buf).await.map_err(|e| io_err("agent", e))? == 0 {
                if buf.is_empty() {
                    return Ok(());
                }
                return Err(wire::WireError::malformed(
                    "agent",
                    "connection closed inside a message",
                ));
            }
        }
    };
    let responses = async {
        let mut state = response::Responses::default();
        let mut out = BytesMut::new();
        let mut done = Vec::new();
        loop {
            state
                .handle(s, &mut up_buf, &pending, &mut out, &mut done)
                .map_err(Ended::Wire)?;
            // Statements are in the audit trail before the agent learns they finished.
            for (run, how) in done.drain(..) {
                if let Err(e) = s.record(run, how).await {
                    return Err(Ended::Unrecorded(e.to_string()));
                }
            }
            if !out.is_empty() {
                agent_w
                    .write_all(&out)
                    .await
                    .map_err(|e| Ended::Wire(io_err("agent", e)))?;
                out.clear();
            }
            let n = up_r
                .read_buf(&mut up_buf)
                .await
                .map_err(|e| Ended::Wire(io_err("upstream", e)))?;
            if n == 0 {
                if up_buf.is_empty() {
                    return Ok::<_, Ended>(());
                }
                let e = wire::WireError::malformed("upstream", "connection closed inside a message");
                return Err(Ended::Wire(e));
            }
        }
    };
    let ended = tokio::select! {
        r = requests => r.map_err(Ended::Wire),
        r = responses => r,
        () = stats.cut_notified() => {
            let reason = stats.cut_reason().unwrap_or_default();
            let fatal = wire::ErrorFields::fatal("57P01", format!("interlock terminated this session: {reason}"));
            let _ = agent_w.write_all(&fatal.to_bytes()).await;
            return (Outcome::Revoked { reason }, statements.into_inner());
        }
    };
    let outcome = match ended {
        Ok(()) => Outcome::Closed,
        Err(Ended::Unrecorded(e)) => {
            let fatal = wire::ErrorFields::fatal("58000", format!("interlock ended this session: {e}"));
            let _ = agent_w.write_all(&fatal.to_bytes()).await;
            Outcome::Error {
                side: "gateway".into(),
                error: e,
            }
        }
        Err(Ended::Wire(e)) => {
            if e.side() == "agent" || matches!(e, wire::WireError::Malformed { .. }) {
                let fatal = wire::ErrorFields::fatal("08P01", format!("interlock: {e}"));
                let _ = agent_w.write_all(&fatal.to_bytes()).await;
            }
            Outcome::Error {
                side: e.side().into(),
                error: e.to_string(),
            }
        }
    };
    let mut agent = agent_r.unsplit(agent_w);
    close_gently(&mut agent).await;
    (outcome, statements.into_inner())
}

/// Why a relay ended before either side closed.
enum Ended {
    /// A side broke the protocol or its connection failed.
    Wire(wire::WireError),
    /// A statement could not be recorded, so its answer was withheld.
    Unrecorded(String),
}

fn io_err(side: &'static str, source: std::io::Error) -> wire::WireError {
    wire::WireError::Io { side, source }
}
