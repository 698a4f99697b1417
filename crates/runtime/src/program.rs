//! Loading a program: format detection (WAT, module, component), the compile cache, import
//! checks and pre-instantiation.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Engine, Module};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::runtime::{Error, Result, Runtime, describe};
use crate::state::{ComponentState, ModuleState};

/// What kind of program was loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgramKind {
    /// A WASI preview 1 core module, entered at `_start`.
    Module,
    /// A component exporting `wasi:cli/run`.
    CommandComponent,
    /// A component exporting `wasi:http/incoming-handler`, served with [`Runtime::start_http`]
    /// or [`Runtime::serve_http`].
    HttpComponent,
}

/// A compiled, linked program, ready to instantiate many times. Cheap to clone.
#[derive(Clone)]
pub struct Program {
    digest: String,
    from_cache: bool,
    pub(crate) pre: Arc<Pre>,
    pub(crate) code: Arc<Code>,
}

/// A program's compiled code, shared by every container running it: its size, and how many
/// containers run it now, so that each is charged its share.
#[derive(Debug, Default)]
pub(crate) struct Code {
    bytes: u64,
    users: AtomicU64,
}

impl Code {
    /// One running container's share of the code, in bytes.
    pub(crate) fn share(&self) -> u64 {
        self.bytes / self.users.load(Ordering::Relaxed).max(1)
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

/// A program still in use, by digest, in [`Runtime::load`]'s table.
pub(crate) struct Loaded {
    pre: Weak<Pre>,
    code: Weak<Code>,
}

#[derive(Clone)]
pub(crate) enum Pre {
    Module(wasmtime::InstancePre<ModuleState>),
    Command(CommandPre<ComponentState>),
    Http(ProxyPre<ComponentState>),
}

impl Program {
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
        match *self.pre {
            Pre::Module(_) => ProgramKind::Module,
            Pre::Command(_) => ProgramKind::CommandComponent,
            Pre::Http(_) => ProgramKind::HttpComponent,
        }
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

impl Runtime {
    /// Loads a program from `.wasm` or `.wat` bytes: compiles it (or loads it from the compile
    /// cache), checks every import is one wasmlet provides, and pre-instantiates it.
    pub fn load(&self, bytes: &[u8]) -> Result<Program> {
        let binary = to_binary(bytes)?;
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&binary)));
        if let Some((pre, code)) = self.still_loaded(&digest) {
            return Ok(Program {
                digest,
                from_cache: true,
                pre,
                code,
            });
        }
        let (compiled, from_cache) = self.compile(&binary, &digest)?;
        let code = Arc::new(Code {
            bytes: compiled.code_bytes(),
            users: AtomicU64::new(0),
        });
        let pre = Arc::new(match compiled {
            Compiled::Module(module) => self.link_module(&module)?,
            Compiled::Component(component) => self.link_component(&component)?,
        });
        let mut loaded = self.inner.loaded.lock().unwrap_or_else(|e| e.into_inner());
        loaded.retain(|_, l| l.pre.strong_count() > 0);
        let entry = Loaded {
            pre: Arc::downgrade(&pre),
            code: Arc::downgrade(&code),
        };
        loaded.insert(digest.clone(), entry);
        Ok(Program {
            digest,
            from_cache,
            pre,
            code,
        })
    }

    /// The linked program of `digest` while some [`Program`] of it is alive: every pod of one
    /// image then shares one copy of the code (one mapping of the compile cache entry, one
    /// memory image) instead of each holding its own file descriptor and mappings.
    fn still_loaded(&self, digest: &str) -> Option<(Arc<Pre>, Arc<Code>)> {
        let loaded = self.inner.loaded.lock().unwrap_or_else(|e| e.into_inner());
        let entry = loaded.get(digest)?;
        Some((entry.pre.upgrade()?, entry.code.upgrade()?))
    }

    fn compile(&self, binary: &[u8], digest: &str) -> Result<(Compiled, bool)> {
        let component = is_component(binary);
        let engine = self.engine();
        let Some(cache) = self.cache() else {
            return Ok((Compiled::new(engine, binary, component)?, false));
        };
        let key = digest.trim_start_matches("sha256:");
        let entry = cache.entry(key);
        if entry.exists() {
            match Compiled::deserialize(engine, &entry, component) {
                Ok(compiled) => return Ok((compiled, true)),
                Err(err) => tracing::warn!(?entry, "ignoring unusable cache entry: {err}"),
            }
        }
        let compiled = Compiled::new(engine, binary, component)?;
        cache.store(key, &compiled.serialize()?)?;
        Ok((compiled, false))
    }

    fn link_module(&self, module: &Module) -> Result<Pre> {
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
        let pre = self
            .inner
            .module_linker
            .instantiate_pre(module)
            .map_err(|e| Error::Link(describe(&e)))?;
        Ok(Pre::Module(pre))
    }

    fn link_component(&self, component: &Component) -> Result<Pre> {
        let ty = component.component_type();
        for (name, _) in ty.imports(self.engine()) {
            if !name.starts_with("wasi:") {
                return Err(Error::UnsupportedImport {
                    module: name.to_owned(),
                    name: String::new(),
                });
            }
        }
        let pre = self
            .inner
            .component_linker
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
        let rt = Runtime::new(crate::RuntimeConfig {
            cache_dir: Some(dir.path().join("cache")),
            ..crate::RuntimeConfig::default()
        })
        .unwrap();
        let hello = wasmlet_fixtures::hello();
        let first = rt.load(hello).unwrap();
        assert!(!first.loaded_from_cache(), "compiled");
        drop(first);
        // Loaded from the compile cache by many pods at once: one copy of the code.
        let held: Vec<Program> = (0..20).map(|_| rt.load(hello).unwrap()).collect();
        assert!(held.iter().all(|p| Arc::ptr_eq(&p.pre, &held[0].pre)));
        assert!(held.iter().all(Program::loaded_from_cache));
        let digest = held[0].digest().trim_start_matches("sha256:").to_owned();
        let entry = rt.cache().unwrap().entry(&digest);
        assert!(open_files(&entry) <= 1, "{} files open", open_files(&entry));
        // Another program is not confused with it.
        let other = rt.load(wasmlet_fixtures::hello_component()).unwrap();
        assert!(!Arc::ptr_eq(&other.pre, &held[0].pre));
        // Once none is in use, it is forgotten: loaded again from the cache.
        drop(held);
        let again = rt.load(hello).unwrap();
        assert!(again.loaded_from_cache());
        let loaded = rt.inner.loaded.lock().unwrap();
        assert_eq!(
            loaded.len(),
            2,
            "dropped entries are pruned on the next insert"
        );
    }
}
