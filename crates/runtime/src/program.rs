//! Loading a program: format detection (WAT, module, component), the compile cache, import
//! checks and pre-instantiation.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use wasmtime::component::Component;
use wasmtime::{Engine, Module};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::engine::{Compiled as EngineCompiled, EngineKind};
use crate::runtime::{Compilers, Error, Result, describe};
use crate::state::{ComponentState, ModuleState};
use crate::wasm::Wasm;
use crate::wasmtime_engine::{Linkers, Wasmtime};

/// What kind of program was loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgramKind {
    /// A WASI preview 1 core module, entered at `_start`.
    Module,
    /// A component exporting `wasi:cli/run`.
    CommandComponent,
    /// A component exporting `wasi:http/incoming-handler`, served with
    /// [`Runtime::start_http`](crate::Runtime::start_http) or
    /// [`Runtime::serve_http`](crate::Runtime::serve_http).
    HttpComponent,
}

/// Which compiler's code a program runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    /// wasmtime's baseline compiler's (Winch): compiled an order of magnitude faster than
    /// Cranelift's, and slower to run. Only a program never compiled before starts on it,
    /// while Cranelift compiles it on a thread of its own (see [`Runtime::load`](crate::Runtime::load)).
    Baseline,
    /// Cranelift's optimised code.
    Optimized,
}

/// A compiled, linked program, ready to instantiate many times on the engine that loaded
/// it. Cheap to clone.
#[derive(Clone)]
pub struct Program {
    digest: String,
    from_cache: bool,
    loaded_tier: Tier,
    kind: ProgramKind,
    network: bool,
    engine: EngineKind,
    /// The engine's own compiled form.
    pub(crate) compiled: Arc<dyn EngineCompiled>,
    pub(crate) code: Arc<Code>,
}

/// What an engine tells of a program it loaded (see [`Program::new`]).
pub(crate) struct Loading {
    pub(crate) digest: String,
    pub(crate) from_cache: bool,
    pub(crate) kind: ProgramKind,
    /// Whether its instances can reach a network (see [`Program::reaches_network`]).
    pub(crate) network: bool,
    pub(crate) engine: EngineKind,
}

/// A program's compiled code, shared by every container running it: its size, and how many
/// containers run it now, so that each is charged its share.
#[derive(Debug, Default)]
pub(crate) struct Code {
    bytes: AtomicU64,
    users: AtomicU64,
}

impl Code {
    pub(crate) fn new(bytes: u64) -> Code {
        Code {
            bytes: AtomicU64::new(bytes),
            users: AtomicU64::new(0),
        }
    }

    /// One running container's share of the code, in bytes.
    pub(crate) fn share(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed) / self.users.load(Ordering::Relaxed).max(1)
    }
}

/// A container's use of its program's code, from its start to its end.
pub(crate) struct CodeUse(Arc<Code>);

impl CodeUse {
    pub(crate) fn new(code: Arc<Code>) -> CodeUse {
        code.users.fetch_add(1, Ordering::Relaxed);
        CodeUse(code)
    }
}

impl Drop for CodeUse {
    fn drop(&mut self) {
        let users = &self.0.users;
        let _ = users.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }
}

/// A program's linked code, shared by every load of the same wasm while one is in use: the
/// pre-instantiation new instances are made from, which the optimised code replaces once
/// Cranelift has compiled it (instances already made keep the code they were made with).
pub(crate) struct Linked {
    kind: ProgramKind,
    network: bool,
    state: Mutex<Tiered>,
    changed: Condvar,
}

struct Tiered {
    pre: Arc<Pre>,
    tier: Tier,
    /// Whether Cranelift is still compiling it.
    optimizing: bool,
}

