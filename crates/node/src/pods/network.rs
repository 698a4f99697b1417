//! Pod networks: what a CRI runtime does for the kubelet so that each pod has an address of
//! the cluster's network, done for wasm pods.
//!
//! - **Loopback** (`--network loopback`): each pod gets an address of a loopback range on this
//!   machine ([`IpPool`]); nothing is set up. For one machine and for tests.
//! - **CNI** (`--network cni`): each pod gets a network namespace of its own, pinned at
//!   `<data-dir>/netns/<pod UID>`, attached by the first configuration of `--cni-conf-dir`
//!   with the plugins of `--cni-bin-dir`, its IPs taken from the plugins' answer. Host ports
//!   go to plugins asking for `portMappings`, the node's `spec.podCIDRs` (or `--pod-cidr`) to
//!   plugins asking for `ipRanges`. The pod's containers listen inside the namespace.
//!   Detaching runs DEL with what was cached at ADD and unpins the namespace; at start-up
//!   every namespace and attachment whose pod is gone is detached, so nothing leaks across a
//!   `kill -9`. An agent restarting while a pod runs finds its namespace pinned and keeps
//!   its IPs.
//!
//! `hostNetwork` pods use the node's address in both modes.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Node, Pod};
use wasmlet_cni::{Attachment, Cni, NetworkConfig, PortMapping};
use wasmlet_netns::NetNs;

use crate::pods::ips::{Cidr, IpPool};

/// Errors giving a pod its network.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No usable CNI configuration (none yet, or a broken one).
    #[error("network plugin not ready: {0}")]
    NotReady(String),
    /// A loopback address could not be had.
    #[error(transparent)]
    Loopback(#[from] crate::pods::ips::Error),
    /// The pod's network namespace could not be made or opened.
    #[error("pod network namespace: {0}")]
    Namespace(#[from] wasmlet_netns::Error),
    /// A plugin failed, or the answer could not be used.
    #[error("{0}")]
    Cni(#[from] wasmlet_cni::Error),
    /// The plugins answered without an address for the pod.
    #[error("network {network}: the plugins' result has no IP for the pod's interface")]
    NoAddress {
        /// The network's name.
        network: String,
    },
    /// The network hands out the node's pod CIDR, which the node does not have yet.
    #[error(
        "network {network} allocates from the node's spec.podCIDR, which is not set yet (the \
         controller-manager sets it with --allocate-node-cidrs; or give --pod-cidr)"
    )]
    NoPodCidr {
        /// The network's name.
        network: String,
    },
    /// The pod's UID cannot name a file.
    #[error("pod UID {0:?} is not a plain name")]
    Uid(String),
    /// A task running a plugin died.
    #[error("running the network plugins: {0}")]
    Task(String),
}

/// The result type of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How pods get their addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkMode {
    /// Addresses of a loopback range of this machine (`--pod-cidr`, default 127.64.0.0/16).
    Loopback,
    /// The cluster's network through CNI.
    Cni(CniPaths),
}

/// Where the CNI configuration, plugins and cached results are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniPaths {
    /// `--cni-conf-dir`: the first `.conflist`, `.conf` or `.json` in lexical order is used.
    pub conf_dir: PathBuf,
    /// `--cni-bin-dir`: where plugins are looked for, in order.
    pub bin_dirs: Vec<PathBuf>,
}

impl CniPaths {
    /// The defaults of the CRI runtimes: `/etc/cni/net.d` and `/opt/cni/bin`.
    pub fn standard() -> CniPaths {
        CniPaths {
            conf_dir: "/etc/cni/net.d".into(),
            bin_dirs: vec!["/opt/cni/bin".into()],
        }
    }

    /// Whether the configuration directory holds a configuration file at all.
    pub fn has_config(&self) -> bool {
        std::fs::read_dir(&self.conf_dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                [".conflist", ".conf", ".json"]
                    .iter()
                    .any(|ext| name.ends_with(ext))
            })
    }
}

/// The pod networks' state, as the node's status reports it (see [`Network::status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkStatus {
    /// Why pods cannot get a network now, for the Ready condition; `None` when they can.
    pub not_ready: Option<String>,
    /// The pod network as the `wasmlet.dev/pod-network` annotation says it.
    pub description: String,
}

