//! The process-wide runtime: the engines built in (wasmtime always, wasmer with the `wasmer`
//! feature), each made once and shared, and the one a load uses unless told otherwise.

use std::path::{Path, PathBuf};
use std::sync::Arc;
#[cfg(feature = "wasmer")]
use std::sync::OnceLock;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cache::{self, CompileCache};
use crate::engine::{Engine, EngineKind};
use crate::log;
use crate::wasm::Wasm;
use crate::wasmtime_engine::Wasmtime;
use crate::{Container, ContainerSpec, ExitStatus, Program};

/// Errors of loading and running programs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The engine could not be created with the given configuration.
    #[error("cannot create the wasm engine: {0}")]
    Engine(String),
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A stored wasm file does not hold the wasm its digest names (altered on disk).
    #[error(
        "{path} is not the wasm it is stored as: its digest is {actual}, not {expected} (the \
         file was altered after it was stored: remove the image and pull it again)"
    )]
    DigestMismatch {
        /// The file.
        path: PathBuf,
        /// The digest it is stored as.
        expected: String,
        /// The digest of what it holds.
        actual: String,
    },
    /// The bytes are neither binary WebAssembly nor WAT text.
    #[error("not a WebAssembly file: {0} (expected a .wasm module or component, or .wat text)")]
    NotWasm(String),
    /// Compiling (or validating) the wasm failed.
    #[error("cannot compile the WebAssembly program: {0}")]
    Compile(String),
    /// The program imports something no wasmlet host provides.
    #[error(
        "module imports `{module}.{name}`, which wasmlet does not provide (wasmlet provides WASI: \
         `wasi_snapshot_preview1` for modules, `wasi:*` interfaces for components)"
    )]
    UnsupportedImport {
        /// The import's module (or, for components, the interface).
        module: String,
        /// The import's field name.
        name: String,
    },
    /// The program has no entry point wasmlet knows how to call.
    #[error("{0}")]
    NoEntryPoint(String),
    /// Linking the imports failed for another reason (e.g. a WASI function with a wrong type).
    #[error("cannot link the program's imports: {0}")]
    Link(String),
    /// The compile cache failed.
    #[error(transparent)]
    Cache(#[from] cache::Error),
    /// The log file failed.
    #[error(transparent)]
    Log(#[from] log::Error),
    /// A preopened directory could not be opened.
    #[error(
        "cannot preopen directory {host} as {guest}: {reason} (create it or fix the --dir path)"
    )]
    Preopen {
        /// Host path.
        host: PathBuf,
        /// Guest path.
        guest: String,
        /// Why.
        reason: String,
    },
    /// Setting up an instance failed (e.g. the instance pool is exhausted).
    #[error("cannot start the instance: {0}")]
    Instantiate(String),
    /// The engine cannot do what was asked (e.g. wasmer and components), or was not built in.
    #[error("{0}")]
    Unsupported(String),
    /// Serving HTTP failed.
    #[error("cannot serve HTTP on {addr}: {source}")]
    Serve {
        /// The listen address.
        addr: std::net::SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Formats a wasmtime error with its causes.
pub(crate) fn describe(err: &wasmtime::Error) -> String {
    format!("{err:#}")
}

/// Which instance allocator to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocatorChoice {
    /// Pooling with copy-on-write memory images if the host allows it, else on-demand.
    Auto,
    /// Pooling or fail.
    Pooling,
    /// Allocate every instance on demand (mmap per instance).
    OnDemand,
}

/// The instance allocator in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allocator {
    /// The pooling allocator (slots reserved up front, memory images copy-on-write).
    Pooling,
    /// On-demand allocation.
    OnDemand,
}

