//! wasmer, the second engine (feature `wasmer`): WASI preview 1 modules, compiled by
//! wasmer's Cranelift backend and run by its WASI crate, with the semantics the wasmtime
//! engine gives them: argv, env, working directory, preopened directories that never lead
//! out ([`fs`]), stdout and stderr to the CRI log, the guest's exact exit code (126 and up is
//! refused as WASI refuses it: a trap), traps as 134, the memory limit as `OOMKilled` 137
//! ([`memory`]), deadlines and kills of a guest spinning in wasm or blocked in WASI, and the
//! compile cache (wasmer's serialized modules keyed by the wasm's digest and wasmer's
//! version, checked by their own sha256 before they are loaded). Components are wasmtime's:
//! one sent here is refused, naming it.
//!
//! A container's guest runs on a thread of its own (wasmer's calls are blocking); the
//! container's task on tokio supervises it and, to stop it, interrupts its wasm (wasmer's
//! host interrupt) and kills its WASI process (which wakes a guest sleeping or waiting in a
//! WASI call) until the thread ends. Not enforced on wasmer: the CPU limit (a throttle of
//! wasmtime's epochs), the descriptor budget, fuel (refused when asked for).

mod fs;
mod memory;
mod output;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::oneshot;
use wasmer::sys::{BaseTunables, Cranelift, NativeEngineExt, Target};
use wasmer::{
    Extern, Function, FunctionEnv, FunctionEnvMut, Instance, Memory, MemoryType, Module,
    RuntimeError, Store,
};
use wasmer_wasix::runtime::task_manager::tokio::TokioTaskManager;
use wasmer_wasix::virtual_fs::{MountFileSystem, NullFile};
use wasmer_wasix::wasmer_wasix_types::wasi::Signal;
use wasmer_wasix::{
    PluggableRuntime, WasiEnv, WasiError, WasiFunctionEnv, WasiModuleInstanceHandles,
    WasiModuleTreeHandles,
};

use crate::Container;
use crate::cache::CompileCache;
use crate::container::{finish_output, lost_status, spawn_container, stopped_status};
use crate::engine::{Compiled, EngineKind, compiled_of};
use crate::exit::ExitStatus;
use crate::log::{OutputSink, SharedSink, Stream};
use crate::program::{Code, Loading, Program, ProgramKind, Tier};
use crate::runtime::{Error, Result, RuntimeConfig};
use crate::spec::ContainerSpec;
use crate::state::Control;
use crate::usage::Meter;
use crate::wasm::Wasm;

/// The version of wasmer built in.
pub(crate) const VERSION: &str = "7.3.0";

/// How long a stopped guest's thread is interrupted, again and again, before it is left
/// behind (a guest blocked in the host where neither interrupt reaches it).
const STOP_PATIENCE: Duration = Duration::from_secs(10);

/// How often a stopped guest is interrupted until its thread ends.
const INTERRUPT_EVERY: Duration = Duration::from_millis(5);

/// The magic of a compile cache entry: then the sha256 of the artifact, then the artifact.
const ENTRY_MAGIC: &[u8; 8] = b"WLWASMR1";

/// The largest compile cache entry read (a module's code is far smaller).
const MAX_ENTRY_BYTES: u64 = 1 << 30;

/// wasmer's engine and compile cache.
pub(crate) struct Wasmer {
    engine: wasmer::Engine,
    cache: Option<CompileCache>,
}

/// A module wasmer compiled.
struct Loaded {
    module: Module,
}

impl Compiled for Loaded {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Wasmer {
    /// wasmer's Cranelift engine with the limiting tunables, and its compile cache beside
    /// wasmtime's (entries named by wasmer's version).
    pub(crate) fn new(config: &RuntimeConfig) -> Result<Wasmer> {
        let mut engine: wasmer::Engine = Cranelift::default().into();
        let base = BaseTunables::for_target(&Target::default());
        engine.set_tunables(memory::LimitingTunables::new(base));
        let cache = config
            .cache_dir
            .as_ref()
            .map(|dir| CompileCache::with_key(dir, format!("wasmer-{VERSION}")))
            .transpose()?;
        Ok(Wasmer { engine, cache })
    }

