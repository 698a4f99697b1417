//! The pod worker: runs ONE pod on this machine, for `wasmlet run pod.yaml` and the node agent.
//!
//! It owns the pod's life on the node: resolving images (through an [`ImageResolver`] the
//! caller provides), materialising volumes under the pod directory ([`PodDir`]), running init
//! containers in order and then the regular containers together, restarting them under the
//! pod's `restartPolicy` with the kubelet's CrashLoopBackOff back-off, enforcing
//! `activeDeadlineSeconds`, serving `wasi:http` components, running probes, writing
//! per-container CRI logs, stopping with a grace period, and publishing what it knows (with
//! the kubelet's events) as [`WorkerFacts`] on a `tokio::sync::watch` channel.
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
//!     resume: Default::default(),
//!     network: None,
//!     dns: None,
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
//! - [`PodWorker::usage`] (or a [`PodUsage`] handle) tells what each running container uses
//!   now: the CPU time of its run and the memory of its instances, from the runtime.
//!
//! # Events
//! [`WorkerFacts::events`] holds the most recent [`WorkerEvent`]s (the last
//! [`events::KEPT_EVENTS`]), numbered from 1 per worker: a consumer emits, as Kubernetes
//! Events, those with a `seq` above the last one it emitted. They are the kubelet's, in its
//! words:
//! - `Pulling` (`Pulling image "X"`) before resolving an image under `Always`, or under
//!   `IfNotPresent` unless [`ImageResolver::is_present`] says it is there; then `Pulled`:
//!   `Successfully pulled image "X" in 1.2s (1.3s including waiting). Image size: N bytes.`
//!   when the resolver pulled ([`ResolvedImage::pulled`]), else `Container image "X" already
//!   present on machine` (also on every later start, since the worker keeps images).
//! - Image failures: `Failed` (`Failed to pull image "X": ...`), `ErrImageNeverPull` or
//!   `InspectFailed`, then `Failed` `Error: ErrImagePull` (the reason, for image problems);
//!   `BackOff` `Back-off pulling image "X"` and `Error: ImagePullBackOff` once per back-off.
//!   Other set-up failures: `Failed` `Error: <the error>` (the config error, the bind error).
//! - `Created` (`Created container: NAME`), `Started` (`Started container NAME`), `Killing`
//!   (`Stopping container NAME`, once per run, whenever a running container is stopped: pod
//!   stop, deadline, end of the sidecars), `BackOff` (a warning, `Back-off restarting failed
//!   container NAME in pod NAME_NAMESPACE(UID)`, once per CrashLoopBackOff wait).
//! - On the pod (`container: None`): `FailedMount` with the volume error at each failed
//!   attempt, `DeadlineExceeded` when `activeDeadlineSeconds` passes.
//! - Probes: `Unhealthy` (`Readiness probe failed: ...`) for every failed check, `Killing`
//!   (`Container NAME failed liveness probe, will be restarted`) for the kill it causes, and
//!   `Unhealthy` (`Readiness probe errored: exec probes are not supported for wasm
//!   containers; use httpGet or tcpSocket`) once per container for a probe that cannot run.
//!
//! # wasi:http containers
//! A container whose program is a `wasi:http/incoming-handler` component is served, one
//! instance per request, on the pod IP ([`wasmlet_pod::NodeFacts::pod_ips`]`[0]`, else the
//! first host IP, else `127.0.0.1`) at its first TCP `containerPort`
//! ([`serving::DEFAULT_HTTP_PORT`], 8080, when it declares none), and on `hostIP` (default
//! `0.0.0.0`) at each `hostPort`. It runs while it serves; a stop ends it at once with exit
//! code 0 (`Completed`): requests in flight finish, nothing new is accepted. A port that
//! cannot be bound is a `RunContainerError` saying so (`listen tcp 10.0.0.7:8080: bind:
//! address already in use (...: change the container's ports[].containerPort ...)`), retried
//! with back-off. The instances' output goes to the container's CRI log.
//!
//! # Sockets
//! Every component (a `wasi:cli/run` command or a `wasi:http` server) gets `wasi:sockets`
//! (TCP, UDP, name lookup) through [`wasmlet_runtime::Network`]: it may bind and listen on the
//! pod IP (the same address as above; a program learns it through the downward API,
//! `status.podIP`) and connect anywhere, but not listen on the unspecified address or another
//! address, which would take the port on every pod's address; such a bind is refused and the
//! reason, with that fix, is written to the container's log. Preview 1 modules have no
//! sockets API and get none.
//!
//! # Probes
//! `startupProbe`, `livenessProbe` and `readinessProbe` with `httpGet` (plain HTTP to the pod
//! IP or `host`, the port a number or a named `containerPort`, `httpHeaders`, success on 200
//! to 399, User-Agent [`PROBE_USER_AGENT`]) or `tcpSocket`, with the kubelet's
//! `initialDelaySeconds` (0), `periodSeconds` (10), `timeoutSeconds` (1),
//! `successThreshold` (1) and `failureThreshold` (3). Each probe of a run is a tokio task
//! reporting every check to the worker. The first check comes right after the initial delay.
//! - Readiness decides [`wasmlet_pod::ContainerFacts::ready`]: without a readiness probe a
//!   running container is ready; with one it is not until the probe succeeds.
//! - Liveness failing `failureThreshold` times in a row stops the container (its
//!   `terminationGracePeriodSeconds`, else the pod's) and it is restarted unless the pod's
//!   `restartPolicy` is `Never` (under `OnFailure` too, whatever its exit code), with the
//!   usual back-off.
//! - A startup probe holds the other two back and keeps
//!   [`wasmlet_pod::ContainerFacts::started`] at `Some(false)` (and the container unready)
//!   until it succeeds, then stops; failing kills the container as liveness does. A sidecar
//!   that has not started holds back the next init container. Without a startup probe
//!   `started` is `None` (started once running).
//! - `exec` and `grpc` probes cannot run for a wasm container (nothing to exec into, no gRPC
//!   health service), nor can an `HTTPS` httpGet or one naming an unknown port: such a probe
//!   is never run, is told once per container as errored, and can never succeed: an exec
//!   readiness probe keeps the container unready for good, an exec startup probe keeps it
//!   unstarted (and so unready) for good. An exec liveness probe never kills (it says nothing
//!   about liveness).
//! - Redirects are not followed (a 3xx is a success, as the kubelet counts one it does not
//!   follow).
//!
//! # Volumes
//! - `emptyDir`: a directory under the pod directory; `medium: Memory` mounts a tmpfs on it
//!   sized by its `sizeLimit` (else the node's allocatable memory), so a write past the limit
//!   fails with "No space left on device", as on a kubelet's node; without the right to mount
//!   (`CAP_SYS_ADMIN`) it is a directory on disk, with a warning. A `sizeLimit` is also
//!   enforced as the kubelet's eviction manager does: past it (measured every 10 s) the pod is
//!   evicted (`Failed`, reason `Evicted`). Removing the pod's directory unmounts its tmpfs
//!   volumes first.
//! - `hostPath`: the host directory, after the check its `type` asks for.
//! - `configMap`, `secret`, `downwardAPI`, `projected`: files written atomically with their
//!   modes (the kubelet's `..data` symlink swap), always mounted read-only. Projected service
//!   account tokens are not written.
//! - `subPath` mounts a directory inside the volume (created if missing). WASI preopens are
//!   directories, so a file cannot be mounted on its own.
//! - `readOnly: true` makes the preopen read-only: every write through it is refused.
#![deny(missing_docs)]

mod beneath;
mod clock;
pub mod events;
pub mod image;
mod net;
pub mod paths;
mod probe;
pub mod resume;
pub mod serving;
pub mod storage;
pub mod tmpfs;
pub mod usage;
pub mod volumes;
mod worker;

pub use events::WorkerEvent;
pub use image::{
    ImageError, ImageRequest, ImageResolver, PullFuture, PullInfo, PullPolicy, Puller,
    RegistryPuller, ResolveFuture, ResolvedImage, StoreResolver, WasmSource,
};
pub use paths::PodDir;
pub use probe::PROBE_USER_AGENT;
pub use resume::{Resume, ResumedContainer};
pub use usage::{ContainerUsage, PodUsage};
pub use wasmlet_runtime::log::Stream;
pub use worker::{Error, OutputFactory, PodWorker, WorkerConfig, WorkerFacts};
