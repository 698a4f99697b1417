//! Images: turning a container's `image` into wasm, in one place for every path.
//!
//! The worker asks an [`ImageResolver`] its caller hands it. The resolver every caller uses
//! is [`StoreResolver`] ([`store`]): the content store, pulled into under the container's
//! `imagePullPolicy` by the caller's [`Puller`] (`wasmlet run` with its registry flags and
//! progress on stderr; the node agent with [`RegistryPuller`] and each pod's pull secrets).
//! A resolved image carries the digest of its wasm ([`WasmSource::Blob`]), so loading it
//! ([`WasmSource::load`]) neither reads nor hashes the blob when the program is already
//! loaded or compiled.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use wasmlet_pod::ImageConfig;
use wasmlet_pod::k8s_openapi::api::core::v1::Container;
use wasmlet_runtime::{Program, Runtime, Wasm};

pub mod store;

pub use store::{PullFuture, Puller, RegistryPuller, StoreResolver};

/// The future an [`ImageResolver`] returns.
pub type ResolveFuture<'a> =
    Pin<Box<dyn Future<Output = Result<ResolvedImage, ImageError>> + Send + 'a>>;

/// A container's `imagePullPolicy`, with the API server's default applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    /// Pull every time the container starts.
    Always,
    /// Pull only when the image is not in the store.
    IfNotPresent,
    /// Never pull: the image must be in the store.
    Never,
}

impl PullPolicy {
    /// The container's policy; when unset, the API server's default: `Always` for an image
    /// without a tag or tagged `latest` (and no digest), else `IfNotPresent`.
    pub fn of_container(container: &Container) -> PullPolicy {
        match container.image_pull_policy.as_deref() {
            Some("Always") => PullPolicy::Always,
            Some("IfNotPresent") => PullPolicy::IfNotPresent,
            Some("Never") => PullPolicy::Never,
            _ => PullPolicy::default_for(container.image.as_deref().unwrap_or_default()),
        }
    }

    /// The default policy for an image reference.
    pub fn default_for(image: &str) -> PullPolicy {
        if image.contains('@') {
            return PullPolicy::IfNotPresent;
        }
        let last = image.rsplit('/').next().unwrap_or_default();
        match last.rsplit_once(':') {
            Some((_, tag)) if tag != "latest" => PullPolicy::IfNotPresent,
            _ => PullPolicy::Always,
        }
    }
}

/// What the worker asks for: one container's image under its pull policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRequest {
    /// The container's `image`, as written in the pod.
    pub image: String,
    /// Its pull policy.
    pub pull_policy: PullPolicy,
}

/// Where the wasm bytes are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WasmSource {
    /// In memory.
    Bytes(Vec<u8>),
    /// In a file, `.wasm` or `.wat` (read and hashed when loaded).
    File(PathBuf),
    /// A blob of the content store: binary wasm whose content is `digest`, read only if it
    /// has to be compiled.
    Blob {
        /// The blob's file.
        path: PathBuf,
        /// Its digest, `sha256:<hex>`.
        digest: String,
    },
}

impl WasmSource {
    /// Loads it with `runtime` (see [`Runtime::load_wasm`]).
    pub fn load(&self, runtime: &Runtime) -> wasmlet_runtime::Result<Program> {
        match self {
            WasmSource::Bytes(bytes) => runtime.load(bytes),
            WasmSource::File(path) => runtime.load_file(path),
            WasmSource::Blob { path, digest } => {
                runtime.load_wasm(&Wasm::stored(path.clone(), digest.clone()))
            }
        }
    }
}

/// A resolved image: its wasm, its configuration and its ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedImage {
    /// The wasm module or component.
    pub wasm: WasmSource,
    /// Entrypoint, cmd, env and working directory from the image (for a plain wasm artifact,
    /// `entrypoint: vec![<program name>]`).
    pub config: ImageConfig,
    /// The image ID reported in `containerStatuses[].imageID` (e.g. `repo@sha256:...`).
    pub image_id: String,
    /// How the pull went, when resolving pulled the image; `None` when it was already on
    /// this machine. The worker's `Pulled` event says which.
    pub pulled: Option<PullInfo>,
}

/// What a pull took, for the `Pulled` event (`Successfully pulled image "X" in 1.2s ...`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PullInfo {
    /// How long the pull itself took.
    pub duration: Duration,
    /// The image's size in bytes (what the store tells cheaply: the blobs' sizes, or the
    /// wasm's).
    pub size: u64,
}

/// Why an image could not be resolved; each variant is reported as the kubelet's waiting
/// reason ([`ImageError::reason`]) with the error's text as the message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// Pulling failed (unreachable registry, unknown image, denied, not wasm, ...).
    #[error("{0}")]
    Pull(String),
    /// The image is absent and the policy is `Never`.
    #[error("Container image \"{0}\" is not present with pull policy of Never")]
    NeverPull(String),
    /// The image reference cannot be parsed.
    #[error("Failed to apply default image tag \"{image}\": {message}")]
    InvalidName {
        /// The image as written.
        image: String,
        /// Why it is invalid.
        message: String,
    },
}

impl ImageError {
    /// The container waiting reason: `ErrImagePull`, `ErrImageNeverPull` or `InvalidImageName`.
    pub fn reason(&self) -> &'static str {
        match self {
            ImageError::Pull(_) => wasmlet_pod::status::ERR_IMAGE_PULL,
            ImageError::NeverPull(_) => "ErrImageNeverPull",
            ImageError::InvalidName { .. } => "InvalidImageName",
        }
    }
}

/// Turns a container's image into wasm. Implemented by the caller; one resolver serves one
/// pod worker (so it may hold that pod's pull secrets) or many.
pub trait ImageResolver: Send + Sync {
    /// Resolves (pulling when the policy says so) the image of `request`.
    fn resolve<'a>(&'a self, request: &'a ImageRequest) -> ResolveFuture<'a>;

    /// Whether the image of `request` is on this machine already, so that resolving it under
    /// `IfNotPresent` will not pull. The worker announces a pull (the `Pulling` event) before
    /// resolving an image under `Always`, and under `IfNotPresent` unless this says the image
    /// is present; the default (`false`) announces one for every `IfNotPresent` image.
    fn is_present(&self, request: &ImageRequest) -> bool {
        let _ = request;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pull_policy_like_the_api_server() {
        let cases = [
            ("hello", PullPolicy::Always),
            ("hello:latest", PullPolicy::Always),
            ("127.0.0.1:5000/demo/hello", PullPolicy::Always),
            ("127.0.0.1:5000/demo/hello:v1", PullPolicy::IfNotPresent),
            ("demo/hello@sha256:abcd", PullPolicy::IfNotPresent),
        ];
        for (image, expected) in cases {
            assert_eq!(PullPolicy::default_for(image), expected, "{image}");
        }
        let explicit = Container {
            image: Some("hello".into()),
            image_pull_policy: Some("Never".into()),
            ..Container::default()
        };
        assert_eq!(PullPolicy::of_container(&explicit), PullPolicy::Never);
    }
}
