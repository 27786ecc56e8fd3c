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
    /// The group that may read it (`audit.mirror_group`), if any.
    group: Option<u32>,
}

/// Opens a mirror file: root's alone (0600), or readable by `group` (0640)
/// when the operator chose one.
fn open(path: &Path, group: Option<u32>) -> std::io::Result<File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    let mode = match group {
        Some(gid) => {
            std::os::unix::fs::fchown(&file, Some(0), Some(gid))?;
            0o640
        }
        None => 0o600,
    };
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    Ok(file)
}

impl Mirror {
    /// Opens (appends to) the mirror at `path`, readable by `group` if given.
    pub(super) fn open(path: &Path, group: Option<u32>) -> std::io::Result<Self> {
        Self::with_limit(path, ROTATE_AT, group)
    }

    fn with_limit(path: &Path, limit: u64, group: Option<u32>) -> std::io::Result<Self> {
        super::sweep_retired(path);
        let file = open(path, group)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: path.to_owned(),
            file,
            size,
            limit,
            group,
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
            super::retire(Path::new(&rotated));
            std::fs::rename(&self.path, &rotated)?;
            self.file = open(&self.path, self.group)?;
            self.size = 0;
        }
        Ok(())
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
        let mut m = Mirror::with_limit(&path, 10, None).unwrap();
        m.write(b"{\"a\":1}\n").unwrap();
        m.write(b"{\"a\":2}\n").unwrap(); // 16 bytes: rotated after this write
        m.write(b"{\"a\":3}\n").unwrap();
        let old = std::fs::read_to_string(dir.join("events.jsonl.1")).unwrap();
        assert_eq!(old, "{\"a\":1}\n{\"a\":2}\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\":3}\n");
        // Reopened, it keeps counting from the file's size.
        drop(m);
        let mut m = Mirror::with_limit(&path, 10, None).unwrap();
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
        super::super::retire(&path);
        assert!(!path.exists(), "moved aside at once");
        // Nothing there: nothing happens.
        super::super::retire(&path);
        // A leftover from a stopped gateway is swept when the mirror opens.
        std::fs::write(dir.join("events.jsonl.1.retired-1-0"), "y").unwrap();
        drop(Mirror::open(&dir.join("events.jsonl"), None).unwrap());
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
