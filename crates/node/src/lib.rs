//! The node agent: joins a Kubernetes cluster as a Node and runs the pods scheduled to it, as
//! the kubelet would.
//!
//! This crate owns the Kubernetes side of a node. It must not know how a wasm module runs
//! (that is the worker's and the runtime's business) nor how a pod's status is decided (that
//! is `wasmlet-pod`'s): it reads the world and talks to the API server. Its four parts:
//!
//! - `tls`: the node's TLS identity: TLS bootstrap, the client and serving certificates from
//!   CSRs, and their rotation while the agent runs.
//! - `api`: the kubelet HTTPS API: logs, port forwarding, the Summary API and the metrics.
//! - `pods`: the pods of this node: the pod watch, one task per pod, their ConfigMaps,
//!   Secrets and tokens, their networks and addresses.
//! - `node`: the Node object: registration, the Lease, the status and the machine's readings.
//!
//! All four are private. A user of the crate sees [`agent`], whose [`agent::run`] starts them
//! all, and [`config`], the agent's configuration ([`config::NodeConfig`], with the pod
//! network's [`config::NetworkMode`]).  Images are resolved by
//! `wasmlet-worker`'s store resolver, shared with `wasmlet run`.
//!
//! ```no_run
//! use wasmlet_node::{agent, config::NodeConfig};
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let config = NodeConfig::new("wasm-1", "127.0.0.2".parse()?, "/var/lib/wasmlet".into())
//!     .with_labels("zone=a")?;
//! let credentials = agent::Credentials {
//!     kubeconfig: Some("/etc/wasmlet/node.kubeconfig".into()),
//!     ..Default::default()
//! };
//! let cancel = tokio_util::sync::CancellationToken::new();
//! agent::run(config, credentials, cancel).await?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod agent;
pub mod config;

mod api;
mod node;
mod pods;
mod tls;
