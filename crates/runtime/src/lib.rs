//! Running WebAssembly containers with wasmtime.
//!
//! Owns the shared engine, the compile cache and the execution of one container (module or
//! component). Knows nothing of Kubernetes or registries.
