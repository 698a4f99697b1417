//! The on-disk compile cache: compiled artifacts keyed by the wasm's sha256 and the engine's
//! compatibility hash, written atomically (temporary file + rename).

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use wasmtime::Engine;

/// Errors of the compile cache.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cache directory or an entry could not be written.
    #[error(
        "cannot write the compile cache at {path}: {source} (check the directory's permissions or free space)"
    )]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Compiled modules and components on disk, one file per (wasm digest, engine) pair.
#[derive(Clone, Debug)]
pub struct CompileCache {
    dir: PathBuf,
    engine_hash: String,
}

impl CompileCache {
    /// A cache in `dir` (created if missing) for artifacts of `engine`.
    pub fn new(dir: impl Into<PathBuf>, engine: &Engine) -> Result<CompileCache, Error> {
        CompileCache::with_key(dir, engine_hash(engine))
    }

    /// A cache in `dir` (created if missing) for artifacts of the engine named by `key`
    /// (another engine's: its name and version).
    pub(crate) fn with_key(dir: impl Into<PathBuf>, key: String) -> Result<CompileCache, Error> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(CompileCache {
            dir,
            engine_hash: key,
        })
    }

    /// The directory holding the entries.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file for the wasm whose sha256 is `digest` (hex), whether or not it exists.
    pub fn entry(&self, digest: &str) -> PathBuf {
        self.dir
            .join(format!("{digest}-{}.cwasm", self.engine_hash))
    }

    /// Stores `artifact` (from `Module::serialize` / `Component::serialize`) atomically:
    /// a reader sees either no entry or the whole of it. A directory removed since the cache
    /// was opened (a user clearing their caches under a running node) is made again.
    pub fn store(&self, digest: &str, artifact: &[u8]) -> Result<PathBuf, Error> {
        let path = self.entry(digest);
        let io_err = |source| Error::Io {
            path: path.clone(),
            source,
        };
        let mut tmp = match tempfile_in(&self.dir) {
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(&self.dir).map_err(io_err)?;
                tempfile_in(&self.dir)
            }
            made => made,
        }
        .map_err(io_err)?;
        tmp.1.write_all(artifact).map_err(io_err)?;
        tmp.1.sync_all().map_err(io_err)?;
        std::fs::rename(&tmp.0, &path).map_err(|source| {
            let _ = std::fs::remove_file(&tmp.0);
            Error::Io {
                path: path.clone(),
                source,
            }
        })?;
        Ok(path)
    }
}

/// Creates a uniquely named temporary file in `dir`.
fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!(".tmp-{}-{n}", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    Ok((path, file))
}

/// The engine's `precompile_compatibility_hash` as hex: artifacts of engines with equal
/// hashes can be loaded by each other.
fn engine_hash(engine: &Engine) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_is_atomic_and_named_by_digest() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::new(dir.path().join("c"), &Engine::default()).unwrap();
        let path = cache.store("abc", b"artifact").unwrap();
        assert_eq!(path, cache.entry("abc"));
        assert_eq!(std::fs::read(&path).unwrap(), b"artifact");
        let names: Vec<_> = std::fs::read_dir(cache.dir()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left behind");
    }

    /// Clearing the cache's directory while the cache is open loses the entries, not the
    /// cache: the next store makes the directory again.
    #[test]
    fn a_removed_directory_is_made_again_by_the_next_store() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::new(dir.path().join("c"), &Engine::default()).unwrap();
        cache.store("abc", b"old").unwrap();
        std::fs::remove_dir_all(cache.dir()).unwrap();
        let path = cache.store("def", b"artifact").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"artifact");
        assert!(!cache.entry("abc").exists());
    }
}
