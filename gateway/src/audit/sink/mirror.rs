//! The JSON-lines mirror of the audit trail (`events.jsonl`): one event per
//! line, for `tail -f` and log shippers. The store and the journal are the
//! record; the mirror is a convenience copy, so it is bounded: at
//! `ROTATE_AT` bytes it becomes `events.jsonl.1` (replacing the previous
//! one) and a new file starts. Without this a busy gateway filled the disk
//! (a full benchmark run wrote 11 GB of state).
use std::{
    fs::File,
    io::Write,
    path::{Path, PathBuf},
};

/// Size at which the mirror is rotated.
const ROTATE_AT: u64 = 64 << 20;

/// The mirror file.
pub(super) struct Mirror {
    path: PathBuf,
    file: File,
    size: u64,
    limit: u64,
}

fn open(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new().create(true).append(true).open(path)
}

impl Mirror {
    /// Opens (appends to) the mirror at `path`.
    pub(super) fn open(path: &Path) -> std::io::Result<Self> {
        Self::with_limit(path, ROTATE_AT)
    }

    fn with_limit(path: &Path, limit: u64) -> std::io::Result<Self> {
        sweep_retired(path);
        let file = open(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: path.to_owned(),
            file,
            size,
            limit,
        })
    }

    /// Appends whole lines; rotates once the file has reached its limit.
    pub(super) fn write(&mut self, lines: &[u8]) -> std::io::Result<()> {
        self.file.write_all(lines)?;
        self.size += lines.len() as u64;
        if self.size >= self.limit {
            let mut rotated = self.path.clone().into_os_string();
            rotated.push(".1");
            // Renaming over the previous `.1` would free its blocks here.
            retire(Path::new(&rotated));
            std::fs::rename(&self.path, &rotated)?;
            self.file = open(&self.path)?;
            self.size = 0;
        }
        Ok(())
    }
}

/// Removes `path` off the caller's thread: renamed aside at once (which
/// frees nothing), deleted by a thread of its own. Freeing a file's blocks
/// can take tens of milliseconds (a filesystem mounted with `discard`
/// discards them synchronously: seen on this project's VMs), and the
/// callers hold the audit chain's lock, on an async worker: deleting in
/// place stalled every request for as long (p99 40–60 ms at half load).
pub(super) fn retire(path: &Path) {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".retired-{}-{n}", std::process::id()));
    let aside = PathBuf::from(aside);
    if std::fs::rename(path, &aside).is_err() {
        return; // Nothing there (or not ours to move): nothing to delete.
    }
    let spawned = std::thread::Builder::new().name("audit-retire".into()).spawn(move || {
        if let Err(e) = std::fs::remove_file(&aside) {
            tracing::warn!("audit: removing {}: {e}", aside.display());
        }
    });
    if let Err(e) = spawned {
        tracing::warn!("audit: no thread to remove {}: {e}", path.display());
    }
}

/// Deletes files [`retire`] left behind when the gateway stopped before
/// their thread ran (next to `path`).
pub(super) fn sweep_retired(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(file) = file.to_str() else { continue };
        if file.starts_with(name) && file.contains(".retired-") {
            retire(&entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_at_its_limit_keeping_one_previous_file() {
        let dir = std::env::temp_dir().join(format!("interlock-mirror-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.jsonl");
        let mut m = Mirror::with_limit(&path, 10).unwrap();
        m.write(b"{\"a\":1}\n").unwrap();
        m.write(b"{\"a\":2}\n").unwrap(); // 16 bytes: rotated after this write
        m.write(b"{\"a\":3}\n").unwrap();
        let old = std::fs::read_to_string(dir.join("events.jsonl.1")).unwrap();
        assert_eq!(old, "{\"a\":1}\n{\"a\":2}\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\":3}\n");
        // Reopened, it keeps counting from the file's size.
        drop(m);
        let mut m = Mirror::with_limit(&path, 10).unwrap();
        m.write(b"{\"a\":4}\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("events.jsonl.1")).unwrap(),
            "{\"a\":3}\n{\"a\":4}\n"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn retired_files_go_away_off_the_callers_thread() {
        let dir = std::env::temp_dir().join(format!("interlock-retire-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.jsonl.1");
        std::fs::write(&path, "x").unwrap();
        retire(&path);
        assert!(!path.exists(), "moved aside at once");
        retire(&path); // nothing there: nothing happens
                       // A leftover from a stopped gateway is swept when the mirror opens.
        std::fs::write(dir.join("events.jsonl.1.retired-1-0"), "y").unwrap();
        drop(Mirror::open(&dir.join("events.jsonl")).unwrap());
        let none_left = || {
            std::fs::read_dir(&dir)
                .unwrap()
                .flatten()
                .all(|e| !e.file_name().to_string_lossy().contains(".retired-"))
        };
        let gone = (0..500).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            none_left()
        });
        assert!(gone, "retired files deleted");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
