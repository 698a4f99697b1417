//! Finding one file in an image's tar layers, as the union filesystem would show it, and
//! taking it into the store.
//!
//! Layers are hostile input. Nothing is sized from a tar header: the file found is streamed
//! into a store temp file (hashing as it goes) after its declared size is checked against
//! [`LayerLimits::max_file_bytes`] and its first bytes against the `\0asm` magic, so a
//! native binary or a gzip bomb is refused before a byte is stored. Every layer is read
//! through a counter that stops at [`LayerLimits::max_expanded_bytes`], so a small gzip
//! stream cannot make the reader inflate gigabytes looking for the file.

use std::cell::Cell;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use crate::digest::{Digest, Hashing};
use crate::format::Descriptor;
use crate::pull::{Error, Result};
use crate::store::{Lease, Store};
use crate::wasm::WasmKind;

/// How many symlinks we follow before giving up.
const MAX_LINKS: usize = 16;

/// Default of [`LayerLimits::max_file_bytes`]: 1 GiB.
pub const MAX_FILE_BYTES: u64 = 1 << 30;
/// Default of [`LayerLimits::max_expanded_bytes`]: 8 GiB.
pub const MAX_EXPANDED_BYTES: u64 = 8 << 30;

/// Bounds on reading an image's tar layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerLimits {
    /// The largest entrypoint file taken from a layer; its tar header is checked before a
    /// byte of it is read (`wasmlet --max-wasm-bytes`).
    pub max_file_bytes: u64,
    /// The most bytes one layer may expand to as it is read, after gunzip
    /// (`wasmlet --max-layer-bytes`).
    pub max_expanded_bytes: u64,
}

impl Default for LayerLimits {
    fn default() -> LayerLimits {
        LayerLimits {
            max_file_bytes: MAX_FILE_BYTES,
            max_expanded_bytes: MAX_EXPANDED_BYTES,
        }
    }
}

/// A file taken from the layers into the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extracted {
    /// Its blob.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// Module or component.
    pub kind: WasmKind,
}

/// Where and for whom a file is looked up.
struct Lookup<'a> {
    store: &'a Store,
    lease: &'a Lease,
    /// The image reference, for errors.
    name: &'a str,
    /// The entrypoint as the image names it, for errors.
    path: &'a str,
}

/// Reads the WebAssembly file at `path` of the merged view of `layers` (bottom first),
/// honouring whiteouts and following symlinks within the image, into the store (held by
/// `lease`).
pub fn find_file(
    store: &Store,
    lease: &Lease,
    layers: &[&Descriptor],
    path: &str,
    name: &str,
) -> Result<Extracted> {
    let at = Lookup {
        store,
        lease,
        name,
        path,
    };
    let mut target = normalise(Path::new(path));
    for _ in 0..MAX_LINKS {
        match lookup(&at, layers, &target)? {
            Found::File(extracted) => return Ok(extracted),
            Found::Link(to) => target = resolve_link(&target, &to),
            Found::Absent => break,
        }
    }
    Err(Error::MissingFile {
        reference: name.to_string(),
        path: path.to_string(),
    })
}

enum Found {
    File(Extracted),
    Link(PathBuf),
    Absent,
}

/// Searches layers from the top down: the first layer that has the path (or a whiteout
/// for it) decides.
fn lookup(at: &Lookup, layers: &[&Descriptor], target: &Path) -> Result<Found> {
    for layer in layers.iter().rev() {
        if let Some(found) = lookup_in_layer(at, layer, target)? {
            return Ok(found);
        }
    }
    Ok(Found::Absent)
}

