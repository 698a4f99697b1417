//! Images from the content store, pulled into under each container's `imagePullPolicy`: the
//! one resolver of `wasmlet run`, `wasmlet run pod.yaml` and the node agent, which differ only
//! in how they pull ([`Puller`]).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use wasmlet_oci::auth::Keyring;
use wasmlet_oci::client::{Client, ClientConfig, NoProgress};
use wasmlet_oci::store::{Image, Store};
use wasmlet_oci::{Digest, Reference, pull};
use wasmlet_pod::ImageConfig;

use super::{
    ImageError, ImageRequest, ImageResolver, PullInfo, PullPolicy, ResolveFuture, ResolvedImage,
    WasmSource,
};

/// The future a [`Puller`] returns.
pub type PullFuture<'a> = Pin<Box<dyn Future<Output = Result<Image, ImageError>> + Send + 'a>>;

/// Pulls an image into a store: the registry settings, credentials, progress and the wording
/// of a failure are the caller's.
pub trait Puller: Send + Sync {
    /// Pulls `reference` into `store`.
    fn pull<'a>(&'a self, store: &'a Store, reference: &'a Reference) -> PullFuture<'a>;
}

/// Resolves images from a content store, pulling with `P` when the policy says so; with
/// [`StoreResolver::with_local_files`], an image naming a `.wasm`/`.wat` file is that file.
#[derive(Clone)]
pub struct StoreResolver<P> {
    store: Store,
    puller: P,
    files: Option<PathBuf>,
}

impl<P: Puller> StoreResolver<P> {
    /// A resolver over `store` pulling with `puller`.
    pub fn new(store: Store, puller: P) -> StoreResolver<P> {
        StoreResolver {
            store,
            puller,
            files: None,
        }
    }

    /// The same resolver taking an image that names a `.wasm` or `.wat` file (relative to
    /// `base`, else to the working directory) as that file.
    pub fn with_local_files(self, base: PathBuf) -> StoreResolver<P> {
        StoreResolver {
            files: Some(base),
            ..self
        }
    }

    /// Resolves `request` under its pull policy (pulling when it asks for a pull: `Always`,
    /// or `IfNotPresent` with the image absent).
    pub async fn resolve_image(&self, request: &ImageRequest) -> Result<ResolvedImage, ImageError> {
        if let Some(path) = self.local_file(&request.image) {
            return local_image(&path);
        }
        let reference = parse(&request.image)?;
        let stored = self.store.image(&reference.to_string()).ok();
        let (image, pulled) = match (request.pull_policy, stored) {
            (PullPolicy::Never, None) => return Err(ImageError::NeverPull(request.image.clone())),
            (PullPolicy::Never | PullPolicy::IfNotPresent, Some(image)) => (image, None),
            _ => {
                let started = Instant::now();
                let image = self.puller.pull(&self.store, &reference).await?;
                let info = PullInfo {
                    duration: started.elapsed(),
                    size: image_size(&self.store, &image),
                };
                (image, Some(info))
            }
        };
        Ok(ResolvedImage {
            pulled,
            ..resolved(&self.store, &reference, &image)
        })
    }

    fn local_file(&self, image: &str) -> Option<PathBuf> {
        let base = self.files.as_ref()?;
        if !(image.ends_with(".wasm") || image.ends_with(".wat")) {
            return None;
        }
        [base.join(image), PathBuf::from(image)]
            .into_iter()
            .find(|p| p.is_file())
    }
}

impl<P: Puller> ImageResolver for StoreResolver<P> {
    fn resolve<'a>(&'a self, request: &'a ImageRequest) -> ResolveFuture<'a> {
        Box::pin(self.resolve_image(request))
    }

    fn is_present(&self, request: &ImageRequest) -> bool {
        if self.local_file(&request.image).is_some() {
            return true;
        }
        let reference = request.image.parse::<Reference>();
        reference.is_ok_and(|r| self.store.image(&r.to_string()).is_ok())
    }
}

impl StoreResolver<RegistryPuller> {
    /// The same resolver with `keyring` (a pod's pull secrets) tried before the puller's
    /// own credentials.
    pub fn with_keyring(&self, keyring: Keyring) -> StoreResolver<RegistryPuller> {
        StoreResolver {
            puller: self.puller.with_keyring(keyring),
            ..self.clone()
        }
    }
}

/// Pulls with a registry client of a [`ClientConfig`] (the node's registry settings and
/// credentials), quietly, wording a failure as the kubelet does.
#[derive(Clone)]
pub struct RegistryPuller {
    config: Arc<ClientConfig>,
}

impl RegistryPuller {
    /// A puller with `config`: CA files, insecure registries, the credentials every pod may
    /// use.
    pub fn new(config: ClientConfig) -> RegistryPuller {
        RegistryPuller {
            config: Arc::new(config),
        }
    }

    /// The same puller with `keyring` tried before its own credentials.
    pub fn with_keyring(&self, keyring: Keyring) -> RegistryPuller {
        let mut config = (*self.config).clone();
        let mut merged = config.keyring.clone();
        merged.extend(keyring);
        config.keyring = merged;
        RegistryPuller::new(config)
    }

    async fn pull_into(&self, store: &Store, reference: &Reference) -> Result<Image, ImageError> {
        let failed =
            |e: String| ImageError::Pull(format!("failed to pull image \"{reference}\": {e}"));
        let client = Client::new((*self.config).clone()).map_err(|e| failed(e.to_string()))?;
        pull::pull(&client, store, reference, &NoProgress)
            .await
            .map_err(|e| failed(e.to_string()))
    }
}

impl Puller for RegistryPuller {
    fn pull<'a>(&'a self, store: &'a Store, reference: &'a Reference) -> PullFuture<'a> {
        Box::pin(self.pull_into(store, reference))
    }
}

/// The bytes an image takes in the store: its blobs' sizes (at least the wasm's).
fn image_size(store: &Store, image: &Image) -> u64 {
    let blob_size = |d| std::fs::metadata(store.blob_path(d)).map_or(0, |m| m.len());
    let blobs: u64 = image.blobs.iter().map(blob_size).sum();
    blobs.max(image.wasm_size)
}

/// Parses a container's `image` as the kubelet does, naming the problem when it cannot.
fn parse(image: &str) -> Result<Reference, ImageError> {
    image
        .parse()
        .map_err(|e: wasmlet_oci::reference::Error| ImageError::InvalidName {
            image: image.to_owned(),
            message: e.to_string(),
        })
}

/// What the worker needs of a stored image: the wasm blob with its digest, the argv (for a
/// plain wasm artifact, the repository's last segment as the program name), env and working
/// directory, and the image ID `registry/repository@digest` (`pulled` is left `None`).
fn resolved(store: &Store, reference: &Reference, image: &Image) -> ResolvedImage {
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
        wasm: WasmSource::Blob {
            path: store.blob_path(&image.wasm),
            digest: image.wasm.to_string(),
        },
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

/// A local `.wasm`/`.wat` file as an image: the file's name as the program name, the image
/// ID `file://<absolute path>@<digest>`.
fn local_image(path: &Path) -> Result<ResolvedImage, ImageError> {
    let bytes = std::fs::read(path)
        .map_err(|e| ImageError::Pull(format!("reading {}: {e}", path.display())))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let absolute = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    Ok(ResolvedImage {
        wasm: WasmSource::File(path.to_path_buf()),
        config: ImageConfig {
            entrypoint: vec![name],
            ..ImageConfig::default()
        },
        image_id: format!("file://{}@{}", absolute.display(), Digest::of(&bytes)),
        pulled: None,
    })
}
