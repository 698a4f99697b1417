//! OCI image layouts (a directory or a tarball): import into the store and export from it,
//! so wasm moves without a registry.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::client::{FetchedManifest, Progress};
use crate::digest::Digest;
use crate::format::{Descriptor, Index, media};
use crate::pull::{self, Error, Result, Source};
use crate::reference::Reference;
use crate::store::{Image, Store};

/// The annotation containerd and wasmlet use for an image's full name.
pub const IMAGE_NAME: &str = "io.containerd.image.name";
/// The OCI annotation for a reference name (usually the tag).
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// An OCI image layout directory as a source.
pub struct LayoutSource {
    root: PathBuf,
}

impl LayoutSource {
    fn blob(&self, digest: &Digest) -> Result<Bytes> {
        let path = self.root.join("blobs/sha256").join(digest.hex());
        let bytes =
            fs::read(&path).map_err(|e| layout_err(&self.root, format!("blob {digest}: {e}")))?;
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(layout_err(
                &self.root,
                format!("blob {digest} has digest {actual}: the layout is corrupt"),
            ));
        }
        Ok(bytes.into())
    }
}

impl Source for LayoutSource {
    async fn manifest(&self, digest: &Digest) -> Result<FetchedManifest> {
        let bytes = self.blob(digest)?;
        let media_type = sniff_media_type(&bytes);
        Ok(FetchedManifest {
            bytes,
            digest: digest.clone(),
            media_type,
        })
    }

    async fn small_blob(&self, desc: &Descriptor) -> Result<Bytes> {
        self.blob(&desc.digest)
    }

    async fn blob(&self, desc: &Descriptor, store: &Store, progress: &dyn Progress) -> Result<()> {
        let id = desc.digest.to_string();
        progress.start(&id, desc.size);
        if !store.has_blob(&desc.digest) {
            let src = self.root.join("blobs/sha256").join(desc.digest.hex());
            let (tmp, mut file) = store.temp_file()?;
            let copied = fs::File::open(&src).and_then(|mut f| std::io::copy(&mut f, &mut file));
            if let Err(e) = copied {
                let _ = fs::remove_file(&tmp);
                return Err(layout_err(&self.root, format!("blob {}: {e}", desc.digest)));
            }
            store.commit_temp(
                &tmp,
                &desc.digest,
                &format!("blob {} of layout {}", desc.digest, self.root.display()),
            )?;
        }
        progress.advance(&id, desc.size);
        progress.finish(&id);
        Ok(())
    }
}

fn sniff_media_type(bytes: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Probe>(bytes) {
        Ok(Probe {
            media_type: Some(m),
            ..
        }) => m,
        Ok(Probe {
            manifests: Some(_), ..
        }) => media::OCI_INDEX.to_string(),
        _ => media::OCI_MANIFEST.to_string(),
    }
}

/// Imports every image of the layout at `path` (a directory or a `.tar`). Images are named
/// by their `io.containerd.image.name`, else a full reference in `ref.name`, else
/// `name` (or `localhost/<layout name>`) with `ref.name` as the tag.
pub async fn import(
    store: &Store,
    path: &Path,
    name: Option<&str>,
    progress: &dyn Progress,
) -> Result<Vec<Image>> {
    let (root, _unpacked) = open_layout(path)?;
    let index_bytes = fs::read(root.join("index.json"))
        .map_err(|e| layout_err(path, format!("index.json: {e}")))?;
    let index: Index = serde_json::from_slice(&index_bytes)
        .map_err(|e| layout_err(path, format!("index.json: {e}")))?;
    let source = LayoutSource { root: root.clone() };
    let mut images = Vec::new();
    for desc in &index.manifests {
        let reference = image_name(desc, name, path)?;
        let top = Source::manifest(&source, &desc.digest).await?;
        images.push(pull::ingest(&source, store, top, &reference, progress).await?);
    }
    if images.is_empty() {
        return Err(layout_err(path, "index.json lists no images".to_string()));
    }
    Ok(images)
}

fn image_name(desc: &Descriptor, name: Option<&str>, path: &Path) -> Result<String> {
    let full = desc
        .annotations
        .get(IMAGE_NAME)
        .or(desc.annotations.get(REF_NAME).filter(|r| r.contains('/')));
    if let Some(full) = full {
        return parse_name(full, path);
    }
    let tag = desc
        .annotations
        .get(REF_NAME)
        .map_or("latest", String::as_str);
    let base = match name {
        Some(n) => n.to_string(),
        None => {
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().to_lowercase())
                .unwrap_or_default();
            format!("localhost/{}", stem.trim_end_matches(".tar"))
        }
    };
    let candidate = if base
        .rsplit('/')
        .next()
        .is_some_and(|last| last.contains(':'))
    {
        base
    } else {
        format!("{base}:{tag}")
    };
    parse_name(&candidate, path)
}

fn parse_name(s: &str, path: &Path) -> Result<String> {
    s.parse::<Reference>()
        .map(|r| r.to_string())
        .map_err(|e| layout_err(path, format!("image name `{s}`: {e}; give one with --name")))
}

