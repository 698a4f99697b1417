//! The seam between wasmlet and the WebAssembly engines that run its programs.
//!
//! An [`Engine`] loads a program and starts containers of it; serving `wasi:http` is a
//! capability an engine may lack (the default method refuses, naming the engine that has
//! it). What a container is to its caller (its exit status, stop and kill, its usage, its
//! CRI log) is the same [`Container`] whatever the engine, so the worker, the node and the
//! shim never learn which engine runs a pod. wasmtime is always built in; wasmer is built in
//! with the `wasmer` cargo feature. The engines live in this crate: each keeps its compiled
//! form of a program inside the [`Program`] it returns (`Compiled`).

use std::any::Any;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::runtime::{Error, Result};
use crate::wasm::Wasm;
use crate::{Container, ContainerSpec, Program, Tier};

/// The engines wasmlet knows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum EngineKind {
    /// wasmtime: modules and components (`wasi:cli`, `wasi:http`, `wasi:sockets`), tiered
    /// compilation, the pooling allocator. The default.
    #[default]
    Wasmtime,
    /// wasmer (Cranelift backend, its WASI crate): WASI preview 1 modules.
    Wasmer,
}

impl EngineKind {
    /// Every engine wasmlet knows, built in or not.
    pub const ALL: [EngineKind; 2] = [EngineKind::Wasmtime, EngineKind::Wasmer];

    /// Its name, as in `--engine` and the `wasmlet.dev/engine` annotation.
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Wasmtime => "wasmtime",
            EngineKind::Wasmer => "wasmer",
        }
    }

    /// The version built in (the engine crate's own), or `None` if this build lacks it.
    pub fn version(self) -> Option<&'static str> {
        match self {
            EngineKind::Wasmtime => Some(wasmtime_environ::VERSION),
            #[cfg(feature = "wasmer")]
            EngineKind::Wasmer => Some(crate::wasmer_engine::VERSION),
            #[cfg(not(feature = "wasmer"))]
            EngineKind::Wasmer => None,
        }
    }

    /// The engines this build has.
    pub fn built_in() -> impl Iterator<Item = EngineKind> {
        EngineKind::ALL
            .into_iter()
            .filter(|k| k.version().is_some())
    }

    /// `<name>://<version>`, as a CRI runtime names itself in a Node's
    /// `nodeInfo.containerRuntimeVersion` (e.g. `wasmtime://48.0.8`); `None` if not built in.
    pub fn runtime_version(self) -> Option<String> {
        self.version().map(|v| format!("{}://{v}", self.name()))
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An engine name that is not one wasmlet knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown engine `{0}`: wasmlet runs `wasmtime` or `wasmer`")]
pub struct UnknownEngine(pub String);

impl FromStr for EngineKind {
    type Err = UnknownEngine;

    fn from_str(s: &str) -> std::result::Result<EngineKind, UnknownEngine> {
        EngineKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| UnknownEngine(s.to_owned()))
    }
}

/// One WebAssembly engine: loads programs and starts containers of them.
pub trait Engine: Send + Sync {
    /// Which engine this is.
    fn kind(&self) -> EngineKind;

    /// Compiles (or loads from its compile cache, by its digest) `wasm`, checks its imports
    /// and entry point, and prepares it to be instantiated many times. The bytes of a
    /// [`Wasm::stored`] file are read only if they are compiled. A program this engine cannot
    /// run is refused with an error that says which engine runs it.
    fn load(&self, wasm: &Wasm) -> Result<Program>;

    /// Starts a container of `program` (which this engine loaded) as a task on the current
    /// tokio runtime and returns at once: argv, env, preopens, stdio to its CRI log, its
    /// limits, ending in an exit status. Must be called within a tokio runtime.
    fn start(&self, program: &Program, spec: ContainerSpec) -> Result<Container>;

    /// Serves `program` (a `wasi:http/incoming-handler` component) on every one of
    /// `listeners` as a container, one instance per request, until stopped. By default
    /// refused: the engine does not serve `wasi:http`.
    fn start_http(
        &self,
        program: &Program,
        spec: ContainerSpec,
        listeners: Vec<TcpListener>,
    ) -> Result<Container> {
        let _ = (program, spec, listeners);
        Err(no_http(self.kind()))
    }
}

/// The refusal of an engine that does not serve `wasi:http`.
pub(crate) fn no_http(kind: EngineKind) -> Error {
    Error::Unsupported(format!(
        "{kind} does not serve wasi:http components; run this program with wasmtime \
         (`--engine wasmtime`, or no `wasmlet.dev/engine` annotation)"
    ))
}

/// An engine's own compiled form of a program, kept in the [`Program`] and read back by the
/// engine that made it.
pub(crate) trait Compiled: Send + Sync + 'static {
    /// Itself, to be downcast by its engine.
    fn as_any(&self) -> &dyn Any;

    /// Which compiler's code new instances are made from now.
    fn tier(&self) -> Tier {
        Tier::Optimized
    }

    /// Waits up to `timeout` for optimised code (see [`Program::wait_optimized`]).
    fn wait_optimized(&self, timeout: Duration) -> Tier {
        let _ = timeout;
        self.tier()
    }
}

/// The compiled form of `program`, if an engine of `kind` made it; else the error to give for a program
/// handed to the wrong engine.
pub(crate) fn compiled_of<C: Compiled>(program: &Program, kind: EngineKind) -> Result<&C> {
    program
        .compiled
        .as_any()
        .downcast_ref::<C>()
        .ok_or_else(|| {
            Error::Unsupported(format!(
                "this program was loaded by {}, not {kind}: start it on the runtime's engine that loaded it",
                program.engine()
            ))
        })
}
