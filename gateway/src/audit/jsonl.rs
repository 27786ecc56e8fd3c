//! JSON-lines event sink: a bounded queue drained by one writer task, so the
//! data path never waits on disk unless the queue is full (then it waits
//! rather than lose events).
use std::{io, path::Path};

use tokio::{
    fs::OpenOptions,
    io::AsyncWriteExt,
    sync::{mpsc, oneshot},
};

use super::Event;

/// Errors of the event sink (gateway side).
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The event file could not be opened.
    #[error("event log {path}: {source}")]
    Open {
        /// The file.
        path: String,
        /// The I/O error.
        source: io::Error,
    },
    /// The writer task has stopped (a write failed); events cannot be recorded.
    #[error("event writer has stopped")]
    Closed,
}

enum Msg {
    Event(Box<Event>),
    Flush(oneshot::Sender<()>),
}

/// Handle for recording events. Cheap to clone.
#[derive(Clone)]
pub struct EventSink {
    tx: mpsc::Sender<Msg>,
}

/// Events queued before senders wait.
const QUEUE: usize = 4096;

impl EventSink {
    /// Opens (appending, mode 0600) `path` and starts the writer task.
    pub async fn open(path: &Path) -> Result<Self, SinkError> {
        if let Some(dir) = path.parent() {
            let _ = tokio::fs::create_dir_all(dir).await;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .await
            .map_err(|source| SinkError::Open {
                path: path.display().to_string(),
                source,
            })?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let path = path.display().to_string();
        tokio::spawn(write_loop(file, rx, path));
        Ok(Self { tx })
    }

    /// Queues an event, waiting if the queue is full.
    pub async fn record(&self, event: Event) -> Result<(), SinkError> {
        self.tx
            .send(Msg::Event(Box::new(event)))
            .await
            .map_err(|_| SinkError::Closed)
    }

    /// Waits until everything queued so far is written.
    pub async fn flush(&self) -> Result<(), SinkError> {
        let (done, wait) = oneshot::channel();
        self.tx.send(Msg::Flush(done)).await.map_err(|_| SinkError::Closed)?;
        wait.await.map_err(|_| SinkError::Closed)
    }
}

async fn write_loop(mut file: tokio::fs::File, mut rx: mpsc::Receiver<Msg>, path: String) {
    let mut buf = Vec::with_capacity(64 * 1024);
    while let Some(first) = rx.recv().await {
        let mut waiting = Vec::new();
        let mut next = Some(first);
        // Drain what is queued into one write.
        while let Some(msg) = next {
            match msg {
                Msg::Event(event) => {
                    if serde_json::to_writer(&mut buf, &event).is_ok() {
                        buf.push(b'\n');
                    }
                }
                Msg::Flush(done) => waiting.push(done),
            }
            next = rx.try_recv().ok();
        }
        if let Err(e) = async {
            file.write_all(&buf).await?;
            file.flush().await
        }
        .await
        {
            tracing::error!(path, "event log write failed, events are no longer recorded: {e}");
            return;
        }
        buf.clear();
        for done in waiting {
            let _ = done.send(());
        }
    }
}
