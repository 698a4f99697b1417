//! Loading a program: format detection (WAT, module, component), the compile cache, import
//! checks and pre-instantiation.

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
    pub(crate) pre: Pre,
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

    /// Whether the compiled code came from the compile cache.
    pub fn loaded_from_cache(&self) -> bool {
        self.from_cache
    }

    /// The kind of program.
    pub fn kind(&self) -> ProgramKind {
        match self.pre {
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
        let (compiled, from_cache) = self.compile(&binary, &digest)?;
        let pre = match compiled {
            Compiled::Module(module) => self.link_module(&module)?,
            Compiled::Component(component) => self.link_component(&component)?,
        };
        Ok(Program {
            digest,
            from_cache,
            pre,
        })
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
}
