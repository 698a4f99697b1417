//! `containerd-shim-wasmlet-wasmer-v1`: the containerd runtime shim of wasmlet running wasm
//! on wasmer (runtime type `io.containerd.wasmlet-wasmer.v1`). See the `wasmlet_shim` crate.

fn main() {
    wasmlet_shim::main(wasmlet_runtime::EngineKind::Wasmer);
}
