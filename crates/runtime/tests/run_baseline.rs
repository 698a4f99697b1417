//! The runtime's behaviour tests (`suite/modules.rs`, `suite/run.rs`) on the baseline compiler's code (Winch),
//! which a big program starts on before Cranelift's code takes over: output, exit codes,
//! traps, memory limits, deadlines and kills, preopens, components and wasi:http behave the
//! same.

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
const COMPILERS: wasmlet_runtime::Compilers = wasmlet_runtime::Compilers::Baseline;
/// The code its programs are loaded with.
const TIER: wasmlet_runtime::Tier = wasmlet_runtime::Tier::Baseline;
