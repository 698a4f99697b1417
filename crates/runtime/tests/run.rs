//! The runtime's behaviour tests (`suite/modules.rs`, `suite/run.rs`) on Cranelift's code, as programs run once
//! compiled or loaded from the compile cache.

mod common;
#[path = "suite/helpers.rs"]
mod helpers;
#[path = "suite/modules.rs"]
mod modules;
#[path = "suite/run.rs"]
mod suite;

/// The engine of the suite's runtime.
const ENGINE: wasmlet_runtime::EngineKind = wasmlet_runtime::EngineKind::Wasmtime;

/// The compilers of the suite's runtime.
const COMPILERS: wasmlet_runtime::Compilers = wasmlet_runtime::Compilers::Optimizing;
/// The code its programs are loaded with.
const TIER: wasmlet_runtime::Tier = wasmlet_runtime::Tier::Optimized;
