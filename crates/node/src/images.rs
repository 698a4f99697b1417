//! Images for the node's pods: the content store, pulled into under each container's
//! `imagePullPolicy`, with the pod's `imagePullSecrets` as credentials.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use wasmlet_oci::auth::Keyring;
use wasmlet_oci::client::{Client, ClientConfig, NoProgress};
use wasmlet_oci::store::{Image, Store};
use wasmlet_oci::{Reference, pull};
use wasmlet_pod::ImageConfig;
use wasmlet_worker::{
    ImageError, ImageRequest, ImageResolver, PullInfo, PullPolicy, ResolveFuture, ResolvedImage,
    WasmSource,
};

/// Resolves images from a content store, pulling from registries when the policy says so.
#[derive(Clone)]
pub struct RegistryResolver {
    store: Store,
    config: Arc<ClientConfig>,
}

impl RegistryResolver {
    /// A resolver over `store`; `config` holds the node's registry settings (CA files,
    /// insecure registries) and the credentials every pod may use.
    pub fn new(store: Store, config: ClientConfig) -> RegistryResolver {
        RegistryResolver {
            store,
            config: Arc::new(config),
        }
    }

    /// The same resolver with `keyring` (a pod's pull secrets) tried before the node's own
    /// credentials.
    pub fn with_keyring(&self, keyring: Keyring) -> RegistryResolver {
        let mut config = (*self.config).clone();
        let mut merged = config.keyring.clone();
        merged.extend(keyring);
        config.keyring = merged;
        RegistryResolver {
            store: self.store.clone(),
            config: Arc::new(config),
        }
    }

    async fn pull(&self, reference: Reference) -> Result<Image, ImageError> {
        let failed =
            |e: String| ImageError::Pull(format!("failed to pull image \"{reference}\": {e}"));
        let client = Client::new((*self.config).clone()).map_err(|e| failed(e.to_string()))?;
        pull::pull(&client, &self.store, &reference, &NoProgress)
            .await
            .map_err(|e| failed(e.to_string()))
    }
}
impl ImageResolver for RegistryResolver {
    fn resolve<'a>(&'a self, request: &'a ImageRequest) -> ResolveFuture<'a> {
        Box::pin(resolve_in_store(&self.store, request, |r| self.pull(r)))
    }

    fn is_present(&self, request: &ImageRequest) -> bool {
        is_present(&self.store, request)
    }
}

/// Resolves `request` from `store` under its pull policy, calling `pull` when the policy
/// asks for a pull (`Always`, or `IfNotPresent` with the image absent).
pub async fn resolve_in_store<F, Fut>(
    store: &Store,
    request: &ImageRequest,
    pull: F,
) -> Result<ResolvedImage, ImageError>
where
    F: FnOnce(Reference) -> Fut,
    Fut: Future<Output = Result<Image, ImageError>>,
{
    let reference = parse(&request.image)?;
    let stored = store.image(&reference.to_string()).ok();
    let (image, pulled) = match (request.pull_policy, stored) {
        (PullPolicy::Never, None) => return Err(ImageError::NeverPull(request.image.clone())),
        (PullPolicy::Never | PullPolicy::IfNotPresent, Some(image)) => (image, None),
        _ => {
            let started = Instant::now();
            let image = pull(reference.clone()).await?;
            let info = PullInfo {
                duration: started.elapsed(),
                size: image_size(store, &image),
            };
            (image, Some(info))
        }
    };
    Ok(ResolvedImage {
        pulled,
        ..resolved(store, &reference, &image)
    })
}

/// Whether the image of `request` is in `store`.
pub fn is_present(store: &Store, request: &ImageRequest) -> bool {
    let reference = request.image.parse::<Reference>();
    reference.is_ok_and(|r| store.image(&r.to_string()).is_ok())
}

/// The bytes an image takes in the store: its blobs' sizes (at least the wasm's).
pub fn image_size(store: &Store, image: &Image) -> u64 {
    let blob_size = |d| std::fs::metadata(store.blob_path(d)).map_or(0, |m| m.len());
    let blobs: u64 = image.blobs.iter().map(blob_size).sum();
    blobs.max(image.wasm_size)
}

/// Parses a container's `image` as the kubelet does, naming the problem when it cannot.
pub fn parse(image: &str) -> Result<Reference, ImageError> {
    image
        .parse()
        .map_err(|e: wasmlet_oci::reference::Error| ImageError::InvalidName {
            image: image.to_owned(),
            message: e.to_string(),
        })
}

/// What the worker needs of a stored image: the wasm blob, the argv (for a plain wasm
/// artifact, the repository's last segment as the program name), env and working directory,
/// and the image ID `registry/repository@digest` (`pulled` is left `None`).
pub fn resolved(store: &Store, reference: &Reference, image: &Image) -> ResolvedImage {
    let program = reference
        .repository()
        .rsplit('/')
        .next()
        .unwrap_or("module")
        .to_owned();
    let entrypoint = match image.argv.is_empty() {
        true => vec![program],
        false => image.argv.clone(),
    };
    ResolvedImage {
        wasm: WasmSource::File(store.blob_path(&image.wasm)),
        config: ImageConfig {
            entrypoint,
            cmd: Vec::new(),
            env: ImageConfig::env_from_oci(&image.env),
            working_dir: image.working_dir.clone(),
        },
        image_id: format!(
            "{}/{}@{}",
            reference.registry(),
            reference.repository(),
            image.digest
        ),
        pulled: None,
    }
}
