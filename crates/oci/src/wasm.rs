//! What a WebAssembly binary is: a core module or a component, and a component's interface.

use serde::{Deserialize, Serialize};

/// Why bytes are not a WebAssembly binary we can package.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The bytes do not start with `\0asm`.
    #[error(
        "not a WebAssembly binary: it does not start with the `\\0asm` magic bytes (is it WAT text, or a native executable?)"
    )]
    NotWasm,
    /// A version/layer combination that is neither a module nor a component.
    #[error("unknown WebAssembly binary version {0:#x}: neither a core module (1) nor a component")]
    UnknownVersion(u32),
    /// The component's sections could not be read.
    #[error("malformed WebAssembly component: {0}")]
    Malformed(String),
}

/// The two kinds of WebAssembly binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WasmKind {
    /// A core module: WASI preview 1 (`wasip1`).
    Module,
    /// A component: WASI preview 2 (`wasip2`).
    Component,
}

impl WasmKind {
    /// Detects the kind from the header (the first 8 bytes).
    pub fn detect(bytes: &[u8]) -> Result<WasmKind, Error> {
        if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
            return Err(Error::NotWasm);
        }
        let version = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        match (version & 0xffff, version >> 16) {
            (1, 0) => Ok(WasmKind::Module),
            (_, 1) => Ok(WasmKind::Component),
            _ => Err(Error::UnknownVersion(version)),
        }
    }

    /// The WASI `os` value for this kind: `wasip1` or `wasip2`.
    pub fn wasi_os(self) -> &'static str {
        match self {
            WasmKind::Module => "wasip1",
            WasmKind::Component => "wasip2",
        }
    }
}

impl std::fmt::Display for WasmKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WasmKind::Module => "module",
            WasmKind::Component => "component",
        })
    }
}

/// A component's top-level imports and exports, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentInterface {
    /// Exported names, e.g. `wasi:cli/run@0.2.0`.
    pub exports: Vec<String>,
    /// Imported names, e.g. `wasi:cli/stdout@0.2.0`.
    pub imports: Vec<String>,
}

impl ComponentInterface {
    /// Reads the top-level import and export names of a component.
    pub fn read(bytes: &[u8]) -> Result<ComponentInterface, Error> {
        let mut out = ComponentInterface::default();
        let mut depth = 0usize;
        for payload in wasmparser::Parser::new(0).parse_all(bytes) {
            let payload = payload.map_err(|e| Error::Malformed(e.to_string()))?;
            match payload {
                wasmparser::Payload::Version { .. } => depth += 1,
                wasmparser::Payload::End(_) => depth = depth.saturating_sub(1),
                wasmparser::Payload::ComponentImportSection(r) if depth == 1 => {
                    for import in r {
                        let import = import.map_err(|e| Error::Malformed(e.to_string()))?;
                        out.imports.push(import.name.name.to_string());
                    }
                }
                wasmparser::Payload::ComponentExportSection(r) if depth == 1 => {
                    for export in r {
                        let export = export.map_err(|e| Error::Malformed(e.to_string()))?;
                        out.exports.push(export.name.name.to_string());
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_kinds() {
        let module = wat::parse_str("(module)").unwrap();
        assert_eq!(WasmKind::detect(&module), Ok(WasmKind::Module));
        let component = wat::parse_str("(component)").unwrap();
        assert_eq!(WasmKind::detect(&component), Ok(WasmKind::Component));
        assert_eq!(
            WasmKind::detect(b"\x7fELF\x02\x01\x01\x00"),
            Err(Error::NotWasm)
        );
        assert_eq!(WasmKind::detect(b"(module)"), Err(Error::NotWasm));
        assert_eq!(WasmKind::detect(b"\0asm"), Err(Error::NotWasm));
        assert!(matches!(
            WasmKind::detect(b"\0asm\x02\0\0\0"),
            Err(Error::UnknownVersion(2))
        ));
    }

    #[test]
    fn reads_component_interface_top_level_only() {
        let component = wat::parse_str(
            r#"(component
                (import "wasi:cli/stdout@0.2.0" (instance))
                (component $inner (import "nested" (func)))
                (core module $m (func (export "f")))
                (core instance $i (instantiate $m))
                (func $f (canon lift (core func $i "f")))
                (instance $run (export "run" (func $f)))
                (export "wasi:cli/run@0.2.0" (instance $run))
            )"#,
        )
        .unwrap();
        let i = ComponentInterface::read(&component).unwrap();
        assert_eq!(i.imports, vec!["wasi:cli/stdout@0.2.0"]);
        assert_eq!(i.exports, vec!["wasi:cli/run@0.2.0"]);
    }
}
