//! wasmtime, the default engine: one `Engine` (async, epoch interruption, the chosen
//! instance allocator), its epoch ticker thread, the WASI linkers, the compile cache, and the
//! baseline compiler's engine a big program starts on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::net::TcpListener;
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig,
    RegallocAlgorithm, Strategy,
};

use crate::cache::CompileCache;
use crate::engine::EngineKind;
use crate::runtime::{
    Allocator, AllocatorChoice, Compilers, Error, Result, RuntimeConfig, describe,
};
use crate::state::{ComponentState, ModuleState};
use crate::wasm::Wasm;
use crate::{Container, ContainerSpec, Program};

/// The wasmtime engine of a [`Runtime`](crate::Runtime): its engine, epoch ticker thread,
/// linkers and compile cache. Cheap to clone; the ticker stops when the last clone is dropped.
#[derive(Clone)]
pub(crate) struct Wasmtime {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) engine: Engine,
    pub(crate) allocator: Allocator,
    pub(crate) cache: Option<CompileCache>,
    pub(crate) linkers: Linkers,
    /// The baseline compiler's engine, made on the first fast start (`None`: it could not
    /// be made).
    baseline: Arc<OnceLock<Option<Baseline>>>,
    pub(crate) config: RuntimeConfig,
    /// The programs loaded and still in use, by digest: a load of the same wasm shares their
    /// code instead of mapping another copy (see [`Wasmtime::load`]).
    pub(crate) loaded: Mutex<HashMap<String, crate::program::Loaded>>,
    /// Signalled each time a wasi:http request's instance gives its pool slots back: a
    /// request waiting for room in a full pool tries again (see [`Wasmtime::slot_wait`]).
    freed: tokio::sync::Notify,
    ticker_stop: Arc<AtomicBool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

impl Wasmtime {
    /// Says that an instance gave its pool slots back: wakes one request waiting for room.
    pub(crate) fn slot_freed(&self) {
        self.inner.freed.notify_one();
    }

    /// Waits until an instance gives its pool slots back, or `pause` at most (slots freed by
    /// other containers' instances are not signalled).
    pub(crate) async fn slot_wait(&self, pause: Duration) {
        let _ = tokio::time::timeout(pause, self.inner.freed.notified()).await;
    }

    /// Builds the engine (async, epoch interruption, the chosen allocator), starts the epoch
    /// ticker thread and prepares the WASI linkers.
    pub(crate) fn new(config: RuntimeConfig) -> Result<Wasmtime> {
        let (engine, allocator) = build_engine(&config)?;
        let cache = config
            .cache_dir
            .as_ref()
            .map(|d| CompileCache::new(d, &engine))
            .transpose()?;
        let linkers = Linkers::new(&engine);
        let baseline = Arc::new(OnceLock::new());
        let ticker_stop = start_ticker(engine.clone(), baseline.clone(), config.epoch_tick)?;
        let inner = Inner {
            engine,
            allocator,
            cache,
            linkers,
            baseline,
            config,
            loaded: Mutex::default(),
            freed: tokio::sync::Notify::new(),
            ticker_stop,
        };
        Ok(Wasmtime {
            inner: Arc::new(inner),
        })
    }

    /// The shared engine.
    pub(crate) fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The instance allocator in use.
    pub(crate) fn allocator(&self) -> Allocator {
        self.inner.allocator
    }

    /// The compile cache, if configured.
    pub(crate) fn cache(&self) -> Option<&CompileCache> {
        self.inner.cache.as_ref()
    }

    /// The baseline engine to start a never-compiled program of `len` bytes on, if the
    /// [`Compilers`] say so and the baseline engine exists. Never with fuel metering, which
    /// the baseline compiler does not do.
    pub(crate) fn fast_start(&self, len: usize) -> Option<&Baseline> {
        let config = &self.inner.config;
        let wanted = match config.compilers {
            Compilers::Tiered { min_bytes } => len >= min_bytes,
            Compilers::Optimizing => false,
            Compilers::Baseline => true,
        };
        if !wanted || config.fuel {
            return None;
        }
        let baseline = self.inner.baseline.get_or_init(|| {
            Baseline::new(config)
                .inspect_err(|err| tracing::warn!("no fast start: {err}"))
                .ok()
        });
        baseline.as_ref()
    }
}