    /// The module of `binary`: from the compile cache, else compiled now (and cached).
    fn module(&self, wasm: &Wasm) -> Result<(Module, bool)> {
        let digest = wasm.digest();
        let key = digest.trim_start_matches("sha256:");
        if let Some(module) = self.cached(key) {
            return Ok((module, true));
        }
        let module = Module::new(&self.engine, wasm.binary()?)
            .map_err(|e| Error::Compile(format!("{e} (compiled by wasmer)")))?;
        if let Some(cache) = &self.cache {
            match module.serialize() {
                Ok(artifact) => {
                    cache.store(key, &entry(&artifact))?;
                }
                Err(err) => tracing::warn!(%digest, "wasmer cannot serialize the module: {err}"),
            }
        }
        Ok((module, false))
    }

    /// The module cached for `key`, if there is a whole, intact entry.
    fn cached(&self, key: &str) -> Option<Module> {
        let path = self.cache.as_ref()?.entry(key);
        let artifact = match read_entry(&path) {
            Ok(Some(artifact)) => artifact,
            Ok(None) => return None,
            Err(err) => {
                tracing::warn!(?path, "ignoring unusable cache entry: {err}");
                return None;
            }
        };
        // SAFETY: deserializing runs native code from the artifact, so it must be one wasmer
        // produced. It comes from our own compile cache, written only by `Wasmer::module`
        // (atomically) with the output of `Module::serialize`, named by the wasm's sha256 and
        // wasmer's version, and `read_entry` checked it against the sha256 stored with it, so
        // a torn or altered file is never loaded; wasmer itself refuses another version's.
        match unsafe { Module::deserialize(&self.engine, artifact) } {
            Ok(module) => Some(module),
            Err(err) => {
                tracing::warn!(?path, "ignoring unusable cache entry: {err}");
                None
            }
        }
    }
}

/// A cache entry of `artifact`: the magic, its sha256, itself.
fn entry(artifact: &[u8]) -> Vec<u8> {
    let mut entry = Vec::with_capacity(artifact.len() + 40);
    entry.extend_from_slice(ENTRY_MAGIC);
    entry.extend_from_slice(&Sha256::digest(artifact));
    entry.extend_from_slice(artifact);
    entry
}

/// The artifact of the entry at `path`: `None` if there is none, an error if it is not a
/// whole entry whose sha256 matches.
fn read_entry(path: &std::path::Path) -> std::result::Result<Option<Vec<u8>>, String> {
    let size = match std::fs::metadata(path) {
        Ok(meta) => meta.len(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err.to_string()),
    };
    if size > MAX_ENTRY_BYTES {
        return Err(format!("{size} bytes, more than an entry may have"));
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let (magic, rest) = bytes.split_at_checked(8).ok_or("too short")?;
    let (sum, artifact) = rest.split_at_checked(32).ok_or("too short")?;
    if magic != ENTRY_MAGIC {
        return Err("not a wasmlet entry of wasmer code".into());
    }
    if Sha256::digest(artifact).as_slice() != sum {
        return Err("its sha256 does not match: torn or altered".into());
    }
    Ok(Some(artifact.to_vec()))
}

/// Refuses what the wasmtime engine would refuse, and components, which it runs.
fn check(module: &Module) -> Result<()> {
    for import in module.imports() {
        if import.module() != "wasi_snapshot_preview1" {
            let (module, name) = (import.module().to_owned(), import.name().to_owned());
            return Err(Error::UnsupportedImport { module, name });
        }
    }
    if !module.exports().any(|e| e.name() == "_start") {
        return Err(Error::NoEntryPoint(
            "the module exports no `_start` function: build it as a WASI command (not a reactor or library)".into(),
        ));
    }
    Ok(())
}

impl crate::engine::Engine for Wasmer {
    fn kind(&self) -> EngineKind {
        EngineKind::Wasmer
    }

    fn load(&self, wasm: &Wasm) -> Result<Program> {
        if wasm.is_component()? {
            return Err(Error::Unsupported(
                "this is a WebAssembly component, and wasmer runs WASI preview 1 modules only: \
                 run it with wasmtime (`--engine wasmtime`, or no `wasmlet.dev/engine` annotation)"
                    .into(),
            ));
        }
        let digest = wasm.digest().to_owned();
        let (module, from_cache) = self.module(wasm)?;
        check(&module)?;
        let loading = Loading {
            digest,
            from_cache,
            kind: ProgramKind::Module,
            network: false,
            engine: EngineKind::Wasmer,
        };
        // The containers' share of the code is reckoned on the wasm's size: wasmer does not
        // tell the size of the code it maps.
        let code = Arc::new(Code::new(wasm.len()?));
        Ok(Program::new(
            loading,
            Arc::new(Loaded { module }),
            code,
            Tier::Optimized,
        ))
    }

    fn start(&self, program: &Program, mut spec: ContainerSpec) -> Result<Container> {
        let module = compiled_of::<Loaded>(program, EngineKind::Wasmer)?
            .module
            .clone();
        if spec.limits.fuel.is_some() {
            return Err(Error::Unsupported(
                "wasmer does not meter fuel: run this container with wasmtime".into(),
            ));
        }
        let deadline = spec.limits.timeout.map(|t| Instant::now() + t);
        let control = Arc::new(Control::new(deadline, crate::budget::of(&spec.limits)));
        let report_end = spec.stdio.report_end;
        let sink = SharedSink::new(OutputSink::new(std::mem::take(&mut spec.stdio))?);
        let meter = Arc::new(Meter::default());
        let tokio = tokio::runtime::Handle::current();
        let preopens = open_preopens(&spec, &tokio)?;
        let guest = Guest {
            engine: self.engine.clone(),
            module,
            preopens,
            spec,
            sink: sink.clone(),
            control: control.clone(),
            meter: meter.clone(),
            tokio,
        };
        let task_control = control.clone();
        let task = async move {
            let status = guest.run().await;
            finish_output(&sink, &task_control, report_end, &status).await;
            status
        };
        Ok(spawn_container(program, control, None, meter, task))
    }
}

/// Everything a guest's thread needs.
struct Guest {
    engine: wasmer::Engine,
    module: Module,
    /// The preopened directories, opened at the start: (guest path, read-only, its file
    /// system), taken by the guest's thread.
    preopens: std::sync::Mutex<Vec<(String, bool, fs::BeneathFs)>>,
    spec: ContainerSpec,
    sink: SharedSink,
    control: Arc<Control>,
    meter: Arc<Meter>,
    tokio: tokio::runtime::Handle,
}

/// Stops a running guest: interrupts its wasm and kills its WASI process.
type Stopper = Box<dyn Fn() + Send + Sync>;

/// How a guest's thread ended.
enum Ended {
    /// Its own exit code (`proc_exit`, or 0 when `_start` returned).
    Exited(i32),
    /// A trap or a failure to start, with its message.
    Failed(String),
    /// Interrupted by the host (a stop, a deadline, the memory limit).
    Interrupted,
}

/// Calls the instance's `_start`.
fn call_start(store: &mut Store, instance: &Instance) -> Ended {
    let start = match instance.exports.get_function("_start") {
        Ok(start) => start.clone(),
        Err(err) => return Ended::Failed(err.to_string()),
    };
    match start.call(store, &[]) {
        Ok(_) => Ended::Exited(0),
        Err(err) => ended_of(err),
    }
}

/// Starts WASI on `instance`'s exported memory. A module that exports none (it can pass WASI
/// no pointer) gets an empty memory of its own, so that it runs as it does on wasmtime.
fn start_wasi(
    store: &mut Store,
    wasi: &mut WasiFunctionEnv,
    instance: &Instance,
) -> std::result::Result<(), String> {
    let exports_memory = instance
        .exports
        .iter()
        .any(|(_, export)| matches!(export, Extern::Memory(_)));
    if exports_memory {
        return wasi
            .initialize(store, instance.clone())
            .map_err(|e| e.to_string());
    }
    let memory =
        Memory::new(store, MemoryType::new(0, Some(0), false)).map_err(|e| e.to_string())?;
    let handles = WasiModuleInstanceHandles::new(memory, store, instance.clone(), None);
    wasi.initialize_handles_and_layout(
        store,
        instance.clone(),
        WasiModuleTreeHandles::Static(handles),
        None,
        true,
    )
    .map_err(|e| e.to_string())
}

impl Guest {
    /// Runs the guest on a thread of its own until it ends or is stopped.
    async fn run(self) -> ExitStatus {
        let control = self.control.clone();
        let memory = memory::RunMemory::new(
            self.spec.limits.memory_bytes,
            control.clone(),
            self.meter.clone(),
        );
        let (stopper_tx, mut stopper_rx) = oneshot::channel::<Stopper>();
        let (ended_tx, mut ended_rx) = oneshot::channel();
        let thread_memory = memory.clone();
        let spawned = std::thread::Builder::new()
            .name("wasmlet-wasmer".into())
            .spawn(move || {
                self.meter.thread_started();
                let ended = self.run_here(&thread_memory, stopper_tx);
                thread_memory.released();
                self.meter.thread_ended();
                let _ = ended_tx.send(ended);
            });
        if let Err(err) = spawned {
            return ExitStatus::trapped(format!("cannot start the guest's thread: {err}"));
        }
        let deadline = async {
            match control.deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        let ended = tokio::select! {
            ended = &mut ended_rx => ended.ok(),
            () = control.stopped() => None,
            () = deadline => {
                control.stop(crate::state::StopCause::Deadline);
                None
            }
        };
        let ended = match ended {
            Some(ended) => Some(ended),
            None => stop(&mut stopper_rx, &mut ended_rx).await,
        };
        classify(ended, &control, &memory)
    }

    /// The guest's life on its own thread.
    fn run_here(
        &self,
        memory: &Arc<memory::RunMemory>,
        stopper: oneshot::Sender<Stopper>,
    ) -> Ended {
        // wasmer's WASI reaches for the current tokio runtime while it builds a process.
        let _tokio = self.tokio.enter();
        memory::enter(memory.clone());
        let mut store = Store::new(self.engine.clone());
        let interrupter = store.interrupter();
        let env = match self.wasi_env() {
            Ok(env) => env,
            Err(message) => return Ended::Failed(message),
        };
        let process = env.process.clone();
        let _ = stopper.send(Box::new(move || {
            process.signal_process(Signal::Sigkill);
            interrupter.interrupt();
        }));
        if self.control.cause().is_some() {
            return Ended::Interrupted;
        }
        let mut wasi = WasiFunctionEnv::new(&mut store, env);
        let instance = match self.instantiate(&mut store, &mut wasi) {
            Ok(instance) => instance,
            // WASI never started: nothing to end (wasmer's `on_exit` needs a started WASI).
            Err(ended) => return ended,
        };
        let ended = call_start(&mut store, &instance);
        let code = match ended {
            Ended::Exited(code) => code,
            _ => 1,
        };
        wasi.on_exit(&mut store, Some(code.into()));
        ended
    }

    /// Instantiates the module with WASI (its `proc_exit` wasmlet's, which keeps the exact
    /// code and refuses what WASI refuses) and starts WASI on it.
    fn instantiate(
        &self,
        store: &mut Store,
        wasi: &mut WasiFunctionEnv,
    ) -> std::result::Result<Instance, Ended> {
        // Preview 1's imports whatever the module imports (`check` allowed no other), so that a
        // module importing nothing runs too.
        let mut imports = wasmer_wasix::generate_import_object_from_env(
            store,
            &wasi.env,
            wasmer_wasix::WasiVersion::Snapshot1,
        );
        let exit_env = FunctionEnv::new(store, ());
        let proc_exit = Function::new_typed_with_env(store, &exit_env, proc_exit);
        imports.define("wasi_snapshot_preview1", "proc_exit", proc_exit);
        let instance =
            Instance::new(store, &self.module, &imports).map_err(ended_of_instantiation)?;
        start_wasi(store, wasi, &instance)
            .map_err(|err| Ended::Failed(format!("cannot start WASI: {err}")))?;
        Ok(instance)
    }

    /// The WASI process of the container: argv, env, working directory, preopens, stdio.
    fn wasi_env(&self) -> std::result::Result<WasiEnv, String> {
        let spec = &self.spec;
        let program = spec
            .args
            .first()
            .cloned()
            .unwrap_or_else(|| "main.wasm".into());
        let mut runtime =
            PluggableRuntime::new(Arc::new(TokioTaskManager::new(self.tokio.clone())));
        runtime.set_engine(self.engine.clone());
        let root = MountFileSystem::new();
        let mut builder = WasiEnv::builder(program)
            .args(spec.args.iter().skip(1))
            .envs(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())))
            .runtime(Arc::new(runtime))
            .stdin(Box::new(NullFile::default()))
            .stdout(Box::new(output::OutputFile(
                self.sink.stream(Stream::Stdout),
            )))
            .stderr(Box::new(output::OutputFile(
                self.sink.stream(Stream::Stderr),
            )));
        let preopens =
            std::mem::take(&mut *self.preopens.lock().unwrap_or_else(|e| e.into_inner()));
        let mut guests = Vec::new();
        for (guest, read_only, fs) in preopens {
            root.mount(PathBuf::from(&guest), Arc::new(fs))
                .map_err(|e| format!("cannot preopen {guest}: {e}"))?;
            guests.push((guest, !read_only));
        }
        builder = builder.mount_fs(root);
        for (guest, writable) in guests {
            builder = builder
                .preopen_build(|p| {
                    p.directory(&guest)
                        .read(true)
                        .write(writable)
                        .create(writable)
                })
                .map_err(|e| format!("cannot preopen {guest}: {e}"))?;
        }
        if let Some(cwd) = &spec.working_dir {
            builder = builder.current_dir(cwd);
        }
        builder
            .build()
            .map_err(|e| format!("cannot build the WASI process: {e}"))
    }
}

/// Opens every preopened directory of `spec` (its host directory must exist).
fn open_preopens(
    spec: &ContainerSpec,
    tokio: &tokio::runtime::Handle,
) -> Result<std::sync::Mutex<Vec<(String, bool, fs::BeneathFs)>>> {
    let mut opened = Vec::new();
    for preopen in &spec.preopens {
        preopen.check()?;
        let fs = fs::BeneathFs::open(&preopen.host, preopen.read_only, tokio.clone())
            .map_err(|e| preopen.error(e.to_string()))?;
        opened.push((preopen.guest.clone(), preopen.read_only, fs));
    }
    Ok(std::sync::Mutex::new(opened))
}

/// The guest's exit: codes 0 to 125 are its own; WASI refuses the rest, as wasmtime does.
struct ExitWith(i32);

impl std::fmt::Debug for ExitWith {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit with code {}", self.0)
    }
}

