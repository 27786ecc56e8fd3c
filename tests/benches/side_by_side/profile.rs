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

/// `BENCH_CALLGRIND=1` (or `dump`): the gateway runs under callgrind (`INTERLOCK_BIN` is
/// a wrapper that execs valgrind, as `cargo xtask bench --compare REV
/// --instructions` writes), and each Interlock measurement counts the
/// instructions it executed: zeroed before, read after. Instructions per
/// request do not swing with a shared VM's load the way CPU time does, so
/// two builds can be told apart by a few percent.
pub fn callgrind_zero(pid: u32) {
    callgrind_control(pid, &["--zero"]);
}

/// Instructions the gateway executed since the last zero, all threads.
/// With `BENCH_CALLGRIND=dump` and a scenario, also a profile of the
/// measurement, written where the wrapper's `--callgrind-out-file` says
/// (numbered `.1`, `.2`..).
pub fn callgrind_instructions(pid: u32, dump: Option<&str>) -> f64 {
    let out = callgrind_control(pid, &["-e", "Ir"]);
    if let Some(scenario) = dump.filter(|_| std::env::var("BENCH_CALLGRIND").is_ok_and(|v| v == "dump")) {
        callgrind_control(pid, &[&format!("--dump={}", slug(scenario))]);
    }
    let total = thread_totals(&out);
    assert!(total > 0.0, "callgrind_control -e Ir {pid} printed no totals:\n{out}");
    total
}

/// Sums the `Th <n> <count>` lines of `callgrind_control -e Ir`.
fn thread_totals(out: &str) -> f64 {
    out.lines()
        .filter_map(|l| match l.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["Th", _, n] => n.replace(',', "").parse::<f64>().ok(),
            _ => None,
        })
        .sum()
}

fn callgrind_control(pid: u32, args: &[&str]) -> String {
    let out = Command::new("callgrind_control")
        .args(args)
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("BENCH_CALLGRIND is set but callgrind_control did not run: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "callgrind_control {args:?} {pid}: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn thread_totals_sum_every_thread() {
        let out = "PID 1: interlock run\n\n  Totals:         Ir \n   Th 1  125,361,561 \n   Th 2  1,000 \n";
        assert_eq!(super::thread_totals(out), 125_362_561.0);
    }
}
