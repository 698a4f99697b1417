//! The Node object: what it says ([`status`]: labels, taints, capacity, addresses,
//! conditions), from readings of the machine ([`machine`]), and registering it and keeping it
//! alive ([`heartbeat`]: the Lease and the status reports).

pub(crate) mod heartbeat;
pub(crate) mod machine;
pub(crate) mod status;
