//! `cargo xtask fuzz`: the cargo-fuzz (libFuzzer) targets in `fuzz/`, one
//! per parser that reads agent or upstream bytes (see `gateway::fuzz`).
//! Each runs from its committed corpus (`fuzz/corpus/<target>`, read only)
//! into a scratch corpus, for a bounded time; a crash or a broken property
//! fails the run and leaves the input under `fuzz/artifacts/<target>/`.
//! The test suite runs each target for a few seconds so CI catches
//! regressions; long runs are for a developer's session.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

use crate::{
    setup,
    shell::{self, cmd},
};

/// Every target, as named in `fuzz/Cargo.toml`.
pub const TARGETS: [&str; 10] = [
    "detect",
    "http_path",
    "mask_json",
    "stream_mask",
    "sse",
    "pg_frontend",
    "pg_backend",
    "sql",
    "audit_record",
    "dns_message",
];

/// cargo-fuzz, pinned.
const CARGO_FUZZ_VERSION: &str = "0.13.1";

/// Where the instrumented builds go (apart from the main target directory).
fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("INTERLOCK_FUZZ_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::target_dir(root).join("fuzz"))
}

/// Builds the targets and runs each `targets` (all when empty) for `seconds`.
pub fn run(root: &Path, seconds: u64, targets: &[String]) -> Result<()> {
    setup::crate_binary("cargo-fuzz", CARGO_FUZZ_VERSION, "cargo-fuzz")?;
    let chosen: Vec<&str> = if targets.is_empty() {
        TARGETS.to_vec()
    } else {
        for t in targets {
            if !TARGETS.contains(&t.as_str()) {
                bail!("no fuzz target `{t}` (targets: {})", TARGETS.join(", "));
            }
        }
        targets.iter().map(String::as_str).collect()
    };
    let env = setup::toolchain_env();
    let target_dir = target_dir(root);
    let target_dir = target_dir.to_str().context("target directory is not UTF-8")?;
    // No sanitizer: the gateway is safe Rust, and an uninstrumented-memory
    // build is several times faster to build and run; coverage guides it.
    // cargo-fuzz builds release with one codegen unit unless told: on two
    // cores that makes the gateway's dependencies the longest step of CI.
    let flags = [
        "--sanitizer",
        "none",
        "--codegen-units",
        "16",
        "--target-dir",
        target_dir,
    ];
    let common = ["+nightly", "fuzz"];
    let mut build = cmd("cargo", &common);
    build.arg("build").args(flags);
    shell::run(build.current_dir(root).envs(env.iter().cloned()))?;
    for target in chosen {
        let seeds = root.join("fuzz/corpus").join(target);
        let scratch = std::env::temp_dir().join(format!("interlock-fuzz-{target}-{}", std::process::id()));
        std::fs::create_dir_all(&scratch)?;
        let artifacts = root.join("fuzz/artifacts").join(target);
        std::fs::create_dir_all(&artifacts)?;
        eprintln!("xtask: fuzzing {target} for {seconds} s");
        let mut fuzz = cmd("cargo", &common);
        fuzz.arg("run")
            .args(flags)
            .arg(target)
            .arg(&scratch)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            // Bounded memory and input size: the parsers' own limits are what is tested.
            .args(["-rss_limit_mb=2048", "-max_len=65536", "-print_final_stats=1"]);
        let result = shell::run(fuzz.current_dir(root).envs(env.iter().cloned()));
        let _ = std::fs::remove_dir_all(&scratch);
        result.with_context(|| format!("fuzz target {target} failed; its input is in {}", artifacts.display()))?;
    }
    Ok(())
}
