//! State files: JSON in the state directory (rules, grants, revocations,
//! reviews), written atomically so a crash leaves the old or the new state,
//! never a mix.
use std::path::Path;

use serde::{de::DeserializeOwned, Serialize};

/// Why a state file could not be read or written (the callers name the file).
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// The file is not valid JSON for its kind of state (the error names
    /// the line and column).
    #[error("{0}")]
    Malformed(serde_json::Error),
    /// The state could not be encoded (the gateway's bug).
    #[error("encoding: {0}")]
    Encode(serde_json::Error),
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Reads a state file; a missing file is the empty state. Errors say where
/// in the file the problem is.
pub fn load_json<T: DeserializeOwned + Default>(path: &Path) -> Result<T, PersistError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map_err(PersistError::Malformed),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(e.into()),
    }
}

/// Writes a state file atomically.
pub fn save_json<T: Serialize>(path: &Path, value: &T) -> Result<(), PersistError> {
    let text = serde_json::to_string_pretty(value).map_err(PersistError::Encode)?;
    Ok(write_atomic(path, text.as_bytes())?)
}

fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(data)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}
