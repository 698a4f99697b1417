//! A container whose image is a wasm OCI artifact: its module is a layer of the image, not a
//! file of its rootfs (containerd cannot unpack a raw wasm layer into a snapshot, so the
//! rootfs is empty). The image is read from containerd's content store: the target
//! descriptor, through an index to its WebAssembly platform entry (`wasip1/wasm`,
//! `wasip2/wasm`, `wasi/wasm`, or the only entry), the manifest, the config, then the wasm
//! layer of any format `wasmlet-oci` reads: the CNCF artifact (`application/wasm`),
//! wasm-to-oci (`application/vnd.wasm.content.layer.v1+wasm`) or runwasi's component layer
//! (`application/vnd.bytecodealliance.wasm.component.layer.v0+wasm`).
//!
//! Every blob is hostile: its declared size is checked against a limit before it is read
//! ([`MAX_DOCUMENT_BYTES`] for manifests, indexes and configs, [`MAX_WASM_BYTES`] for the
//! module), no more bytes than declared are read, its digest is verified, and the module
//! must be WebAssembly (`\0asm`).

use async_trait::async_trait;
use wasmlet_oci::Digest;
use wasmlet_oci::format::{self, Descriptor, Format, Index, Manifest, WasmLocation, media};

use crate::containerd::{self, Containerd};

/// The largest manifest, index or config read: `wasmlet-oci`'s manifest limit (4 MiB).
pub const MAX_DOCUMENT_BYTES: u64 = wasmlet_oci::client::MAX_MANIFEST_BYTES as u64;
/// The largest module read: `wasmlet-oci`'s limit on a module (`--max-wasm-bytes`, 1 GiB).
pub const MAX_WASM_BYTES: u64 = wasmlet_oci::layers::MAX_FILE_BYTES;

/// Why an image's wasm could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// containerd could not be asked, or failed.
    #[error(transparent)]
    Containerd(#[from] containerd::Error),
    /// A descriptor, manifest, index or config that does not parse.
    #[error("image {image}: invalid {what}: {reason}")]
    Invalid {
        /// The image.
        image: String,
        /// What was read.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A blob declares more bytes than wasmlet reads.
    #[error("image {image}: the {what} {digest} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// The image.
        image: String,
        /// What it is.
        what: &'static str,
        /// Its digest.
        digest: Digest,
        /// Its declared size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A blob of the content store is not what its descriptor says.
    #[error(
        "image {image}: the {what} {digest} in containerd's content store is corrupt ({found}); remove the image and pull it again"
    )]
    Corrupt {
        /// The image.
        image: String,
        /// What it is.
        what: &'static str,
        /// The digest it should have.
        digest: Digest,
        /// What was found instead.
        found: String,
    },
    /// The image's packaging holds no WebAssembly, or is broken.
    #[error("image {image}: {source}")]
    Format {
        /// The image.
        image: String,
        /// Why.
        source: format::Error,
    },
    /// The wasm layer does not hold WebAssembly.
    #[error(
        "image {image}: the wasm layer {digest} ({media_type}) is not WebAssembly: {reason}; push the .wasm module or component itself (`wasmlet push FILE.wasm REF`)"
    )]
    NotWasm {
        /// The image.
        image: String,
        /// The layer.
        digest: Digest,
        /// Its media type.
        media_type: String,
        /// Why.
        reason: String,
    },
}

/// `Result` of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The blobs of containerd's content store.
#[async_trait]
pub trait Content: Sync {
    /// The blob `digest`, which must hold at most `size` bytes.
    async fn read(&self, digest: &Digest, size: u64) -> containerd::Result<Vec<u8>>;
}

#[async_trait]
impl Content for Containerd {
    async fn read(&self, digest: &Digest, size: u64) -> containerd::Result<Vec<u8>> {
        self.read_blob(digest, size).await
    }
}

/// The wasm of an artifact image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Artifact {
    /// The image's name in containerd.
    pub image: String,
    /// How the image packages its wasm.
    pub format: Format,
    /// The wasm layer.
    pub layer: Descriptor,
    /// The module or component.
    pub wasm: Vec<u8>,
    /// ENTRYPOINT then CMD of an image config (empty for the CNCF and wasm-to-oci configs).
    pub argv: Vec<String>,
}

