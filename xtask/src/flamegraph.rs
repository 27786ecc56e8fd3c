//! `cargo xtask flamegraph`: flame graphs of the gateway under a bench
//! scenario's load. The side-by-side bench runs each scenario with
//! Interlock alone and `BENCH_PERF` set, which has `perf record` sample the
//! gateway (DWARF call graphs) through one round; the samples are folded
//! and drawn by inferno into `bench/flamegraph-<scenario>.svg`.
use std::{
    fs::File,
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _, Result};

use crate::{setup, shell, target_dir};

/// Scenarios drawn when none is named: where the HTTP and PostgreSQL
/// throughput targets are measured.
pub const DEFAULT_SCENARIOS: [&str; 2] = ["HTTP/1.1 keep-alive, 1 KB", "pgbench -S -M simple, 8 clients"];

/// Records and draws each scenario (a scenario is matched like
/// `BENCH_ONLY`: every scenario whose name contains the text).
pub fn run(root: &Path, scenarios: &[String]) -> Result<()> {
    setup::run(root)?;
    setup::install_packages(setup::BENCH_PACKAGES)?;
    setup::install_packages(setup::PROFILE_PACKAGES)?;
    let oha = setup::oha()?;
    let inferno = setup::inferno()?;
    let env = setup::toolchain_env();
    shell::run(shell::cmd("cargo", &["build", "--release", "-p", "gateway", "--bins"]).envs(env.iter().cloned()))?;
    let work = target_dir(root).join("bench/profile");
    let recordings = work.join("perf");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&recordings)?;
    for scenario in scenarios {
        let mut side = shell::cmd("cargo", &["bench", "-p", "interlock-tests", "--bench", "side_by_side"]);
        side.envs(env.iter().cloned())
            .env("INTERLOCK_BIN", target_dir(root).join("release/interlock"))
            // The run's own report stays out of bench/: perf slows the round.
            .env("BENCH_DIR", &work)
            .env("OHA", &oha)
            .env("BENCH_QUICK", "0")
            .env("BENCH_ONLY", scenario)
            .env("BENCH_CONTENDERS", "interlock")
            .env("BENCH_PERF", &recordings);
        shell::run(&mut side)?;
    }
    let mut drawn = 0;
    for entry in std::fs::read_dir(&recordings)? {
        let data = entry?.path();
        let Some(slug) = data.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else {
            continue;
        };
        let svg = root.join(format!("bench/flamegraph-{slug}.svg"));
        draw(&data, &inferno, &slug, &svg)?;
        eprintln!("xtask: {}", svg.display());
        drawn += 1;
    }
    if drawn == 0 {
        bail!("no scenario matched {scenarios:?}: nothing was recorded");
    }
    Ok(())
}

/// `perf script | inferno-collapse-perf`, then `inferno-flamegraph` into `svg`.
fn draw(data: &Path, inferno: &Path, title: &str, svg: &Path) -> Result<()> {
    let folded_path = data.with_extension("folded");
    // Inline frames resolved through addr2line take minutes; the
    // functions rustc kept are enough to see where the time goes.
    let mut script = Command::new("perf")
        .args(["script", "--no-inline", "-i"])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting perf script")?;
    let stacks = script.stdout.take().context("perf script's output")?;
    let folded = File::create(&folded_path).with_context(|| format!("creating {}", folded_path.display()))?;
    let collapse = Command::new(inferno.join("inferno-collapse-perf"))
        .stdin(stacks)
        .stdout(folded)
        .status()
        .context("running inferno-collapse-perf")?;
    let script_status = script.wait()?;
    if !script_status.success() || !collapse.success() {
        bail!(
            "folding {} failed (perf script: {script_status}, inferno-collapse-perf: {collapse})",
            data.display()
        );
    }
    let out = File::create(svg).with_context(|| format!("creating {}", svg.display()))?;
    let status = Command::new(inferno.join("inferno-flamegraph"))
        .args(["--title", &format!("interlock: {title}"), "--minwidth", "0.5"])
        .arg(&folded_path)
        .stdout(out)
        .status()
        .context("running inferno-flamegraph")?;
    if !status.success() {
        bail!("inferno-flamegraph on {} failed: {status}", folded_path.display());
    }
    Ok(())
}
