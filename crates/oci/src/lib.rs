//! WebAssembly distribution through OCI registries.
//!
//! Owns image references, the wasm packaging formats, the registry client with its
//! authentication, and the content-addressed local store. Knows nothing of wasmtime or
//! Kubernetes.
#![deny(missing_docs)]

pub mod auth;
pub mod client;
pub mod digest;
pub mod format;
pub mod layers;
pub mod layout;
pub mod pull;
pub mod push;
pub mod reference;
pub mod store;
pub mod wasm;

pub use digest::Digest;
pub use reference::Reference;
