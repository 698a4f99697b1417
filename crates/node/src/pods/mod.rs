//! The pods of this node: the watch of the pods bound here ([`watch`]), one task per pod
//! ([`pod`]) with what it reads from the API besides itself ([`objects`], through the shared
//! ConfigMap and Secret watches of [`watches`]), its network and address ([`network`],
//! [`ips`]), and the pods whose workers run, for the resource figures ([`running`]).

pub(crate) mod ips;
pub(crate) mod network;
pub(crate) mod objects;
pub(crate) mod pod;
pub(crate) mod running;
pub(crate) mod watch;
pub(crate) mod watches;

pub(crate) use watch::{NodeContext, PodStore, run};
