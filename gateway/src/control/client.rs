//! The CLI side of the control socket.
use std::path::Path;

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::UnixStream,
};

use super::{Request, Response};

/// Errors talking to the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket.
    #[error("the gateway is not running (no control socket at {path}): {source}")]
    NotRunning {
        /// The socket path.
        path: String,
        /// The connect error.
        source: std::io::Error,
    },
    /// The socket exists but this user may not use it: the gateway may well
    /// be running.
    #[error(
        "cannot use the control socket at {path}: {source} (run as root, or as a member of `control.admin_group`)"
    )]
    NotPermitted {
        /// The socket path.
        path: String,
        /// The connect error.
        source: std::io::Error,
    },
    /// The exchange failed midway.
    #[error("control socket: {0}")]
    Io(#[from] std::io::Error),
    /// The daemon answered something unreadable.
    #[error("control socket: unreadable answer: {0}")]
    Decode(#[from] serde_json::Error),
}

/// Sends one request and reads the answer.
pub async fn request(socket: &Path, request: &Request) -> Result<Response, ClientError> {
    let stream = UnixStream::connect(socket).await.map_err(|source| {
        let path = socket.display().to_string();
        if source.kind() == std::io::ErrorKind::PermissionDenied {
            ClientError::NotPermitted { path, source }
        } else {
            ClientError::NotRunning { path, source }
        }
    })?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    write.write_all(&line).await?;
    let mut answer = String::new();
    BufReader::new(read).read_line(&mut answer).await?;
    Ok(serde_json::from_str(&answer)?)
}
