//! `cargo xtask bench --compare REV`: the gateway's CPU per request at REV
//! against the working tree, for a refactor's "no scenario worse" check.
//! Both are built in release mode (REV in a worktree of its own, with a
//! target directory of its own so the two builds do not evict each other),
//! then the side-by-side bench runs each scenario with Interlock alone, the
//! two binaries taking turns round by round (so drift hits both alike), and
//! the medians are printed. Quick rounds on a shared VM vary by ±10 % or
//! more between runs of one binary: use enough rounds, or `--instructions`,
//! which runs both gateways under callgrind and counts the instructions
//! each executed per request (slow, but within about a percent run to run).
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _, Result};

use crate::{setup, shell, target_dir};

/// One scenario a round (text matched against scenario names), the ones a
/// data-path change moves: plain HTTP, intercepted HTTPS, SQL both ways.
const SCENARIOS: [&str; 4] = [
    "HTTP/1.1 keep-alive, 1 KB",
    "HTTPS keep-alive",
    "-M simple",
    "-M prepared",
];

/// What is compared per request.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// The gateway's CPU time (utime + stime), in µs.
    Cpu,
    /// Instructions the gateway executed, counted by callgrind.
    Instructions,
}

impl Measure {
    /// The sample field the side-by-side bench writes it to.
    fn field(self) -> &'static str {
        match self {
            Measure::Cpu => "gateway_cpu_us",
            Measure::Instructions => "gateway_instructions",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Measure::Cpu => "gateway CPU per request (µs",
            Measure::Instructions => "gateway instructions per request (callgrind",
        }
    }
}

/// Builds both, runs `rounds` alternated rounds, prints the table.
pub fn run(root: &Path, rev: &str, rounds: u32, measure: Measure) -> Result<()> {
    setup::run(root)?;
    setup::install_packages(setup::BENCH_PACKAGES)?;
    if measure == Measure::Instructions {
        setup::install_packages(&[("callgrind_control", "valgrind")])?;
    }
    let oha = setup::oha()?;
    let env = setup::toolchain_env();
    let work = target_dir(root).join("compare");
    std::fs::create_dir_all(&work)?;
    let base = build_rev(rev, &work, &env)?;
    shell::run(shell::cmd("cargo", &["build", "--release", "-p", "gateway", "--bins"]).envs(env.iter().cloned()))?;
    let head = work.join("interlock-head");
    std::fs::copy(target_dir(root).join("release/interlock"), &head)?;
    let (base, head) = match measure {
        Measure::Cpu => (base, head),
        Measure::Instructions => (under_callgrind(&base)?, under_callgrind(&head)?),
    };
    let contenders = [(rev.to_owned(), base), ("working tree".to_owned(), head)];
    // scenario -> contender -> samples (gateway µs per request)
    let mut cpu: BTreeMap<String, BTreeMap<String, Vec<f64>>> = BTreeMap::new();
    for round in 0..rounds {
        // Who goes first alternates, so neither always runs warm.
        let order: Vec<_> = if round.is_multiple_of(2) {
            contenders.iter().collect()
        } else {
            contenders.iter().rev().collect()
        };
        for scenario in SCENARIOS {
            for (name, bin) in &order {
                let out = work.join(format!("r{round}-{}", slug(name)));
                std::fs::create_dir_all(&out)?;
                let mut side = shell::cmd(
                    "cargo",
                    &["bench", "-q", "-p", "interlock-tests", "--bench", "side_by_side"],
                );
                side.envs(env.iter().cloned())
                    .env("INTERLOCK_BIN", bin)
                    .env("BENCH_DIR", &out)
                    .env("OHA", &oha)
                    .env("BENCH_QUICK", "1")
                    .env("BENCH_ONLY", scenario)
                    .env("BENCH_CONTENDERS", "interlock");
                if measure == Measure::Instructions {
                    side.env("BENCH_CALLGRIND", "1");
                }
                shell::run(&mut side)?;
                for (s, us) in samples(&out.join("side_by_side.json"), measure.field())? {
                    cpu.entry(s).or_default().entry(name.clone()).or_default().push(us);
                }
            }
        }
    }
    println!("{}, median of {rounds} alternated rounds)", measure.title());
    println!("{:<60} {:>12} {:>12} {:>8}", "scenario", rev, "working tree", "change");
    for (scenario, by) in &cpu {
        let (Some(a), Some(b)) = (
            by.get(rev).map(|v| median(v)),
            by.get("working tree").map(|v| median(v)),
        ) else {
            continue;
        };
        println!("{scenario:<60} {a:>12.1} {b:>12.1} {:>+7.2}%", (b - a) / a * 100.0);
    }
    Ok(())
}

