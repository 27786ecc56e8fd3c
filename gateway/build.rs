//! Builds the kernel programs (gateway-ebpf) with the nightly toolchain and
//! bpf-linker, so the `interlock` binary carries its own eBPF object.
use anyhow::{anyhow, Context as _};

fn main() -> anyhow::Result<()> {
    // Read when the script runs, not baked in when it is compiled: a target
    // directory shared by clones at different paths reuses this script.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR is not set")?;
    let metadata = std::path::Path::new(&manifest_dir).join("../gateway-ebpf");
    let root_dir = metadata.canonicalize().context("gateway-ebpf directory is missing")?;
    let root_dir = root_dir
        .to_str()
        .ok_or_else(|| anyhow!("gateway-ebpf path is not UTF-8"))?;
    let package = aya_build::Package {
        name: "gateway-ebpf",
        root_dir,
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::default())
        .context("building the eBPF programs failed; run `cargo xtask setup` first")
}
