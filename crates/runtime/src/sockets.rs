//! `wasi:sockets` for components: TCP, UDP and name lookup on the host's network, with every
//! listening address held to the pod's own IP.
//!
//! Pods on a node share the host's network stack; what sets one apart is its IP (a loopback
//! alias on a wasmlet node). A component given a [`Network`] may:
//! - **bind** (TCP or UDP) to its pod IP at any port, or to the unspecified address
//!   (`0.0.0.0`, `::`) at port 0: an ephemeral client port, the bind every `connect` and
//!   every first UDP send makes implicitly;
//! - **listen** only on its pod IP;
//! - **connect**, **accept**, **send** and **receive** with any peer, as a pod may;
//! - resolve names (`wasi:sockets/ip-name-lookup`) with the pod's resolver ([`crate::dns`]),
//!   or the host's when the network has none.
//!
//! A bind to the unspecified address at a fixed port, to any other specific address, or a
//! listen on anything but the pod IP is refused (`access-denied` to the guest). The
//! unspecified address is refused rather than narrowed: on the host it would listen on every
//! pod's address at once, so two pods serving one port would collide, and the check wasmtime
//! offers can allow or refuse an address but not replace it with another. The refusal is
//! written to the container's log (stderr) in words that name the fix: bind the pod IP, which
//! a pod gives its program through the downward API (`status.podIP`).
//!
//! A pod with a network namespace of its own (a node on the cluster's CNI network, or the
//! sandbox of a containerd pod) owns every address in it, as a container does: there its
//! components may bind and listen on any address, `0.0.0.0` included, and the pod IP rule
//! does not apply.
//!
//! Preview 1 modules get no sockets: WASI preview 1 has no call that creates or binds one.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;

use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::sockets::SocketAddrUse;

use crate::log::{SharedSink, Stream};

/// The network of a component: `wasi:sockets` with binds held to the pod IP (see the
/// [module docs](self)). Without one, a component gets no sockets at all.
#[derive(Clone, Debug)]
pub struct Network {
    /// The pod's IP: the one specific address the guest may bind and listen on.
    pub pod_ip: IpAddr,
    /// The pod's own network namespace, when it has one (a node on the cluster's network):
    /// the guest runs polled inside it ([`wasmlet_netns::InNamespace`]), so the sockets it
    /// makes (binds, listens, connects, UDP) are the pod's. `None`: the host's network.
    pub namespace: Option<std::sync::Arc<wasmlet_netns::NetNs>>,
    /// The pod's resolver, for the guest's name lookups and the host names of its outgoing
    /// `wasi:http` requests; `None`: the host's resolver.
    pub dns: Option<std::sync::Arc<crate::dns::PodResolver>>,
}

impl PartialEq for Network {
    fn eq(&self, other: &Network) -> bool {
        let inode = |n: &Network| n.namespace.as_ref().map(|ns| ns.inode());
        let dns = |n: &Network| n.dns.as_ref().map(|d| d.config().clone());
        self.pod_ip == other.pod_ip && inode(self) == inode(other) && dns(self) == dns(other)
    }
}

impl Network {
    /// The host's network, binds held to `pod_ip`.
    pub fn on_host(pod_ip: IpAddr) -> Network {
        Network {
            pod_ip,
            namespace: None,
            dns: None,
        }
    }

    /// `run`, polled inside the pod's namespace when it has one; an entry that fails ends it
    /// with `failed(error message)`.
    pub(crate) fn polled<F>(
        namespace: Option<std::sync::Arc<wasmlet_netns::NetNs>>,
        run: F,
        failed: impl FnOnce(String) -> F::Output + Send + 'static,
    ) -> Pin<Box<dyn Future<Output = F::Output> + Send>>
    where
        F: Future + Send + 'static,
        F::Output: Send,
    {
        match namespace {
            None => Box::pin(run),
            Some(ns) => Box::pin(async move {
                match wasmlet_netns::InNamespace::new(ns, run).await {
                    Ok(output) => output,
                    Err(err) => failed(err.to_string()),
                }
            }),
        }
    }
}

/// Why a socket address was refused: written to the container's log.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    /// A bind or listen on the unspecified address (except an ephemeral client bind).
    #[error(
        "wasmlet: refused to {op} {addr}: the unspecified address would listen on every pod's \
         address on this node; {op} the pod IP {pod_ip} instead (give it to the program with \
         the downward API: env valueFrom.fieldRef.fieldPath: status.podIP)"
    )]
    Unspecified {
        /// `bind` or `listen on`.
        op: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// The pod's IP.
        pod_ip: IpAddr,
    },
    /// A bind or listen on a specific address other than the pod IP.
    #[error(
        "wasmlet: refused to {op} {addr}: it is not this pod's IP; a pod listens only on its \
         own IP, {pod_ip} (give it to the program with the downward API: env \
         valueFrom.fieldRef.fieldPath: status.podIP)"
    )]
    NotPodIp {
        /// `bind` or `listen on`.
        op: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// The pod's IP.
        pod_ip: IpAddr,
    },
}

