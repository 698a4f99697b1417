//! The runtime side of the Container Network Interface (CNI): what a CRI runtime does for the
//! kubelet so that a pod joins the cluster's network, done for wasmlet's pods.
//!
//! The cluster's network add-on (flannel, Calico, Cilium, or plain `bridge` + `host-local`)
//! installs a configuration in `/etc/cni/net.d` and plugins in `/opt/cni/bin`; the runtime
//! runs those plugins on each pod's network namespace and reads the pod's IPs from their
//! answer. This crate knows the CNI specification (1.0, and the 0.3/0.4 results still in use)
//! and nothing of Kubernetes or of how the namespace was made.
//!
//! ```no_run
//! use std::path::Path;
//! use wasmlet_cni::{Attachment, Cni, NetworkConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = NetworkConfig::load_dir(Path::new("/etc/cni/net.d"))?;
//! let cni = Cni::new(vec!["/opt/cni/bin".into()], "/var/lib/wasmlet/cni".into());
//! let pod = Attachment::new("sandbox-id", Path::new("/var/run/netns/pod"))
//!     .pod("default", "web-1");
//! let result = cni.add(&config, &pod)?;
//! println!("pod IPs: {:?}", result.pod_ips());
//! cni.del(&config, &pod)?;
//! # Ok(()) }
//! ```
//!
//! # Core concepts
//! - [`NetworkConfig`]: the first configuration of a directory in lexical order (`.conflist`,
//!   `.conf`, `.json`), as libcni and the CRI runtimes choose it; a single `.conf` is a list of
//!   one plugin.
//! - [`Cni::add`] runs the list's plugins in order, each given the previous one's result
//!   (`prevResult`) and the runtime configuration its `capabilities` ask for (`portMappings`
//!   for `hostPort`); the final result is cached under the cache directory with the
//!   configuration used, so [`Cni::del`] (the plugins in reverse order) works after a restart,
//!   a `kill -9`, or a configuration that changed meanwhile.
//! - Every plugin run has a deadline and a bounded answer: a plugin that hangs is killed, one
//!   that fails gives its CNI error (`code`, `msg`, `details`) in the error.
#![deny(missing_docs)]

mod attachment;
mod config;
mod exec;
mod network;
mod result;

pub use attachment::{Attachment, PortMapping};
pub use config::{ConfigError, NetworkConfig};
pub use exec::PluginError;
pub use network::{Cni, Error, Result};
pub use result::{CniResult, IpConfig, ResultError};
