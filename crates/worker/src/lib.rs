//! The pod worker: runs ONE pod on this machine, for `wasmlet run pod.yaml` and the node agent.
//!
//! It owns the pod's life on the node: resolving images (through an [`ImageResolver`] the
//! caller provides), materialising volumes under the pod directory ([`PodDir`]), running init
//! containers in order and then the regular containers together, restarting them under the
//! pod's `restartPolicy` with the kubelet's CrashLoopBackOff back-off, enforcing
//! `activeDeadlineSeconds`, writing per-container CRI logs, stopping with a grace period, and
//! publishing what it knows as [`WorkerFacts`] on a `tokio::sync::watch` channel.
//!
//! It must not know about registries, the content store, the Kubernetes API or the terminal:
//! the caller resolves images, computes the pod status from the facts with
//! [`wasmlet_pod::pod_status`] (and patches or prints it), and decides where output goes.
//! The decisions themselves (plans, volumes' content, restart, init order, status) are the
//! pure functions of `wasmlet-pod`; this crate does the I/O and the timing around them.
//!
//! ```no_run
//! # async fn demo(resolver: std::sync::Arc<dyn wasmlet_worker::ImageResolver>)
//! # -> Result<(), Box<dyn std::error::Error>> {
//! use wasmlet_pod::{NodeFacts, load_manifest, pod_status};
//! use wasmlet_worker::{PodWorker, WorkerConfig};
//!
//! let manifest = load_manifest(&std::fs::read_to_string("pod.yaml")?)?;
//! let runtime = wasmlet_runtime::Runtime::new(Default::default())?;
//! let config = WorkerConfig {
//!     root: "/var/lib/wasmlet".into(),
//!     node: NodeFacts { node_name: "edge-1".into(), pod_uid: "uid-1".into(), ..Default::default() },
//!     output: None,
//! };
//! let objects = manifest.config_objects();
//! let worker = PodWorker::start(runtime, resolver, config, manifest.pod.clone(), objects)?;
//! let mut facts = worker.facts();
//! while facts.changed().await.is_ok() {
//!     let status = pod_status(&manifest.pod, &facts.borrow().pod, None);
//!     println!("{:?}", status.phase);
//!     if facts.borrow().pod.terminal {
//!         break;
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! # Behaviour
//! - One tokio task per pod, one small task per running container (no threads). Each pass
//!   of the worker is level-triggered: it looks at every container and does the next thing.
//! - Images are resolved and compiled once per image and worker (a restart reuses them, even
//!   under `imagePullPolicy: Always`). A failure is the container's waiting state
//!   (`ErrImagePull`, then `ImagePullBackOff`; `CreateContainerConfigError`;
//!   `CreateContainerError`; `RunContainerError`), retried with back-off.
//! - Volumes: see the `volumes` notes below; a set-up failure is [`WorkerFacts::mount_error`]
//!   and is retried with back-off.
//! - Restarts follow `restartPolicy` with [`wasmlet_pod::BackOff`]: 10 s doubling to 5 min,
//!   shown as `CrashLoopBackOff`. Timers are tokio's, so a paused tokio clock drives them.
//! - `activeDeadlineSeconds`: once past, containers are stopped with the pod's grace period
//!   and [`wasmlet_pod::PodFacts::failure`] says `DeadlineExceeded`.
//! - The worker is done ([`wasmlet_pod::PodFacts::terminal`]) when it was stopped, the
//!   deadline passed, an init container failed for good, or every regular container ended
//!   for good, and nothing runs any more (sidecars are stopped last).
//!
//! # Volumes
//! - `emptyDir`: a directory under the pod directory; `medium: Memory` is a plain directory
//!   too (no tmpfs), `sizeLimit` is not enforced.
//! - `hostPath`: the host directory, after the check its `type` asks for.
//! - `configMap`, `secret`, `downwardAPI`, `projected`: files written atomically with their
//!   modes (the kubelet's `..data` symlink swap), always mounted read-only. Projected service
//!   account tokens are not written.
//! - `subPath` mounts a directory inside the volume (created if missing). WASI preopens are
//!   directories, so a file cannot be mounted on its own.
//! - `readOnly: true` makes the preopen read-only: every write through it is refused.
#![deny(missing_docs)]

mod clock;
pub mod image;
pub mod paths;
pub mod volumes;
mod worker;

pub use image::{
    ImageError, ImageRequest, ImageResolver, PullPolicy, ResolveFuture, ResolvedImage, WasmSource,
};
pub use paths::PodDir;
pub use wasmlet_runtime::log::Stream;
pub use worker::{Error, OutputFactory, PodWorker, WorkerConfig, WorkerFacts};
