//! Where a `wasi:http` container listens.
//!
//! On the pod IP at the container's first TCP `containerPort` (8080 when it declares none),
//! and, for each TCP port with a `hostPort`, on `hostIP` (default `0.0.0.0`) at that
//! `hostPort`. A wildcard address covers the specific ones on its port, so a `hostPort`
//! equal to the `containerPort` binds once. A port that cannot be bound fails the start
//! (`RunContainerError`) with the Go-style message and the fix.
//!
//! A pod with a network namespace of its own (a node on the cluster's CNI network) listens
//! inside it, on the pod IP only: sockets are made by a thread that entered the namespace
//! ([`wasmlet_netns`]), and its `hostPort`s are the CNI `portmap` plugin's, on the node.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use tokio::net::TcpListener;
use wasmlet_netns::NetNs;
use wasmlet_pod::k8s_openapi::api::core::v1::{Container, ContainerPort};

use crate::net::go_error;

/// The port a `wasi:http` container listens on when it declares no TCP `containerPort`.
pub const DEFAULT_HTTP_PORT: u16 = 8080;

/// Why a `wasi:http` container cannot listen.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An address (the pod IP or a port's `hostIP`) is not an IP address.
    #[error("cannot listen on {address:?}: it is not an IP address (check the {what})")]
    BadAddress {
        /// The text given.
        address: String,
        /// Where it comes from: `pod IP` or `hostIP of port N`.
        what: String,
    },
    /// A port is out of range.
    #[error("cannot listen on port {0}: ports go from 1 to 65535")]
    BadPort(i32),
    /// Binding failed.
    #[error("listen tcp {addr}: {} ({})", go_error("bind", .source), bind_hint(.source))]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
}

fn bind_hint(err: &io::Error) -> &'static str {
    match err.kind() {
        io::ErrorKind::AddrInUse => {
            "another container or process on this node listens there: change the container's \
             ports[].containerPort (or hostPort), or stop the other one"
        }
        io::ErrorKind::AddrNotAvailable => {
            "the address is not one of this machine's: check the node's pod IP or the port's hostIP"
        }
        io::ErrorKind::PermissionDenied => {
            "ports below 1024 need privileges: use a higher port or grant CAP_NET_BIND_SERVICE"
        }
        _ => "the node cannot listen there",
    }
}

/// Binds every address the container listens on (see the module doc), inside `netns` when
/// the pod has one.
pub(crate) async fn listen(
    container: &Container,
    pod_ip: &str,
    netns: Option<&NetNs>,
) -> Result<Vec<TcpListener>, Error> {
    let mut addrs = addresses(container, pod_ip)?;
    if netns.is_some() {
        addrs.truncate(1);
    }
    let mut listeners = Vec::new();
    for addr in addrs {
        let bound = match netns {
            Some(ns) => bind_inside(ns, addr),
            None => TcpListener::bind(addr).await,
        };
        listeners.push(bound.map_err(|source| Error::Bind { addr, source })?);
    }
    Ok(listeners)
}

/// A listener made inside the pod's namespace, handed to tokio.
fn bind_inside(ns: &NetNs, addr: SocketAddr) -> io::Result<TcpListener> {
    let listener = ns.bind_tcp(addr).map_err(|e| match e {
        wasmlet_netns::Error::Socket { source, .. } => source,
        other => io::Error::other(other.to_string()),
    })?;
    listener.set_nonblocking(true)?;
    TcpListener::from_std(listener)
}