/// How to build a [`Runtime`].
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Directory of the compile cache; `None` compiles every load. Default: `None`.
    pub cache_dir: Option<PathBuf>,
    /// The instance allocator. Default: [`AllocatorChoice::Auto`].
    pub allocator: AllocatorChoice,
    /// With pooling: how many instances may be alive at once. Default: 1000.
    pub max_instances: u32,
    /// With pooling: the largest linear memory of one instance. Default: 4 GiB.
    pub max_memory_bytes: u64,
    /// With pooling: how long a wasi:http request finding every instance slot held waits
    /// for one to be freed before it is answered 503 (with `Retry-After`). Default: 30 s.
    pub pool_wait: Duration,
    /// How often the epoch advances: the latency of kills and deadlines. Default: 10 ms.
    pub epoch_tick: Duration,
    /// Whether fuel metering is on (needed by [`Limits::fuel`](crate::Limits::fuel)).
    /// Default: off (it slows guests down).
    pub fuel: bool,
    /// Which compilers make a program's code. Default: [`Compilers::Tiered`] from 1 MiB.
    pub compilers: Compilers,
    /// The engine programs are loaded with unless told otherwise ([`Runtime::with_engine`]).
    /// Default: [`EngineKind::Wasmtime`].
    pub engine: EngineKind,
}

/// Which compilers make wasmtime's code of a program (see [`Runtime::load`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compilers {
    /// A program of `min_bytes` or more, never compiled before, starts on baseline code
    /// (Winch) while Cranelift compiles it; smaller ones, and any the baseline compiler
    /// cannot compile, wait for Cranelift. The default, from 1 MiB: below it Cranelift
    /// takes well under a second.
    Tiered {
        /// The smallest program (binary wasm bytes) started on baseline code.
        min_bytes: usize,
    },
    /// Cranelift only: every program waits for its optimised code.
    Optimizing,
    /// The baseline compiler only, never optimised nor cached (a program it cannot compile
    /// gets Cranelift's code): for tests of the baseline code, and a quick look at a
    /// program.
    Baseline,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cache_dir: None,
            allocator: AllocatorChoice::Auto,
            max_instances: 1000,
            max_memory_bytes: 4 << 30,
            pool_wait: Duration::from_secs(30),
            epoch_tick: Duration::from_millis(10),
            fuel: false,
            compilers: Compilers::Tiered { min_bytes: 1 << 20 },
            engine: EngineKind::Wasmtime,
        }
    }
}

/// One per process: the engines built in, each made once and shared by every clone, and the
/// one [`Runtime::load`] uses. Cheap to clone. A program runs on the engine that loaded it.
#[derive(Clone)]
pub struct Runtime {
    engines: Arc<Engines>,
    chosen: EngineKind,
}

struct Engines {
    wasmtime: Wasmtime,
    /// wasmer, made on first use (or the reason it could not be).
    #[cfg(feature = "wasmer")]
    wasmer: OnceLock<std::result::Result<crate::wasmer_engine::Wasmer, String>>,
    #[cfg_attr(not(feature = "wasmer"), allow(dead_code))]
    config: RuntimeConfig,
}

impl Runtime {
    /// Builds wasmtime's engine (async, epoch interruption, the chosen allocator), starts
    /// its epoch ticker thread and prepares the WASI linkers; and the engine of
    /// [`RuntimeConfig::engine`] if it is another (refused if it is not built in).
    pub fn new(config: RuntimeConfig) -> Result<Runtime> {
        let chosen = config.engine;
        let engines = Engines {
            wasmtime: Wasmtime::new(config.clone())?,
            #[cfg(feature = "wasmer")]
            wasmer: OnceLock::new(),
            config,
        };
        let runtime = Runtime {
            engines: Arc::new(engines),
            chosen,
        };
        runtime.engine(chosen)?;
        Ok(runtime)
    }

    /// The same runtime (same engines, cache and limits), loading programs with `kind`; its
    /// engine is made now if it was not yet. Refused if `kind` is not built in.
    pub fn with_engine(&self, kind: EngineKind) -> Result<Runtime> {
        self.engine(kind)?;
        Ok(Runtime {
            engines: self.engines.clone(),
            chosen: kind,
        })
    }

    /// The engine [`Runtime::load`] uses.
    pub fn chosen(&self) -> EngineKind {
        self.chosen
    }

    /// The engine of `kind`, made on first use.
    pub fn engine(&self, kind: EngineKind) -> Result<&dyn Engine> {
        match kind {
            EngineKind::Wasmtime => Ok(&self.engines.wasmtime),
            EngineKind::Wasmer => self.wasmer(),
        }
    }

