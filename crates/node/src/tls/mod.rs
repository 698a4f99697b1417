//! The node's TLS identity: its client certificate for the API server and the kubelet API's
//! serving certificate, both from CertificateSigningRequests ([`certs`]), obtained by TLS
//! bootstrap when the node has no kubeconfig yet ([`bootstrap`]), held where every task and
//! connection uses the current one ([`identity`]) and renewed before they expire
//! ([`rotation`]).

pub(crate) mod bootstrap;
pub(crate) mod certs;
pub(crate) mod identity;
pub(crate) mod rotation;
