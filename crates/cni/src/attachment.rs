//! What one ADD or DEL is about: a sandbox, its namespace, the interface, the pod it is for.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A `hostPort`: the `portMappings` runtime configuration the `portmap` plugin reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    /// The node's port.
    pub host_port: u16,
    /// The pod's port.
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp`, lower case as the CRI runtimes pass it.
    pub protocol: String,
    /// The node address to listen on; empty for all.
    #[serde(rename = "hostIP", default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

/// One pod's attachment to a network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// `CNI_CONTAINERID`: the sandbox's ID, unique per pod and stable across restarts of it.
    pub container_id: String,
    /// `CNI_NETNS`: the path of the pod's network namespace.
    pub netns: PathBuf,
    /// `CNI_IFNAME`: the interface made in it. Default `eth0`.
    pub ifname: String,
    /// `CNI_ARGS` pairs, in order.
    pub args: Vec<(String, String)>,
    /// `hostPort`s, given to plugins whose `capabilities` include `portMappings`.
    pub port_mappings: Vec<PortMapping>,
    /// The node's pod CIDRs (`spec.podCIDRs`), given as `ipRanges` (one range set each) to
    /// plugins whose `capabilities` include `ipRanges`, so `host-local` allocates from them.
    #[serde(default)]
    pub ip_ranges: Vec<String>,
}

impl Attachment {
    /// An attachment of sandbox `container_id` in the namespace at `netns`, interface `eth0`,
    /// no arguments and no host ports.
    pub fn new(container_id: &str, netns: &Path) -> Attachment {
        Attachment {
            container_id: container_id.to_string(),
            netns: netns.to_owned(),
            ifname: "eth0".to_string(),
            args: Vec::new(),
            port_mappings: Vec::new(),
            ip_ranges: Vec::new(),
        }
    }

    /// Adds the `CNI_ARGS` a CRI runtime passes for a Kubernetes pod: `IgnoreUnknown=1`,
    /// `K8S_POD_NAMESPACE`, `K8S_POD_NAME` and `K8S_POD_INFRA_CONTAINER_ID` (the sandbox).
    pub fn pod(mut self, namespace: &str, name: &str) -> Attachment {
        let sandbox = self.container_id.clone();
        self.args.extend([
            ("IgnoreUnknown".to_string(), "1".to_string()),
            ("K8S_POD_NAMESPACE".to_string(), namespace.to_string()),
            ("K8S_POD_NAME".to_string(), name.to_string()),
            ("K8S_POD_INFRA_CONTAINER_ID".to_string(), sandbox),
        ]);
        self
    }

    /// Sets the host ports.
    pub fn ports(mut self, port_mappings: Vec<PortMapping>) -> Attachment {
        self.port_mappings = port_mappings;
        self
    }

    /// Sets the pod CIDRs IPAM allocates from (the node's `spec.podCIDRs`).
    pub fn ip_ranges(mut self, cidrs: Vec<String>) -> Attachment {
        self.ip_ranges = cidrs;
        self
    }

    /// `CNI_ARGS` as plugins read it: `K=V` pairs joined by `;`.
    pub fn cni_args(&self) -> String {
        self.args
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_pods_carry_the_cri_runtimes_args() {
        let a = Attachment::new("abc", Path::new("/run/netns/x")).pod("default", "web");
        assert_eq!(
            a.cni_args(),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=abc"
        );
        assert_eq!(a.ifname, "eth0");
    }

    #[test]
    fn port_mappings_are_written_as_portmap_reads_them() {
        let p = PortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: "tcp".into(),
            host_ip: String::new(),
        };
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            serde_json::json!({"hostPort": 8080, "containerPort": 80, "protocol": "tcp"})
        );
    }
}
