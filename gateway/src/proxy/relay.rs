//! Byte relay between agent and upstream: both directions at once, half-close
//! passed on (EOF on one side becomes a FIN on the other), backpressure by
//! never reading more than one buffer ahead of the writer, an idle timeout
//! over both directions, and a cut signal for revocation.
use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
    sync::Notify,
    time::Instant,
};

use crate::{audit::Outcome, types::Side};

/// Byte counters and the cut switch of one relay, shared with status.
#[derive(Debug, Default)]
pub struct RelayStats {
    up: AtomicU64,
    down: AtomicU64,
    /// Wakes the relay to end the connection at once.
    cut: Notify,
    cut_why: std::sync::Mutex<Option<Cut>>,
    /// Parked: an idle HTTP/1.1 keep-alive connection held outside hyper.
    parked: std::sync::atomic::AtomicBool,
}

/// Why a connection was cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cut {
    /// Its caller was revoked (the revocation, in words).
    Revoked(String),
    /// The gateway is stopping: the connection was idle, or outlived the drain.
    Shutdown,
}

impl Cut {
    /// How the connection ended, for its event.
    pub fn outcome(self) -> Outcome {
        match self {
            Self::Revoked(reason) => Outcome::Revoked { reason },
            Self::Shutdown => Outcome::Shutdown,
        }
    }

    /// In words, for what the agent is told.
    pub fn reason(&self) -> &str {
        match self {
            Self::Revoked(reason) => reason,
            Self::Shutdown => "the gateway is shutting down",
        }
    }
}

impl RelayStats {
    /// Ends the relay at once, for `why`. A revocation is not overwritten
    /// by a later shutdown.
    pub fn cut(&self, why: Cut) {
        {
            let mut slot = self.cut_why.lock().unwrap_or_else(|p| p.into_inner());
            if !matches!(*slot, Some(Cut::Revoked(_))) {
                *slot = Some(why);
            }
        }
        // notify_one stores a permit, so a cut before the relay waits is not lost.
        self.cut.notify_one();
    }

    /// Counts bytes from the agent.
    pub fn add_up(&self, n: u64) {
        self.up.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts bytes to the agent.
    pub fn add_down(&self, n: u64) {
        self.down.fetch_add(n, Ordering::Relaxed);
    }

    /// Resolves when the connection is cut.
    pub async fn cut_notified(&self) {
        self.cut.notified().await;
    }

    /// Why the relay was cut, if it was.
    pub fn cut_why(&self) -> Option<Cut> {
        self.cut_why.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// How a relay woken by `cut_notified` ended.
    pub fn cut_outcome(&self) -> Outcome {
        // Only `cut` notifies, and it records why first.
        self.cut_why()
            .map_or(Outcome::Revoked { reason: String::new() }, Cut::outcome)
    }

    /// Marks the connection parked (idle, held outside hyper) or not.
    pub fn set_parked(&self, parked: bool) {
        self.parked.store(parked, Ordering::Relaxed);
    }

    /// Whether the connection is parked.
    pub fn is_parked(&self) -> bool {
        self.parked.load(Ordering::Relaxed)
    }

    /// (agent -> upstream, upstream -> agent) bytes so far.
    pub fn totals(&self) -> (u64, u64) {
        (self.up.load(Ordering::Relaxed), self.down.load(Ordering::Relaxed))
    }
}

/// How a relay ended without error.
#[derive(Debug, PartialEq, Eq)]
pub enum RelayEnd {
    /// Both directions reached EOF and were shut down.
    Closed,
    /// No bytes moved for the idle timeout.
    IdleTimeout,
    /// Cut through [`RelayStats::cut`].
    Cut,
}

/// A failed read or write, with the side it happened on.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Reading from or writing to the agent failed.
    #[error("agent side: {0}")]
    Agent(std::io::Error),
    /// Reading from or writing to the upstream failed.
    #[error("upstream side: {0}")]
    Upstream(std::io::Error),
}

impl RelayError {
    /// The agent or the upstream.
    pub fn side(&self) -> Side {
        match self {
            Self::Agent(_) => Side::Agent,
            Self::Upstream(_) => Side::Upstream,
        }
    }
}

const BUF: usize = 32 * 1024;

/// Wraps an I/O error with the side it happened on.
type ErrSide = fn(std::io::Error) -> RelayError;

/// Relays until both directions end, the idle timeout passes, or a cut.
pub async fn relay(
    agent: &mut TcpStream,
    upstream: &mut TcpStream,
    idle: Duration,
    stats: &Arc<RelayStats>,
) -> Result<RelayEnd, RelayError> {
    let last = AtomicU64::new(0);
    let origin = Instant::now();
    let (mut ar, mut aw) = agent.split();
    let (mut ur, mut uw) = upstream.split();
    let up = pump(&mut ar, &mut uw, &stats.up, &last, origin, true);
    let down = pump(&mut ur, &mut aw, &stats.down, &last, origin, false);
    let both = async {
        let (a, b) = tokio::join!(up, down);
        a.and(b)
    };
    tokio::pin!(both);
    loop {
        let quiet_since = origin + Duration::from_millis(last.load(Ordering::Relaxed));
        tokio::select! {
            done = &mut both => return done.map(|()| RelayEnd::Closed),
            () = stats.cut.notified() => return Ok(RelayEnd::Cut),
            () = tokio::time::sleep_until(quiet_since + idle) => {
                let moved = origin + Duration::from_millis(last.load(Ordering::Relaxed));
                if moved + idle <= Instant::now() {
                    return Ok(RelayEnd::IdleTimeout);
                }
            }
        }
    }
}

/// Copies one direction, then shuts the writer down (half-close).
async fn pump<R, W>(
    reader: &mut R,
    writer: &mut W,
    counter: &AtomicU64,
    last: &AtomicU64,
    origin: Instant,
    from_agent: bool,
) -> Result<(), RelayError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (read_err, write_err): (ErrSide, ErrSide) = if from_agent {
        (RelayError::Agent, RelayError::Upstream)
    } else {
        (RelayError::Upstream, RelayError::Agent)
    };
    let mut buf = vec![0u8; BUF];
    loop {
        let n = reader.read(&mut buf).await.map_err(read_err)?;
        if n == 0 {
            break;
        }
        last.store(origin.elapsed().as_millis() as u64, Ordering::Relaxed);
        writer.write_all(&buf[..n]).await.map_err(write_err)?;
        counter.fetch_add(n as u64, Ordering::Relaxed);
        last.store(origin.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    match writer.shutdown().await {
        // The peer may already be gone after its own close; that is a normal end.
        Err(e) if e.kind() != std::io::ErrorKind::NotConnected => Err(write_err(e)),
        _ => Ok(()),
    }
}