/// A layout directory for `path`; tarballs are unpacked into a temp dir kept alive by the
/// second value.
fn open_layout(path: &Path) -> Result<(PathBuf, Option<tempfile::TempDir>)> {
    if path.is_dir() {
        if !path.join("oci-layout").is_file() {
            return Err(layout_err(
                path,
                "no oci-layout file: not an OCI image layout".to_string(),
            ));
        }
        return Ok((path.to_owned(), None));
    }
    let file = fs::File::open(path).map_err(|e| layout_err(path, e.to_string()))?;
    let dir = tempfile::tempdir().map_err(|e| layout_err(path, e.to_string()))?;
    tar::Archive::new(file)
        .unpack(dir.path())
        .map_err(|e| layout_err(path, format!("not a tar archive: {e}")))?;
    if !dir.path().join("oci-layout").is_file() {
        return Err(layout_err(
            path,
            "the archive has no oci-layout file: not an OCI image layout".to_string(),
        ));
    }
    Ok((dir.path().to_owned(), Some(dir)))
}

/// Writes `images` as an OCI image layout at `dest`: a directory, or a tarball when `dest`
/// ends in `.tar`.
pub fn export(store: &Store, images: &[Image], dest: &Path) -> Result<()> {
    let is_tar = dest.extension().is_some_and(|e| e == "tar");
    let staging = tempfile::tempdir().map_err(|e| layout_err(dest, e.to_string()))?;
    let dir = if is_tar {
        staging.path().to_owned()
    } else {
        dest.to_owned()
    };
    write_layout(store, images, &dir)?;
    if is_tar {
        let file = fs::File::create(dest).map_err(|e| layout_err(dest, e.to_string()))?;
        let mut builder = tar::Builder::new(file);
        builder
            .append_dir_all(".", &dir)
            .and_then(|_| builder.finish())
            .map_err(|e| layout_err(dest, e.to_string()))?;
    }
    Ok(())
}

fn write_layout(store: &Store, images: &[Image], dir: &Path) -> Result<()> {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).map_err(|e| layout_err(dir, e.to_string()))?;
    let mut manifests = Vec::new();
    for image in images {
        for digest in &image.blobs {
            let dest = blobs.join(digest.hex());
            if !dest.exists() {
                fs::copy(store.blob_path(digest), &dest)
                    .map_err(|e| layout_err(dir, format!("blob {digest}: {e}")))?;
            }
        }
        manifests.push(index_entry(store, image)?);
    }
    let index = Index {
        schema_version: 2,
        media_type: Some(media::OCI_INDEX.to_string()),
        manifests,
        annotations: BTreeMap::new(),
    };
    let write = |name: &str, bytes: Vec<u8>| {
        fs::write(dir.join(name), bytes).map_err(|e| layout_err(dir, e.to_string()))
    };
    write("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec())?;
    write(
        "index.json",
        serde_json::to_vec_pretty(&index).unwrap_or_default(),
    )
}

fn index_entry(store: &Store, image: &Image) -> Result<Descriptor> {
    let size = fs::metadata(store.blob_path(&image.digest))
        .map(|m| m.len())
        .unwrap_or(0);
    let mut annotations = BTreeMap::from([(IMAGE_NAME.to_string(), image.reference.clone())]);
    if let Ok(r) = image.reference.parse::<Reference>() {
        annotations.insert(
            REF_NAME.to_string(),
            r.tag().unwrap_or("latest").to_string(),
        );
    }
    Ok(Descriptor {
        media_type: image.media_type.clone(),
        digest: image.digest.clone(),
        size,
        platform: None,
        annotations,
    })
}

fn layout_err(path: &Path, reason: String) -> Error {
    Error::Layout {
        path: path.display().to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(annotations: &[(&str, &str)]) -> Descriptor {
        Descriptor {
            media_type: media::OCI_MANIFEST.into(),
            digest: Digest::of(b""),
            size: 0,
            platform: None,
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// Annotations, a --name, and the name the image gets.
    type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>, &'a str);

    #[test]
    fn names_of_imported_images() {
        let p = Path::new("/x/hello-layout");
        let cases: &[Case] = &[
            (
                &[(IMAGE_NAME, "127.0.0.1:5000/a/b:v1")],
                None,
                "127.0.0.1:5000/a/b:v1",
            ),
            (&[(REF_NAME, "reg.example/a:v2")], None, "reg.example/a:v2"),
            (&[(REF_NAME, "v3")], None, "localhost/hello-layout:v3"),
            (
                &[(REF_NAME, "v3")],
                Some("example.com/x"),
                "example.com/x:v3",
            ),
            (&[], Some("example.com/x:9"), "example.com/x:9"),
            (&[], None, "localhost/hello-layout:latest"),
        ];
        for (ann, name, want) in cases {
            assert_eq!(image_name(&desc(ann), *name, p).unwrap(), *want);
        }
        assert!(image_name(&desc(&[]), Some("Bad Name"), p).is_err());
    }
}
