//! The runtime's behaviour tests (`suite/run.rs`) on Cranelift's code, as programs run once
//! compiled or loaded from the compile cache.

mod common;
#[path = "suite/run.rs"]
mod suite;

/// The compilers of the suite's runtime.
const COMPILERS: wasmlet_runtime::Compilers = wasmlet_runtime::Compilers::Optimizing;
/// The code its programs are loaded with.
const TIER: wasmlet_runtime::Tier = wasmlet_runtime::Tier::Optimized;
