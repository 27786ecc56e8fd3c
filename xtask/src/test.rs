//! `cargo xtask test`: setup, lint, unit tests, then the privileged
//! integration tests (real kernel programs, each test in its own child cgroup,
//! loopback only).
use std::path::Path;

use anyhow::{bail, Result};

use crate::{
    setup,
    shell::{self, cmd},
};

/// Seconds each fuzz target runs in the suite.
const FUZZ_SECONDS: u64 = 5;

/// Runs the whole suite.
pub fn run(root: &Path, lint: bool, filter: Option<&str>) -> Result<()> {
    setup::run(root)?;
    let env = setup::toolchain_env();
    if lint {
        shell::run(&mut cmd("cargo", &["fmt", "--all", "--check"]))?;
        shell::run(cmd("cargo", &["clippy", "--all-targets", "--", "-D", "warnings"]).envs(env.iter().cloned()))?;
    }
    shell::run(cmd("cargo", &["build", "-p", "gateway", "--bins"]).envs(env.iter().cloned()))?;
    let unit = shell::run_tests(
        cmd(
            "cargo",
            &["test", "-p", "gateway", "-p", "gateway-common", "-p", "xtask"],
        )
        .envs(env.iter().cloned()),
    )?;
    if output_uid() != "0" {
        bail!("the integration tests load eBPF programs and need root; run `cargo xtask test` as root");
    }
    let bin = crate::target_dir(root).join("debug/interlock");
    // --tests: the harness crate has no doc tests; integration tests run one at a time.
    let mut it = cmd(
        "cargo",
        &["test", "-p", "interlock-tests", "--tests", "--", "--test-threads=1"],
    );
    if let Some(f) = filter {
        it.arg(f);
    }
    it.envs(env.iter().cloned()).env("INTERLOCK_BIN", bin);
    let integration = shell::run_tests(&mut it)?;
    // Each fuzz target briefly from its corpus: a parser regression on
    // agent or upstream bytes fails the suite.
    crate::fuzz::run(root, FUZZ_SECONDS, &[])?;
    println!(
        "xtask: unit {} passed, integration {} passed, {} fuzz targets ran {FUZZ_SECONDS} s each without a finding",
        unit.0,
        integration.0,
        crate::fuzz::TARGETS.len()
    );
    println!("{} passed, {} failed", unit.0 + integration.0, unit.1 + integration.1);
    Ok(())
}

fn output_uid() -> String {
    shell::output("id", &["-u"]).unwrap_or_default()
}
