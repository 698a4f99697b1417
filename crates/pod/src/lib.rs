//! The pure logic of a pod.
//!
//! This crate owns what a kubelet decides about a pod, as plain functions over plain data:
//! loading a Pod manifest, turning a Pod into container plans (argv, env, mounts, limits),
//! describing the volumes to materialise, the restart and back-off policy, and the status to
//! report (phase, conditions, container statuses, QoS class).
//!
//! It must not know about files, sockets, clocks, async runtimes, wasmtime, OCI registries or
//! the Kubernetes API client: the caller reads the world, passes facts in (including "now"),
//! and does the I/O that the returned descriptions ask for.
#![deny(missing_docs)]

pub mod downward;
pub mod env;
pub mod expansion;
pub mod lifecycle;
pub mod manifest;
pub mod objects;
pub mod plan;
pub mod qos;
pub mod quantity;
pub mod restart;
pub mod status;
pub mod volume;

pub use downward::{NodeAllocatable, NodeFacts};
pub use k8s_openapi;
pub use lifecycle::{PodFailure, active_deadline_exceeded, termination_grace_period};
pub use manifest::{Manifest, ManifestError, load_manifest, validate_pod};
pub use objects::{ConfigMapContent, ConfigObjects, SecretContent};
pub use plan::{
    ContainerKind, ContainerPlan, ImageConfig, MountPlan, PlanContext, PlanError, ResourceLimits,
};
pub use quantity::{ParsedQuantity, QuantityError, parse_quantity};
pub use restart::{
    BackOff, ExitFacts, InitRun, InitStep, RestartDecision, RestartPolicy, decide_restart,
    next_init_step,
};
pub use status::{ContainerFacts, PodFacts, RunState, Termination, pod_status};
pub use volume::{FileToWrite, TokenRequest, VolumeContent, VolumePlan, plan_volumes};
