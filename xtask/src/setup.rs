//! `cargo xtask setup`: everything a fresh machine of this kind needs, done
//! only where missing. Facts behind it: shared notes on the eBPF toolchain
//! (aya pins, bpf-linker linked against the nightly's own LLVM).
use std::{fs, path::Path, path::PathBuf};

use anyhow::{bail, Context as _, Result};

use crate::shell::{self, cmd, output};

/// Debian packages: test clients and diagnostics.
const APT_PACKAGES: &[(&str, &str)] = &[
    ("curl", "curl"),
    ("ip", "iproute2"),
    ("unshare", "util-linux"),
    ("bpftool", "bpftool"),
    // NAT REDIRECT rules, for the non-eBPF way in (tests and bench).
    ("iptables", "iptables"),
    // Debian's own python runs the clients that tests start as other users.
    ("/usr/bin/python3", "python3"),
    // HTTP/2 frames for the agent-side clients (GOAWAY at the drain).
    ("/usr/lib/python3/dist-packages/h2/__init__.py", "python3-h2"),
    // psycopg for agents run as `nobody` (Debian's 3.1, which has pipelines).
    ("/usr/lib/python3/dist-packages/psycopg/__init__.py", "python3-psycopg"),
    // A real PostgreSQL server (tests start their own clusters) and its clients.
    ("/usr/lib/postgresql/*/bin/initdb", "postgresql"),
    ("psql", "postgresql-client"),
    ("pgbench", "postgresql-contrib"),
    // A real DNS resolver for tests (on 127.x addresses only) and a real client.
    ("dnsmasq", "dnsmasq-base"),
    ("dig", "bind9-dnsutils"),
];

/// Python packages for the test clients, pinned (distribution, version).
const PIP_PACKAGES: &[(&str, &str)] = &[
    ("httpx", "0.28.1"),
    ("openai", "3.57.0"),
    ("openai-agents", "0.24.0"),
    ("asyncpg", "0.32.0"),
    ("psycopg", "3.3.9"),
    ("psycopg-binary", "3.3.9"),
    ("PyJWT", "2.15.1"),
    ("cryptography", "48.0.0"),
];

const BPF_LINKER_VERSION: &str = "0.13.0";

/// Runs every setup step.
pub fn run(_root: &Path) -> Result<()> {
    apt()?;
    rust_src()?;
    bpf_linker()?;
    pip()?;
    eprintln!("xtask: setup complete");
    Ok(())
}

/// The peers and load generators `cargo xtask bench` compares against.
pub const BENCH_PACKAGES: &[(&str, &str)] = &[
    ("/usr/sbin/nginx", "nginx-light"),
    ("/usr/sbin/haproxy", "haproxy"),
    ("/usr/sbin/pgbouncer", "pgbouncer"),
    ("wrk", "wrk"),
    ("h2load", "nghttp2-client"),
    ("/usr/bin/mitmdump", "mitmproxy"),
    ("dnsperf", "dnsperf"),
];

/// What `cargo xtask flamegraph` samples with.
pub const PROFILE_PACKAGES: &[(&str, &str)] = &[("perf", "linux-perf")];

/// `$CARGO_HOME`, or `~/.cargo`.
fn cargo_home() -> PathBuf {
    std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into())).join(".cargo"))
}

/// oha, the open-loop HTTP load generator with coordinated-omission
/// correction (`--latency-correction`); not packaged by Debian.
const OHA_VERSION: &str = "1.16.0";

/// Installs oha from crates.io (once per version) and returns its path.
pub fn oha() -> Result<PathBuf> {
    crate_binary("oha", OHA_VERSION, "oha")
}

/// inferno, which folds `perf script` stacks and draws them as a flame
/// graph (a Rust port of Brendan Gregg's scripts); not packaged by Debian.
const INFERNO_VERSION: &str = "0.12.8";

/// Installs inferno from crates.io (once per version) and returns the
/// directory holding `inferno-collapse-perf` and `inferno-flamegraph`.
pub fn inferno() -> Result<PathBuf> {
    let bin = crate_binary("inferno", INFERNO_VERSION, "inferno-flamegraph")?;
    Ok(bin.parent().map(Path::to_path_buf).unwrap_or_default())
}

/// `cargo install`s `krate` at `version` unless `binary` (in cargo's bin
/// directory) says it is that version, or cargo lists it installed (not
/// every binary has `--version`); returns the binary's path.
pub fn crate_binary(krate: &str, version: &str, binary: &str) -> Result<PathBuf> {
    let bin = cargo_home().join("bin").join(binary);
    let says = || output(bin.to_str().unwrap_or(binary), &["--version"]).is_some_and(|v| v.contains(version));
    let listed = || {
        output("cargo", &["install", "--list"])
            .is_some_and(|list| list.lines().any(|l| l.starts_with(&format!("{krate} v{version}:"))))
    };
    if bin.exists() && (says() || listed()) {
        return Ok(bin);
    }
    shell::run(&mut cmd(
        "cargo",
        &["install", krate, "--locked", "--force", "--version", version],
    ))?;
    Ok(bin)
}