fn lookup_in_layer(at: &Lookup, layer: &Descriptor, target: &Path) -> Result<Option<Found>> {
    let limit = at.store.limits().max_expanded_bytes;
    let exceeded = Rc::new(Cell::new(false));
    let bad = |reason: String| match exceeded.get() {
        true => Error::LayerTooLarge {
            reference: at.name.to_string(),
            digest: layer.digest.clone(),
            limit,
        },
        false => Error::BadLayer {
            reference: at.name.to_string(),
            digest: layer.digest.clone(),
            reason,
        },
    };
    let whiteout = whiteout_of(target);
    let reader = open_layer(at.store, layer).map_err(|e| bad(e.to_string()))?;
    let mut archive = tar::Archive::new(Bounded {
        inner: reader,
        left: limit,
        exceeded: exceeded.clone(),
    });
    for entry in archive.entries().map_err(|e| bad(e.to_string()))? {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        let entry_path = normalise(&entry.path().map_err(|e| bad(e.to_string()))?);
        if Some(&entry_path) == whiteout.as_ref() {
            return Ok(Some(Found::Absent));
        }
        if entry_path != target {
            continue;
        }
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let to = entry
                .link_name()
                .map_err(|e| bad(e.to_string()))?
                .unwrap_or_default();
            let to = if kind.is_hard_link() {
                Path::new("/").join(to)
            } else {
                to.into_owned()
            };
            return Ok(Some(Found::Link(to)));
        }
        let size = entry.size();
        return extract(at, &mut entry, size)
            .map(|e| Some(Found::File(e)))
            .map_err(|e| match e {
                Error::BadLayer { reason, .. } => bad(reason),
                other => other,
            });
    }
    Ok(None)
}

/// Streams the file `entry` of `size` declared bytes into the store, refusing it first if
/// it is too large or does not start as WebAssembly.
fn extract(at: &Lookup, entry: &mut impl Read, size: u64) -> Result<Extracted> {
    let limit = at.store.limits().max_file_bytes;
    let what = format!("entrypoint {}", at.path);
    if size > limit {
        return Err(Error::FileTooLarge {
            reference: at.name.to_string(),
            what,
            size,
            limit,
        });
    }
    let mut head = [0u8; 8];
    let got = read_head(entry, &mut head).map_err(|e| bad_read(at, e))?;
    let kind = WasmKind::detect(&head[..got]).map_err(|source| Error::NotWasm {
        reference: at.name.to_string(),
        what,
        source,
    })?;
    let (tmp, file) = at.store.temp_file()?;
    let written = copy_hashed(&head, &mut entry.take(size - got as u64), file);
    let (digest, copied) = match written {
        Ok(done) => done,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(bad_read(at, e));
        }
    };
    if copied != size {
        let _ = std::fs::remove_file(&tmp);
        let reason = format!(
            "the layer ends inside {}: {copied} of its {size} bytes are there (a truncated or corrupt layer; push the image again)",
            at.path
        );
        return Err(bad_read(at, std::io::Error::other(reason)));
    }
    let held = at.store.hold(at.lease, &digest);
    let committed = held.and_then(|()| at.store.commit_hashed(&tmp, &digest, &digest, at.path));
    let _ = std::fs::remove_file(&tmp);
    committed?;
    Ok(Extracted {
        digest,
        size: copied,
        kind,
    })
}