/// The kubelet's words for a network that is not ready, with the reason.
fn not_ready_message(err: &Error) -> String {
    format!(
        "container runtime network not ready: NetworkReady=false \
         reason:NetworkPluginNotReady message:Network plugin returns error: {err}"
    )
}

/// A pod's network, as its containers use it.
#[derive(Debug, Clone)]
pub struct PodNetwork {
    /// The pod's IPs, IPv4 first (`status.podIPs`).
    pub ips: Vec<IpAddr>,
    /// The pod's own network namespace (CNI mode; none for `hostNetwork` and loopback pods).
    pub netns: Option<Arc<NetNs>>,
}

/// The pod networks of this node.
pub struct Network {
    node_ip: IpAddr,
    mode: Mode,
}

enum Mode {
    Loopback(IpPool),
    Cni(Box<CniNetwork>),
}

struct CniNetwork {
    paths: CniPaths,
    cni: Cni,
    netns_dir: PathBuf,
    /// `--pod-cidr`, which overrides `spec.podCIDRs`.
    pod_cidr_override: Option<String>,
    /// The node's `spec.podCIDRs`, once the controller-manager has allocated them.
    pod_cidrs: Mutex<Vec<String>>,
}

impl Network {
    /// The networks for the node at `node_ip` with data in `data_dir`. `pod_cidr`: the loopback
    /// range in loopback mode; in CNI mode, when given, the override of `spec.podCIDR`.
    pub fn new(
        mode: &NetworkMode,
        node_ip: IpAddr,
        data_dir: &Path,
        pod_cidr: Option<Cidr>,
    ) -> Network {
        let mode = match mode {
            NetworkMode::Loopback => {
                let cidr = pod_cidr.unwrap_or_else(|| {
                    crate::config::DEFAULT_POD_CIDR
                        .parse()
                        .expect("the default pod CIDR parses")
                });
                Mode::Loopback(IpPool::new(cidr))
            }
            NetworkMode::Cni(paths) => Mode::Cni(Box::new(CniNetwork {
                cni: Cni::new(paths.bin_dirs.clone(), data_dir.join("cni")),
                paths: paths.clone(),
                netns_dir: data_dir.join("netns"),
                pod_cidr_override: pod_cidr.map(|c| c.to_string()),
                pod_cidrs: Mutex::new(Vec::new()),
            })),
        };
        Network { node_ip, mode }
    }

    /// Why pods cannot get a network now, in the kubelet's words for the node's Ready
    /// condition; `None` when they can.
    pub fn not_ready(&self) -> Option<String> {
        let Mode::Cni(cni) = &self.mode else {
            return None;
        };
        cni.config().err().as_ref().map(not_ready_message)
    }

    /// The network's state for the node's status, from one read of the CNI configuration:
    /// [`Network::not_ready`]'s reason, and the pod network as an operator reads it on the
    /// Node (the `wasmlet.dev/pod-network` annotation, shown by `kubectl describe node`): the
    /// mode, and in CNI mode the network, its plugins, its file and the pod CIDRs, or why it
    /// is not ready.
    pub fn status(&self) -> NetworkStatus {
        let cni = match &self.mode {
            Mode::Loopback(pool) => {
                return NetworkStatus {
                    not_ready: None,
                    description: format!("loopback: pod IPs from {} of this machine", pool.cidr()),
                };
            }
            Mode::Cni(cni) => cni,
        };
        match cni.config() {
            Ok(config) => NetworkStatus {
                not_ready: None,
                description: cni.describe(&config),
            },
            Err(err) => NetworkStatus {
                not_ready: Some(not_ready_message(&err)),
                description: format!("cni: not ready: {err}"),
            },
        }
    }