impl std::fmt::Display for ExitWith {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit with code {}", self.0)
    }
}

impl std::error::Error for ExitWith {}

fn proc_exit(_: FunctionEnvMut<()>, code: i32) -> std::result::Result<(), RuntimeError> {
    if (0..126).contains(&code) {
        return Err(RuntimeError::user(Box::new(ExitWith(code))));
    }
    Err(RuntimeError::new(format!(
        "exit with invalid exit status outside of [0..126): {code}"
    )))
}

fn ended_of(err: RuntimeError) -> Ended {
    if let Some(ExitWith(code)) = err.downcast_ref::<ExitWith>() {
        return Ended::Exited(*code);
    }
    if let Some(WasiError::Exit(code)) = err.downcast_ref::<WasiError>() {
        return Ended::Exited(code.raw());
    }
    let message = err.message();
    if err.to_trap() == Some(wasmer::sys::vm::TrapCode::HostInterrupt) {
        return Ended::Interrupted;
    }
    Ended::Failed(message)
}

fn ended_of_instantiation(err: wasmer::InstantiationError) -> Ended {
    match err {
        wasmer::InstantiationError::Start(err) => ended_of(err),
        other => Ended::Failed(format!("cannot instantiate the module: {other}")),
    }
}

/// Interrupts the guest until its thread ends (or [`STOP_PATIENCE`] has passed).
async fn stop(
    stopper: &mut oneshot::Receiver<Stopper>,
    ended: &mut oneshot::Receiver<Ended>,
) -> Option<Ended> {
    let began = Instant::now();
    let mut interrupt: Option<Stopper> = None;
    loop {
        if interrupt.is_none() {
            interrupt = stopper.try_recv().ok();
        }
        if let Some(interrupt) = &interrupt {
            interrupt();
        }
        match tokio::time::timeout(INTERRUPT_EVERY, &mut *ended).await {
            Ok(ended) => return ended.ok(),
            Err(_) if began.elapsed() > STOP_PATIENCE => {
                tracing::warn!("a stopped wasmer guest does not end: its thread is left behind");
                return None;
            }
            Err(_) => {}
        }
    }
}

fn classify(ended: Option<Ended>, control: &Control, memory: &memory::RunMemory) -> ExitStatus {
    if let Some(Ended::Exited(code)) = &ended
        && control.cause().is_none()
    {
        return ExitStatus::exited(*code);
    }
    if let Some(cause) = control.cause() {
        let refusal = memory.refusal();
        return stopped_status(cause, refusal);
    }
    match ended {
        Some(Ended::Failed(message)) => ExitStatus::trapped(message),
        Some(Ended::Exited(code)) => ExitStatus::exited(code),
        _ => lost_status(),
    }
}
