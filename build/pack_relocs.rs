//! Links the binaries with packed relative relocations (`-z pack-relative-relocs`, DT_RELR,
//! glibc 2.36+) on Linux with glibc: a binary with wasm engines in it holds over 100,000
//! relative relocations, which the dynamic loader otherwise applies one 24-byte record at a
//! time at every start (a new process per `wasmlet run`), reading megabytes of them; packed,
//! they are a few kilobytes of bitmaps. The binary stays position-independent (ASLR). The
//! shim's binaries, started three times per task, are linked position-dependent instead
//! (`crates/shim/build.rs`).
fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
