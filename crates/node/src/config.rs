//! What the operator tells the agent: the node's name, address, port, labels and taints.
//!
//! How pods get their addresses, [`NetworkMode`] and [`CniPaths`], is part of it: both are
//! defined with the pods' networks and re-exported here.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::Taint;
use wasmlet_oci::client::ClientConfig;

pub use crate::pods::ips::Cidr;
pub use crate::pods::network::{CniPaths, NetworkMode};

/// Errors in the agent's configuration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `key=value` label that is not one.
    #[error("label {0:?} is not key=value")]
    Label(String),
    /// An eviction threshold that is not `signal<quantity` or `signal<percent%`.
    #[error(
        "eviction threshold {0:?} is not memory.available<Q, nodefs.available<P%, nodefs.inodesFree<P% or pid.available<P%"
    )]
    Eviction(String),
    /// A taint that is not `key[=value]:Effect`.
    #[error("taint {0:?} is not key[=value]:NoSchedule|PreferNoSchedule|NoExecute")]
    Taint(String),
}

/// The result type of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The value of `kubernetes.io/arch` and `kubernetes.io/os` a wasm node carries by default.
pub const WASM_PLATFORM: &str = "wasm32-wasi";

/// The agent's configuration.
///
/// [`NodeConfig::new`] sets the kubelet's defaults: port 10250, 1000 pods, loopback pod
/// addresses, labels
/// `kubernetes.io/arch` and `kubernetes.io/os` = `wasm32-wasi`, `type=wasmlet`, and the taints
/// `kubernetes.io/arch=wasm32-wasi:NoSchedule` and `:NoExecute`.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The Node's name (and `kubernetes.io/hostname`).
    pub node_name: String,
    /// The node's InternalIP, where the API server reaches the kubelet API.
    pub node_ip: IpAddr,
    /// The kubelet API's HTTPS port.
    pub port: u16,
    /// Where certificates, logs and volumes live.
    pub data_dir: PathBuf,
    /// The `pods` capacity.
    pub max_pods: u32,
    /// Every label the Node carries, the defaults included.
    pub labels: BTreeMap<String, String>,
    /// The taints the Node registers with.
    pub taints: Vec<Taint>,
    /// The hard eviction thresholds: below them the node reports pressure.
    pub eviction_hard: EvictionHard,
    /// How pods get their addresses: a loopback range, or the cluster's network by CNI.
    pub network: NetworkMode,
    /// `--pod-cidr`: in loopback mode the range pod IPs are taken from (default
    /// [`DEFAULT_POD_CIDR`]); in CNI mode, when set, it overrides the node's `spec.podCIDR`
    /// as the range given to IPAM plugins.
    pub pod_cidr: Option<Cidr>,
    /// Registry settings for image pulls (CA files, insecure registries, node credentials).
    pub registry: ClientConfig,
    /// On shutdown, report the stopped pods Failed (`Terminated`) so their controllers
    /// replace them elsewhere; else their status is left for the next start.
    pub drain_on_shutdown: bool,
    /// Renew the client certificate (one from TLS bootstrap, in a file) before it expires,
    /// as the kubelet's `--rotate-certificates`; else it is used until it expires.
    pub rotate_certificates: bool,
    /// Renew the kubelet API's serving certificate before it expires, as the kubelet's
    /// `--rotate-server-certificates`; else a new one is asked for only at a start that finds
    /// the stored one expired.
    pub rotate_server_certificates: bool,
    /// Pod DNS, as the kubelet's `--cluster-dns`, `--cluster-domain` and `--resolv-conf`.
    pub dns: DnsSettings,
    /// The engine pods run on unless one asks for another (`wasmlet.dev/engine`).
    pub engine: wasmlet_runtime::EngineKind,
}

/// How pods resolve names: the kubelet's DNS flags.
///
/// The defaults are the kubelet's: no cluster DNS (pods under `ClusterFirst` then fall back
/// to the node's resolver, with a `MissingClusterDNS` warning), no cluster domain,
/// `/etc/resolv.conf` as the node's resolver configuration; and `/etc/hosts` as the hosts
/// file of `hostNetwork` pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSettings {
    /// `--cluster-dns`: the cluster DNS Service's IPs.
    pub cluster_dns: Vec<IpAddr>,
    /// `--cluster-domain`, e.g. `cluster.local`.
    pub cluster_domain: String,
    /// `--resolv-conf`: the node's resolver configuration, the base of every pod's; `None`
    /// (the flag given empty) gives `Default` pods `127.0.0.1` and no search.
    pub resolv_conf: Option<PathBuf>,
    /// The node's hosts file.
    pub hosts_file: PathBuf,
}

impl Default for DnsSettings {
    fn default() -> DnsSettings {
        DnsSettings {
            cluster_dns: Vec::new(),
            cluster_domain: String::new(),
            resolv_conf: Some("/etc/resolv.conf".into()),
            hosts_file: "/etc/hosts".into(),
        }
    }
}

