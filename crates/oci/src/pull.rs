//! Pulling an image into the store: resolve the index, fetch the manifest, config and the
//! layers holding the wasm, find the module, and record the image.
//!
//! One pipeline serves every source ([`Source`]): a registry, or an OCI image layout.

use bytes::Bytes;

use crate::client::{self, Client, FetchedManifest, Progress};
use crate::digest::Digest;
use crate::format::{self, Descriptor, Detected, Index, Manifest, WasmLocation, media};
use crate::layers::Extracted;
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
    /// A file in a layer is larger than the store takes.
    #[error(
        "{reference}: {what} is {size} bytes, over the limit of {limit} bytes; nothing was \
         stored (raise it with --max-wasm-bytes if the image is trusted)"
    )]
    FileTooLarge {
        /// The image.
        reference: String,
        /// The file.
        what: String,
        /// Its declared size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A layer expands to more than the store reads.
    #[error(
        "{reference}: layer {digest} expands past the limit of {limit} bytes (a compression \
         bomb?); nothing was stored (raise it with --max-layer-bytes if the image is trusted)"
    )]
    LayerTooLarge {
        /// The image.
        reference: String,
        /// The layer.
        digest: Digest,
        /// The limit.
        limit: u64,
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

/// Takes the image whose top manifest is `top` from `source` into `store` as `name`. A pull
/// that fails leaves nothing in the store that only it had brought (see [`store::Lease`]).
pub async fn ingest(
    source: &impl Source,
    store: &Store,
    top: FetchedManifest,
    name: &str,
    progress: &dyn Progress,
) -> Result<Image> {
    let lease = store.lease()?;
    let pulled = Pull {
        source,
        store,
        lease: &lease,
        name,
    }
    .run(top, progress)
    .await;
    if pulled.is_err()
        && let Err(e) = store.discard(lease)
    {
        tracing::warn!(image = name, "cannot clean up after a failed pull: {e}");
    }
    pulled
}

/// One pull in progress.
struct Pull<'a, S> {
    source: &'a S,
    store: &'a Store,
    lease: &'a store::Lease,
    name: &'a str,
}

impl<S: Source> Pull<'_, S> {
    async fn run(&self, top: FetchedManifest, progress: &dyn Progress) -> Result<Image> {
        self.write(&top.bytes, &top.digest, "manifest")?;
        let chosen = match is_index(&top) {
            true => {
                let desc = choose_platform(&top.bytes, self.name)?;
                let m = self.source.manifest(&desc.digest).await?;
                self.write(&m.bytes, &m.digest, "manifest")?;
                m
            }
            false => top.clone(),
        };
        let manifest: Manifest =
            serde_json::from_slice(&chosen.bytes).map_err(|e| invalid(self.name, "manifest", e))?;
        let config = self.source.small_blob(&manifest.config).await?;
        self.write(&config, &manifest.config.digest, "config")?;
        let detected = format::detect(&manifest, &config).map_err(|source| Error::Format {
            reference: self.name.to_string(),
            source,
        })?;
        let (wasm, blobs) = self.fetch_wasm(&manifest, &detected, progress).await?;
        record(
            self.store, self.name, &top, &chosen, &manifest, detected, wasm, blobs,
        )
    }

    /// Stores a manifest or config that must hash to `digest`, held by the lease first.
    fn write(&self, bytes: &[u8], digest: &Digest, what: &str) -> Result<()> {
        self.store.hold(self.lease, digest)?;
        self.store.write_blob(bytes, Some(digest), what)?;
        Ok(())
    }

    /// Copies a blob into the store, held by the lease first.
    async fn blob(&self, desc: &Descriptor, progress: &dyn Progress) -> Result<()> {
        self.store.hold(self.lease, &desc.digest)?;
        self.source.blob(desc, self.store, progress).await
    }

    /// Fetches what holds the wasm; returns the wasm and the blobs fetched.
    async fn fetch_wasm(
        &self,
        manifest: &Manifest,
        detected: &Detected,
        progress: &dyn Progress,
    ) -> Result<(Extracted, Vec<Digest>)> {
        match &detected.wasm {
            WasmLocation::Layer(digest) => {
                let desc = manifest.layers.iter().find(|l| l.digest == *digest);
                let desc =
                    desc.ok_or_else(|| invalid(self.name, "manifest", "wasm layer vanished"))?;
                self.blob(desc, progress).await?;
                let wasm = self.wasm_layer(digest, detected)?;
                Ok((wasm, vec![digest.clone()]))
            }
            WasmLocation::File(path) => {
                let layers: Vec<&Descriptor> = manifest
                    .layers
                    .iter()
                    .filter(|l| media::tar_layer(&l.media_type).is_some())
                    .collect();
                for layer in &layers {
                    self.blob(layer, progress).await?;
                }
                let wasm =
                    crate::layers::find_file(self.store, self.lease, &layers, path, self.name)?;
                let mut blobs: Vec<Digest> = layers.iter().map(|l| l.digest.clone()).collect();
                blobs.push(wasm.digest.clone());
                Ok((wasm, blobs))
            }
        }
    }

    /// The wasm of a layer that is the module itself, checked by its first bytes.
    fn wasm_layer(&self, digest: &Digest, detected: &Detected) -> Result<Extracted> {
        let (size, head) = self.store.blob_head::<8>(digest)?;
        let kind = WasmKind::detect(&head).map_err(|source| Error::NotWasm {
            reference: self.name.to_string(),
            what: match &detected.wasm {
                WasmLocation::Layer(d) => format!("layer {d}"),
                WasmLocation::File(p) => format!("entrypoint {p}"),
            },
            source,
        })?;
        Ok(Extracted {
            digest: digest.clone(),
            size,
            kind,
        })
    }
}

#[allow(clippy::too_many_arguments)]
fn record(
    store: &Store,
    name: &str,
    top: &FetchedManifest,
    chosen: &FetchedManifest,
    manifest: &Manifest,
    detected: Detected,
    wasm: Extracted,
    mut blobs: Vec<Digest>,
) -> Result<Image> {
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
        wasm: wasm.digest,
        wasm_size: wasm.size,
        kind: wasm.kind,
        argv: detected.argv,
        env: detected.env,
        working_dir: detected.working_dir,
        blobs,
        stored_at: now_rfc3339(),
    };
    store.put_image(image.clone())?;
    Ok(image)
}

fn is_index(m: &FetchedManifest) -> bool {
    media::is_index(&m.media_type)
}

/// Picks the WebAssembly entry of an index (or its only entry).
fn choose_platform(bytes: &[u8], name: &str) -> Result<Descriptor> {
    let index: Index = serde_json::from_slice(bytes).map_err(|e| invalid(name, "index", e))?;
    index
        .wasm_manifest()
        .cloned()
        .ok_or_else(|| Error::NoPlatform {
            reference: name.to_string(),
            available: index.platforms(),
        })
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
