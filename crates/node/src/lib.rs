//! The node agent: joins a Kubernetes cluster as a Node and runs the pods scheduled to it, as
//! the kubelet would.
//!
//! This crate owns the Kubernetes side of a node: registering the Node (labels, taints,
//! capacity, conditions), renewing its Lease, reporting its status, and (as it grows) the pod
//! watch and reconcile, the kubelet HTTPS API, TLS bootstrap and certificate rotation. It
//! must not know how a wasm module runs (that is the worker's and the runtime's business) nor
//! how a pod's status is decided (that is `wasmlet-pod`'s): it reads the world and talks to
//! the API server.
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
pub mod bootstrap;
pub mod certs;
pub mod config;
pub mod disk;
pub mod heartbeat;
pub mod identity;
pub mod ips;
pub mod logs;
pub mod machine;
pub mod metrics;
pub mod network;
pub mod objects;
pub mod pod;
pub mod pods;
pub mod portforward;
pub mod rotation;
pub mod running;
pub mod server;
pub mod spdy;
pub mod stats;
pub mod status;
pub mod streaming;
pub mod watches;
