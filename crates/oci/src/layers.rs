//! Finding one file in an image's tar layers, as the union filesystem would show it.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use crate::format::Descriptor;
use crate::pull::{Error, Result};
use crate::store::Store;

/// How many symlinks we follow before giving up.
const MAX_LINKS: usize = 16;

/// Reads `path` from the merged view of `layers` (bottom first), honouring whiteouts and
/// following symlinks within the image.
pub fn find_file(store: &Store, layers: &[&Descriptor], path: &str, name: &str) -> Result<Vec<u8>> {
    let mut target = normalise(Path::new(path));
    for _ in 0..MAX_LINKS {
        match lookup(store, layers, &target, name)? {
            Found::File(bytes) => return Ok(bytes),
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
    File(Vec<u8>),
    Link(PathBuf),
    Absent,
}

/// Searches layers from the top down: the first layer that has the path (or a whiteout
/// for it) decides.
fn lookup(store: &Store, layers: &[&Descriptor], target: &Path, name: &str) -> Result<Found> {
    for layer in layers.iter().rev() {
        if let Some(found) = lookup_in_layer(store, layer, target, name)? {
            return Ok(found);
        }
    }
    Ok(Found::Absent)
}

fn lookup_in_layer(
    store: &Store,
    layer: &Descriptor,
    target: &Path,
    name: &str,
) -> Result<Option<Found>> {
    let bad = |reason: String| Error::BadLayer {
        reference: name.to_string(),
        digest: layer.digest.clone(),
        reason,
    };
    let whiteout = whiteout_of(target);
    let mut archive = tar::Archive::new(open_layer(store, layer).map_err(|e| bad(e.to_string()))?);
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
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| bad(e.to_string()))?;
        return Ok(Some(Found::File(bytes)));
    }
    Ok(None)
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
    use crate::digest::Digest;

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

    #[test]
    fn union_view_of_layers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let entries: &[Entry] = &[
            ("hello.wasm", Some(b"one"), None),
            ("gone.wasm", Some(b"x"), None),
        ];
        let l1 = layer(&store, entries, true);
        let l2 = layer(
            &store,
            &[
                ("./hello.wasm", Some(&b"two"[..]), None),
                (".wh.gone.wasm", Some(&b""[..]), None),
                ("bin/app.wasm", None, Some("../hello.wasm")),
                ("abs.wasm", None, Some("/bin/app.wasm")),
            ],
            false,
        );
        let layers = [&l1, &l2];
        assert_eq!(
            find_file(&store, &layers, "/hello.wasm", "r").unwrap(),
            b"two"
        );
        assert_eq!(
            find_file(&store, &[&l1], "/hello.wasm", "r").unwrap(),
            b"one"
        );
        assert_eq!(
            find_file(&store, &layers, "/bin/app.wasm", "r").unwrap(),
            b"two"
        );
        assert_eq!(find_file(&store, &layers, "abs.wasm", "r").unwrap(), b"two");
        assert!(matches!(
            find_file(&store, &layers, "/gone.wasm", "r"),
            Err(Error::MissingFile { .. })
        ));
        assert!(matches!(
            find_file(&store, &layers, "/nope.wasm", "r"),
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
            find_file(&store, &[&l], "a.wasm", "r"),
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
            find_file(&store, &[&desc], "a", "r"),
            Err(Error::BadLayer { .. })
        ));
        let _ = Digest::of(b"");
    }
}