    #[cfg(feature = "wasmer")]
    fn wasmer(&self) -> Result<&dyn Engine> {
        let made = self.engines.wasmer.get_or_init(|| {
            crate::wasmer_engine::Wasmer::new(&self.engines.config).map_err(|e| e.to_string())
        });
        match made {
            Ok(wasmer) => Ok(wasmer),
            Err(err) => Err(Error::Engine(err.clone())),
        }
    }

    #[cfg(not(feature = "wasmer"))]
    fn wasmer(&self) -> Result<&dyn Engine> {
        Err(Error::Unsupported(
            "this wasmlet was built without the wasmer engine: rebuild it with `--features wasmer`, or run the program with wasmtime".into(),
        ))
    }

    /// The instance allocator wasmtime uses.
    pub fn allocator(&self) -> Allocator {
        self.engines.wasmtime.allocator()
    }

    /// wasmtime's compile cache, if configured.
    pub fn cache(&self) -> Option<&CompileCache> {
        self.engines.wasmtime.cache()
    }

    /// Loads a program from `.wasm` or `.wat` bytes with the chosen engine: compiles it (or
    /// loads it from the compile cache), checks every import is one wasmlet provides, and
    /// prepares it to be instantiated many times.
    ///
    /// On wasmtime, with [`Compilers::Tiered`] (the default), a big program that is neither
    /// in the cache nor loaded already starts on baseline code (wasmtime's Winch compiler,
    /// [`Tier::Baseline`](crate::Tier::Baseline)) while Cranelift compiles it on a thread of
    /// its own; Cranelift's code then takes over for every new instance and goes to the
    /// cache. Both are the same wasm's code, so the program behaves the same on either; a
    /// program Winch cannot compile waits for Cranelift, as every program does with
    /// [`Compilers::Optimizing`].
    pub fn load(&self, bytes: &[u8]) -> Result<Program> {
        self.load_wasm(&Wasm::from_bytes(bytes)?)
    }

    /// Reads and loads a `.wasm` or `.wat` file (see [`Runtime::load`]).
    pub fn load_file(&self, path: &Path) -> Result<Program> {
        self.load_wasm(&Wasm::read(path)?)
    }

    /// Loads `wasm` (see [`Runtime::load`]); a [`Wasm::stored`] file is read only when it
    /// has to be compiled.
    pub fn load_wasm(&self, wasm: &Wasm) -> Result<Program> {
        self.engine(self.chosen)?.load(wasm)
    }

    /// Starts a container of `program` on the engine that loaded it, as a task on the
    /// current tokio runtime, and returns at once (see [`Engine::start`]).
    pub fn start(&self, program: &Program, spec: ContainerSpec) -> Result<Container> {
        self.engine(program.engine())?.start(program, spec)
    }

    /// Starts serving a `wasi:http` component on `listeners` (see [`Engine::start_http`]).
    pub fn start_http(
        &self,
        program: &Program,
        spec: ContainerSpec,
        listeners: Vec<TcpListener>,
    ) -> Result<Container> {
        self.engine(program.engine())?
            .start_http(program, spec, listeners)
    }

    /// Runs a container to its end (see [`Runtime::start`]).
    pub async fn run(&self, program: &Program, spec: ContainerSpec) -> Result<ExitStatus> {
        Ok(self.start(program, spec)?.wait().await)
    }

    /// Serves `program` (a `wasi:http/incoming-handler` component) on `listener` until
    /// `shutdown` is cancelled, then lets the requests in flight finish. Each request gets a
    /// fresh instance built from `spec` (args, env, preopens, limits; `limits.timeout` bounds
    /// each request); the instances' stdout and stderr all go to `spec.stdio`. See
    /// [`Runtime::start_http`] for the same as a [`Container`]. wasmtime's alone.
    pub async fn serve_http(
        &self,
        program: &Program,
        spec: ContainerSpec,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<()> {
        if program.engine() != EngineKind::Wasmtime {
            return Err(crate::engine::no_http(program.engine()));
        }
        self.engines
            .wasmtime
            .serve_http(program, spec, listener, shutdown)
            .await
    }
}
