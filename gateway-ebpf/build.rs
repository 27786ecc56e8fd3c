//! Rebuild when bpf-linker changes: the object it links is part of the output.
fn main() {
    if let Ok(path) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
