//! Running WebAssembly containers with wasmtime (and wasmer, with the `wasmer` feature).
//!
//! Owns the shared engines, the compile cache and the execution of one container (module or
//! component): argv, env, preopened directories, stdio to CRI-format log files, exit status,
//! memory and time limits, kill. Knows nothing of Kubernetes or registries.
//!
//! ```no_run
//! # async fn demo() -> wasmlet_runtime::Result<()> {
//! use wasmlet_runtime::{ContainerSpec, LogConfig, Runtime, RuntimeConfig, Stdio};
//!
//! let runtime = Runtime::new(RuntimeConfig::default())?; // one per process
//! let program = runtime.load_file("hello.wat".as_ref())?;
//! let spec = ContainerSpec {
//!     args: vec!["hello.wasm".into()],
//!     stdio: Stdio { log: Some(LogConfig::new("/tmp/hello/0.log")), ..Stdio::default() },
//!     ..ContainerSpec::default()
//! };
//! let status = runtime.run(&program, spec).await?;
//! println!("{} {}", status.code, status.reason);
//! # Ok(()) }
//! ```
//!
//! # Core concepts
//! - [`Runtime`]: one per process. The engines built in, behind the [`Engine`] seam
//!   ([`engine`]): wasmtime, the default (one wasmtime `Engine` with async and epoch
//!   interruption, one epoch ticker thread, the WASI linkers, the [`CompileCache`], and the
//!   instance allocator: pooling with copy-on-write memory images when the host allows it,
//!   else on-demand); wasmer for WASI preview 1 modules, made on first use. A program runs on
//!   the engine that loaded it ([`Runtime::with_engine`] chooses).
//! - [`Program`]: a loaded `.wasm`/`.wat` (preview 1 module, `wasi:cli/run` component or
//!   `wasi:http` component), compiled once and instantiated many times. A big program never
//!   compiled before starts on baseline code (wasmtime's Winch compiler, [`Tier::Baseline`])
//!   while Cranelift compiles it; Cranelift's code then takes over for new instances and goes
//!   to the compile cache ([`Compilers`]).
//! - [`ContainerSpec`]: argv, env, working directory, [`Preopen`]s, [`Stdio`], [`Limits`], and
//!   for a component the [`Network`] its `wasi:sockets` reach: TCP and UDP, binding and
//!   listening only on the pod's IP ([`sockets`]); its names resolved by the pod's resolver
//!   ([`dns`]: nameservers, search domains, hosts entries, queried from the pod's namespace),
//!   for `wasi:sockets` lookups and outgoing `wasi:http` requests alike.
//! - [`Container`]: a running instance (a tokio task, not a thread): [`Container::wait`],
//!   [`Container::stop`], [`Container::kill`], ending in an [`ExitStatus`]. A command is
//!   started with [`Runtime::start`]; a `wasi:http` component is served as a container with
//!   [`Runtime::start_http`] (one instance per request, until stopped: exit code 0).
//!   [`Container::usage`] tells the CPU time its guest has run and the memory its instances
//!   hold now ([`Usage`]), for resource metrics.
//!
//! # Exit codes
//! The guest's own code (`proc_exit(3)` is 3; preview 1 `proc_exit` with a code of 126 or more is
//! refused by WASI and so is a trap); [`TRAP_EXIT_CODE`] (134) for a trap;
//! [`KILLED_EXIT_CODE`] (137) for `OOMKilled`, `DeadlineExceeded` and `Killed`;
//! [`TERMINATED_EXIT_CODE`] (143, reason `Error`) for a command ended by a stop request
//! (see [`Container::stop`]: the one termination rule of `wasmlet run`, the node and the
//! shim).
#![deny(missing_docs)]

pub mod budget;
pub mod cache;
mod container;
pub mod cpu;
pub mod dns;
pub mod engine;
mod exit;
mod http;
pub mod log;
mod lookup;
mod optimizer;
mod outgoing;
mod program;
mod runtime;
pub mod sockets;
mod spec;
mod state;
mod tee;
mod usage;
mod wasm;
#[cfg(feature = "wasmer")]
mod wasmer_engine;
mod wasmtime_engine;

pub use cache::CompileCache;
pub use container::{COMMAND_STOP_GRACE, Container};
pub use dns::{DnsConfig, LookupError, PodResolver};
pub use engine::{Engine, EngineKind};
pub use exit::{ExitReason, ExitStatus, KILLED_EXIT_CODE, TERMINATED_EXIT_CODE, TRAP_EXIT_CODE};
pub use log::LogConfig;
pub use program::{Program, ProgramKind, Tier, is_component, to_binary};
pub use runtime::{Allocator, AllocatorChoice, Compilers, Error, Result, Runtime, RuntimeConfig};
pub use sockets::Network;
pub use spec::{ContainerSpec, Limits, PinnedDir, Preopen, Stdio};
pub use tokio_util::sync::CancellationToken;
pub use usage::Usage;
pub use wasm::Wasm;

/// `<engine>://<version>` of the default engine, wasmtime, e.g. `wasmtime://48.0.8` (see
/// [`EngineKind::runtime_version`] for the others).
pub fn engine_version() -> String {
    format!("wasmtime://{}", wasmtime_environ::VERSION)
}