impl Network {
    /// Whether the guest may use `addr` for `usage` (see the [module docs](self)).
    pub(crate) fn check(&self, addr: SocketAddr, usage: SocketAddrUse) -> Result<(), Refusal> {
        if self.namespace.is_some() {
            return Ok(());
        }
        let op = match usage {
            SocketAddrUse::TcpBind | SocketAddrUse::UdpBind => "bind",
            SocketAddrUse::TcpListen => "listen on",
            _ => return Ok(()),
        };
        let ip = addr.ip().to_canonical();
        let pod_ip = self.pod_ip;
        if ip == pod_ip.to_canonical() {
            return Ok(());
        }
        if !ip.is_unspecified() {
            return Err(Refusal::NotPodIp { op, addr, pod_ip });
        }
        let ephemeral_bind = !matches!(usage, SocketAddrUse::TcpListen) && addr.port() == 0;
        match ephemeral_bind {
            true => Ok(()),
            false => Err(Refusal::Unspecified { op, addr, pod_ip }),
        }
    }

    /// Grants a component's context TCP, UDP and name lookup under [`Network::check`];
    /// refusals go to `log`'s stderr and the node's log.
    pub(crate) fn grant(self, builder: &mut WasiCtxBuilder, log: SharedSink) {
        builder
            .allow_tcp(true)
            .allow_udp(true)
            .allow_ip_name_lookup(true)
            .socket_addr_check(move |addr, usage| {
                let allowed = self.check(addr, usage);
                if let Err(refusal) = &allowed {
                    report(&log, refusal);
                }
                Box::pin(std::future::ready(allowed.is_ok())) as Pin<Box<_>>
            });
    }
}

fn report(log: &SharedSink, refusal: &Refusal) {
    tracing::warn!("a container's socket address was refused: {refusal}");
    let line = format!("{refusal}\n");
    if let Err(err) = log.lock().write(Stream::Stderr, line.as_bytes()) {
        tracing::warn!("cannot write to the container log: {err}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_binds_and_listens_to_the_pod_ip() {
        let network = Network::on_host("127.64.0.5".parse().unwrap());
        use SocketAddrUse::*;
        let cases: &[(&str, SocketAddrUse, bool)] = &[
            ("127.64.0.5:7000", TcpBind, true),
            ("127.64.0.5:7000", TcpListen, true),
            ("127.64.0.5:53", UdpBind, true),
            ("[::ffff:127.64.0.5]:7000", TcpBind, true),
            // The implicit bind of a connect or a first send, and an explicit one like it.
            ("0.0.0.0:0", TcpBind, true),
            ("[::]:0", UdpBind, true),
            // Listening on every address, or on another pod's.
            ("0.0.0.0:7000", TcpBind, false),
            ("[::]:7000", UdpBind, false),
            ("0.0.0.0:41000", TcpListen, false),
            ("127.64.0.6:7000", TcpBind, false),
            ("127.0.0.1:0", UdpBind, false),
            ("127.0.0.1:7000", TcpListen, false),
            // Peers are anyone.
            ("10.1.2.3:443", TcpConnect, true),
            ("127.0.0.1:5000", TcpAccept, true),
            ("8.8.8.8:53", UdpSend, true),
            ("8.8.8.8:53", UdpReceive, true),
        ];
        for (addr, usage, allowed) in cases {
            let result = network.check(addr.parse().unwrap(), *usage);
            assert_eq!(result.is_ok(), *allowed, "{addr} {usage:?}: {result:?}");
        }
    }

    #[test]
    fn a_refusal_names_the_fix() {
        let network = Network::on_host("127.64.0.5".parse().unwrap());
        let refusal = network
            .check("0.0.0.0:7000".parse().unwrap(), SocketAddrUse::TcpBind)
            .unwrap_err();
        let text = refusal.to_string();
        assert!(
            text.starts_with("wasmlet: refused to bind 0.0.0.0:7000: "),
            "{text}"
        );
        assert!(
            text.contains("bind the pod IP 127.64.0.5 instead"),
            "{text}"
        );
        assert!(text.contains("status.podIP"), "{text}");
        let other = network
            .check("127.64.0.6:7000".parse().unwrap(), SocketAddrUse::TcpBind)
            .unwrap_err();
        assert!(
            other.to_string().contains("it is not this pod's IP"),
            "{other}"
        );
    }
}
