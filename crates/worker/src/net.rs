//! The pod's address and socket errors worded as the kubelet (a Go program) words them, so
//! that messages read the same as on any other node: `dial tcp 10.0.0.7:8080: connect:
//! connection refused`, `listen tcp 10.0.0.7:8080: bind: address already in use`.

use std::io;
use std::sync::Arc;

use std::net::IpAddr;

use wasmlet_pod::k8s_openapi::api::core::v1::Pod;
use wasmlet_pod::{DnsWarning, NodeDns, NodeFacts};
use wasmlet_runtime::{DnsConfig, Network, PodResolver};

/// The address the pod's containers listen on and probes reach: the first pod IP, else
/// the first host IP, else `127.0.0.1`.
pub(crate) fn pod_ip(node: &NodeFacts) -> &str {
    let first = |ips: &[String]| ips.first().filter(|ip| !ip.is_empty()).cloned();
    match (first(&node.pod_ips), first(&node.host_ips)) {
        (Some(_), _) => &node.pod_ips[0],
        (None, Some(_)) => &node.host_ips[0],
        (None, None) => "127.0.0.1",
    }
}

/// The network of the pod's components: `wasi:sockets` that bind and listen on [`pod_ip`]
/// only (see [`wasmlet_runtime::sockets`]), made inside the pod's network namespace when it
/// has one, names resolved by `dns` (the host's resolver without one). `None`, no sockets, if
/// that is not an IP address.
pub(crate) fn network(
    node: &NodeFacts,
    namespace: Option<Arc<wasmlet_netns::NetNs>>,
    dns: Option<Arc<PodResolver>>,
) -> Option<Network> {
    let ip = pod_ip(node);
    match ip.parse() {
        Ok(pod_ip) => Some(Network {
            pod_ip,
            namespace,
            dns,
        }),
        Err(_) => {
            tracing::warn!("pod IP {ip:?} is not an IP address: components get no sockets");
            None
        }
    }
}

/// The pod's resolver: the configuration the kubelet would write into its containers'
/// `resolv.conf` and `hosts` ([`wasmlet_pod::pod_dns`], [`wasmlet_pod::pod_hosts`]), its
/// queries leaving from `namespace`; and the warnings forming it raised.
pub(crate) fn pod_resolver(
    pod: &Pod,
    node: &NodeFacts,
    settings: &NodeDns,
    namespace: Option<Arc<wasmlet_netns::NetNs>>,
) -> (PodResolver, Vec<DnsWarning>) {
    let dns = wasmlet_pod::pod_dns(pod, settings);
    let pod_ips: Vec<IpAddr> = node
        .pod_ips
        .iter()
        .filter_map(|ip| ip.parse().ok())
        .collect();
    let hosts = wasmlet_pod::pod_hosts(pod, &pod_ips, &settings.cluster_domain, &settings.hosts);
    let mut config = DnsConfig {
        nameservers: dns.conf.nameserver_ips(),
        search: dns.conf.searches.clone(),
        hosts: hosts
            .iter()
            .flat_map(|entry| {
                entry
                    .names
                    .iter()
                    .map(|n| (n.to_ascii_lowercase(), entry.ip))
            })
            .collect(),
        ..DnsConfig::default()
    };
    config.apply_options(&dns.conf.options);
    (PodResolver::new(config, namespace), dns.warnings)
}

/// `host:port`, with an IPv6 host in brackets.
pub(crate) fn join_host_port(host: &str, port: u16) -> String {
    match host.contains(':') {
        true => format!("[{host}]:{port}"),
        false => format!("{host}:{port}"),
    }
}

/// A socket error as Go prints it after the system call `op` (`connect`, `bind`):
/// `connect: connection refused`; a timeout is `i/o timeout`.
pub(crate) fn go_error(op: &str, err: &io::Error) -> String {
    if err.kind() == io::ErrorKind::TimedOut {
        return "i/o timeout".into();
    }
    let text = err.to_string();
    let text = text
        .find(" (os error ")
        .map_or(text.as_str(), |end| &text[..end]);
    let mut chars = text.chars();
    let lowered = match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    };
    format!("{op}: {lowered}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_socket_errors_as_go() {
        let refused = io::Error::from_raw_os_error(111);
        assert_eq!(go_error("connect", &refused), "connect: connection refused");
        let in_use = io::Error::from_raw_os_error(98);
        assert_eq!(go_error("bind", &in_use), "bind: address already in use");
        let timeout = io::Error::from(io::ErrorKind::TimedOut);
        assert_eq!(go_error("connect", &timeout), "i/o timeout");
        assert_eq!(join_host_port("::1", 80), "[::1]:80");
        assert_eq!(join_host_port("10.0.0.1", 80), "10.0.0.1:80");
    }

    #[test]
    fn finds_the_pod_ip() {
        let mut node = NodeFacts::default();
        assert_eq!(pod_ip(&node), "127.0.0.1");
        node.host_ips = vec!["192.168.1.2".into()];
        assert_eq!(pod_ip(&node), "192.168.1.2");
        node.pod_ips = vec!["10.0.0.7".into()];
        assert_eq!(pod_ip(&node), "10.0.0.7");
        let network = network(&node, None, None).map(|n| n.pod_ip.to_string());
        assert_eq!(network.as_deref(), Some("10.0.0.7"));
        node.pod_ips = vec!["pod".into()];
        assert_eq!(super::network(&node, None, None), None);
    }
}
