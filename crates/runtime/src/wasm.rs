//! The wasm a program is loaded from: its digest known up front, its bytes read only when an
//! engine needs them.
//!
//! A blob of the content store is named by its digest (checked when it was pulled), so a
//! program already loaded, or found in the compile cache, starts without reading or hashing
//! the file again: for a component of tens of megabytes that is tens of milliseconds of every
//! pod start. When the bytes are needed (to compile), they are read once and checked against
//! the digest, so a blob altered on disk is refused rather than compiled and cached under the
//! digest of another wasm.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use crate::runtime::{Error, Result};

/// Binary wasm to load, with its `sha256:<hex>` digest.
#[derive(Debug)]
pub struct Wasm {
    digest: String,
    file: Option<PathBuf>,
    bytes: OnceLock<Vec<u8>>,
}

impl Wasm {
    /// `.wasm` or `.wat` bytes (text is compiled to binary; the digest is the binary's).
    pub fn from_bytes(bytes: &[u8]) -> Result<Wasm> {
        Ok(Wasm::of_binary(
            crate::program::to_binary(bytes)?.into_owned(),
        ))
    }

    /// A `.wasm` or `.wat` file whose digest is not known: read and hashed now (binary wasm
    /// is kept as read, not copied).
    pub fn read(path: &Path) -> Result<Wasm> {
        let bytes = read(path)?;
        let compiled = match crate::program::to_binary(&bytes)? {
            std::borrow::Cow::Borrowed(_) => None,
            std::borrow::Cow::Owned(text_compiled) => Some(text_compiled),
        };
        Ok(Wasm::of_binary(compiled.unwrap_or(bytes)))
    }

    fn of_binary(binary: Vec<u8>) -> Wasm {
        Wasm {
            digest: sha256(&binary),
            file: None,
            bytes: OnceLock::from(binary),
        }
    }

    /// The file it is read from (empty for bytes, which are never read).
    fn path(&self) -> &Path {
        self.file.as_deref().unwrap_or(Path::new(""))
    }

    /// A binary wasm file whose content is `digest` (`sha256:<hex>`), such as a blob of the
    /// content store: read only if it has to be compiled, and then checked against `digest`.
    pub fn stored(path: impl Into<PathBuf>, digest: impl Into<String>) -> Wasm {
        Wasm {
            digest: digest.into(),
            file: Some(path.into()),
            bytes: OnceLock::new(),
        }
    }

    /// The digest, `sha256:<hex>`.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The binary wasm, read (and checked against the digest) on first use.
    pub(crate) fn binary(&self) -> Result<&[u8]> {
        if let Some(bytes) = self.bytes.get() {
            return Ok(bytes);
        }
        let path = self.path();
        let bytes = read(path)?;
        let actual = sha256(&bytes);
        if actual != self.digest {
            return Err(Error::DigestMismatch {
                path: path.into(),
                expected: self.digest.clone(),
                actual,
            });
        }
        Ok(self.bytes.get_or_init(|| bytes))
    }

    /// Whether it is a component, from its header (eight bytes of the file when it has not
    /// been read).
    pub(crate) fn is_component(&self) -> Result<bool> {
        if let Some(bytes) = self.bytes.get() {
            return Ok(crate::program::is_component(bytes));
        }
        let path = self.path();
        let mut header = [0u8; 8];
        let mut file = std::fs::File::open(path).map_err(|e| read_error(path, e))?;
        file.read_exact(&mut header)
            .map_err(|e| read_error(path, e))?;
        Ok(crate::program::is_component(&header))
    }

    /// Its size in bytes.
    #[cfg(any(feature = "wasmer", test))]
    pub(crate) fn len(&self) -> Result<u64> {
        if let Some(bytes) = self.bytes.get() {
            return Ok(bytes.len() as u64);
        }
        let path = self.path();
        let metadata = std::fs::metadata(path).map_err(|e| read_error(path, e))?;
        Ok(metadata.len())
    }
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| read_error(path, e))
}

fn read_error(path: &Path, source: std::io::Error) -> Error {
    Error::Read {
        path: path.into(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_MODULE: &[u8] = b"\0asm\x01\0\0\0";

    #[test]
    fn text_is_hashed_as_its_binary() {
        let text = Wasm::from_bytes(b"(module)").unwrap();
        let binary = Wasm::from_bytes(EMPTY_MODULE).unwrap();
        assert_eq!(text.digest(), binary.digest());
        assert_eq!(text.digest(), sha256(EMPTY_MODULE));
    }

    #[test]
    fn a_stored_file_is_read_only_when_its_bytes_are_needed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        std::fs::write(&path, EMPTY_MODULE).unwrap();
        let wasm = Wasm::stored(&path, sha256(EMPTY_MODULE));
        assert!(!wasm.is_component().unwrap());
        assert_eq!(wasm.len().unwrap(), 8);
        std::fs::write(&path, b"\0asm\x0d\0\x01\0").unwrap();
        assert!(
            wasm.is_component().unwrap(),
            "the header is read, not remembered"
        );
        std::fs::write(&path, EMPTY_MODULE).unwrap();
        assert_eq!(wasm.binary().unwrap(), EMPTY_MODULE);
    }

    #[test]
    fn a_stored_file_that_does_not_match_its_digest_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        std::fs::write(&path, EMPTY_MODULE).unwrap();
        let claimed = sha256(b"another module");
        let err = Wasm::stored(&path, claimed.clone()).binary().unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{text}");
        assert!(
            text.contains(&claimed) && text.contains(&sha256(EMPTY_MODULE)),
            "{text}"
        );
        assert!(text.contains("blob"), "{text}");
    }

    #[test]
    fn a_missing_file_names_its_path() {
        let err = Wasm::stored("/nonexistent/blob", "sha256:00")
            .len()
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/blob"), "{err}");
    }
}
