//! WebAssembly distribution through OCI registries.
//!
//! Owns image references, the wasm packaging formats, the registry client with its
//! authentication, and the content-addressed local store. Knows nothing of wasmtime or
//! Kubernetes.
