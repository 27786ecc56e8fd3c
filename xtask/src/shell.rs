//! Running commands with their command line echoed and failures explained.
use std::process::Command;

use anyhow::{bail, Context as _, Result};

/// A command with arguments.
pub fn cmd(program: &str, args: &[&str]) -> Command {
    let mut c = Command::new(program);
    c.args(args);
    c
}

/// Runs a command, inheriting stdio; fails on a non-zero exit.
pub fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: $ {}", show(cmd));
    let status = cmd.status().with_context(|| format!("starting {}", show(cmd)))?;
    if !status.success() {
        bail!("{} failed: {status}", show(cmd));
    }
    Ok(())
}

/// Runs a command and returns its trimmed stdout, or None if it failed or is missing.
pub fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs a cargo test command, echoing its output, and returns (passed, failed)
/// summed over every `test result:` line. Fails on a non-zero exit.
pub fn run_tests(cmd: &mut Command) -> Result<(u64, u64)> {
    use std::io::{BufRead, BufReader};
    eprintln!("xtask: $ {}", show(cmd));
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", show(cmd)))?;
    let (mut passed, mut failed) = (0, 0);
    for line in BufReader::new(child.stdout.take().expect("piped stdout")).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            passed += count(rest, " passed");
            failed += count(rest, " failed");
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("{} failed: {status}", show(cmd));
    }
    Ok((passed, failed))
}

/// The number before `label` in a `test result:` line.
fn count(line: &str, label: &str) -> u64 {
    line.split(';')
        .find_map(|part| {
            part.trim()
                .strip_suffix(label.trim_start())
                .map(|n| n.trim().rsplit(' ').next().unwrap_or("").parse().unwrap_or(0))
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_come_from_cargo_summary_lines() {
        let line = "FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.41s";
        assert_eq!(super::count(line, " passed"), 3);
        assert_eq!(super::count(line, " failed"), 2);
        assert_eq!(super::count("ok. 19 passed; 0 failed; 0 ignored", " passed"), 19);
    }
}
