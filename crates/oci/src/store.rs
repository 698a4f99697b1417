//! The local content-addressed store: blobs by digest, and the images pulled into it.
//!
//! Layout: `blobs/sha256/<hex>` for content, `images.json` for the image records, `tmp/` for
//! writes in progress, `leases/` for pulls in progress. Every write lands in `tmp/` first and
//! is renamed into place, so a blob file is either absent or complete, and two writers of the
//! same blob cannot corrupt it. `images.json` is updated under an exclusive file lock.
//!
//! A pull in progress holds a [`Lease`]: a file under `leases/`, locked for as long as the
//! pull runs, naming every blob the pull uses before it looks for or writes it. A temp file
//! is locked by its writer until it is renamed. So [`Store::prune`] (under the store lock)
//! keeps what pulls in flight use and write, and a pull that fails gives back what only it
//! had stored ([`Store::discard`]): a failed pull leaves nothing behind.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::digest::{Digest, Hashing};
use crate::format::Format;
use crate::wasm::WasmKind;

/// Problems reading or writing the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem operation failed.
    #[error("image store {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Content does not hash to the digest it was stored or fetched under.
    #[error(
        "digest mismatch for {what}: expected {expected}, got {actual}; the content is corrupt or was changed, nothing was stored"
    )]
    DigestMismatch {
        /// What was being written.
        what: String,
        /// The digest it should have.
        expected: Digest,
        /// The digest it has.
        actual: Digest,
    },
    /// `images.json` is not what we wrote.
    #[error("image store index {path} is corrupt ({reason}); remove it and pull again")]
    CorruptIndex {
        /// The file.
        path: PathBuf,
        /// The parse error.
        reason: String,
    },
    /// No image by that reference.
    #[error("image {0} is not in the local store; pull it first with `wasmlet pull {0}`")]
    NotFound(String),
}

/// Shorthand for this module's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An image in the store: what was pulled, and what is needed to run it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// The reference it was pulled or imported as (registry/repository[:tag][@digest]).
    pub reference: String,
    /// The digest the reference resolved to (an index or a manifest): the image ID.
    pub digest: Digest,
    /// The media type of what `digest` names (an index or a manifest).
    pub media_type: String,
    /// The platform manifest used.
    pub manifest: Digest,
    /// The packaging format found.
    pub format: Format,
    /// The blob holding the wasm bytes.
    pub wasm: Digest,
    /// Size of the wasm in bytes.
    pub wasm_size: u64,
    /// Module or component.
    pub kind: WasmKind,
    /// ENTRYPOINT then CMD from an image config (empty for artifacts).
    #[serde(default)]
    pub argv: Vec<String>,
    /// `K=V` environment from an image config.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory from an image config.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// Every blob this image keeps alive (manifests, config, layers, wasm).
    pub blobs: Vec<Digest>,
    /// RFC 3339 time it entered the store.
    pub stored_at: String,
}

#[derive(Default, Serialize, Deserialize)]
struct Index {
    images: Vec<Image>,
}

/// The store rooted at a directory.
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
    limits: crate::layers::LayerLimits,
}

/// The blobs a pull in progress uses (see the module doc). Dropping it ends the lease.
#[derive(Debug)]
pub struct Lease {
    path: PathBuf,
    file: fs::File,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Store {
    /// Opens (creating if needed) a store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store> {
        let root = root.into();
        for dir in [
            root.join("blobs/sha256"),
            root.join("tmp"),
            root.join("leases"),
        ] {
            fs::create_dir_all(&dir).map_err(|source| Error::Io { path: dir, source })?;
        }
        Ok(Store {
            root,
            limits: crate::layers::LayerLimits::default(),
        })
    }

    /// The same store, reading image layers within `limits`.
    pub fn with_limits(mut self, limits: crate::layers::LayerLimits) -> Store {
        self.limits = limits;
        self
    }

    /// The bounds on reading image layers.
    pub fn limits(&self) -> crate::layers::LayerLimits {
        self.limits
    }

