//! A test's own child cgroup.
use std::{
    ffi::CString,
    fs,
    os::unix::{ffi::OsStrExt, process::CommandExt},
    path::{Path, PathBuf},
    process::Command,
};

/// A cgroup created for one test and removed (with its processes) on drop.
pub struct TestCgroup {
    path: PathBuf,
}

/// The cgroup2 mount, from /proc/mounts.
pub fn cgroup2_mount() -> PathBuf {
    let mounts = fs::read_to_string("/proc/mounts").expect("read /proc/mounts");
    mounts
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .expect("no cgroup2 mount")
}

impl TestCgroup {
    /// Creates `<cgroup2>/<name>` (never the root itself).
    pub fn new(name: &str) -> Self {
        assert!(!name.is_empty() && !name.contains(".."));
        let path = cgroup2_mount().join(name);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create cgroup {}: {e}", path.display()));
        Self { path }
    }

    /// A child cgroup inside this one (removed with it).
    pub fn child(&self, name: &str) -> PathBuf {
        let p = self.path.join(name);
        fs::create_dir_all(&p).expect("create child cgroup");
        p
    }

    /// The cgroup directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Path relative to the mount, as /proc/<pid>/cgroup shows it.
    pub fn relative(&self) -> String {
        format!("/{}", self.path.strip_prefix(cgroup2_mount()).unwrap().display())
    }

    /// The cgroup id (inode).
    pub fn id(&self) -> u64 {
        std::os::unix::fs::MetadataExt::ino(&fs::metadata(&self.path).unwrap())
    }

    /// Makes `cmd` join this cgroup in the child, before exec (so before the
    /// command can open any socket).
    pub fn enter<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        enter(cmd, &self.path)
    }
}

/// Makes `cmd` join cgroup `dir` between fork and exec.
pub fn enter<'a>(cmd: &'a mut Command, dir: &Path) -> &'a mut Command {
    let procs = CString::new(dir.join("cgroup.procs").as_os_str().as_bytes()).unwrap();
    // SAFETY: only async-signal-safe libc calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let n = libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
            if n != 1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

fn remove_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    let _ = fs::write(dir.join("cgroup.kill"), "1");
    for _ in 0..100 {
        if fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    eprintln!("warning: could not remove test cgroup {}", dir.display());
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        remove_tree(&self.path);
    }
}

/// A cgroup inside a [`TestCgroup`] (removed with it), usable like one for clients.
pub struct Sub {
    path: PathBuf,
}

impl Sub {
    /// Wraps an existing child cgroup directory.
    pub fn new(path: &Path) -> Self {
        Self { path: path.to_owned() }
    }

    /// A child of this cgroup.
    pub fn child(&self, name: &str) -> PathBuf {
        let p = self.path.join(name);
        fs::create_dir_all(&p).expect("create child cgroup");
        p
    }
}

/// Anything that is a cgroup directory clients can be put in.
pub trait CgroupDir {
    /// The directory.
    fn dir(&self) -> &Path;
}

impl CgroupDir for TestCgroup {
    fn dir(&self) -> &Path {
        &self.path
    }
}

impl CgroupDir for Sub {
    fn dir(&self) -> &Path {
        &self.path
    }
}