/// The longest resolver configuration or hosts file read.
const MAX_DNS_FILE_BYTES: u64 = wasmlet_pod::dns::MAX_RESOLV_CONF_BYTES as u64;

impl DnsSettings {
    /// The settings with the node's files read now (the kubelet reads them for every pod, so
    /// a change reaches the next pod). A file that cannot be read is left out, and the
    /// reason returned for the pod's events.
    pub fn read(&self) -> (wasmlet_pod::NodeDns, Vec<String>) {
        let mut problems = Vec::new();
        let host = self.resolv_conf.as_ref().map(|path| {
            let text = read_bounded(path).and_then(|text| {
                let name = path.display().to_string();
                wasmlet_pod::ResolvConf::parse(&text, &name).map_err(|e| e.to_string())
            });
            text.unwrap_or_else(|err| {
                problems.push(err);
                wasmlet_pod::ResolvConf::default()
            })
        });
        let hosts = match read_bounded(&self.hosts_file) {
            Ok(text) => wasmlet_pod::dns::parse_hosts(&text),
            Err(err) => {
                problems.push(err);
                Vec::new()
            }
        };
        let dns = wasmlet_pod::NodeDns {
            cluster_dns: self.cluster_dns.clone(),
            cluster_domain: self.cluster_domain.clone(),
            host,
            hosts,
        };
        (dns, problems)
    }
}

fn read_bounded(path: &std::path::Path) -> std::result::Result<String, String> {
    use std::io::Read;
    let describe = |e: std::io::Error| format!("reading {}: {e}", path.display());
    let file = std::fs::File::open(path).map_err(describe)?;
    let mut text = String::new();
    file.take(MAX_DNS_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(describe)?;
    match text.len() as u64 > MAX_DNS_FILE_BYTES {
        true => Err(format!(
            "{} is larger than {MAX_DNS_FILE_BYTES} bytes",
            path.display()
        )),
        false => Ok(text),
    }
}

/// The default pod CIDR: a loopback range, reachable on this machine without any set-up.
pub const DEFAULT_POD_CIDR: &str = "127.64.0.0/16";

/// Hard eviction thresholds, as the kubelet's `--eviction-hard`.
///
/// The defaults are the kubelet's: `memory.available<100Mi`, `nodefs.available<10%`,
/// `nodefs.inodesFree<5%`; and `pid.available<5%` (the kubelet has no default for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvictionHard {
    /// Bytes of available memory below which the node has MemoryPressure.
    pub memory_available: u64,
    /// Percent of the data file system available below which the node has DiskPressure.
    pub nodefs_available_percent: u64,
    /// Percent of free inodes below which the node has DiskPressure.
    pub nodefs_inodes_free_percent: u64,
    /// Percent of process ids left below which the node has PIDPressure.
    pub pid_available_percent: u64,
}

impl Default for EvictionHard {
    fn default() -> Self {
        Self {
            memory_available: 100 * 1024 * 1024,
            nodefs_available_percent: 10,
            nodefs_inodes_free_percent: 5,
            pid_available_percent: 5,
        }
    }
}

impl EvictionHard {
    /// Overrides the thresholds named in `signal<value,...`; others keep their defaults.
    pub fn parse(spec: &str) -> Result<Self> {
        let mut eviction = Self::default();
        for item in spec.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            eviction.set(item)?;
        }
        Ok(eviction)
    }

    fn set(&mut self, item: &str) -> Result<()> {
        let bad = || Error::Eviction(item.into());
        let (signal, value) = item.split_once('<').ok_or_else(bad)?;
        let percent = || {
            value
                .strip_suffix('%')
                .and_then(|p| p.parse::<u64>().ok())
                .filter(|p| *p <= 100)
        };
        match signal {
            "memory.available" => {
                let quantity = wasmlet_pod::parse_quantity(value).map_err(|_| bad())?;
                let bytes = quantity.value_rounded_up().ok_or_else(bad)?;
                self.memory_available = u64::try_from(bytes).map_err(|_| bad())?;
            }
            "nodefs.available" => self.nodefs_available_percent = percent().ok_or_else(bad)?,
            "nodefs.inodesFree" => self.nodefs_inodes_free_percent = percent().ok_or_else(bad)?,
            "pid.available" => self.pid_available_percent = percent().ok_or_else(bad)?,
            _ => return Err(bad()),
        }
        Ok(())
    }
}

impl NodeConfig {
    /// A configuration with the defaults listed on the type.
    pub fn new(node_name: &str, node_ip: IpAddr, data_dir: PathBuf) -> Self {
        let mut labels = BTreeMap::new();
        labels.insert("kubernetes.io/arch".into(), WASM_PLATFORM.into());
        labels.insert("kubernetes.io/os".into(), WASM_PLATFORM.into());
        labels.insert("kubernetes.io/hostname".into(), node_name.into());
        labels.insert("type".into(), "wasmlet".into());
        let taints = ["NoSchedule", "NoExecute"]
            .iter()
            .map(|effect| Taint {
                key: "kubernetes.io/arch".into(),
                value: Some(WASM_PLATFORM.into()),
                effect: (*effect).into(),
                time_added: None,
            })
            .collect();
        Self {
            node_name: node_name.into(),
            node_ip,
            port: 10250,
            data_dir,
            max_pods: 1000,
            labels,
            taints,
            eviction_hard: EvictionHard::default(),
            network: NetworkMode::Loopback,
            pod_cidr: None,
            registry: ClientConfig::default(),
            drain_on_shutdown: false,
            rotate_certificates: true,
            rotate_server_certificates: true,
            dns: DnsSettings::default(),
            engine: wasmlet_runtime::EngineKind::Wasmtime,
        }
    }

