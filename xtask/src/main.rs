//! Developer and CI tasks: `cargo xtask setup | run | test | bench | flamegraph`.
use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

mod compare;
mod flamegraph;
mod fuzz;
mod setup;
mod shell;
mod test;

#[derive(Parser)]
#[command(name = "xtask")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install every prerequisite (idempotent; quick when already done).
    Setup,
    /// Setup, build, and run the gateway with its embedded defaults (or --config).
    Run {
        /// Configuration file passed to `interlock run`.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Build in release mode.
        #[arg(long)]
        release: bool,
    },
    /// Run the benchmarks: policy decisions, revocation latency, and Interlock
    /// side by side with direct connections, haproxy, nginx and pgbouncer.
    Bench {
        /// Fewer and shorter rounds, for a development loop.
        #[arg(long)]
        quick: bool,
        /// Instead: the gateway's CPU per request at this git revision against
        /// the working tree, the two taking turns round by round.
        #[arg(long, value_name = "REV")]
        compare: Option<String>,
        /// Alternated rounds for --compare.
        #[arg(long, default_value_t = 6)]
        rounds: u32,
        /// With --compare: instructions per request, counted by callgrind
        /// (both gateways run under valgrind), instead of CPU time.
        #[arg(long, requires = "compare")]
        instructions: bool,
    },
    /// Flame graphs of the gateway under a bench scenario's load (perf and
    /// inferno), written to bench/flamegraph-<scenario>.svg.
    Flamegraph {
        /// Scenarios to draw (text matched against scenario names); by
        /// default HTTP keep-alive 1 KB and pgbench -S simple, 8 clients.
        scenarios: Vec<String>,
    },
    /// Run the fuzz targets (cargo-fuzz on the nightly toolchain) from
    /// their committed corpora, each for a bounded time.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Targets to run (all by default).
        targets: Vec<String>,
    },
    /// Setup, lint, unit tests, then the privileged integration tests.
    Test {
        /// Skip `cargo fmt --check` and clippy.
        #[arg(long)]
        no_lint: bool,
        /// Only run integration tests whose name contains this.
        filter: Option<String>,
    },
}

fn main() -> Result<()> {
    let args = Args::parse();
    let root = workspace_root();
    std::env::set_current_dir(&root)?;
    match args.command {
        Command::Setup => setup::run(&root),
        Command::Run { config, release } => {
            let env = setup::run(&root).map(|()| setup::toolchain_env())?;
            let mut build = shell::cmd("cargo", &["build", "-p", "gateway"]);
            if release {
                build.arg("--release");
            }
            shell::run(build.envs(env.iter().cloned()))?;
            let bin = target_dir(&root)
                .join(if release { "release" } else { "debug" })
                .join("interlock");
            let mut run = std::process::Command::new(bin);
            if let Some(config) = config {
                run.arg("--config").arg(config);
            }
            run.arg("run");
            shell::run(&mut run)
        }
        Command::Test { no_lint, filter } => test::run(&root, !no_lint, filter.as_deref()),
        Command::Fuzz { seconds, targets } => {
            setup::run(&root)?;
            fuzz::run(&root, seconds, &targets)
        }
        Command::Bench {
            compare: Some(rev),
            rounds,
            instructions,
            ..
        } => {
            let measure = if instructions {
                compare::Measure::Instructions
            } else {
                compare::Measure::Cpu
            };
            compare::run(&root, &rev, rounds, measure)
        }
        Command::Bench { quick, .. } => bench(&root, quick),
        Command::Flamegraph { scenarios } => {
            let scenarios = if scenarios.is_empty() {
                flamegraph::DEFAULT_SCENARIOS.map(str::to_owned).to_vec()
            } else {
                scenarios
            };
            flamegraph::run(&root, &scenarios)
        }
    }
}

