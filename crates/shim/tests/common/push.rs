//! Images pushed to a real registry (`wasmlet_testkit::Registry`) with `wasmlet-oci`: what
//! `wasmlet push` writes, and images made by hand (runwasi's component layer, indexes,
//! malformed artifacts).

use bytes::Bytes;
use serde_json::{Value, json};
use wasmlet_fixtures as fixtures;
use wasmlet_oci::Digest;
use wasmlet_oci::client::{Client, ClientConfig, NoProgress};
use wasmlet_oci::format::{Format, media};
use wasmlet_oci::push::{self, Artifact};
use wasmlet_testkit::Registry;

/// Runs `future` on a runtime of its own.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

fn client() -> Client {
    Client::new(ClientConfig::default()).unwrap()
}

/// What a push left in the registry: the reference pushed and its manifest's digest.
pub struct Pushed {
    /// `registry/repository:v1`.
    pub reference: String,
    /// The manifest's digest.
    pub digest: Digest,
    /// The manifest's size.
    pub size: u64,
}

impl Pushed {
    /// `registry/repository@digest`: the manifest itself, by digest.
    pub fn by_digest(&self) -> String {
        let repo = self.reference.rsplit_once(':').unwrap().0;
        format!("{repo}@{}", self.digest)
    }
}

/// `wasmlet push` of `wasm` in `format` (the library call the command makes). The author is
/// `repo`, so each test's image has a config, hence a CRI image ID, of its own: CRI removes an
/// image by ID, every name of it at once.
pub fn push_wasm(registry: &Registry, repo: &str, wasm: &[u8], format: Format) -> Pushed {
    let reference = format!("{}/{repo}:v1", registry.host());
    let artifact = Artifact {
        wasm: Bytes::copy_from_slice(wasm),
        file_name: "hello.wasm".into(),
        format,
        annotations: Default::default(),
        author: Some(repo.into()),
    };
    let parsed = reference.parse().unwrap();
    let packaged = block_on(push::push(&client(), &parsed, &artifact, &NoProgress)).unwrap();
    Pushed {
        reference,
        digest: packaged.digest,
        size: packaged.manifest.len() as u64,
    }
}

fn descriptor(media_type: &str, bytes: &[u8]) -> Value {
    json!({"mediaType": media_type, "digest": Digest::of(bytes).to_string(), "size": bytes.len()})
}

/// Pushes an image made by hand: a config of `config_type` (its author set to `repo`, for an
/// image ID of its own) and one layer of `layer_type`.
pub fn push_image(
    registry: &Registry,
    repo: &str,
    (config_type, mut config): (&str, Value),
    (layer_type, layer): (&str, &[u8]),
) -> Pushed {
    let reference = format!("{}/{repo}:v1", registry.host());
    let parsed = reference.parse().unwrap();
    config["author"] = repo.into();
    let config = serde_json::to_vec(&config).unwrap();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": descriptor(config_type, &config),
        "layers": [descriptor(layer_type, layer)]
    }))
    .unwrap();
    let client = client();
    block_on(async {
        for blob in [&config[..], layer] {
            let bytes = Bytes::copy_from_slice(blob);
            client
                .push_blob(&parsed, bytes, &Digest::of(blob), &NoProgress)
                .await
                .unwrap();
        }
        client
            .push_manifest(&parsed, manifest.clone().into(), media::OCI_MANIFEST)
            .await
            .unwrap();
    });
    Pushed {
        reference,
        digest: Digest::of(&manifest),
        size: manifest.len() as u64,
    }
}

/// runwasi's component layer: an OCI image config of architecture `wasm`, with an entrypoint
/// and no `rootfs.diff_ids` (the layer is not a tar containerd could unpack).
pub fn push_component_image(registry: &Registry, repo: &str) -> Pushed {
    let config = json!({
        "architecture": "wasm",
        "os": "wasip2",
        "config": {"Entrypoint": ["/hello.wasm"], "Cmd": ["x"]},
        "rootfs": {"type": "layers", "diff_ids": []}
    });
    let layer = (media::RUNWASI_COMPONENT_LAYER, fixtures::hello_component());
    push_image(registry, repo, (media::OCI_CONFIG, config), layer)
}

/// Pushes an index whose one entry is `manifest` for platform `os`/wasm, as `repo:index`.
pub fn push_index(registry: &Registry, repo: &str, manifest: &Pushed, os: &str) -> String {
    let reference = format!("{}/{repo}:index", registry.host());
    let index = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": [{
            "mediaType": media::OCI_MANIFEST,
            "digest": manifest.digest.to_string(),
            "size": manifest.size,
            "platform": {"os": os, "architecture": "wasm"}
        }]
    });
    let bytes = serde_json::to_vec(&index).unwrap();
    let parsed = reference.parse().unwrap();
    block_on(client().push_manifest(&parsed, bytes.into(), media::OCI_INDEX)).unwrap();
    reference
}