    /// Learns the node's `spec.podCIDRs` (allocated by the controller-manager after the node
    /// registered).
    pub fn observe_node(&self, node: &Node) {
        let Mode::Cni(cni) = &self.mode else {
            return;
        };
        let spec = node.spec.as_ref();
        let mut cidrs = spec.and_then(|s| s.pod_cidrs.clone()).unwrap_or_default();
        if cidrs.is_empty() {
            cidrs.extend(spec.and_then(|s| s.pod_cidr.clone()));
        }
        if !cidrs.is_empty() {
            *cni.pod_cidrs.lock().unwrap_or_else(|e| e.into_inner()) = cidrs;
        }
    }

    /// Whether the node's `spec.podCIDRs` are needed and not known yet (read the Node and
    /// [`Network::observe_node`] it before [`Network::attach`]).
    pub fn wants_pod_cidr(&self) -> bool {
        match &self.mode {
            Mode::Cni(cni) => cni.ip_ranges().is_empty(),
            Mode::Loopback(_) => false,
        }
    }

    /// Gives `pod` its network: the node's for `hostNetwork`, else its own (the one it had,
    /// when the agent restarted while it ran).
    pub async fn attach(&self, pod: &Pod) -> Result<PodNetwork> {
        let spec = pod.spec.as_ref();
        if spec.and_then(|s| s.host_network).unwrap_or(false) {
            return Ok(PodNetwork {
                ips: vec![self.node_ip],
                netns: None,
            });
        }
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        match &self.mode {
            Mode::Loopback(pool) => {
                let previous = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.pod_ip.as_deref())
                    .and_then(|ip| ip.parse::<Ipv4Addr>().ok());
                let ip = pool.allocate(&uid, previous)?;
                Ok(PodNetwork {
                    ips: vec![IpAddr::V4(ip)],
                    netns: None,
                })
            }
            Mode::Cni(cni) => {
                let job = Job::of(cni, pod)?;
                let cni = CniNetwork::clone_for_job(cni);
                blocking(move || cni.attach(&job)).await
            }
        }
    }

    /// Takes the pod's network away: its loopback address, or DEL and the unpinned
    /// namespace. Repeating it is harmless.
    pub async fn detach(&self, pod: &Pod) -> Result<()> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        match &self.mode {
            Mode::Loopback(pool) => {
                pool.release(&uid);
                Ok(())
            }
            Mode::Cni(cni) => {
                if pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
                    return Ok(());
                }
                let job = Job::of(cni, pod)?;
                let cni = CniNetwork::clone_for_job(cni);
                blocking(move || cni.detach(&job.attachment)).await
            }
        }
    }

    /// Detaches every namespace and attachment left by pods not in `live` (UIDs): what a
    /// crash or `kill -9` left behind. Returns how many pods' networks it removed.
    pub async fn collect_garbage(&self, live: HashSet<String>) -> usize {
        let Mode::Cni(cni) = &self.mode else {
            return 0;
        };
        let cni = CniNetwork::clone_for_job(cni);
        blocking(move || Ok(cni.collect_garbage(&live)))
            .await
            .unwrap_or(0)
    }
}

/// Runs a blocking network step (plugins are processes, namespaces need threads) off the
/// async runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Task(e.to_string()))?
}

/// One pod's attachment, worked out before going off the async runtime.
struct Job {
    attachment: Attachment,
}

impl Job {
    fn of(cni: &CniNetwork, pod: &Pod) -> Result<Job> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if uid.is_empty() || !uid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(Error::Uid(uid));
        }
        let namespace = wasmlet_pod::downward::pod_namespace(pod);
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let attachment = Attachment::new(&uid, &cni.netns_dir.join(&uid))
            .pod(namespace, name)
            .ports(host_ports(pod))
            .ip_ranges(cni.ip_ranges());
        Ok(Job { attachment })
    }
}

impl CniNetwork {
    /// A copy to move onto a blocking thread (the CIDRs as known now).
    fn clone_for_job(&self) -> CniNetwork {
        CniNetwork {
            paths: self.paths.clone(),
            cni: self.cni.clone(),
            netns_dir: self.netns_dir.clone(),
            pod_cidr_override: self.pod_cidr_override.clone(),
            pod_cidrs: Mutex::new(self.ip_ranges()),
        }
    }