    /// The default location: `$WASMLET_STORE`, else `$XDG_DATA_HOME/wasmlet/store`, else
    /// `~/.local/share/wasmlet/store`.
    pub fn default_root() -> PathBuf {
        if let Some(p) = std::env::var_os("WASMLET_STORE") {
            return PathBuf::from(p);
        }
        let data = std::env::var_os("XDG_DATA_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/share")))
            .unwrap_or_else(|| PathBuf::from("/var/lib"));
        data.join("wasmlet/store")
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of a blob (which may not exist).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    /// Whether a blob is present.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Reads a whole blob.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        fs::read(&path).map_err(|source| Error::Io { path, source })
    }

    /// A fresh, unique path under `tmp/` for a write in progress.
    pub fn temp_path(&self) -> PathBuf {
        self.unique_path("tmp")
    }

    fn unique_path(&self, dir: &str) -> PathBuf {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        self.root
            .join(dir)
            .join(format!("{}-{n}", std::process::id()))
    }

    /// Creates a fresh temp file for a write in progress, locked so that [`Store::prune`]
    /// leaves it alone while the returned handle (or a clone of it) is open.
    pub fn temp_file(&self) -> Result<(PathBuf, fs::File)> {
        let path = self.temp_path();
        let file = create(&path)?;
        file.lock().map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        Ok((path, file))
    }

    /// The size of a blob and its first bytes (up to `N`).
    pub fn blob_head<const N: usize>(&self, digest: &Digest) -> Result<(u64, Vec<u8>)> {
        use std::io::Read;
        let path = self.blob_path(digest);
        let io_err = |source| Error::Io {
            path: path.clone(),
            source,
        };
        let file = fs::File::open(&path).map_err(io_err)?;
        let size = file.metadata().map_err(io_err)?.len();
        let mut head = Vec::with_capacity(N);
        file.take(N as u64).read_to_end(&mut head).map_err(io_err)?;
        Ok((size, head))
    }

    /// Starts a lease for a pull (see the module doc).
    pub fn lease(&self) -> Result<Lease> {
        let path = self.unique_path("leases");
        let file = create(&path)?;
        file.lock().map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        Ok(Lease { path, file })
    }

    /// Records that the pull holding `lease` uses `digest`; call it before looking for the
    /// blob or writing it, so that a prune cannot take it away in between.
    pub fn hold(&self, lease: &Lease, digest: &Digest) -> Result<()> {
        let _lock = self.lock()?;
        let mut file = &lease.file;
        writeln!(file, "{}", digest.hex()).map_err(|source| Error::Io {
            path: lease.path.clone(),
            source,
        })
    }

    /// Ends a failed pull's lease, removing the blobs it held that no image records and no
    /// other pull in flight holds.
    pub fn discard(&self, lease: Lease) -> Result<()> {
        let _lock = self.lock()?;
        let held = read_lease(&lease.path);
        drop(lease);
        let keep = self.kept()?;
        for hex in held.difference(&keep) {
            let _ = fs::remove_file(self.root.join("blobs/sha256").join(hex));
        }
        Ok(())
    }

    /// What must not be removed: every blob an image records or a live lease holds. Stale
    /// leases (of pulls that died) are removed. Call under the store lock.
    fn kept(&self) -> Result<BTreeSet<String>> {
        let mut keep: BTreeSet<String> = self
            .read_index()?
            .images
            .iter()
            .flat_map(|i| i.blobs.iter().chain([&i.wasm, &i.digest, &i.manifest]))
            .map(|d| d.hex().to_string())
            .collect();
        let dir = self.root.join("leases");
        let entries = fs::read_dir(&dir).map_err(|source| Error::Io { path: dir, source })?;
        for entry in entries.flatten() {
            if is_locked(&entry.path()) {
                keep.extend(read_lease(&entry.path()));
            } else {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(keep)
    }

    /// Stores bytes that must hash to `expected` (when given); returns their digest.
    pub fn write_blob(
        &self,
        bytes: &[u8],
        expected: Option<&Digest>,
        what: &str,
    ) -> Result<Digest> {
        let actual = Digest::of(bytes);
        if let Some(expected) = expected.filter(|e| **e != actual) {
            return Err(Error::DigestMismatch {
                what: what.to_string(),
                expected: expected.clone(),
                actual,
            });
        }
        if self.has_blob(&actual) {
            return Ok(actual);
        }
        let (tmp, file) = self.temp_file()?;
        let mut file = Hashing::new(file);
        file.write_all(bytes)
            .and_then(|_| file.flush())
            .map_err(|source| Error::Io {
                path: tmp.clone(),
                source,
            })?;
        self.commit_temp(&tmp, &actual, what)?;
        Ok(actual)
    }

    /// Moves a finished temp file into place as blob `digest`, after checking its content
    /// hashes to `digest`. The temp file is removed on every path.
    pub fn commit_temp(&self, tmp: &Path, digest: &Digest, what: &str) -> Result<()> {
        match hash_file(tmp) {
            Ok(actual) => self.commit_hashed(tmp, digest, &actual, what),
            Err(source) => {
                let _ = fs::remove_file(tmp);
                Err(Error::Io {
                    path: tmp.to_owned(),
                    source,
                })
            }
        }
    }

    /// Moves a finished temp file whose content the caller hashed to `actual` into place as
    /// blob `expected`, or removes it when the two differ.
    pub fn commit_hashed(
        &self,
        tmp: &Path,
        expected: &Digest,
        actual: &Digest,
        what: &str,
    ) -> Result<()> {
        let result = if actual == expected {
            let dest = self.blob_path(expected);
            fs::rename(tmp, &dest).map_err(|source| Error::Io { path: dest, source })
        } else {
            Err(Error::DigestMismatch {
                what: what.to_string(),
                expected: expected.clone(),
                actual: actual.clone(),
            })
        };
        let _ = fs::remove_file(tmp);
        result
    }

    /// All images, in reference order.
    pub fn images(&self) -> Result<Vec<Image>> {
        Ok(self.read_index()?.images)
    }

    /// The image stored under `reference` (compared in its normalised form).
    pub fn image(&self, reference: &str) -> Result<Image> {
        self.images()?
            .into_iter()
            .find(|i| i.reference == reference)
            .ok_or_else(|| Error::NotFound(reference.to_string()))
    }

    /// Records an image, replacing any record with the same reference.
    pub fn put_image(&self, image: Image) -> Result<()> {
        self.update_index(|index| {
            index.images.retain(|i| i.reference != image.reference);
            index.images.push(image);
            index.images.sort_by(|a, b| a.reference.cmp(&b.reference));
        })
    }

    /// Removes the record of `reference` (its blobs stay until [`Store::prune`]).
    pub fn remove_image(&self, reference: &str) -> Result<()> {
        let mut found = false;
        self.update_index(|index| {
            let before = index.images.len();
            index.images.retain(|i| i.reference != reference);
            found = index.images.len() != before;
        })?;
        if found {
            Ok(())
        } else {
            Err(Error::NotFound(reference.to_string()))
        }
    }

    /// Deletes blobs no image uses and no pull in flight holds, and temp files no writer has
    /// open; returns (files removed, bytes freed).
    pub fn prune(&self) -> Result<(usize, u64)> {
        let _lock = self.lock()?;
        let keep = self.kept()?;
        let mut removed = (0, 0);
        for dir in [self.root.join("blobs/sha256"), self.root.join("tmp")] {
            let temp = dir.ends_with("tmp");
            let entries = fs::read_dir(&dir).map_err(|source| Error::Io {
                path: dir.clone(),
                source,
            })?;
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if keep.contains(&name) || (temp && is_locked(&entry.path())) {
                    continue;
                }
                let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                if fs::remove_file(entry.path()).is_ok() {
                    removed.0 += 1;
                    removed.1 += size;
                }
            }
        }
        Ok(removed)
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("images.json")
    }

    fn read_index(&self) -> Result<Index> {
        let path = self.index_path();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::CorruptIndex {
                path,
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Index::default()),
            Err(source) => Err(Error::Io { path, source }),
        }
    }

    fn update_index(&self, change: impl FnOnce(&mut Index)) -> Result<()> {
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        change(&mut index);
        let bytes = serde_json::to_vec_pretty(&index).unwrap_or_default();
        let tmp = self.temp_path();
        let path = self.index_path();
        fs::write(&tmp, bytes)
            .and_then(|_| fs::rename(&tmp, &path))
            .map_err(|source| Error::Io { path, source })
    }

    fn lock(&self) -> Result<fs::File> {
        let path = self.root.join(".lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
        file.lock().map_err(|source| Error::Io { path, source })?;
        Ok(file)
    }
}