/// Runs the benchmarks: the in-process ones with criterion (results
/// gathered into `bench/internals.json`), the revocation latency and the
/// DNS latency (their JSON under `<target>/bench/`), and the side-by-side run, whose report
/// (`bench/REPORT.md`, `bench/side_by_side.json`, `bench/ratios.svg`)
/// includes the criterion results and `bench/OPTIMISATIONS.md`.
fn bench(root: &std::path::Path, quick: bool) -> Result<()> {
    setup::run(root)?;
    setup::install_packages(setup::BENCH_PACKAGES)?;
    let oha = setup::oha()?;
    let env = setup::toolchain_env();
    let out = target_dir(root).join("bench");
    std::fs::create_dir_all(&out)?;
    let criterion_args: &[&str] = if quick {
        &["--warm-up-time", "0.5", "--measurement-time", "1"]
    } else {
        &["--warm-up-time", "1", "--measurement-time", "3"]
    };
    let criterion_dir = target_dir(root).join("criterion");
    let _ = std::fs::remove_dir_all(&criterion_dir);
    for name in ["policy", "masking", "audit"] {
        let mut args = vec!["bench", "-p", "gateway", "--bench", name, "--"];
        args.extend_from_slice(criterion_args);
        shell::run(shell::cmd("cargo", &args).envs(env.iter().cloned()))?;
    }
    let internals = gather_criterion(&criterion_dir)?;
    std::fs::write(
        root.join("bench/internals.json"),
        serde_json::to_string_pretty(&internals)?,
    )?;
    // The revocation bench drives a real gateway (release build) and needs root.
    shell::run(shell::cmd("cargo", &["build", "--release", "-p", "gateway", "--bins"]).envs(env.iter().cloned()))?;
    let mut revoke = shell::cmd(
        "cargo",
        &["bench", "-p", "interlock-tests", "--bench", "revoke_latency"],
    );
    revoke
        .envs(env.iter().cloned())
        .env("INTERLOCK_BIN", target_dir(root).join("release/interlock"))
        .env("BENCH_OUTPUT", out.join("revoke_latency.json"));
    shell::run(&mut revoke)?;
    let mut dns = shell::cmd("cargo", &["bench", "-p", "interlock-tests", "--bench", "dns_latency"]);
    dns.envs(env.iter().cloned())
        .env("INTERLOCK_BIN", target_dir(root).join("release/interlock"))
        .env("BENCH_OUTPUT", out.join("dns_latency.json"))
        .env("BENCH_QUICK", if quick { "1" } else { "0" });
    shell::run(&mut dns)?;
    let mut side = shell::cmd("cargo", &["bench", "-p", "interlock-tests", "--bench", "side_by_side"]);
    side.envs(env.iter().cloned())
        .env("INTERLOCK_BIN", target_dir(root).join("release/interlock"))
        .env("BENCH_DIR", root.join("bench"))
        .env("OHA", &oha)
        .env("BENCH_QUICK", if quick { "1" } else { "0" });
    shell::run(&mut side)?;
    eprintln!(
        "xtask: results in {} and {}",
        out.display(),
        root.join("bench/REPORT.md").display()
    );
    Ok(())
}

/// Criterion's estimates, one entry per bench: id, median and mean (ns),
/// and the throughput it was declared with.
fn gather_criterion(dir: &std::path::Path) -> Result<Vec<serde_json::Value>> {
    let mut found = Vec::new();
    for group in std::fs::read_dir(dir)?.flatten() {
        for bench in std::fs::read_dir(group.path())?.flatten() {
            let new = bench.path().join("new");
            let (Ok(meta), Ok(est)) = (
                std::fs::read_to_string(new.join("benchmark.json")),
                std::fs::read_to_string(new.join("estimates.json")),
            ) else {
                continue;
            };
            let meta: serde_json::Value = serde_json::from_str(&meta)?;
            let est: serde_json::Value = serde_json::from_str(&est)?;
            found.push(serde_json::json!({
                "id": meta["full_id"],
                "median_ns": est["median"]["point_estimate"],
                "mean_ns": est["mean"]["point_estimate"],
                "throughput": meta["throughput"],
            }));
        }
    }
    found.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    Ok(found)
}

/// Cargo's target directory (CI keeps it outside the clone).
pub fn target_dir(root: &std::path::Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}
