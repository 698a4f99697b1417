//! Pulling an image into the store: resolve the index, fetch the manifest, config and the
//! layers holding the wasm, find the module, and record the image.
//!
//! One pipeline serves every source ([`Source`]): a registry, or an OCI image layout.

use bytes::Bytes;

use crate::client::{self, Client, FetchedManifest, Progress};
use crate::digest::Digest;
use crate::format::{self, Descriptor, Detected, Index, Manifest, WasmLocation, media};
use crate::reference::Reference;
use crate::store::{self, Image, Store};
use crate::wasm::WasmKind;

/// Why an image could not be pulled or imported.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The registry failed.
    #[error(transparent)]
    Registry(#[from] client::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The image's packaging is not one wasmlet reads.
    #[error("{reference}: {source}")]
    Format {
        /// The image.
        reference: String,
        /// Why.
        source: format::Error,
    },
    /// A manifest or index that is not valid JSON of the OCI/Docker shape.
    #[error("{reference}: invalid {what} ({reason})")]
    InvalidManifest {
        /// The image.
        reference: String,
        /// Manifest or index.
        what: &'static str,
        /// The parse error.
        reason: String,
    },
    /// An index without a WebAssembly platform (and more than one entry).
    #[error(
        "{reference}: the image index has no WebAssembly platform (wasi/wasm, wasip1/wasm, wasip2/wasm); it offers [{available}]"
    )]
    NoPlatform {
        /// The image.
        reference: String,
        /// The platforms it has.
        available: String,
    },
    /// The file the entrypoint names is not in the image.
    #[error("{reference}: the entrypoint {path} is not in the image's layers")]
    MissingFile {
        /// The image.
        reference: String,
        /// The path.
        path: String,
    },
    /// The module is not WebAssembly (a native binary, say).
    #[error(
        "{reference}: {what} is not WebAssembly ({source}); a native executable cannot run here (exec format error)"
    )]
    NotWasm {
        /// The image.
        reference: String,
        /// The layer or file.
        what: String,
        /// Why.
        source: crate::wasm::Error,
    },
    /// A layer could not be read as a tar archive.
    #[error("{reference}: layer {digest} is not a readable tar archive: {reason}")]
    BadLayer {
        /// The image.
        reference: String,
        /// The layer.
        digest: Digest,
        /// Why.
        reason: String,
    },
    /// An OCI image layout that cannot be read.
    #[error("image layout {path}: {reason}")]
    Layout {
        /// Its path.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// Shorthand for this module's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where content comes from.
pub trait Source {
    /// Fetches a manifest or index by digest.
    fn manifest(&self, digest: &Digest) -> impl Future<Output = Result<FetchedManifest>>;
    /// Fetches a small blob (a config) into memory.
    fn small_blob(&self, desc: &Descriptor) -> impl Future<Output = Result<Bytes>>;
    /// Copies a blob into the store.
    fn blob(
        &self,
        desc: &Descriptor,
        store: &Store,
        progress: &dyn Progress,
    ) -> impl Future<Output = Result<()>>;
}

/// A registry repository as a source.
pub struct RegistrySource<'a> {
    /// The client.
    pub client: &'a Client,
    /// The reference (its repository is used).
    pub reference: &'a Reference,
}

impl Source for RegistrySource<'_> {
    async fn manifest(&self, digest: &Digest) -> Result<FetchedManifest> {
        Ok(self
            .client
            .fetch_manifest(&self.reference.with_digest(digest.clone()))
            .await?)
    }

    async fn small_blob(&self, desc: &Descriptor) -> Result<Bytes> {
        Ok(self.client.fetch_small_blob(self.reference, desc).await?)
    }

    async fn blob(&self, desc: &Descriptor, store: &Store, progress: &dyn Progress) -> Result<()> {
        Ok(self
            .client
            .fetch_blob(self.reference, desc, store, progress)
            .await?)
    }
}

/// Pulls `reference` from its registry into `store`.
pub async fn pull(
    client: &Client,
    store: &Store,
    reference: &Reference,
    progress: &dyn Progress,
) -> Result<Image> {
    let top = client.fetch_manifest(reference).await?;
    let source = RegistrySource { client, reference };
    ingest(&source, store, top, &reference.to_string(), progress).await
}

/// Takes the image whose top manifest is `top` from `source` into `store` as `name`.
pub async fn ingest(
    source: &impl Source,
    store: &Store,
    top: FetchedManifest,
    name: &str,
    progress: &dyn Progress,
) -> Result<Image> {
    store.write_blob(&top.bytes, Some(&top.digest), "manifest")?;
    let chosen = match is_index(&top) {
        true => {
            let desc = choose_platform(&top.bytes, name)?;
            let m = source.manifest(&desc.digest).await?;
            store.write_blob(&m.bytes, Some(&m.digest), "manifest")?;
            m
        }
        false => top.clone(),
    };
    let manifest: Manifest =
        serde_json::from_slice(&chosen.bytes).map_err(|e| invalid(name, "manifest", e))?;
    let config = source.small_blob(&manifest.config).await?;
    store.write_blob(&config, Some(&manifest.config.digest), "config")?;
    let detected = format::detect(&manifest, &config).map_err(|source| Error::Format {
        reference: name.to_string(),
        source,
    })?;
    let (wasm, blobs) = fetch_wasm(source, store, &manifest, &detected, name, progress).await?;
    record(store, name, &top, &chosen, &manifest, detected, wasm, blobs)
}