impl Artifact {
    /// The argv of the guest: `process.args` of the OCI spec when there are any (for a CRI
    /// container, the pod's `command` and `args`, else the image's ENTRYPOINT and CMD), else
    /// the image config's ENTRYPOINT and CMD, else the last segment of the image's
    /// repository as the program name (what `wasmlet run` and `wasmlet node` give it).
    pub fn argv(&self, process_args: &[String]) -> Vec<String> {
        match (process_args.is_empty(), self.argv.is_empty()) {
            (false, _) => process_args.to_vec(),
            (true, false) => self.argv.clone(),
            (true, true) => vec![program_name(&self.image)],
        }
    }
}

/// The last segment of an image name's repository (`hello` of `example.com/demo/hello:v1`).
pub fn program_name(image: &str) -> String {
    image
        .parse::<wasmlet_oci::Reference>()
        .ok()
        .and_then(|r| r.repository().rsplit('/').next().map(str::to_owned))
        .unwrap_or_else(|| "module".to_owned())
}

/// Reads the wasm of `image`, whose target descriptor in containerd is `target`. `None` when
/// the image is not a wasm artifact (an ordinary image: its module, if any, is a file in its
/// layers, so in the container's rootfs), or an index offering no WebAssembly platform.
pub async fn resolve(
    content: &dyn Content,
    image: &str,
    target: &containerd_client::types::Descriptor,
) -> Result<Option<Artifact>> {
    let reader = Reader { content, image };
    let target = reader.descriptor(target)?;
    let manifest_desc = match media::is_index(&target.media_type) {
        true => match reader.index(&target).await?.wasm_manifest() {
            Some(desc) => desc.clone(),
            None => return Ok(None),
        },
        false => target,
    };
    let manifest = reader.manifest(&manifest_desc).await?;
    let config = reader.document("config", &manifest.config).await?;
    let detected = match format::detect(&manifest, &config) {
        Ok(detected) => detected,
        Err(format::Error::NoEntrypoint { .. }) => return Ok(None),
        Err(source) => return Err(reader.format(source)),
    };
    let WasmLocation::Layer(digest) = detected.wasm else {
        return Ok(None);
    };
    let layer = reader.layer(&manifest, &digest)?;
    let wasm = reader.wasm(&layer).await?;
    Ok(Some(Artifact {
        image: image.to_owned(),
        format: detected.format,
        layer,
        wasm,
        argv: detected.argv,
    }))
}

/// Reads and checks the blobs of one image.
struct Reader<'a> {
    content: &'a dyn Content,
    image: &'a str,
}