    fn config(&self) -> Result<NetworkConfig> {
        if !self.paths.has_config() {
            return Err(Error::NotReady(format!(
                "cni plugin not initialized: no network configuration in {} (the cluster's \
                 network add-on writes one there)",
                self.paths.conf_dir.display()
            )));
        }
        NetworkConfig::load_dir(&self.paths.conf_dir).map_err(|e| Error::NotReady(e.to_string()))
    }

    /// A ready network as [`Network::status`] describes it.
    fn describe(&self, config: &NetworkConfig) -> String {
        let types: Vec<&str> = config
            .plugins
            .iter()
            .filter_map(|p| p.get("type").and_then(|t| t.as_str()))
            .collect();
        let ranges = self.ip_ranges();
        let ranges = match ranges.is_empty() {
            true => "pod CIDR not allocated yet".to_string(),
            false => format!("pod CIDRs {}", ranges.join(", ")),
        };
        format!(
            "cni: network {} ({}) from {}; {ranges}",
            config.name,
            types.join(", "),
            config.source.display()
        )
    }

    fn ip_ranges(&self) -> Vec<String> {
        match &self.pod_cidr_override {
            Some(cidr) => vec![cidr.clone()],
            None => self
                .pod_cidrs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    /// The pod's namespace and IPs: the pinned namespace and cached result if the pod was
    /// attached before, else a new namespace attached now (undone if that fails).
    fn attach(&self, job: &Job) -> Result<PodNetwork> {
        let config = self.config()?;
        if job.attachment.ip_ranges.is_empty() && wants_ip_ranges(&config) {
            return Err(Error::NoPodCidr {
                network: config.name.clone(),
            });
        }
        let path = &job.attachment.netns;
        if wasmlet_netns::is_pinned(path)
            && let Some(result) = self.cni.cached(&config.name, &job.attachment)?
        {
            let netns = NetNs::open(path)?;
            return pod_network(&config, result.pod_ips(), netns);
        }
        // A stale attachment (a namespace lost with a reboot) is undone before a new one.
        self.detach(&job.attachment)?;
        let netns = NetNs::create(path)?;
        let attached = netns
            .set_loopback_up()
            .map_err(Error::from)
            .and_then(|()| Ok(self.cni.add(&config, &job.attachment)?));
        match attached {
            Ok(result) => pod_network(&config, result.pod_ips(), netns).inspect_err(|_| {
                let _ = self.detach(&job.attachment);
            }),
            Err(err) => {
                let _ = wasmlet_netns::remove(path);
                Err(err)
            }
        }
    }

    /// DEL with the cached configuration (else the current one), then the namespace unpinned.
    fn detach(&self, attachment: &Attachment) -> Result<()> {
        let mut done = false;
        for (config, cached) in self.cni.attachments_of(&attachment.container_id)? {
            self.cni.del(&config, &cached)?;
            done = true;
        }
        if !done
            && wasmlet_netns::is_pinned(&attachment.netns)
            && let Ok(config) = self.config()
        {
            self.cni.del(&config, attachment)?;
        }
        wasmlet_netns::remove(&attachment.netns)?;
        Ok(())
    }

    fn collect_garbage(&self, live: &HashSet<String>) -> usize {
        let mut gone: Vec<Attachment> = Vec::new();
        for (_, attachment) in self.cni.attachments().unwrap_or_default() {
            if !live.contains(&attachment.container_id) {
                gone.push(attachment);
            }
        }
        let pinned = std::fs::read_dir(&self.netns_dir).into_iter().flatten();
        for entry in pinned.flatten() {
            let uid = entry.file_name().to_string_lossy().into_owned();
            if !live.contains(&uid) && !gone.iter().any(|a| a.container_id == uid) {
                gone.push(Attachment::new(&uid, &entry.path()));
            }
        }
        let mut removed = 0;
        for attachment in gone {
            match self.detach(&attachment) {
                Ok(()) => removed += 1,
                Err(err) => {
                    tracing::warn!(pod_uid = %attachment.container_id, %err, "removing a gone pod's network")
                }
            }
        }
        removed
    }
}

fn pod_network(config: &NetworkConfig, ips: Vec<IpAddr>, netns: NetNs) -> Result<PodNetwork> {
    if ips.is_empty() {
        return Err(Error::NoAddress {
            network: config.name.clone(),
        });
    }
    Ok(PodNetwork {
        ips,
        netns: Some(Arc::new(netns)),
    })
}

/// Whether a plugin of the network takes the pod CIDRs (`capabilities.ipRanges`).
fn wants_ip_ranges(config: &NetworkConfig) -> bool {
    config.plugins.iter().any(|plugin| {
        plugin
            .get("capabilities")
            .and_then(|c| c.get("ipRanges"))
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false)
    })
}

/// The pod's `hostPort`s, as the CRI runtimes pass them to `portmap`.
fn host_ports(pod: &Pod) -> Vec<PortMapping> {
    let spec = pod.spec.as_ref();
    let containers = spec.map(|s| s.containers.iter()).into_iter().flatten();
    let ports = containers.flat_map(|c| c.ports.iter().flatten());
    ports
        .filter_map(|p| {
            let host_port = u16::try_from(p.host_port?).ok().filter(|p| *p > 0)?;
            Some(PortMapping {
                host_port,
                container_port: u16::try_from(p.container_port).ok()?,
                protocol: p.protocol.as_deref().unwrap_or("TCP").to_lowercase(),
                host_ip: p.host_ip.clone().unwrap_or_default(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_json::from_value(serde_json::from_str::<serde_json::Value>(yaml).unwrap()).unwrap()
    }

    #[test]
    fn host_ports_are_passed_as_the_cri_runtimes_pass_them() {
        let pod = pod(r#"{"metadata":{"name":"p","uid":"u"},"spec":{"containers":[
              {"name":"a","ports":[{"containerPort":8080,"hostPort":80},{"containerPort":9}]},
              {"name":"b","ports":[{"containerPort":53,"hostPort":5353,"protocol":"UDP","hostIP":"10.0.0.1"}]}]}}"#);
        let ports = host_ports(&pod);
        assert_eq!(ports.len(), 2);
        assert_eq!((ports[0].host_port, ports[0].container_port), (80, 8080));
        assert_eq!(ports[0].protocol, "tcp");
        assert_eq!(ports[1].protocol, "udp");
        assert_eq!(ports[1].host_ip, "10.0.0.1");
    }

    #[test]
    fn without_a_configuration_the_node_says_what_the_kubelet_says() {
        let dir = tempfile::tempdir().unwrap();
        let paths = CniPaths {
            conf_dir: dir.path().join("net.d"),
            bin_dirs: vec![],
        };
        let ip = "127.0.0.1".parse().unwrap();
        let network = Network::new(&NetworkMode::Cni(paths), ip, dir.path(), None);
        let message = network.not_ready().unwrap();
        assert!(
            message.starts_with("container runtime network not ready: NetworkReady=false"),
            "{message}"
        );
        assert!(message.contains("net.d"), "{message}");
        let loopback = Network::new(&NetworkMode::Loopback, ip, dir.path(), None);
        assert!(loopback.not_ready().is_none());
    }

    #[test]
    fn the_pod_cidr_flag_overrides_the_nodes() {
        let dir = tempfile::tempdir().unwrap();
        let mode = NetworkMode::Cni(CniPaths::standard());
        let ip = "127.0.0.1".parse().unwrap();
        let node: Node = serde_json::from_str(
            r#"{"metadata":{"name":"n"},"spec":{"podCIDR":"10.244.1.0/24","podCIDRs":["10.244.1.0/24"]}}"#,
        )
        .unwrap();
        let network = Network::new(&mode, ip, dir.path(), None);
        network.observe_node(&node);
        let Mode::Cni(cni) = &network.mode else {
            unreachable!()
        };
        assert_eq!(cni.ip_ranges(), ["10.244.1.0/24"]);
        let flag = Some("10.9.0.0/16".parse().unwrap());
        let network = Network::new(&mode, ip, dir.path(), flag);
        network.observe_node(&node);
        let Mode::Cni(cni) = &network.mode else {
            unreachable!()
        };
        assert_eq!(cni.ip_ranges(), ["10.9.0.0/16"]);
    }
}
