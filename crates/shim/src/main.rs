//! `containerd-shim-wasmlet-v1`: the containerd runtime shim of wasmlet (runtime type
//! `io.containerd.wasmlet.v1`). See the `wasmlet_shim` crate for what it does.

#[tokio::main]
async fn main() {
    wasmlet_shim::run().await;
}
