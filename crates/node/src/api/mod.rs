//! The kubelet HTTPS API ([`server`]): what the API server, `kubectl` and metrics-server reach
//! on the node's port. Containers' logs ([`logs`]), port forwarding ([`portforward`] over
//! [`spdy`]), the refused command streams ([`streaming`]), and the resource figures: the
//! Summary API ([`stats`], with the pods' disk use from [`disk`]) and the Prometheus metrics
//! ([`metrics`]).

pub(crate) mod disk;
pub(crate) mod logs;
pub(crate) mod metrics;
pub(crate) mod portforward;
pub(crate) mod server;
pub(crate) mod spdy;
pub(crate) mod stats;
pub(crate) mod streaming;
