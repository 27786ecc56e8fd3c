//! `BENCH_PERF=<dir>`: a `perf record` of the gateway during one round of
//! Interlock in each selected scenario (the middle one), for the flame
//! graphs `cargo xtask flamegraph` draws. Sampling with DWARF call graphs
//! slows the gateway, so the round's numbers are not for a report.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

/// Samples per second: enough for a graph from one round, and half the
/// overhead of perf's usual 999.
const FREQUENCY: &str = "499";

/// A running `perf record`.
pub struct Recording {
    child: Child,
    out: PathBuf,
}

/// Starts recording `pid` for `secs` seconds into `<dir>/<scenario slug>.data`.
pub fn start(dir: &Path, scenario: &str, pid: u32, secs: u32) -> Recording {
    std::fs::create_dir_all(dir).expect("BENCH_PERF directory");
    let out = dir.join(format!("{}.data", slug(scenario)));
    let child = Command::new("perf")
        .args(["record", "-q", "-F", FREQUENCY, "--call-graph", "dwarf,65528", "-p"])
        .arg(pid.to_string())
        .arg("-o")
        .arg(&out)
        .args(["--", "sleep"])
        .arg(secs.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("BENCH_PERF is set but perf did not start: {e}"));
    Recording { child, out }
}

impl Recording {
    /// Waits for perf to write its file; a failed recording fails the run.
    pub fn finish(mut self) {
        let status = self.child.wait().expect("wait for perf");
        assert!(
            status.success() && self.out.exists(),
            "perf record into {} failed: {status}",
            self.out.display()
        );
    }
}

/// A scenario's name as a file name: lowercase letters and digits, the rest
/// folded into single dashes.
pub fn slug(scenario: &str) -> String {
    let mut out = String::new();
    for c in scenario.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_owned()
}