impl Reader<'_> {
    fn invalid(&self, what: &'static str, reason: impl ToString) -> Error {
        Error::Invalid {
            image: self.image.to_owned(),
            what,
            reason: reason.to_string(),
        }
    }

    fn format(&self, source: format::Error) -> Error {
        Error::Format {
            image: self.image.to_owned(),
            source,
        }
    }

    /// containerd's descriptor as an OCI one, its digest and size checked.
    fn descriptor(&self, raw: &containerd_client::types::Descriptor) -> Result<Descriptor> {
        let digest = raw
            .digest
            .parse()
            .map_err(|e| self.invalid("image target", e))?;
        let size = u64::try_from(raw.size).map_err(|e| self.invalid("image target", e))?;
        Ok(Descriptor {
            media_type: raw.media_type.clone(),
            digest,
            size,
            platform: None,
            annotations: Default::default(),
        })
    }

    async fn index(&self, desc: &Descriptor) -> Result<Index> {
        let bytes = self.document("index", desc).await?;
        serde_json::from_slice(&bytes).map_err(|e| self.invalid("index", e))
    }

    async fn manifest(&self, desc: &Descriptor) -> Result<Manifest> {
        let bytes = self.document("manifest", desc).await?;
        serde_json::from_slice(&bytes).map_err(|e| self.invalid("manifest", e))
    }

    async fn document(&self, what: &'static str, desc: &Descriptor) -> Result<Vec<u8>> {
        self.blob(what, desc, MAX_DOCUMENT_BYTES).await
    }

    /// The manifest's layer `digest`.
    fn layer(&self, manifest: &Manifest, digest: &Digest) -> Result<Descriptor> {
        manifest
            .layers
            .iter()
            .find(|l| &l.digest == digest)
            .cloned()
            .ok_or_else(|| self.invalid("manifest", format!("no layer {digest}")))
    }

    /// The wasm layer, checked to be WebAssembly.
    async fn wasm(&self, layer: &Descriptor) -> Result<Vec<u8>> {
        let bytes = self.blob("wasm layer", layer, MAX_WASM_BYTES).await?;
        let not_wasm = |reason: String| Error::NotWasm {
            image: self.image.to_owned(),
            digest: layer.digest.clone(),
            media_type: layer.media_type.clone(),
            reason,
        };
        if bytes.starts_with(b"\x7fELF") || bytes.starts_with(b"#!") {
            return Err(not_wasm("it is a native executable".into()));
        }
        wasmlet_oci::wasm::WasmKind::detect(&bytes).map_err(|e| not_wasm(e.to_string()))?;
        Ok(bytes)
    }

    /// A blob of at most `limit` bytes, its size and digest verified.
    async fn blob(&self, what: &'static str, desc: &Descriptor, limit: u64) -> Result<Vec<u8>> {
        if desc.size > limit {
            return Err(Error::TooLarge {
                image: self.image.to_owned(),
                what,
                digest: desc.digest.clone(),
                size: desc.size,
                limit,
            });
        }
        let bytes = self.content.read(&desc.digest, desc.size).await?;
        let corrupt = |found: String| Error::Corrupt {
            image: self.image.to_owned(),
            what,
            digest: desc.digest.clone(),
            found,
        };
        if bytes.len() as u64 != desc.size {
            return Err(corrupt(format!(
                "{} bytes where its descriptor declares {}",
                bytes.len(),
                desc.size
            )));
        }
        let actual = Digest::of(&bytes);
        if actual != desc.digest {
            return Err(corrupt(format!("its bytes hash to {actual}")));
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::json;

    use super::*;

    /// An in-memory content store: our own resolution logic under test, no containerd.
    #[derive(Default)]
    struct Blobs(HashMap<Digest, Vec<u8>>);

    impl Blobs {
        fn put(&mut self, bytes: &[u8]) -> (Digest, u64) {
            let digest = Digest::of(bytes);
            self.0.insert(digest.clone(), bytes.to_vec());
            (digest, bytes.len() as u64)
        }

        fn put_json(&mut self, value: &serde_json::Value) -> (Digest, u64) {
            self.put(&serde_json::to_vec(value).unwrap())
        }
    }

    #[async_trait]
    impl Content for Blobs {
        async fn read(&self, digest: &Digest, size: u64) -> containerd::Result<Vec<u8>> {
            let bytes = self.0.get(digest).cloned().ok_or(containerd::Error::Call {
                what: format!("reading {digest}"),
                code: containerd_client::tonic::Code::NotFound,
                message: "not found".into(),
            })?;
            match bytes.len() as u64 > size {
                true => Err(containerd::Error::Oversized {
                    what: digest.to_string(),
                    expected: size,
                }),
                false => Ok(bytes),
            }
        }
    }

    fn module() -> Vec<u8> {
        wat::parse_str("(module)").unwrap()
    }

    fn desc(media_type: &str, (digest, size): (Digest, u64)) -> serde_json::Value {
        json!({"mediaType": media_type, "digest": digest.to_string(), "size": size})
    }

    fn target(
        media_type: &str,
        (digest, size): (Digest, u64),
    ) -> containerd_client::types::Descriptor {
        containerd_client::types::Descriptor {
            media_type: media_type.into(),
            digest: digest.to_string(),
            size: size as i64,
            annotations: HashMap::new(),
        }
    }

    /// A manifest with config `config` and one layer `layer` of `layer_type`.
    fn image(
        blobs: &mut Blobs,
        config_type: &str,
        config: &serde_json::Value,
        layer_type: &str,
        layer: &[u8],
    ) -> (Digest, u64) {
        let config = blobs.put_json(config);
        let layer = blobs.put(layer);
        blobs.put_json(&json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": desc(config_type, config),
            "layers": [desc(layer_type, layer)]
        }))
    }

    /// A CNCF wasm artifact (a wasip1 config) whose one layer is `layer`.
    fn cncf_image(blobs: &mut Blobs, layer: &[u8]) -> (Digest, u64) {
        let config = json!({"architecture": "wasm", "os": "wasip1"});
        image(
            blobs,
            media::WASM_CONFIG_V0,
            &config,
            media::WASM_LAYER,
            layer,
        )
    }

    async fn resolve_manifest(blobs: &Blobs, manifest: (Digest, u64)) -> Result<Option<Artifact>> {
        resolve(
            blobs,
            "example.com/demo/hello:v1",
            &target(media::OCI_MANIFEST, manifest),
        )
        .await
    }

    #[tokio::test]
    async fn reads_the_wasm_layer_of_each_format() {
        let wasm = module();
        let cases = [
            (
                media::WASM_CONFIG_V0,
                json!({"architecture": "wasm", "os": "wasip1", "layerDigests": []}),
                media::WASM_LAYER,
                Format::CncfArtifact,
                vec![],
            ),
            (
                media::WASM_TO_OCI_CONFIG,
                json!({}),
                media::WASM_TO_OCI_LAYER,
                Format::WasmToOci,
                vec![],
            ),
            (
                media::OCI_CONFIG,
                json!({"architecture": "wasm", "os": "wasip2",
                       "config": {"Entrypoint": ["/hello.wasm"], "Cmd": ["a"]}}),
                media::RUNWASI_COMPONENT_LAYER,
                Format::RunwasiComponent,
                vec!["/hello.wasm".to_owned(), "a".to_owned()],
            ),
        ];
        for (config_type, config, layer_type, format, argv) in cases {
            let mut blobs = Blobs::default();
            let manifest = image(&mut blobs, config_type, &config, layer_type, &wasm);
            let artifact = resolve_manifest(&blobs, manifest).await.unwrap().unwrap();
            assert_eq!(artifact.format, format);
            assert_eq!(artifact.wasm, wasm);
            assert_eq!(artifact.layer.media_type, layer_type);
            assert_eq!(artifact.argv, argv);
        }
    }

    fn index(blobs: &mut Blobs, entries: &[(&str, (Digest, u64))]) -> (Digest, u64) {
        let manifests: Vec<_> = entries
            .iter()
            .map(|(platform, m)| {
                let (os, arch) = platform.split_once('/').unwrap();
                let mut d = desc(media::OCI_MANIFEST, m.clone());
                d["platform"] = json!({"os": os, "architecture": arch});
                d
            })
            .collect();
        blobs.put_json(&json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX,
                               "manifests": manifests}))
    }

    #[tokio::test]
    async fn an_index_leads_to_its_wasm_platform() {
        let mut blobs = Blobs::default();
        let wasm = cncf_image(&mut blobs, &module());
        let other = blobs.put_json(&json!({"schemaVersion": 2, "config":
            desc(media::OCI_CONFIG, (Digest::of(b"x"), 1)), "layers": []}));
        for platform in ["wasip1/wasm", "wasip2/wasm", "wasi/wasm"] {
            let idx = index(
                &mut blobs,
                &[("linux/amd64", other.clone()), (platform, wasm.clone())],
            );
            let found = resolve(&blobs, "r/x:1", &target(media::OCI_INDEX, idx)).await;
            assert_eq!(found.unwrap().unwrap().wasm, module(), "{platform}");
        }
        let idx = index(
            &mut blobs,
            &[("linux/amd64", other.clone()), ("linux/arm64", other)],
        );
        let found = resolve(&blobs, "r/x:1", &target(media::OCI_INDEX, idx)).await;
        assert_eq!(found.unwrap(), None, "an ordinary multi-platform image");
    }

    #[tokio::test]
    async fn an_ordinary_image_is_not_an_artifact() {
        let mut blobs = Blobs::default();
        let config = json!({"config": {"Cmd": ["/hello.wasm"]}});
        let m = image(
            &mut blobs,
            media::OCI_CONFIG,
            &config,
            media::OCI_LAYER_TAR,
            b"tar",
        );
        assert_eq!(resolve_manifest(&blobs, m).await.unwrap(), None);
        let config = json!({"config": {"Cmd": ["/bin/sh"]}});
        let m = image(
            &mut blobs,
            media::OCI_CONFIG,
            &config,
            media::OCI_LAYER_TAR,
            b"tar",
        );
        assert_eq!(resolve_manifest(&blobs, m).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_wasm_layer_that_is_not_wasm_is_refused() {
        for (bytes, reason) in [
            (
                &b"hello world"[..],
                "does not start with the `\\0asm` magic",
            ),
            (&b"\x7fELF\x02\x01\x01\0"[..], "native executable"),
        ] {
            let mut blobs = Blobs::default();
            let m = cncf_image(&mut blobs, bytes);
            let err = resolve_manifest(&blobs, m).await.unwrap_err();
            assert!(matches!(err, Error::NotWasm { .. }), "{err}");
            let text = err.to_string();
            assert!(
                text.starts_with("image example.com/demo/hello:v1: the wasm layer sha256:"),
                "{text}"
            );
            assert!(text.contains(reason), "{text}");
        }
    }

    #[tokio::test]
    async fn an_artifact_without_a_wasm_layer_is_refused() {
        let mut blobs = Blobs::default();
        let config = blobs.put_json(&json!({"architecture": "wasm", "os": "wasip1"}));
        let m = blobs.put_json(
            &json!({"schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
            "config": desc(media::WASM_CONFIG_V0, config), "layers": []}),
        );
        let err = resolve_manifest(&blobs, m).await.unwrap_err();
        assert!(
            err.to_string()
                .starts_with("image example.com/demo/hello:v1: image holds no WebAssembly"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn corrupt_or_oversized_blobs_are_refused() {
        let mut blobs = Blobs::default();
        let m = cncf_image(&mut blobs, &module());
        let layer = Digest::of(&module());
        // The store's bytes differ from the digest they are filed under.
        let mut other = module();
        other[7] = 1;
        blobs.0.insert(layer.clone(), other);
        let err = resolve_manifest(&blobs, m.clone()).await.unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("remove the image and pull it again"),
            "{err}"
        );
        // Shorter than declared.
        blobs.0.insert(layer.clone(), module()[..4].to_vec());
        let err = resolve_manifest(&blobs, m.clone()).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("4 bytes where its descriptor declares 8"),
            "{err}"
        );
        // Longer than declared: the store is not read past the declared size.
        blobs.0.insert(layer, [module(), vec![0; 8]].concat());
        let err = resolve_manifest(&blobs, m).await.unwrap_err();
        assert!(
            matches!(err, Error::Containerd(containerd::Error::Oversized { .. })),
            "{err}"
        );
        // A manifest declaring more than the document limit is not read at all.
        let huge = (Digest::of(b"huge"), MAX_DOCUMENT_BYTES + 1);
        let err = resolve_manifest(&blobs, huge).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::TooLarge {
                    what: "manifest",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_hostile_target_or_manifest_is_invalid() {
        let blobs = Blobs::default();
        let mut bad = target(media::OCI_MANIFEST, (Digest::of(b"m"), 1));
        bad.digest = "md5:abc".into();
        let err = resolve(&blobs, "r/x:1", &bad).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::Invalid {
                    what: "image target",
                    ..
                }
            ),
            "{err}"
        );
        bad = target(media::OCI_MANIFEST, (Digest::of(b"m"), 1));
        bad.size = -1;
        let err = resolve(&blobs, "r/x:1", &bad).await.unwrap_err();
        assert!(matches!(err, Error::Invalid { .. }), "{err}");
        let mut blobs = Blobs::default();
        let m = blobs.put(b"{not json");
        let err = resolve_manifest(&blobs, m).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::Invalid {
                    what: "manifest",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn the_guests_argv() {
        let artifact = |argv: &[&str]| Artifact {
            image: "example.com/demo/hello:v1".into(),
            format: Format::CncfArtifact,
            layer: Descriptor {
                media_type: media::WASM_LAYER.into(),
                digest: Digest::of(b""),
                size: 0,
                platform: None,
                annotations: Default::default(),
            },
            wasm: vec![],
            argv: argv.iter().map(|s| s.to_string()).collect(),
        };
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            artifact(&[]).argv(&args(&["hello.wasm", "a"])),
            ["hello.wasm", "a"]
        );
        assert_eq!(artifact(&["/m.wasm"]).argv(&[]), ["/m.wasm"]);
        assert_eq!(artifact(&[]).argv(&[]), ["hello"]);
        assert_eq!(program_name("Not A Name"), "module");
    }
}
