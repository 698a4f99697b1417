//! Links the shim binaries position-dependent (`-no-pie`) on Linux with glibc, as containerd,
//! its runc shim and Debian's runc are. containerd starts a shim binary three times per task
//! (`start`, the daemon it spawns, `delete`); a position-independent one with wasm engines in
//! it has 1.7 MiB of `.data.rel.ro` that the dynamic loader relocates, page by copy-on-write
//! page, at every start: 3.2 ms of CPU and 594 page faults per start, against 1.4 ms and 149
//! position-dependent (`perf stat -r 30 containerd-shim-wasmlet-v1 -v`). The price is that the
//! binary's own code and data sit at a fixed address (its libraries, stacks, heap and the wasm
//! code it compiles stay randomized). `wasmlet` itself stays position-independent
//! (`build/pack_relocs.rs`).
fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
