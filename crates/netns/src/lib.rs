//! Network namespaces for pods, and sockets made inside them.
//!
//! A CRI runtime gives each pod a network namespace of its own and lets the cluster's CNI
//! plugins wire it (an interface, the pod IP, routes); the kubelet never touches addresses.
//! wasmlet's guests live in one process, so rather than one process per namespace it keeps
//! one namespace per pod and makes every socket of that pod from a thread that has entered
//! the pod's namespace. A socket belongs to the namespace it was created in for its whole
//! life, and its descriptor works from any thread, so one async runtime serves the sockets of
//! thousands of namespaces.
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use wasmlet_netns::NetNs;
//!
//! # fn main() -> Result<(), wasmlet_netns::Error> {
//! let ns = NetNs::create("/var/lib/wasmlet/netns/pod-1234".as_ref())?;
//! ns.set_loopback_up()?;
//! let listener = ns.bind_tcp("127.0.0.1:8080".parse::<SocketAddr>().unwrap())?;
//! // `listener` accepts connections made inside the pod's namespace only, from any thread.
//! # drop(listener);
//! wasmlet_netns::remove("/var/lib/wasmlet/netns/pod-1234".as_ref())?;
//! # Ok(()) }
//! ```
//!
//! # Core concepts
//! - **Pinning.** [`NetNs::create`] makes a namespace on a short-lived thread and bind-mounts
//!   that thread's `/proc/thread-self/ns/net` on a file (what `ip netns add` and CRI runtimes
//!   do), so the namespace outlives the thread and the process: after a `kill -9` the pin is
//!   still there for the next start to find ([`is_pinned`]) and clean up ([`remove`]).
//!   [`NetNs::open`] takes a namespace pinned by someone else (the sandbox namespace an OCI
//!   spec names, or one a CNI test made).
//! - **Entering.** [`NetNs::run`] runs a closure on a thread that entered the namespace and
//!   returns its result; only that thread moves, never the caller's. The socket helpers
//!   ([`NetNs::bind_tcp`], [`NetNs::bind_udp`], [`NetNs::connect_tcp`]) are built on it.
//! - **Polling inside.** [`InNamespace`] wraps a future so that each poll runs inside the
//!   namespace (the polling thread enters and leaves around it): the sockets a guest makes
//!   as it runs are its pod's, whichever runtime thread polls it.
//! - **Lifetime.** A namespace lives while it is pinned, or while any socket made in it or
//!   any [`NetNs`] handle is open; [`remove`] drops the pin only.
//!
//! Linux only, and creating or entering a namespace needs `CAP_SYS_ADMIN` (root).
#![deny(missing_docs)]

mod link;
mod namespace;
mod polled;

pub use namespace::{Error, NetNs, Result, is_pinned, remove};
pub use polled::InNamespace;
