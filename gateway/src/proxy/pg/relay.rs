//! The relay of a running session: the request filter reads the agent and
//! writes the upstream, the response filter the other way, concurrently in
//! one task; whichever ends first (or a revocation) ends the session.
use std::{
    collections::VecDeque,
    sync::atomic::{AtomicBool, AtomicU8, Ordering},
    sync::{Arc, Mutex},
};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{login, request, response, session::close_gently, sqlstate, wire, Io, Session};
use crate::{
    audit::Outcome,
    proxy::{judge, RelayStats},
    types::Side,
};

/// How a relay ended.
pub struct Relayed {
    /// How the session ended.
    pub outcome: Outcome,
    /// Statements it ran.
    pub statements: u64,
    /// The upstream session, when `keep` was asked and the agent left it
    /// clean: nothing owed either way, idle outside a transaction, the
    /// agent's Terminate not passed on.
    pub kept: Option<login::Upstream>,
}

/// Runs the request and response filters until either side ends, or the
/// session is cut.
pub async fn relay(
    s: &Session,
    agent: Box<dyn Io>,
    up: login::Upstream,
    stats: &Arc<RelayStats>,
    keep: bool,
) -> Relayed {
    let pending = Mutex::new(VecDeque::new());
    let (mut agent_r, mut agent_w) = tokio::io::split(agent);
    let login::Upstream {
        io: up_io,
        buf: mut up_buf,
        greeting,
        key,
        tls,
    } = up;
    let (mut up_r, mut up_w) = tokio::io::split(up_io);
    let statements = std::sync::atomic::AtomicU64::new(0);
    // What the response side last knew, for `keep`: the transaction status
    // of the last ReadyForQuery, and whether it was waiting for the server
    // with everything before delivered.
    let status = AtomicU8::new(b'I');
    let waiting = AtomicBool::new(false);
    let requests = async {
        let mut prepared = request::Prepared::default();
        let mut buf = BytesMut::with_capacity(8 << 10);
        let mut out = BytesMut::new();
        // The budget held by the large message being read, if one is.
        let mut held: Option<crate::limits::Reserved> = None;
        loop {
            // A whole large message, kept counted until it has been sent on.
            let mut sending = None;
            while let Some(total) = wire::complete_len(&buf, Side::Agent)? {
                if held.is_some() {
                    sending = held.take();
                }
                let raw = buf.split_to(total).freeze();
                let frame = wire::Frame { tag: raw[0], raw };
                if matches!(frame.tag, b'Q' | b'E' | b'F') {
                    statements.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                let mut step = prepared.handle(s, &frame, &pending, &mut out, None)?;
                if let request::Step::Hold(held) = step {
                    // What came before it goes on; this statement waits for a person.
                    if !out.is_empty() {
                        up_w.write_all(&out).await.map_err(|e| io_err(Side::Upstream, e))?;
                        out.clear();
                    }
                    let settled = judge::hold(&s.ctx, &s.caller(), held.action(), &held.decision).await;
                    step = prepared.handle(s, &frame, &pending, &mut out, Some((*held, settled)))?;
                }
                if matches!(step, request::Step::Terminate) {
                    if !keep {
                        postgres_protocol::message::frontend::terminate(&mut out);
                    }
                    up_w.write_all(&out).await.map_err(|e| io_err(Side::Upstream, e))?;
                    if !keep {
                        let _ = up_w.shutdown().await;
                    }
                    return Ok::<_, wire::WireError>(());
                }
            }
            if !out.is_empty() {
                up_w.write_all(&out).await.map_err(|e| io_err(Side::Upstream, e))?;
                out.clear();
            }
            if sending.take().is_some() {
                // Room a large message needed is not kept by the session.
                out = BytesMut::new();
                if buf.is_empty() {
                    buf = BytesMut::with_capacity(8 << 10);
                }
            }
            // A large message reserves its room before it is read whole,
            // and the buffer grows to it exactly (doubling would hold twice).
            if let Some(total) = wire::announced_len(&buf, Side::Agent)? {
                if held.is_none() && total >= wire::HELD_FROM && total > buf.len() {
                    let budget = &s.ctx.limits.budget;
                    held = Some(budget.reserve(total).map_err(|source| wire::WireError::OverBudget {
                        side: Side::Agent,
                        source,
                    })?);
                    buf.reserve(total - buf.len());
                }
            }
            if agent_r.read_buf(&mut buf).await.map_err(|e| io_err(Side::Agent, e))? == 0 {
                if buf.is_empty() {
                    return Ok(());
                }
                return Err(wire::WireError::malformed(
                    Side::Agent,
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
                .handle(&s.view(), &mut up_buf, &pending, &mut out, &mut done)
                .map_err(Ended::Wire)?;
            if state.status != 0 {
                status.store(state.status, Ordering::Relaxed);
            }
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
                    .map_err(|e| Ended::Wire(io_err(Side::Agent, e)))?;
                out.clear();
            }
            waiting.store(true, Ordering::Relaxed);
            let n = up_r
                .read_buf(&mut up_buf)
                .await
                .map_err(|e| Ended::Wire(io_err(Side::Upstream, e)))?;
            waiting.store(false, Ordering::Relaxed);
            if n == 0 {
                if up_buf.is_empty() {
                    return Ok::<_, Ended>(());
                }
                let e = wire::WireError::malformed(Side::Upstream, "connection closed inside a message");
                return Err(Ended::Wire(e));
            }
        }
    };
    // `Ok(true)`: the agent ended the session (Terminate, or EOF between messages).
    let ended = tokio::select! {
        r = requests => r.map(|()| true).map_err(Ended::Wire),
        r = responses => r.map(|()| false),
        () = stats.cut_notified() => {
            let why = stats.cut_why().map(|w| w.reason().to_owned()).unwrap_or_default();
            let fatal = wire::ErrorFields::fatal(
                sqlstate::ADMIN_SHUTDOWN,
                format!("interlock terminated this session: {why}"),
            );
            let _ = agent_w.write_all(&fatal.to_bytes()).await;
            return Relayed { outcome: stats.cut_outcome(), statements: statements.into_inner(), kept: None };
        }
    };
    let clean = matches!(ended, Ok(true))
        && keep
        && waiting.load(Ordering::Relaxed)
        && status.load(Ordering::Relaxed) == b'I'
        && up_buf.is_empty()
        && pending.lock().map(|p| p.is_empty()).unwrap_or(false);
    let kept = if clean {
        Some(login::Upstream {
            io: up_r.unsplit(up_w),
            buf: up_buf,
            greeting,
            key,
            tls,
        })
    } else {
        if keep && matches!(ended, Ok(true)) {
            // The agent's Terminate was held back for the pool: sent now.
            let mut bye = BytesMut::new();
            postgres_protocol::message::frontend::terminate(&mut bye);
            let _ = up_w.write_all(&bye).await;
            let _ = up_w.shutdown().await;
        }
        None
    };
    let outcome = match ended {
        Ok(_) => Outcome::Closed,
        Err(Ended::Unrecorded(e)) => {
            let fatal = wire::ErrorFields::fatal("58000", format!("interlock ended this session: {e}"));
            let _ = agent_w.write_all(&fatal.to_bytes()).await;
            Outcome::Error {
                side: Side::Gateway,
                error: e,
            }
        }
        Err(Ended::Wire(e)) => {
            let refused = matches!(e, wire::WireError::OverBudget { .. });
            if let Some(code) = sqlstate::of_wire(&e) {
                let what = if refused { " refused this message" } else { "" };
                let fatal = wire::ErrorFields::fatal(code, format!("interlock{what}: {e}"));
                let _ = agent_w.write_all(&fatal.to_bytes()).await;
            }
            if refused {
                Outcome::Refused { reason: e.to_string() }
            } else {
                Outcome::Error {
                    side: e.side(),
                    error: e.to_string(),
                }
            }
        }
    };
    let mut agent = agent_r.unsplit(agent_w);
    close_gently(&mut agent).await;
    Relayed {
        outcome,
        statements: statements.into_inner(),
        kept,
    }
}

/// Why a relay ended before either side closed.
enum Ended {
    /// A side broke the protocol or its connection failed.
    Wire(wire::WireError),
    /// A statement could not be recorded, so its answer was withheld.
    Unrecorded(String),
}

fn io_err(side: Side, source: std::io::Error) -> wire::WireError {
    wire::WireError::Io { side, source }
}