fn apt() -> Result<()> {
    install_packages(APT_PACKAGES)
}

/// Installs the Debian packages of the `(binary, package)` pairs whose binary is missing.
pub fn install_packages(packages: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        // A name is looked up on PATH; a path (which may hold a glob) must exist.
        .filter(|(bin, _)| output("sh", &["-c", &format!("command -v {bin} || ls {bin}")]).is_none())
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!("Debian packages missing ({}); run setup as root", missing.join(" "));
    }
    shell::run(&mut cmd("apt-get", &["update", "-q"]))?;
    let mut install = cmd("apt-get", &["install", "-y", "-q", "--no-install-recommends"]);
    install.args(&missing).env("DEBIAN_FRONTEND", "noninteractive");
    shell::run(&mut install)
}

fn rust_src() -> Result<()> {
    let installed = output(
        "rustup",
        &["component", "list", "--toolchain", "nightly", "--installed"],
    )
    .unwrap_or_default();
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    shell::run(&mut cmd(
        "rustup",
        &["component", "add", "rust-src", "--toolchain", "nightly"],
    ))
}

/// The directory bpf-linker's build script is pointed at: lib/ holds two
/// links to the nightly's libLLVM, one named for linking, one by SONAME.
fn llvm_prefix() -> Result<PathBuf> {
    let sysroot =
        output("rustc", &["+nightly", "--print", "sysroot"]).context("no nightly toolchain (rustc +nightly)")?;
    let lib = Path::new(&sysroot).join("lib");
    let libllvm = fs::read_dir(&lib)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libLLVM.so."))
        })
        .with_context(|| format!("no libLLVM.so.* in {}", lib.display()))?;
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let prefix = PathBuf::from(home).join(".cache/interlock/llvm");
    let prefix_lib = prefix.join("lib");
    fs::create_dir_all(&prefix_lib)?;
    let soname = libllvm.file_name().expect("file name").to_owned();
    for name in [std::ffi::OsString::from("libLLVM.so"), soname] {
        let link = prefix_lib.join(name);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&libllvm, &link)?;
    }
    Ok(prefix)
}

fn bpf_linker() -> Result<()> {
    // Keyed on the nightly: bpf-linker breaks if its libLLVM changes name.
    let nightly = output("rustc", &["+nightly", "-vV"]).context("no nightly toolchain")?;
    let cargo_home = cargo_home();
    let stamp = cargo_home.join("interlock-bpf-linker.stamp");
    let wanted = format!("{BPF_LINKER_VERSION}\n{nightly}");
    let version_ok = output("bpf-linker", &["--version"]).is_some_and(|v| v.contains(BPF_LINKER_VERSION));
    let prefix = llvm_prefix()?;
    if version_ok && fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) {
        return Ok(());
    }
    let mut install = cmd(
        "cargo",
        &[
            "install",
            "bpf-linker",
            "--locked",
            "--force",
            "--version",
            BPF_LINKER_VERSION,
            "--no-default-features",
            "--features",
            "llvm-22",
        ],
    );
    install
        .env("LLVM_PREFIX", &prefix)
        .env("CARGO_PROFILE_RELEASE_DEBUG", "0");
    shell::run(&mut install)?;
    fs::write(&stamp, wanted)?;
    Ok(())
}

fn pip() -> Result<()> {
    let wanted: Vec<String> = PIP_PACKAGES
        .iter()
        .filter(|(dist, version)| {
            let check = format!("import importlib.metadata as m; print(m.version('{dist}'))");
            shell::output("python3", &["-c", &check]).as_deref() != Some(*version)
        })
        .map(|(dist, version)| format!("{dist}=={version}"))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let mut install = cmd(
        "python3",
        &["-m", "pip", "install", "-q", "--disable-pip-version-check"],
    );
    install.args(&wanted);
    shell::run(&mut install)
}

fn is_root() -> bool {
    output("id", &["-u"]).as_deref() == Some("0")
}

/// Environment for cargo builds that compile the eBPF programs.
pub fn toolchain_env() -> Vec<(String, String)> {
    let path = std::env::var("PATH").unwrap_or_default();
    let cargo_bin = cargo_home().join("bin").display().to_string();
    vec![("PATH".into(), format!("{cargo_bin}:{path}"))]
}
