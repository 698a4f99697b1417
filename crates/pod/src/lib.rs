//! The pure logic of a pod.
//!
//! This crate owns what a kubelet decides about a pod, as plain functions over plain data:
//! loading a Pod manifest, turning a Pod into container plans (argv, env, mounts, limits),
//! describing the volumes to materialise, the pod's name resolution (its resolv.conf and hosts
//! entries), the restart and back-off policy, and the status to report (phase, conditions,
//! container statuses, QoS class).
//!
//! It must not know about files, sockets, clocks, async runtimes, wasmtime, OCI registries or
//! the Kubernetes API client: the caller reads the world, passes facts in (including "now"),
//! and does the I/O that the returned descriptions ask for.
//!
//! ```
//! use wasmlet_pod::k8s_openapi::jiff::Timestamp;
//! use wasmlet_pod::*;
//!
//! let manifest = load_manifest(
//!     "apiVersion: v1\nkind: Pod\nmetadata: {name: hello}\nspec:\n  restartPolicy: Never\n  \
//!      containers:\n  - name: main\n    image: registry.example/hello:v1\n    \
//!      args: [\"--greet\", \"$(WHO)\"]\n    env: [{name: WHO, value: world}]\n",
//! )?;
//! let objects = manifest.config_objects();
//! let node = NodeFacts { node_name: "edge-1".into(), ..Default::default() };
//!
//! // 1. Volumes to materialise, then init containers in order (none here).
//! assert!(plan_volumes(&manifest.pod, &objects, &node)?.is_empty());
//! assert_eq!(next_init_step(&manifest.pod, |_| InitRun::NotStarted), InitStep::Done);
//!
//! // 2. Plan the container against its image's configuration.
//! let context = PlanContext { pod: &manifest.pod, objects: &objects, node: &node };
//! let image = ImageConfig { entrypoint: vec!["/hello.wasm".into()], ..Default::default() };
//! let plan = context.plan_by_name("main", &image)?;
//! assert_eq!(plan.argv, ["/hello.wasm", "--greet", "world"]);
//!
//! // 3. It exited 0: under restartPolicy Never it stays down, and the pod Succeeded.
//! let now = Timestamp::constant(1_700_000_000, 0);
//! let exit = ExitFacts { exit_code: 0, finished_at: now };
//! let wanted = RestartPolicy::of_pod(&manifest.pod).restarts_container(exit.exit_code);
//! let decision = decide_restart(wanted, exit, &BackOff::default(), now, "main", "hello");
//! assert_eq!(decision, RestartDecision::Stay);
//! let facts = PodFacts {
//!     containers: vec![ContainerFacts {
//!         name: "main".into(),
//!         state: RunState::Terminated(Termination { exit_code: 0, ..Default::default() }),
//!         last_termination: None,
//!         restart_count: 0,
//!         image: plan.image.clone(),
//!         image_id: String::new(),
//!         container_id: None,
//!         ready: false,
//!         started: None,
//!     }],
//!     start_time: Some(now),
//!     host_ips: vec![],
//!     pod_ips: vec![],
//!     sandbox_ready: true,
//!     terminal: false,
//!     failure: None,
//!     now,
//! };
//! let status = pod_status(&manifest.pod, &facts, None);
//! assert_eq!(status.phase.as_deref(), Some("Succeeded"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

pub mod dns;
pub mod downward;
pub mod env;
pub mod expansion;
pub mod keys;
pub mod lifecycle;
pub mod manifest;
pub mod objects;
pub mod plan;
pub mod qos;
pub mod quantity;
pub mod restart;
pub mod status;
pub mod volume;

pub use dns::{DnsWarning, HostEntry, NodeDns, PodDns, ResolvConf, pod_dns, pod_hosts};
pub use downward::{NodeAllocatable, NodeFacts};
pub use env::EnvError;
pub use k8s_openapi;
pub use lifecycle::{PodFailure, active_deadline_exceeded, termination_grace_period};
pub use manifest::{Manifest, ManifestError, load_manifest, validate_pod};
pub use objects::{ConfigMapContent, ConfigObjects, References, SecretContent, TokenKey};
pub use plan::{
    ContainerKind, ContainerPlan, ENGINE_ANNOTATION, ImageConfig, MountPlan, PlanContext,
    PlanError, ResourceLimits, pod_engine,
};
pub use qos::{QosError, qos_class};
pub use quantity::{ParsedQuantity, QuantityError, parse_quantity};
pub use restart::{
    BackOff, ExitFacts, InitRun, InitStep, RestartDecision, RestartPolicy, decide_restart,
    next_init_step, pod_label,
};
pub use status::{ContainerFacts, PodFacts, RunState, Termination, pod_status};
pub use volume::{
    FileToWrite, TokenRequest, VolumeContent, VolumeError, VolumePlan, plan_volume, plan_volumes,
};