fn create(path: &Path) -> Result<fs::File> {
    fs::File::create(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}

/// Whether another open file holds the lock of `path` (a live lease or a temp file being
/// written). A file that cannot be opened counts as unlocked.
fn is_locked(path: &Path) -> bool {
    let Ok(file) = fs::File::open(path) else {
        return false;
    };
    matches!(file.try_lock(), Err(fs::TryLockError::WouldBlock))
}

/// The digests (hex) a lease file names; a line that is not a digest is ignored.
fn read_lease(path: &Path) -> BTreeSet<String> {
    let text = fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| l.len() == 64 && l.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_owned)
        .collect()
}

/// The digest of a file's content.
pub fn hash_file(path: &Path) -> io::Result<Digest> {
    let mut file = fs::File::open(path)?;
    let mut hashing = Hashing::new(io::sink());
    io::copy(&mut file, &mut hashing)?;
    Ok(hashing.finish().0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(reference: &str, wasm: &Digest) -> Image {
        Image {
            reference: reference.into(),
            digest: wasm.clone(),
            media_type: "m".into(),
            manifest: wasm.clone(),
            format: Format::CncfArtifact,
            wasm: wasm.clone(),
            wasm_size: 1,
            kind: WasmKind::Module,
            argv: vec![],
            env: vec![],
            working_dir: None,
            blobs: vec![wasm.clone()],
            stored_at: "now".into(),
        }
    }

    #[test]
    fn blobs_are_checked_and_deduplicated() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = store.write_blob(b"abc", None, "x").unwrap();
        assert_eq!(store.read_blob(&d).unwrap(), b"abc");
        assert_eq!(store.write_blob(b"abc", Some(&d), "x").unwrap(), d);
        let err = store.write_blob(b"abd", Some(&d), "layer x").unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        assert!(!store.has_blob(&Digest::of(b"abd")));
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn images_are_recorded_replaced_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = store.write_blob(b"a", None, "a").unwrap();
        let b = store.write_blob(b"b", None, "b").unwrap();
        store.put_image(image("r/x:1", &a)).unwrap();
        store.put_image(image("r/x:1", &a)).unwrap();
        store.put_image(image("r/y:1", &b)).unwrap();
        assert_eq!(store.images().unwrap().len(), 2);
        store.remove_image("r/y:1").unwrap();
        assert!(matches!(
            store.remove_image("r/y:1"),
            Err(Error::NotFound(_))
        ));
        let (n, bytes) = store.prune().unwrap();
        assert_eq!((n, bytes), (1, 1));
        assert!(store.has_blob(&a) && !store.has_blob(&b));
        assert!(store.image("r/x:1").is_ok());
    }

    #[test]
    fn concurrent_writers_of_one_blob_agree() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let data = vec![7u8; 1 << 20];
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    store
                        .write_blob(&data, Some(&Digest::of(&data)), "big")
                        .unwrap()
                });
            }
        });
        assert_eq!(store.read_blob(&Digest::of(&data)).unwrap(), data);
    }

    #[test]
    fn prune_keeps_what_pulls_in_flight_hold_and_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let lease = store.lease().unwrap();
        let held = Digest::of(b"held");
        store.hold(&lease, &held).unwrap();
        store.write_blob(b"held", Some(&held), "m").unwrap();
        let orphan = store.write_blob(b"orphan", None, "m").unwrap();
        let (tmp, mut writing) = store.temp_file().unwrap();
        writing.write_all(b"half a layer").unwrap();
        std::fs::write(store.root().join("leases/1-1"), held.hex()).unwrap();
        assert_eq!(store.prune().unwrap(), (1, 6), "only the orphan");
        assert!(store.has_blob(&held) && !store.has_blob(&orphan) && tmp.exists());
        assert!(
            !store.root().join("leases/1-1").exists(),
            "a stale lease goes"
        );
        drop((lease, writing));
        assert_eq!(store.prune().unwrap(), (2, 16));
        assert!(!store.has_blob(&held) && !tmp.exists());
    }

    #[test]
    fn a_failed_pull_gives_back_only_its_own_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let kept = store.write_blob(b"an image", None, "m").unwrap();
        store.put_image(image("a", &kept)).unwrap();
        let other = store.lease().unwrap();
        let shared = store.write_blob(b"shared", None, "m").unwrap();
        store.hold(&other, &shared).unwrap();
        let failed = store.lease().unwrap();
        let own = store.write_blob(b"own", None, "m").unwrap();
        for d in [&kept, &shared, &own] {
            store.hold(&failed, d).unwrap();
        }
        store.discard(failed).unwrap();
        assert!(store.has_blob(&kept) && store.has_blob(&shared) && !store.has_blob(&own));
        let leases = std::fs::read_dir(store.root().join("leases"))
            .unwrap()
            .count();
        assert_eq!(leases, 1, "the other pull's");
    }

    #[test]
    fn corrupt_index_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        fs::write(dir.path().join("images.json"), "{").unwrap();
        assert!(matches!(store.images(), Err(Error::CorruptIndex { .. })));
    }
}