impl crate::engine::Engine for Wasmtime {
    fn kind(&self) -> EngineKind {
        EngineKind::Wasmtime
    }

    fn load(&self, wasm: &Wasm) -> Result<Program> {
        Wasmtime::load(self, wasm)
    }

    fn start(&self, program: &Program, spec: ContainerSpec) -> Result<Container> {
        Wasmtime::start(self, program, spec)
    }

    fn start_http(
        &self,
        program: &Program,
        spec: ContainerSpec,
        listeners: Vec<TcpListener>,
    ) -> Result<Container> {
        Wasmtime::start_http(self, program, spec, listeners)
    }
}

fn build_engine(config: &RuntimeConfig) -> Result<(Engine, Allocator)> {
    if config.allocator != AllocatorChoice::OnDemand {
        match Engine::new(&engine_config(config, true)) {
            Ok(engine) => {
                tracing::info!(
                    max_instances = config.max_instances,
                    "using the pooling instance allocator with copy-on-write memory images"
                );
                return Ok((engine, Allocator::Pooling));
            }
            Err(err) if config.allocator == AllocatorChoice::Auto => {
                tracing::warn!(
                    "pooling allocator unavailable ({err:#}); using on-demand allocation"
                );
            }
            Err(err) => return Err(Error::Engine(describe(&err))),
        }
    }
    let engine =
        Engine::new(&engine_config(config, false)).map_err(|e| Error::Engine(describe(&e)))?;
    tracing::info!("using the on-demand instance allocator");
    Ok((engine, Allocator::OnDemand))
}

fn engine_config(config: &RuntimeConfig, pooling: bool) -> Config {
    let mut c = Config::new();
    c.epoch_interruption(true)
        .consume_fuel(config.fuel)
        .memory_init_cow(true);
    if pooling {
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool_config(config)));
    }
    c
}