#[allow(clippy::too_many_arguments)]
fn record(
    store: &Store,
    name: &str,
    top: &FetchedManifest,
    chosen: &FetchedManifest,
    manifest: &Manifest,
    detected: Detected,
    wasm: Digest,
    mut blobs: Vec<Digest>,
) -> Result<Image> {
    let bytes = store.read_blob(&wasm)?;
    let what = match &detected.wasm {
        WasmLocation::Layer(d) => format!("layer {d}"),
        WasmLocation::File(p) => format!("entrypoint {p}"),
    };
    let kind = WasmKind::detect(&bytes).map_err(|source| Error::NotWasm {
        reference: name.to_string(),
        what,
        source,
    })?;
    blobs.extend([
        top.digest.clone(),
        chosen.digest.clone(),
        manifest.config.digest.clone(),
    ]);
    blobs.sort();
    blobs.dedup();
    let image = Image {
        reference: name.to_string(),
        digest: top.digest.clone(),
        media_type: top.media_type.clone(),
        manifest: chosen.digest.clone(),
        format: detected.format,
        wasm,
        wasm_size: bytes.len() as u64,
        kind,
        argv: detected.argv,
        env: detected.env,
        working_dir: detected.working_dir,
        blobs,
        stored_at: now_rfc3339(),
    };
    store.put_image(image.clone())?;
    Ok(image)
}

/// Fetches what holds the wasm; returns the wasm blob's digest and the blobs fetched.
async fn fetch_wasm(
    source: &impl Source,
    store: &Store,
    manifest: &Manifest,
    detected: &Detected,
    name: &str,
    progress: &dyn Progress,
) -> Result<(Digest, Vec<Digest>)> {
    match &detected.wasm {
        WasmLocation::Layer(digest) => {
            let desc = manifest
                .layers
                .iter()
                .find(|l| l.digest == *digest)
                .cloned();
            let desc = desc.ok_or_else(|| invalid(name, "manifest", "wasm layer vanished"))?;
            source.blob(&desc, store, progress).await?;
            Ok((digest.clone(), vec![digest.clone()]))
        }
        WasmLocation::File(path) => {
            let layers: Vec<&Descriptor> = manifest
                .layers
                .iter()
                .filter(|l| media::tar_layer(&l.media_type).is_some())
                .collect();
            for layer in &layers {
                source.blob(layer, store, progress).await?;
            }
            let bytes = crate::layers::find_file(store, &layers, path, name)?;
            let wasm = store.write_blob(&bytes, None, path)?;
            let mut blobs: Vec<Digest> = layers.iter().map(|l| l.digest.clone()).collect();
            blobs.push(wasm.clone());
            Ok((wasm, blobs))
        }
    }
}

fn is_index(m: &FetchedManifest) -> bool {
    m.media_type == media::OCI_INDEX || m.media_type == media::DOCKER_LIST
}

/// Picks the WebAssembly entry of an index (or its only entry).
fn choose_platform(bytes: &[u8], name: &str) -> Result<Descriptor> {
    let index: Index = serde_json::from_slice(bytes).map_err(|e| invalid(name, "index", e))?;
    if let Some(d) = index
        .manifests
        .iter()
        .find(|d| d.platform.as_ref().is_some_and(|p| p.is_wasm()))
    {
        return Ok(d.clone());
    }
    match index.manifests.as_slice() {
        [only] => Ok(only.clone()),
        many => Err(Error::NoPlatform {
            reference: name.to_string(),
            available: many
                .iter()
                .map(|d| {
                    d.platform
                        .as_ref()
                        .map_or("unknown".to_string(), |p| p.to_string())
                })
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

fn invalid(name: &str, what: &'static str, reason: impl std::fmt::Display) -> Error {
    Error::InvalidManifest {
        reference: name.to_string(),
        what,
        reason: reason.to_string(),
    }
}

/// The current time as RFC 3339 (seconds, UTC).
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(platforms: &[(&str, &str)]) -> Vec<u8> {
        let manifests: Vec<serde_json::Value> = platforms
            .iter()
            .enumerate()
            .map(|(i, (os, arch))| {
                serde_json::json!({
                    "mediaType": media::OCI_MANIFEST,
                    "digest": Digest::of(&[i as u8]).to_string(),
                    "size": 1,
                    "platform": {"os": os, "architecture": arch}
                })
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": manifests}))
            .unwrap()
    }

    #[test]
    fn picks_the_wasm_platform() {
        let b = index(&[("linux", "amd64"), ("wasip1", "wasm"), ("linux", "arm64")]);
        assert_eq!(choose_platform(&b, "r").unwrap().digest, Digest::of(&[1]));
        let b = index(&[("linux", "amd64")]);
        assert_eq!(choose_platform(&b, "r").unwrap().digest, Digest::of(&[0]));
        let b = index(&[("linux", "amd64"), ("linux", "arm64")]);
        let err = choose_platform(&b, "r").unwrap_err().to_string();
        assert!(err.contains("linux/amd64, linux/arm64"), "{err}");
    }
}