fn read_head(entry: &mut impl Read, head: &mut [u8; 8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < head.len() {
        match entry.read(&mut head[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

/// Writes `head` then the rest of `rest` to `file` through a buffer, hashing; returns the
/// digest and the byte count.
fn copy_hashed(
    head: &[u8],
    rest: &mut impl Read,
    file: std::fs::File,
) -> std::io::Result<(Digest, u64)> {
    let mut out = Hashing::new(std::io::BufWriter::with_capacity(1 << 20, file));
    out.write_all(head)?;
    std::io::copy(rest, &mut out)?;
    out.flush()?;
    let written = out.written();
    Ok((out.finish().0, written))
}

fn bad_read(at: &Lookup, e: std::io::Error) -> Error {
    Error::BadLayer {
        reference: at.name.to_string(),
        digest: Digest::of(b""),
        reason: e.to_string(),
    }
}

/// A reader that fails once more than `left` bytes have been read through it.
struct Bounded<R> {
    inner: R,
    left: u64,
    exceeded: Rc<Cell<bool>>,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        match self.left.checked_sub(n as u64) {
            Some(left) => {
                self.left = left;
                Ok(n)
            }
            None => {
                self.exceeded.set(true);
                Err(std::io::Error::other("the layer expands past its limit"))
            }
        }
    }
}

/// Opens a layer blob, gunzipping when it starts with the gzip magic.
fn open_layer(store: &Store, layer: &Descriptor) -> std::io::Result<Box<dyn Read>> {
    let mut file = std::fs::File::open(store.blob_path(&layer.digest))?;
    let mut magic = [0u8; 2];
    let n = file.read(&mut magic)?;
    let head = std::io::Cursor::new(magic[..n].to_vec()).chain(file);
    Ok(if magic == [0x1f, 0x8b] {
        Box::new(flate2::read::GzDecoder::new(head))
    } else {
        Box::new(head)
    })
}

/// `a/b/c` -> `a/b/.wh.c`.
fn whiteout_of(path: &Path) -> Option<PathBuf> {
    let file = path.file_name()?.to_string_lossy();
    Some(path.with_file_name(format!(".wh.{file}")))
}

/// A path relative to the image root with `.` and `..` resolved, never above the root.
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

fn resolve_link(at: &Path, to: &Path) -> PathBuf {
    if to.is_absolute() {
        normalise(to)
    } else {
        normalise(&at.parent().unwrap_or(Path::new("")).join(to))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar entry: path, file content or symlink target.
    type Entry<'a> = (&'a str, Option<&'a [u8]>, Option<&'a str>);

    fn layer(store: &Store, entries: &[Entry], gzip: bool) -> Descriptor {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            match (data, link) {
                (Some(d), _) => {
                    h.set_size(d.len() as u64);
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(0o644);
                    builder.append_data(&mut h, path, *d).unwrap();
                }
                (None, Some(l)) => {
                    h.set_size(0);
                    h.set_entry_type(tar::EntryType::Symlink);
                    builder.append_link(&mut h, path, l).unwrap();
                }
                _ => unreachable!(),
            }
        }
        let mut bytes = builder.into_inner().unwrap();
        if gzip {
            use std::io::Write;
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(&bytes).unwrap();
            bytes = enc.finish().unwrap();
        }
        let digest = store.write_blob(&bytes, None, "layer").unwrap();
        Descriptor {
            media_type: "x".into(),
            digest,
            size: bytes.len() as u64,
            platform: None,
            annotations: Default::default(),
        }
    }

    const ONE: &[u8] = b"\0asm\x01\0\0\0one";
    const TWO: &[u8] = b"\0asm\x01\0\0\0two";

    /// The content of the file `path` of `layers`, taken into the store.
    fn find(store: &Store, layers: &[&Descriptor], path: &str) -> Result<Vec<u8>> {
        let lease = store.lease().unwrap();
        let found = find_file(store, &lease, layers, path, "r")?;
        assert_eq!(found.kind, WasmKind::Module);
        Ok(store.read_blob(&found.digest).unwrap())
    }

    #[test]
    fn union_view_of_layers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let entries: &[Entry] = &[
            ("hello.wasm", Some(ONE), None),
            ("gone.wasm", Some(ONE), None),
        ];
        let l1 = layer(&store, entries, true);
        let l2 = layer(
            &store,
            &[
                ("./hello.wasm", Some(TWO), None),
                (".wh.gone.wasm", Some(&b""[..]), None),
                ("bin/app.wasm", None, Some("../hello.wasm")),
                ("abs.wasm", None, Some("/bin/app.wasm")),
            ],
            false,
        );
        let layers = [&l1, &l2];
        assert_eq!(find(&store, &layers, "/hello.wasm").unwrap(), TWO);
        assert_eq!(find(&store, &[&l1], "/hello.wasm").unwrap(), ONE);
        assert_eq!(find(&store, &layers, "/bin/app.wasm").unwrap(), TWO);
        assert_eq!(find(&store, &layers, "abs.wasm").unwrap(), TWO);
        assert!(matches!(
            find(&store, &layers, "/gone.wasm"),
            Err(Error::MissingFile { .. })
        ));
        assert!(matches!(
            find(&store, &layers, "/nope.wasm"),
            Err(Error::MissingFile { .. })
        ));
    }

    #[test]
    fn symlink_loops_end() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let entries: &[Entry] = &[
            ("a.wasm", None, Some("b.wasm")),
            ("b.wasm", None, Some("a.wasm")),
        ];
        let l = layer(&store, entries, false);
        assert!(matches!(
            find(&store, &[&l], "a.wasm"),
            Err(Error::MissingFile { .. })
        ));
    }

    #[test]
    fn garbage_layers_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let bytes = vec![0x1f, 0x8b, 1, 2, 3];
        let d = store.write_blob(&bytes, None, "l").unwrap();
        let desc = Descriptor {
            media_type: "x".into(),
            digest: d,
            size: 5,
            platform: None,
            annotations: Default::default(),
        };
        assert!(matches!(
            find(&store, &[&desc], "a"),
            Err(Error::BadLayer { .. })
        ));
    }

    /// The blob files of the store.
    fn blobs(store: &Store) -> usize {
        std::fs::read_dir(store.root().join("blobs/sha256"))
            .unwrap()
            .count()
    }

    #[test]
    fn a_huge_declared_size_is_refused_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_path("app.wasm").unwrap();
        h.set_size(100 << 30);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        let mut bytes = h.as_bytes().to_vec();
        bytes.extend_from_slice(b"\0asm\x01\0\0\0");
        let l = store.write_blob(&bytes, None, "layer").unwrap();
        let desc = Descriptor {
            media_type: "x".into(),
            digest: l,
            size: bytes.len() as u64,
            platform: None,
            annotations: Default::default(),
        };
        let err = find(&store, &[&desc], "app.wasm").unwrap_err();
        assert!(
            matches!(err, Error::FileTooLarge { size, .. } if size == 100 << 30),
            "{err}"
        );
        assert!(err.to_string().contains("--max-wasm-bytes"), "{err}");
        assert_eq!(blobs(&store), 1, "only the layer");
    }

    #[test]
    fn a_gzip_bomb_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let limits = LayerLimits {
            max_file_bytes: 4 << 20,
            max_expanded_bytes: 16 << 20,
        };
        let store = Store::open(dir.path()).unwrap().with_limits(limits);
        let big = vec![0u8; 64 << 20];
        let mut wasm = b"\0asm\x01\0\0\0".to_vec();
        wasm.extend_from_slice(&big[..8 << 20]);
        for (entries, expected) in [
            (
                vec![("bomb.wasm", &big[..])],
                "over the limit of 4194304 bytes",
            ),
            (vec![("native.wasm", &big[..2 << 20])], "not WebAssembly"),
            (
                vec![("big.wasm", &wasm[..])],
                "over the limit of 4194304 bytes",
            ),
            (
                vec![("filler", &big[..]), ("app.wasm", &wasm[..16])],
                "expands past the limit of 16777216 bytes",
            ),
        ] {
            let entries: Vec<Entry> = entries.iter().map(|(p, d)| (*p, Some(*d), None)).collect();
            let l = layer(&store, &entries, true);
            assert!(l.size < 1 << 20, "a small gzip stream: {}", l.size);
            let target = entries.last().unwrap().0;
            let err = find(&store, &[&l], target).unwrap_err();
            assert!(err.to_string().contains(expected), "{err}");
            assert_eq!(blobs(&store), 1, "only the layer: {err}");
            std::fs::remove_file(store.blob_path(&l.digest)).unwrap();
        }
        let temp = std::fs::read_dir(store.root().join("tmp")).unwrap().count();
        assert_eq!(temp, 0);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    const MAGIC: &[u8] = b"\0asm\x01\0\0\0";

    /// An entry of a generated layer: a regular file or a directory.
    #[derive(Debug, Clone)]
    enum Item {
        File(String, Vec<u8>),
        Dir(String),
    }

    /// A generated layer holding `content` at `path` among other entries, and where that
    /// file lies in the tar stream.
    #[derive(Clone)]
    struct Archive {
        tar: Vec<u8>,
        path: String,
        content: Vec<u8>,
        /// Offset of the file's header.
        header: usize,
        /// Offsets of the first byte of its data and of the byte after it.
        data: std::ops::Range<usize>,
    }

    /// Shown in short, for readable failures.
    impl std::fmt::Debug for Archive {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Archive")
                .field("tar_bytes", &self.tar.len())
                .field("path", &self.path)
                .field("content_bytes", &self.content.len())
                .field("header", &self.header)
                .field("data", &self.data)
                .finish()
        }
    }

    /// Paths without a dot, so that none is the wanted `*.wasm` file or a whiteout.
    fn other_path() -> impl Strategy<Value = String> {
        "[a-z]{1,8}(/[a-z]{1,8}){0,2}"
    }

    fn item() -> impl Strategy<Value = Item> {
        prop_oneof![
            4 => (other_path(), prop::collection::vec(any::<u8>(), 0..700))
                .prop_map(|(p, d)| Item::File(p, d)),
            1 => other_path().prop_map(Item::Dir),
        ]
    }

    /// A WebAssembly file: the module magic, then arbitrary bytes.
    fn wasm() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(any::<u8>(), 0..1500).prop_map(|rest| [MAGIC, &rest].concat())
    }

    fn archive() -> impl Strategy<Value = Archive> {
        (
            "[a-z]{1,8}(/[a-z]{1,8}){0,2}\\.wasm",
            wasm(),
            prop::collection::vec(item(), 0..6),
            any::<prop::sample::Index>(),
        )
            .prop_map(|(path, content, others, at)| {
                let at = at.index(others.len() + 1);
                build(&path, &content, &others, at)
            })
    }

    fn append(builder: &mut tar::Builder<Vec<u8>>, item: &Item) {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        match item {
            Item::File(path, data) => {
                h.set_size(data.len() as u64);
                h.set_entry_type(tar::EntryType::Regular);
                builder.append_data(&mut h, path, &data[..]).unwrap();
            }
            Item::Dir(path) => {
                h.set_size(0);
                h.set_entry_type(tar::EntryType::Directory);
                builder.append_data(&mut h, path, &[][..]).unwrap();
            }
        }
    }

    /// A tar of `others` with the file `path` inserted before `others[at]`.
    fn build(path: &str, content: &[u8], others: &[Item], at: usize) -> Archive {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = 0;
        for (i, item) in others.iter().enumerate() {
            if i == at {
                header = builder.get_ref().len();
                append(&mut builder, &Item::File(path.into(), content.into()));
            }
            append(&mut builder, item);
        }
        if at == others.len() {
            header = builder.get_ref().len();
            append(&mut builder, &Item::File(path.into(), content.into()));
        }
        let tar = builder.into_inner().unwrap();
        // Paths are short: one plain header, no long-name entry.
        let start = header + 512;
        Archive {
            tar,
            path: path.into(),
            content: content.into(),
            header,
            data: start..start + content.len(),
        }
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    thread_local! {
        /// One store per test (each runs on its own thread): making a directory tree for
        /// every case would cost more than the case.
        static STORE: (tempfile::TempDir, Store) = {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path()).unwrap();
            (dir, store)
        };
    }

    /// This test's store, reading layers within `limits`.
    fn store(limits: LayerLimits) -> Store {
        STORE.with(|(_, store)| store.clone().with_limits(limits))
    }

    fn put(store: &Store, bytes: &[u8]) -> Descriptor {
        Descriptor {
            media_type: "x".into(),
            digest: store.write_blob(bytes, None, "layer").unwrap(),
            size: bytes.len() as u64,
            platform: None,
            annotations: Default::default(),
        }
    }

    fn count(dir: &Path) -> usize {
        std::fs::read_dir(dir).unwrap().count()
    }

    /// Looks `path` up in `layers` and checks what every answer must satisfy: a file found
    /// is within `max_file_bytes`, is WebAssembly and is stored whole; a failure leaves
    /// nothing behind but the layers. Returns the file's bytes.
    fn find(
        store: &Store,
        layers: &[&Descriptor],
        path: &str,
    ) -> Result<Result<Vec<u8>>, TestCaseError> {
        let blobs = store.root().join("blobs/sha256");
        let before = count(&blobs);
        let lease = store.lease().unwrap();
        let found = find_file(store, &lease, layers, path, "r");
        prop_assert_eq!(count(&store.root().join("tmp")), 0, "a temp file is left");
        let found = match found {
            Ok(found) => found,
            Err(e) => {
                prop_assert_eq!(count(&blobs), before, "{} stored something", e);
                return Ok(Err(e));
            }
        };
        prop_assert!(found.size <= store.limits().max_file_bytes);
        let bytes = store.read_blob(&found.digest).unwrap();
        prop_assert_eq!(bytes.len() as u64, found.size);
        prop_assert_eq!(Digest::of(&bytes), found.digest.clone());
        prop_assert_eq!(WasmKind::detect(&bytes).ok(), Some(found.kind));
        Ok(Ok(bytes))
    }

    fn limits() -> impl Strategy<Value = LayerLimits> {
        (0u64..4096, 0u64..16384).prop_map(|(max_file_bytes, max_expanded_bytes)| LayerLimits {
            max_file_bytes,
            max_expanded_bytes,
        })
    }

    /// The layer bytes, gzipped or not.
    fn wrapped(tar: &[u8], gzipped: bool) -> Vec<u8> {
        if gzipped { gzip(tar) } else { tar.to_vec() }
    }

    proptest! {
        /// Arbitrary bytes as a layer, plain or gzipped, never panic and never give a file
        /// over the limit, or leave anything stored when they fail.
        #[test]
        fn find_file_properties_on_arbitrary_bytes(
            bytes in prop::collection::vec(any::<u8>(), 0..3000),
            gzipped in any::<bool>(),
            limits in limits(),
        ) {
            let store = store(limits);
            let layer = put(&store, &wrapped(&bytes, gzipped));
            let _ = find(&store, &[&layer], "app.wasm")?;
        }

        /// A generated archive with arbitrary bytes overwritten never panics and never
        /// gives a file over the limit or one that is not WebAssembly.
        #[test]
        fn find_file_properties_on_corrupted_archives(
            archive in archive(),
            gzipped in any::<bool>(),
            changes in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            limits in limits(),
        ) {
            let store = store(limits);
            let mut bytes = wrapped(&archive.tar, gzipped);
            for (at, byte) in changes {
                let at = at.index(bytes.len());
                bytes[at] = byte;
            }
            let layer = put(&store, &bytes);
            let _ = find(&store, &[&layer], &archive.path)?;
        }

        /// The wanted file among other entries is found, whichever way its path is
        /// written, with exactly its bytes; it hides the same path in a lower layer.
        #[test]
        fn find_file_properties_find_exactly_the_file(
            archive in archive(),
            gzipped in any::<bool>(),
            prefix in prop::sample::select(&["", "/", "./", "/x/../"][..]),
            lower in wasm(),
        ) {
            let store = store(LayerLimits::default());
            let top = put(&store, &wrapped(&archive.tar, gzipped));
            let path = format!("{prefix}{}", archive.path);
            let found = find(&store, &[&top], &path)?;
            prop_assert_eq!(found.ok(), Some(archive.content.clone()));
            let bottom = put(&store, &build(&archive.path, &lower, &[], 0).tar);
            let found = find(&store, &[&bottom, &top], &path)?;
            prop_assert_eq!(found.ok(), Some(archive.content.clone()));
            let found = find(&store, &[&top, &bottom], &path)?;
            prop_assert_eq!(found.ok(), Some(lower));
        }

        /// A file larger than `max_file_bytes` is refused from its header, and a layer
        /// that must expand past `max_expanded_bytes` to reach the file's end is refused;
        /// otherwise the file is found whole.
        #[test]
        fn find_file_properties_honour_the_limits(
            archive in archive(),
            gzipped in any::<bool>(),
            limits in limits(),
        ) {
            let store = store(limits);
            let layer = put(&store, &wrapped(&archive.tar, gzipped));
            let found = find(&store, &[&layer], &archive.path)?;
            let size = archive.content.len() as u64;
            let expanded = |end: usize| end as u64 > limits.max_expanded_bytes;
            match found {
                Err(Error::LayerTooLarge { limit, .. }) => {
                    prop_assert_eq!(limit, limits.max_expanded_bytes);
                    prop_assert!(
                        expanded(archive.header + 512)
                            || size <= limits.max_file_bytes && expanded(archive.data.end),
                        "refused at {} for {:?}", limit, archive.data
                    );
                }
                Err(Error::FileTooLarge { size: declared, limit, .. }) => {
                    prop_assert_eq!((declared, limit), (size, limits.max_file_bytes));
                    prop_assert!(size > limit && !expanded(archive.header + 512));
                }
                Ok(bytes) => {
                    prop_assert_eq!(bytes, archive.content);
                    prop_assert!(size <= limits.max_file_bytes && !expanded(archive.data.end));
                }
                Err(e) => prop_assert!(false, "unexpected {}", e),
            }
        }

        /// An archive cut short gives an error or the file's exact bytes, never a part of
        /// the file.
        #[test]
        fn find_file_properties_on_truncated_archives(
            archive in archive(),
            gzipped in any::<bool>(),
            cut in any::<prop::sample::Index>(),
        ) {
            let store = store(LayerLimits::default());
            let bytes = wrapped(&archive.tar, gzipped);
            let cut = cut.index(bytes.len());
            let layer = put(&store, &bytes[..cut]);
            if let Ok(found) = find(&store, &[&layer], &archive.path)? {
                prop_assert!(
                    found == archive.content,
                    "cut at {} (gzip {}): {} bytes found", cut, gzipped, found.len()
                );
            }
        }

        /// One flipped bit gives an error or the file's exact bytes. In a plain tar the
        /// bit is outside the file's data (tar has no checksum of data); in a gzip stream
        /// it is in the gzip header: a bit flipped in the deflate data can give wrong bytes
        /// silently, because `find_file` stops reading before the CRC-32 trailer, a known
        /// defect.
        #[test]
        fn find_file_properties_on_flipped_bits(
            archive in archive(),
            gzipped in any::<bool>(),
            at in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let store = store(LayerLimits::default());
            let mut bytes = wrapped(&archive.tar, gzipped);
            let at = if gzipped {
                at.index(10)
            } else {
                // Anywhere but the file's data, which is `archive.data.len()` bytes long.
                let at = at.index(bytes.len() - archive.data.len());
                if at < archive.data.start { at } else { at + archive.data.len() }
            };
            bytes[at] ^= 1 << bit;
            let layer = put(&store, &bytes);
            if let Ok(found) = find(&store, &[&layer], &archive.path)? {
                prop_assert!(
                    found == archive.content,
                    "bit {} of byte {} (gzip {}): {} bytes found", bit, at, gzipped, found.len()
                );
            }
        }
    }
}