fn pool_config(config: &RuntimeConfig) -> PoolingAllocationConfig {
    let n = config.max_instances.max(1);
    let mut pool = PoolingAllocationConfig::new();
    // A core instance's place in the pool is only a count (its state is allocated with it),
    // so it costs nothing to allow many: a component made by a language toolchain links a
    // dozen core modules (componentize-py's libc, libpython, its runtime, the adapter, ...).
    pool.total_component_instances(n)
        .total_core_instances(n.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
        .total_memories(n.saturating_mul(2))
        .total_tables(n.saturating_mul(4))
        .total_stacks(n)
        .max_memory_size(usize::try_from(config.max_memory_bytes).unwrap_or(usize::MAX));
    // A freed slot is reset for its next instance in place: its lowest KEEP_RESIDENT_MEMORY
    // bytes are rewritten from the memory image (zeros past it), and only what lies beyond is
    // unmapped with madvise. An unmapped page costs a fault when the next instance touches
    // it, and in a multi-threaded process each fault on an image page (copy-on-write) and
    // each madvise flushes the TLB of every core; a wasi:http server frees a slot per request.
    // wasmtime's PAGEMAP_SCAN alternative (rewrite only the pages found dirty) is off: 48.0.8
    // stops at 32 dirty regions and unmaps everything after them (a Python component
    // dirties a hundred, and faulted 226 times a request), and it looks only at present
    // pages, so a dirtied page swapped out would reach the slot's next instance.
    pool.linear_memory_keep_resident(KEEP_RESIDENT_MEMORY)
        .table_keep_resident(KEEP_RESIDENT_TABLE)
        .pagemap_scan(wasmtime::Enabled::No)
        // Reuse the slots a program used last before taking cold ones, so what stays
        // resident is bounded by the instances that ran at once, not by the pool's size.
        .max_unused_warm_slots(0);
    pool
}

/// The core instances the pool admits per component instance (see [`pool_config`]).
const CORE_INSTANCES_PER_COMPONENT: u32 = 32;

/// The bytes of a pooled linear memory reset in place rather than unmapped (see
/// [`pool_config`]); a slot keeps at most this much resident between two instances. The
/// memories of the big toolchain components fit: JavaScript's (jco) is 9 MiB, Python's
/// (componentize-py) starts at 12 MiB and grows during a request (kept at 12 MiB it still
/// faulted). Rewriting them costs a request about 0.7 ms here, less than the faults it saves.
const KEEP_RESIDENT_MEMORY: usize = 16 << 20;
/// The same for a pooled table.
const KEEP_RESIDENT_TABLE: usize = 64 << 10;

/// The WASI linkers of one engine, each made when first asked for: a process that runs
/// only preview 1 modules (a shim running a command) never builds the component linker,
/// the larger of the two (WASI preview 2, wasi:http and name lookups).
pub(crate) struct Linkers {
    engine: Engine,
    module: OnceLock<wasmtime::Linker<ModuleState>>,
    component: OnceLock<wasmtime::component::Linker<ComponentState>>,
}

impl Linkers {
    fn new(engine: &Engine) -> Linkers {
        Linkers {
            engine: engine.clone(),
            module: OnceLock::new(),
            component: OnceLock::new(),
        }
    }

    /// The preview 1 linker of modules.
    pub(crate) fn module(&self) -> Result<&wasmtime::Linker<ModuleState>> {
        if let Some(linker) = self.module.get() {
            return Ok(linker);
        }
        let mut linker = wasmtime::Linker::new(&self.engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |s: &mut ModuleState| &mut s.wasi)
            .map_err(engine_err)?;
        Ok(self.module.get_or_init(|| linker))
    }

    /// The linker of components: WASI preview 2, wasi:http and name lookups.
    pub(crate) fn component(&self) -> Result<&wasmtime::component::Linker<ComponentState>> {
        if let Some(linker) = self.component.get() {
            return Ok(linker);
        }
        let mut linker = wasmtime::component::Linker::new(&self.engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(engine_err)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(engine_err)?;
        crate::lookup::add_to_linker(&mut linker).map_err(engine_err)?;
        Ok(self.component.get_or_init(|| linker))
    }
}

fn engine_err(e: wasmtime::Error) -> Error {
    Error::Engine(describe(&e))
}

/// The baseline compiler's engine (Winch) and its linkers: the code a big program starts on
/// while Cranelift compiles it. Its instances are allocated on demand: they live only until
/// the optimised code takes over, so no pool is reserved for them.
pub(crate) struct Baseline {
    pub(crate) engine: Engine,
    pub(crate) linkers: Linkers,
}

impl Baseline {
    fn new(config: &RuntimeConfig) -> Result<Baseline> {
        let mut c = engine_config(config, false);
        // Cranelift still makes this engine's trampolines (one or two per function a
        // component's tables or exports reach: thousands in a Python component); unoptimised,
        // with the linear-time register allocator, they cost a fifth less of the start.
        c.strategy(Strategy::Winch)
            .cranelift_opt_level(OptLevel::None)
            .cranelift_regalloc_algorithm(RegallocAlgorithm::SinglePass);
        let engine = Engine::new(&c).map_err(|e| Error::Engine(describe(&e)))?;
        let linkers = Linkers::new(&engine);
        Ok(Baseline { engine, linkers })
    }
}

/// Starts the one epoch ticker thread of this runtime (it ticks the baseline engine too,
/// once there is one); set the returned flag to stop it.
fn start_ticker(
    engine: Engine,
    baseline: Arc<OnceLock<Option<Baseline>>>,
    tick: Duration,
) -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::Builder::new()
        .name("wasmlet-epoch".into())
        .spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(tick);
                engine.increment_epoch();
                if let Some(Some(baseline)) = baseline.get() {
                    baseline.engine.increment_epoch();
                }
            }
        })
        .map_err(|e| Error::Engine(format!("cannot start the epoch ticker thread: {e}")))?;
    Ok(stop)
}