/// The addresses a container listens on, without duplicates.
fn addresses(container: &Container, pod_ip: &str) -> Result<Vec<SocketAddr>, Error> {
    let pod_ip: IpAddr = parse_ip(pod_ip, "pod IP")?;
    let tcp: Vec<&ContainerPort> = container
        .ports
        .iter()
        .flatten()
        .filter(|p| p.protocol.as_deref().is_none_or(|p| p == "TCP"))
        .collect();
    let port = match tcp.first() {
        Some(first) => port_number(first.container_port)?,
        None => DEFAULT_HTTP_PORT,
    };
    let mut addrs = vec![SocketAddr::new(pod_ip, port)];
    for p in tcp.iter().filter(|p| p.host_port.is_some_and(|h| h != 0)) {
        let host_port = port_number(p.host_port.unwrap_or_default())?;
        let ip = match p.host_ip.as_deref().filter(|ip| !ip.is_empty()) {
            Some(ip) => parse_ip(ip, &format!("hostIP of port {host_port}"))?,
            None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        };
        addrs.push(SocketAddr::new(ip, host_port));
    }
    Ok(without_covered(addrs))
}

/// Drops duplicates and the addresses a wildcard address on the same port covers.
fn without_covered(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let wildcard = |port: u16| {
        addrs
            .iter()
            .any(|a| a.port() == port && a.ip().is_unspecified())
    };
    let mut kept: Vec<SocketAddr> = Vec::new();
    for addr in &addrs {
        let covered = !addr.ip().is_unspecified() && wildcard(addr.port());
        if !covered && !kept.contains(addr) {
            kept.push(*addr);
        }
    }
    kept
}

fn parse_ip(text: &str, what: &str) -> Result<IpAddr, Error> {
    text.parse().map_err(|_| Error::BadAddress {
        address: text.to_owned(),
        what: what.to_owned(),
    })
}

fn port_number(port: i32) -> Result<u16, Error> {
    u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or(Error::BadPort(port))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `containerPort`, `hostPort`, `hostIP`, `protocol`.
    type Port<'a> = (i32, Option<i32>, Option<&'a str>, Option<&'a str>);

    fn container(ports: &[Port<'_>]) -> Container {
        let ports = ports
            .iter()
            .map(|(port, host_port, host_ip, protocol)| ContainerPort {
                container_port: *port,
                host_port: *host_port,
                host_ip: host_ip.map(str::to_owned),
                protocol: protocol.map(str::to_owned),
                ..ContainerPort::default()
            })
            .collect();
        Container {
            name: "c".into(),
            ports: Some(ports),
            ..Container::default()
        }
    }

    fn addrs(c: &Container) -> Vec<String> {
        let found = addresses(c, "10.0.0.7").unwrap();
        found.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn listens_on_the_pod_ip_and_host_ports() {
        assert_eq!(addrs(&container(&[])), ["10.0.0.7:8080"]);
        let udp_first = container(&[(53, None, None, Some("UDP")), (9000, None, None, None)]);
        assert_eq!(addrs(&udp_first), ["10.0.0.7:9000"]);
        let host = container(&[(80, Some(8081), None, None)]);
        assert_eq!(addrs(&host), ["10.0.0.7:80", "0.0.0.0:8081"]);
        let host_ip = container(&[(80, Some(8081), Some("127.0.0.1"), Some("TCP"))]);
        assert_eq!(addrs(&host_ip), ["10.0.0.7:80", "127.0.0.1:8081"]);
        let same_port = container(&[(80, Some(80), None, None)]);
        assert_eq!(addrs(&same_port), ["0.0.0.0:80"]);
    }

    #[test]
    fn refuses_bad_addresses_and_ports() {
        let err = addresses(&container(&[]), "pod").unwrap_err();
        assert!(err.to_string().contains("check the pod IP"), "{err}");
        let err = addresses(&container(&[(70000, None, None, None)]), "10.0.0.7").unwrap_err();
        assert!(err.to_string().contains("70000"), "{err}");
    }

    #[test]
    fn says_how_to_fix_a_taken_port() {
        let err = Error::Bind {
            addr: "127.0.0.1:8080".parse().unwrap(),
            source: io::Error::from_raw_os_error(98),
        };
        let text = err.to_string();
        assert!(
            text.starts_with("listen tcp 127.0.0.1:8080: bind: address already in use ("),
            "{text}"
        );
        assert!(text.contains("ports[].containerPort"), "{text}");
    }
}