    /// Adds or overrides labels given as `k=v,k2=v2`.
    pub fn with_labels(mut self, spec: &str) -> Result<Self> {
        for (key, value) in parse_labels(spec)? {
            self.labels.insert(key, value);
        }
        Ok(self)
    }

    /// Replaces the taints with `k=v:Effect,k2:Effect` (an empty string registers none).
    pub fn with_taints(mut self, spec: &str) -> Result<Self> {
        self.taints = parse_taints(spec)?;
        Ok(self)
    }

    /// The architecture reported in nodeInfo: the `kubernetes.io/arch` label's value.
    pub fn architecture(&self) -> &str {
        self.labels
            .get("kubernetes.io/arch")
            .map_or(WASM_PLATFORM, String::as_str)
    }

    /// The operating system reported in nodeInfo: the `kubernetes.io/os` label's value.
    pub fn operating_system(&self) -> &str {
        self.labels
            .get("kubernetes.io/os")
            .map_or(WASM_PLATFORM, String::as_str)
    }
}

/// Parses `k=v,k2=v2` (as the kubelet's `--node-labels`).
pub fn parse_labels(spec: &str) -> Result<Vec<(String, String)>> {
    spec.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| match item.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok((key.into(), value.into())),
            _ => Err(Error::Label(item.into())),
        })
        .collect()
}

/// Parses `k=v:Effect,k2:Effect` (as the kubelet's `--register-with-taints`).
pub fn parse_taints(spec: &str) -> Result<Vec<Taint>> {
    spec.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(parse_taint)
        .collect()
}

fn parse_taint(item: &str) -> Result<Taint> {
    let bad = || Error::Taint(item.into());
    let (key_value, effect) = item.rsplit_once(':').ok_or_else(bad)?;
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return Err(bad());
    }
    let (key, value) = match key_value.split_once('=') {
        Some((key, value)) => (key, Some(value.to_string())),
        None => (key_value, None),
    };
    if key.is_empty() {
        return Err(bad());
    }
    Ok(Taint {
        key: key.into(),
        value,
        effect: effect.into(),
        time_added: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> NodeConfig {
        NodeConfig::new("n1", "127.0.0.2".parse().unwrap(), "/tmp".into())
    }

    #[test]
    fn defaults_match_the_seed_node() {
        let config = config();
        assert_eq!(config.labels["kubernetes.io/arch"], "wasm32-wasi");
        assert_eq!(config.labels["kubernetes.io/os"], "wasm32-wasi");
        assert_eq!(config.labels["kubernetes.io/hostname"], "n1");
        assert_eq!(config.labels["type"], "wasmlet");
        let effects: Vec<_> = config.taints.iter().map(|t| t.effect.as_str()).collect();
        assert_eq!(effects, ["NoSchedule", "NoExecute"]);
        assert_eq!(config.max_pods, 1000);
        assert_eq!(config.port, 10250);
    }

    #[test]
    fn labels_override_and_add() {
        let config = config()
            .with_labels("kubernetes.io/os=wasip1, zone=a")
            .unwrap();
        assert_eq!(config.operating_system(), "wasip1");
        assert_eq!(config.labels["zone"], "a");
        assert!(config.clone().with_labels("novalue").is_err());
        assert!(config.with_labels("=x").is_err());
    }

    #[test]
    fn eviction_thresholds_parse_like_the_kubelet_flag() {
        let eviction = EvictionHard::parse("memory.available<1Gi, nodefs.available<1%").unwrap();
        assert_eq!(eviction.memory_available, 1 << 30);
        assert_eq!(eviction.nodefs_available_percent, 1);
        assert_eq!(eviction.nodefs_inodes_free_percent, 5);
        for bad in [
            "nodefs.available<x%",
            "nodefs.available<101%",
            "cpu<1",
            "memory.available",
        ] {
            assert!(EvictionHard::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn taints_parse_like_the_kubelet_flag() {
        let taints = parse_taints("a=b:NoSchedule,c:NoExecute").unwrap();
        assert_eq!(taints[0].key, "a");
        assert_eq!(taints[0].value.as_deref(), Some("b"));
        assert_eq!(taints[1].value, None);
        assert_eq!(taints[1].effect, "NoExecute");
        assert!(parse_taints("a=b").is_err());
        assert!(parse_taints("a=b:Sometimes").is_err());
        assert!(config().with_taints("").unwrap().taints.is_empty());
    }
}