impl Linked {
    /// `pre` of `tier`; `optimizing` while Cranelift compiles it on a thread of its own.
    fn new(pre: Pre, tier: Tier, optimizing: bool) -> Linked {
        Linked {
            kind: pre.kind(),
            network: pre.reaches_network(),
            state: Mutex::new(Tiered {
                pre: Arc::new(pre),
                tier,
                optimizing,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tiered> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The code new instances are made from now.
    pub(crate) fn current(&self) -> Arc<Pre> {
        self.lock().pre.clone()
    }

    fn tier(&self) -> Tier {
        self.lock().tier
    }

    /// Cranelift's compile ended: with its code, which new instances use from now on, or
    /// without (it failed, and the baseline code stays).
    fn optimized(&self, pre: Option<Pre>) {
        let mut state = self.lock();
        if let Some(pre) = pre {
            state.pre = Arc::new(pre);
            state.tier = Tier::Optimized;
        }
        state.optimizing = false;
        self.changed.notify_all();
    }

    /// Waits up to `timeout` for Cranelift's compile to end; the tier then.
    fn wait(&self, timeout: Duration) -> Tier {
        let state = self.lock();
        let (state, _) = self
            .changed
            .wait_timeout_while(state, timeout, |s| s.optimizing)
            .unwrap_or_else(|e| e.into_inner());
        state.tier
    }
}

impl EngineCompiled for Linked {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn tier(&self) -> Tier {
        Linked::tier(self)
    }

    fn wait_optimized(&self, timeout: Duration) -> Tier {
        self.wait(timeout)
    }
}

/// A program still in use, by digest, in [`Wasmtime::load`]'s table.
pub(crate) struct Loaded {
    linked: Weak<Linked>,
    code: Weak<Code>,
}

#[derive(Clone)]
pub(crate) enum Pre {
    Module(wasmtime::InstancePre<ModuleState>),
    Command(CommandPre<ComponentState>),
    Http(ProxyPre<ComponentState>),
}

impl Pre {
    /// The engine its code was compiled for: its stores must be of that engine.
    pub(crate) fn engine(&self) -> &Engine {
        match self {
            Pre::Module(pre) => pre.module().engine(),
            Pre::Command(pre) => pre.engine(),
            Pre::Http(pre) => pre.engine(),
        }
    }

    fn kind(&self) -> ProgramKind {
        match self {
            Pre::Module(_) => ProgramKind::Module,
            Pre::Command(_) => ProgramKind::CommandComponent,
            Pre::Http(_) => ProgramKind::HttpComponent,
        }
    }

    /// Whether its instances can reach a network: a `wasi:http` server (served from a
    /// socket) can, and so can a component importing `wasi:sockets` or `wasi:http`
    /// (outgoing requests); a core module cannot (WASI preview 1 makes no sockets), nor can
    /// a command importing neither.
    fn reaches_network(&self) -> bool {
        match self {
            Pre::Module(_) => false,
            Pre::Http(_) => true,
            Pre::Command(pre) => imports_from(
                pre.instance_pre().component(),
                &["wasi:sockets/", "wasi:http/"],
            ),
        }
    }
}

/// Whether `component` imports an interface whose name starts with one of `prefixes`
/// (`wasi:sockets/` for every interface of that package).
pub(crate) fn imports_from(component: &wasmtime::component::Component, prefixes: &[&str]) -> bool {
    let ty = component.component_type();
    let mut imports = ty.imports(component.engine());
    imports.any(|(name, _)| prefixes.iter().any(|p| name.starts_with(p)))
}

impl Program {
    /// A program an engine loaded: `compiled` is its own form, `code_bytes` the size of its
    /// code (shared by the containers running it), `tier` the code it starts on.
    pub(crate) fn new(
        loading: Loading,
        compiled: Arc<dyn EngineCompiled>,
        code: Arc<Code>,
        loaded_tier: Tier,
    ) -> Program {
        Program {
            digest: loading.digest,
            from_cache: loading.from_cache,
            loaded_tier,
            kind: loading.kind,
            network: loading.network,
            engine: loading.engine,
            compiled,
            code,
        }
    }

    /// The engine that loaded it, and runs its containers.
    pub fn engine(&self) -> EngineKind {
        self.engine
    }

    /// `sha256:<hex>` of the binary wasm (of the text's encoding, for WAT).
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Whether the compiled code was reused: read from the compile cache, or shared with a
    /// program of the same wasm still loaded in this runtime. False when it was compiled.
    pub fn loaded_from_cache(&self) -> bool {
        self.from_cache
    }

    /// The kind of program.
    pub fn kind(&self) -> ProgramKind {
        self.kind
    }

    /// Whether its instances can reach a network at all: a `wasi:http` server, or a component
    /// importing `wasi:sockets` or `wasi:http`. A program that cannot (a WASI preview 1
    /// module, a command importing neither) cannot tell which network namespace it runs in,
    /// so none need be made for it.
    pub fn reaches_network(&self) -> bool {
        self.network
    }

    /// Which compiler's code it was loaded with (new instances may since have moved on to
    /// Cranelift's: see [`Program::tier`]).
    pub fn loaded_tier(&self) -> Tier {
        self.loaded_tier
    }

    /// Which compiler's code new instances of it are made from now.
    pub fn tier(&self) -> Tier {
        self.compiled.tier()
    }

    /// Waits, blocking the thread, up to `timeout` for Cranelift's code of a program that
    /// started on baseline code (at once for any other); the tier then. A command run once
    /// waits for it before its process ends, so that the compile cache holds it.
    pub fn wait_optimized(&self, timeout: Duration) -> Tier {
        self.compiled.wait_optimized(timeout)
    }
}

/// Binary wasm from `.wasm` bytes or `.wat` text.
pub fn to_binary(bytes: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>> {
    if bytes.starts_with(b"\0asm") {
        return Ok(bytes.into());
    }
    let not_wasm = |detail: String| {
        Error::NotWasm(format!(
            "it is neither binary wasm (no `\\0asm` header) nor WAT text ({detail})"
        ))
    };
    let text = std::str::from_utf8(bytes).map_err(|_| not_wasm("it is not UTF-8 text".into()))?;
    wat::parse_str(text)
        .map(Into::into)
        .map_err(|e| not_wasm(e.to_string()))
}

/// Whether binary wasm is a component (layer 1) rather than a core module.
pub fn is_component(binary: &[u8]) -> bool {
    binary.get(6..8) == Some(&[1, 0])
}

impl Wasmtime {
    /// Loads `wasm` (see [`Runtime::load`](crate::Runtime::load)): a program of its digest
    /// still loaded is shared without reading the wasm; the compile cache's entry is used with
    /// only the wasm's header read.
    pub(crate) fn load(&self, wasm: &Wasm) -> Result<Program> {
        let digest = wasm.digest().to_owned();
        if let Some((linked, code)) = self.still_loaded(&digest) {
            let tier = linked.tier();
            return Ok(self.program(digest, true, linked, code, tier));
        }
        let component = wasm.is_component()?;
        let (compiled, origin) = self.compile(wasm, component)?;
        let code = Arc::new(Code::new(compiled.code_bytes()));
        let (pre, tier) = match origin {
            Origin::Baseline(linkers) => (link(&compiled, linkers)?, Tier::Baseline),
            _ => (link(&compiled, &self.inner.linkers)?, Tier::Optimized),
        };
        let optimize = tier == Tier::Baseline && self.inner.config.compilers != Compilers::Baseline;
        let linked = Arc::new(Linked::new(pre, tier, optimize));
        if optimize {
            self.optimize(wasm.binary()?.to_vec(), &digest, component, &linked, &code);
        }
        let mut loaded = self.inner.loaded.lock().unwrap_or_else(|e| e.into_inner());
        loaded.retain(|_, l| l.linked.strong_count() > 0);
        let entry = Loaded {
            linked: Arc::downgrade(&linked),
            code: Arc::downgrade(&code),
        };
        loaded.insert(digest.clone(), entry);
        drop(loaded);
        let from_cache = matches!(origin, Origin::Cache);
        Ok(self.program(digest, from_cache, linked, code, tier))
    }

    fn program(
        &self,
        digest: String,
        from_cache: bool,
        linked: Arc<Linked>,
        code: Arc<Code>,
        tier: Tier,
    ) -> Program {
        let loading = Loading {
            digest,
            from_cache,
            kind: linked.kind,
            network: linked.network,
            engine: EngineKind::Wasmtime,
        };
        Program::new(loading, linked, code, tier)
    }

    /// wasmtime's linked form of `program`.
    pub(crate) fn linked<'p>(&self, program: &'p Program) -> Result<&'p Linked> {
        crate::engine::compiled_of::<Linked>(program, EngineKind::Wasmtime)
    }

    /// The linked program of `digest` while some [`Program`] of it is alive: every pod of one
    /// image then shares one copy of the code (one mapping of the compile cache entry, one
    /// memory image) instead of each holding its own file descriptor and mappings.
    fn still_loaded(&self, digest: &str) -> Option<(Arc<Linked>, Arc<Code>)> {
        let loaded = self.inner.loaded.lock().unwrap_or_else(|e| e.into_inner());
        let entry = loaded.get(digest)?;
        Some((entry.linked.upgrade()?, entry.code.upgrade()?))
    }

    /// The compiled code to start `wasm` on: Cranelift's from the cache, else Winch's for
    /// a big program (see [`Wasmtime::load`]), else Cranelift's, compiled now (and cached).
    fn compile(&self, wasm: &Wasm, component: bool) -> Result<(Compiled, Origin<'_>)> {
        let engine = self.engine();
        let digest = wasm.digest();
        let key = digest.trim_start_matches("sha256:");
        if let Some(cache) = self.cache() {
            let entry = cache.entry(key);
            if entry.exists() {
                match Compiled::deserialize(engine, &entry, component) {
                    Ok(compiled) => return Ok((compiled, Origin::Cache)),
                    Err(err) => tracing::warn!(?entry, "ignoring unusable cache entry: {err}"),
                }
            }
        }
        let binary = wasm.binary()?;
        if let Some(baseline) = self.fast_start(binary.len()) {
            let began = Instant::now();
            match Compiled::new(&baseline.engine, binary, component) {
                Ok(compiled) => {
                    tracing::info!(
                        %digest,
                        elapsed = ?began.elapsed(),
                        "compiled with the baseline compiler (Winch) to start at once; \
                         Cranelift's optimised code takes over when ready"
                    );
                    return Ok((compiled, Origin::Baseline(&baseline.linkers)));
                }
                Err(err) => tracing::info!(
                    %digest,
                    "the baseline compiler cannot compile it ({err}); compiling with Cranelift"
                ),
            }
        }
        Ok((
            self.compile_cached(binary, digest, component)?,
            Origin::Compiled,
        ))
    }

    /// Cranelift's code of `binary`, compiled now and stored in the cache (if any).
    fn compile_cached(&self, binary: &[u8], digest: &str, component: bool) -> Result<Compiled> {
        let compiled = Compiled::new(self.engine(), binary, component)?;
        if let Some(cache) = self.cache() {
            cache.store(digest.trim_start_matches("sha256:"), &compiled.serialize()?)?;
        }
        Ok(compiled)
    }

    /// Compiles `binary` with Cranelift on a thread of its own (its work on the optimiser's
    /// pool, niced for its first seconds, [`crate::optimizer`]), stores the code in the cache
    /// and hands it to `linked` for new instances.
    fn optimize(
        &self,
        binary: Vec<u8>,
        digest: &str,
        component: bool,
        linked: &Arc<Linked>,
        code: &Arc<Code>,
    ) {
        let (runtime, code) = (self.clone(), code.clone());
        let waiting = linked.clone();
        let digest = digest.to_owned();
        let spawned = std::thread::Builder::new()
            .name("wasmlet-optimize".into())
            .spawn(move || {
                let began = Instant::now();
                let compiled = crate::optimizer::run(|| {
                    runtime.compile_optimized(&binary, &digest, component)
                });
                match compiled {
                    Ok((pre, bytes)) => {
                        code.bytes.store(bytes, Ordering::Relaxed);
                        waiting.optimized(Some(pre));
                        tracing::info!(%digest, elapsed = ?began.elapsed(), "optimised code took over");
                    }
                    Err(err) => {
                        waiting.optimized(None);
                        tracing::warn!(%digest, "the optimised compile failed, the baseline code stays: {err}");
                    }
                }
            });
        if let Err(err) = spawned {
            linked.optimized(None);
            tracing::warn!("cannot start the optimising compile's thread: {err}");
        }
    }

    fn compile_optimized(
        &self,
        binary: &[u8],
        digest: &str,
        component: bool,
    ) -> Result<(Pre, u64)> {
        let compiled = self.compile_cached(binary, digest, component)?;
        Ok((link(&compiled, &self.inner.linkers)?, compiled.code_bytes()))
    }
}

/// Where a program's first code came from.
enum Origin<'a> {
    /// The compile cache (Cranelift's).
    Cache,
    /// Cranelift, just now.
    Compiled,
    /// Winch, just now, to be linked with these linkers of its engine.
    Baseline(&'a Linkers),
}

fn link(compiled: &Compiled, linkers: &Linkers) -> Result<Pre> {
    match compiled {
        Compiled::Module(module) => link_module(module, linkers),
        Compiled::Component(component) => link_component(component, linkers),
    }
}

fn link_module(module: &Module, linkers: &Linkers) -> Result<Pre> {
    for import in module.imports() {
        if import.module() != "wasi_snapshot_preview1" {
            let (module, name) = (import.module().to_owned(), import.name().to_owned());
            return Err(Error::UnsupportedImport { module, name });
        }
    }
    if module.get_export("_start").is_none() {
        return Err(Error::NoEntryPoint(
            "the module exports no `_start` function: build it as a WASI command (not a reactor or library)".into(),
        ));
    }
    let pre = linkers
        .module()?
        .instantiate_pre(module)
        .map_err(|e| Error::Link(describe(&e)))?;
    Ok(Pre::Module(pre))
}

fn link_component(component: &Component, linkers: &Linkers) -> Result<Pre> {
    let ty = component.component_type();
    for (name, _) in ty.imports(component.engine()) {
        if !name.starts_with("wasi:") {
            return Err(Error::UnsupportedImport {
                module: name.to_owned(),
                name: String::new(),
            });
        }
    }
    let pre = linkers
        .component()?
        .instantiate_pre(component)
        .map_err(|e| Error::Link(describe(&e)))?;
    if let Ok(command) = CommandPre::new(pre.clone()) {
        return Ok(Pre::Command(command));
    }
    if let Ok(proxy) = ProxyPre::new(pre) {
        return Ok(Pre::Http(proxy));
    }
    Err(Error::NoEntryPoint(
        "the component exports neither `wasi:cli/run` nor `wasi:http/incoming-handler`".into(),
    ))
}

enum Compiled {
    Module(Module),
    Component(Component),
}

impl Compiled {
    fn new(engine: &Engine, binary: &[u8], component: bool) -> Result<Compiled> {
        let compiled = if component {
            Component::new(engine, binary).map(Compiled::Component)
        } else {
            Module::new(engine, binary).map(Compiled::Module)
        };
        compiled.map_err(|e| Error::Compile(describe(&e)))
    }

    /// The size of the compiled code's image (text and read-only data), in bytes.
    fn code_bytes(&self) -> u64 {
        let range = match self {
            Compiled::Module(m) => m.image_range(),
            Compiled::Component(c) => c.image_range(),
        };
        (range.end as usize).saturating_sub(range.start as usize) as u64
    }

    fn serialize(&self) -> Result<Vec<u8>> {
        match self {
            Compiled::Module(m) => m.serialize(),
            Compiled::Component(c) => c.serialize(),
        }
        .map_err(|e| Error::Compile(describe(&e)))
    }

    fn deserialize(
        engine: &Engine,
        path: &std::path::Path,
        component: bool,
    ) -> wasmtime::Result<Compiled> {
        // SAFETY: deserializing runs native code from the file, so the file must be an artifact
        // wasmtime produced for this engine. `path` is an entry of our own compile cache: only
        // `CompileCache::store` writes there (atomically, so never half-written), with the
        // output of `serialize` above, and the file is named by the wasm's sha256 and this
        // engine's compatibility hash, so it is the code of these exact bytes for this engine.
        unsafe {
            if component {
                Component::deserialize_file(engine, path).map(Compiled::Component)
            } else {
                Module::deserialize_file(engine, path).map(Compiled::Module)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_formats() {
        assert!(matches!(
            to_binary(b"\0asm\x01\0\0\0"),
            Ok(std::borrow::Cow::Borrowed(_))
        ));
        assert!(to_binary(b"(module)").is_ok());
        assert!(matches!(
            to_binary(b"#!/bin/sh\necho"),
            Err(Error::NotWasm(_))
        ));
        assert!(matches!(to_binary(b"(modul"), Err(Error::NotWasm(_))));
        assert!(!is_component(b"\0asm\x01\0\0\0"));
        assert!(is_component(b"\0asm\x0d\0\x01\0"));
    }

    /// Open file descriptors of this process on `path`.
    fn open_files(path: &std::path::Path) -> usize {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
            .filter(|target| target == path)
            .count()
    }

    #[test]
    fn loads_of_a_program_still_in_use_share_its_code() {
        let dir = tempfile::tempdir().unwrap();
        let rt = Wasmtime::new(crate::RuntimeConfig {
            cache_dir: Some(dir.path().join("cache")),
            ..crate::RuntimeConfig::default()
        })
        .unwrap();
        let load = |wasm: &[u8]| rt.load(&Wasm::from_bytes(wasm).unwrap()).unwrap();
        let linked = |p: &Program| p.compiled.clone();
        let hello = wasmlet_fixtures::hello();
        let first = load(hello);
        assert!(!first.loaded_from_cache(), "compiled");
        drop(first);
        // Loaded from the compile cache by many pods at once: one copy of the code.
        let held: Vec<Program> = (0..20).map(|_| load(hello)).collect();
        assert!(
            held.iter()
                .all(|p| Arc::ptr_eq(&linked(p), &linked(&held[0])))
        );
        assert!(held.iter().all(Program::loaded_from_cache));
        let digest = held[0].digest().trim_start_matches("sha256:").to_owned();
        let entry = rt.cache().unwrap().entry(&digest);
        assert!(open_files(&entry) <= 1, "{} files open", open_files(&entry));
        // Another program is not confused with it.
        let other = load(wasmlet_fixtures::hello_component());
        assert!(!Arc::ptr_eq(&linked(&other), &linked(&held[0])));
        // Once none is in use, it is forgotten: loaded again from the cache.
        drop(held);
        let again = load(hello);
        assert!(again.loaded_from_cache());
        let loaded = rt.inner.loaded.lock().unwrap();
        assert_eq!(
            loaded.len(),
            2,
            "dropped entries are pruned on the next insert"
        );
    }
}