/// A release binary of `rev`, built in a worktree under `work`.
fn build_rev(rev: &str, work: &Path, env: &[(String, String)]) -> Result<PathBuf> {
    let tree = work.join("tree");
    let remove = || {
        let _ = shell::run(&mut shell::cmd(
            "git",
            &["worktree", "remove", "--force", tree.to_str().unwrap_or_default()],
        ));
    };
    // One left by an interrupted run.
    if tree.exists() {
        remove();
    }
    shell::run(&mut shell::cmd(
        "git",
        &["worktree", "add", "--detach", tree.to_str().unwrap_or_default(), rev],
    ))
    .with_context(|| format!("checking out {rev}"))?;
    let built = shell::run(
        shell::cmd("cargo", &["build", "--release", "-p", "gateway", "--bins"])
            .current_dir(&tree)
            .envs(env.iter().cloned())
            .env("CARGO_TARGET_DIR", work.join("target")),
    );
    let bin = work.join(format!("interlock-{}", slug(rev)));
    let copied = built.and_then(|()| Ok(std::fs::copy(work.join("target/release/interlock"), &bin)?));
    remove();
    copied.with_context(|| format!("building {rev}"))?;
    Ok(bin)
}

/// A script beside `bin` that runs it under callgrind, counting from the
/// start (the bench zeroes the counters before each measurement) and
/// writing no profile at exit. valgrind execs in place, so the gateway's
/// pid is the one the bench reads.
fn under_callgrind(bin: &Path) -> Result<PathBuf> {
    let script = bin.with_extension("callgrind.sh");
    let text = format!(
        "#!/bin/sh\nexec valgrind -q --tool=callgrind --callgrind-out-file=/dev/null '{}' \"$@\"\n",
        bin.display()
    );
    std::fs::write(&script, text)?;
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    Ok(script)
}

/// (scenario, `field` per request) of Interlock's samples in a bench result.
fn samples(path: &Path, field: &str) -> Result<Vec<(String, f64)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)?;
    let Some(all) = json["samples"].as_array() else {
        bail!("{}: no samples", path.display());
    };
    Ok(all
        .iter()
        .filter(|s| s["contender"] == "interlock")
        .filter_map(|s| Some((s["scenario"].as_str()?.to_owned(), s[field].as_f64()?)))
        .collect())
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    }
}

fn slug(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_slugs() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(slug("working tree"), "working-tree");
        assert_eq!(slug("HEAD~3"), "HEAD-3");
    }

    #[test]
    fn samples_keep_interlock_only() {
        let dir = std::env::temp_dir().join(format!("xtask-compare-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("side_by_side.json");
        let json = serde_json::json!({"samples": [
            {"scenario": "a", "contender": "interlock", "gateway_cpu_us": 50.0},
            {"scenario": "a", "contender": "direct", "rate": 1.0},
            {"scenario": "b", "contender": "interlock"},
        ]});
        std::fs::write(&path, json.to_string()).unwrap();
        assert_eq!(samples(&path, "gateway_cpu_us").unwrap(), vec![("a".to_owned(), 50.0)]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
