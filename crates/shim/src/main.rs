//! `containerd-shim-wasmlet-v1`: the containerd runtime shim of wasmlet (runtime type
//! `io.containerd.wasmlet.v1`), running wasm on wasmtime. See the `wasmlet_shim` crate for
//! what it does.

fn main() {
    wasmlet_shim::main(wasmlet_runtime::EngineKind::Wasmtime);
}
