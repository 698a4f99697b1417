//! The network of a shim's wasm containers, from the bundle's OCI runtime spec: the pod's
//! network namespace (`linux.namespaces`, type `network`: the sandbox's, which the CNI
//! plugins wired), the resolver configuration containerd wrote for the pod (the files it
//! mounts at `/etc/resolv.conf` and `/etc/hosts`), and the address a `wasi:http` component
//! serves on.
//!
//! Every socket of a container (a `wasi:http` listener, the guest's `wasi:sockets`, its
//! outgoing requests, its name lookups) is made inside the namespace, so it is the pod's: the
//! kubelet's probes, Services and other pods reach it at the pod IP, and it reaches them as
//! the pod. A spec that asks for a new namespace without naming one (`ctr run`) gets a new
//! one with only `lo`, as runc gives it, pinned in the bundle and removed with the task; a
//! spec without a network namespace (`ctr run --net-host`) shares the shim's own network.
//! Either way the namespace is the container's own, so any address may be bound.
//!
//! A `wasi:http` component is served on `0.0.0.0:8080` of the pod, or on the address of the
//! container's environment variable `WASMTIME_HTTP_PROXY_SOCKET_ADDR` (the variable runwasi's
//! wasmtime shim reads, so images made for it serve the same way); Kubernetes' `containerPort`
//! is not part of the OCI spec.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use oci_spec::runtime::{LinuxNamespaceType, Spec};
use wasmlet_netns::NetNs;
use wasmlet_runtime::{DnsConfig, Network, PodResolver};

/// Errors of setting up a container's network.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The namespace the spec names cannot be opened.
    #[error("the pod's network namespace {path}: {source}")]
    Namespace {
        /// The namespace file.
        path: PathBuf,
        /// Why.
        source: wasmlet_netns::Error,
    },
    /// The serving address is not `IP:PORT`.
    #[error("{HTTP_ADDRESS_VAR}={value:?} is not an address and port (e.g. 0.0.0.0:8080)")]
    Address {
        /// The variable's value.
        value: String,
    },
    /// The listener could not be made.
    #[error("cannot listen on {addr} in the pod's network: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// The environment variable naming the address a `wasi:http` component serves on.
pub const HTTP_ADDRESS_VAR: &str = "WASMTIME_HTTP_PROXY_SOCKET_ADDR";
/// Where a `wasi:http` component serves when the variable is not set.
pub const DEFAULT_HTTP_ADDRESS: &str = "0.0.0.0:8080";
/// The longest resolver configuration or hosts file read.
const MAX_DNS_FILE_BYTES: u64 = 1 << 20;

/// The network namespace a spec asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Namespace {
    /// The one at this path (a pod's sandbox namespace).
    Join(PathBuf),
    /// A new one of its own.
    New,
    /// None: the shim's own network (the host's).
    Host,
}

/// The network namespace the spec asks for (`linux.namespaces`, type `network`).
pub fn namespace(spec: &Spec) -> Namespace {
    let namespaces = spec.linux().as_ref().and_then(|l| l.namespaces().as_ref());
    let network = namespaces.and_then(|all| {
        all.iter()
            .find(|ns| ns.typ() == LinuxNamespaceType::Network)
    });
    match network.map(|ns| ns.path().clone()) {
        None => Namespace::Host,
        Some(None) => Namespace::New,
        Some(Some(path)) => Namespace::Join(path),
    }
}

/// The source of the mount at `destination` (`/etc/resolv.conf`, `/etc/hosts`).
fn mounted_file(spec: &Spec, destination: &str) -> Option<PathBuf> {
    let mounts = spec.mounts().as_ref()?;
    let mount = mounts
        .iter()
        .find(|m| m.destination() == Path::new(destination))?;
    mount.source().clone()
}

/// Whether `path` is this process's own network namespace by its `/proc/PID` path: what
/// containerd's CRI names for a pod's containers (`/proc/<sandbox pid>/ns/net`), the sandbox
/// task's pid being this shim's, since its sandbox runs no process.
pub fn is_own_process_namespace(path: &Path) -> bool {
    let own = format!("/proc/{}/ns/net", std::process::id());
    path == Path::new(&own) || path == Path::new("/proc/self/ns/net")
}

/// The container's network: the namespace the spec asks for (a new one is pinned at
/// `<bundle>/netns`, for the caller to remove with [`wasmlet_netns::remove`] when the task
/// goes), its resolver from the files containerd mounts for the pod (the host's resolver
/// without them). A pod's container names its sandbox's namespace through the sandbox task's
/// pid, which is this process: `sandbox` is then the namespace the sandbox's own spec named
/// (where the CNI plugins put the pod's interface).
pub fn network(spec: &Spec, bundle: &Path, sandbox: Option<&Path>) -> Result<Network, Error> {
    let namespace = match namespace(spec) {
        Namespace::Join(path) if is_own_process_namespace(&path) => match sandbox {
            Some(pod) => open(pod)?,
            None => open(&path)?,
        },
        Namespace::Join(path) => open(&path)?,
        Namespace::Host => open(Path::new("/proc/self/ns/net"))?,
        Namespace::New => {
            let path = bundle.join("netns");
            let made = NetNs::create(&path).and_then(|ns| ns.set_loopback_up().map(|()| ns));
            made.map_err(|source| Error::Namespace { path, source })?
        }
    };
    let namespace = Arc::new(namespace);
    let dns =
        dns_config(spec).map(|config| Arc::new(PodResolver::new(config, Some(namespace.clone()))));
    Ok(Network {
        pod_ip: Ipv4Addr::UNSPECIFIED.into(),
        namespace: Some(namespace),
        dns,
    })
}

fn open(path: &Path) -> Result<NetNs, Error> {
    NetNs::open(path).map_err(|source| Error::Namespace {
        path: path.to_owned(),
        source,
    })
}

/// The pod's resolver configuration, read from the file mounted at `/etc/resolv.conf` and
/// the one at `/etc/hosts`; `None` without a `resolv.conf` mount or when it cannot be read.
pub fn dns_config(spec: &Spec) -> Option<DnsConfig> {
    let resolv = mounted_file(spec, "/etc/resolv.conf")?;
    let text = read_bounded(&resolv)?;
    let name = resolv.display().to_string();
    let conf = match wasmlet_pod::ResolvConf::parse(&text, &name) {
        Ok(conf) => conf,
        Err(err) => {
            log::warn!("the pod's resolver configuration is not used: {err}");
            return None;
        }
    };
    let hosts = mounted_file(spec, "/etc/hosts")
        .and_then(|path| read_bounded(&path))
        .map(|text| wasmlet_pod::dns::parse_hosts(&text))
        .unwrap_or_default();
    let mut config = DnsConfig {
        nameservers: conf.nameserver_ips(),
        search: conf.searches.clone(),
        hosts: hosts
            .iter()
            .flat_map(|e| e.names.iter().map(|n| (n.to_ascii_lowercase(), e.ip)))
            .collect(),
        ..DnsConfig::default()
    };
    config.apply_options(&conf.options);
    Some(config)
}

fn read_bounded(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut text = String::new();
    let read = std::fs::File::open(path)
        .and_then(|f| f.take(MAX_DNS_FILE_BYTES).read_to_string(&mut text));
    match read {
        Ok(_) => Some(text),
        Err(err) => {
            log::warn!("cannot read {}: {err}", path.display());
            None
        }
    }
}

/// The address a `wasi:http` component serves on (see the [module docs](self)).
pub fn http_address(env: &[(String, String)]) -> Result<SocketAddr, Error> {
    let value = env
        .iter()
        .rev()
        .find(|(k, _)| k == HTTP_ADDRESS_VAR)
        .map_or(DEFAULT_HTTP_ADDRESS, |(_, v)| v.as_str());
    value.parse().map_err(|_| Error::Address {
        value: value.to_owned(),
    })
}

/// A listener on `addr` made inside the container's namespace, for tokio.
pub fn listen(network: &Network, addr: SocketAddr) -> Result<tokio::net::TcpListener, Error> {
    let listen_err = |source| Error::Listen { addr, source };
    let listener = match &network.namespace {
        Some(ns) => ns
            .within(|| std::net::TcpListener::bind(addr))
            .map_err(|e| listen_err(std::io::Error::other(e.to_string())))?,
        None => std::net::TcpListener::bind(addr),
    }
    .map_err(listen_err)?;
    listener.set_nonblocking(true).map_err(listen_err)?;
    tokio::net::TcpListener::from_std(listener).map_err(listen_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> Spec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn the_network_namespace_comes_from_linux_namespaces() {
        let with = spec(serde_json::json!({
            "ociVersion": "1.1.0",
            "linux": {"namespaces": [
                {"type": "pid"},
                {"type": "network", "path": "/var/run/netns/cni-1234"}
            ]}
        }));
        assert_eq!(
            namespace(&with),
            Namespace::Join("/var/run/netns/cni-1234".into())
        );
        let new = spec(serde_json::json!({
            "ociVersion": "1.1.0", "linux": {"namespaces": [{"type": "network"}]}
        }));
        assert_eq!(namespace(&new), Namespace::New);
        let host = spec(serde_json::json!({"ociVersion": "1.1.0", "linux": {"namespaces": []}}));
        assert_eq!(namespace(&host), Namespace::Host);
    }

    #[test]
    fn the_sandbox_pid_namespace_is_this_process() {
        let own = format!("/proc/{}/ns/net", std::process::id());
        assert!(is_own_process_namespace(Path::new(&own)));
        assert!(!is_own_process_namespace(Path::new("/proc/1/ns/net")));
        assert!(!is_own_process_namespace(Path::new("/var/run/netns/cni-1")));
    }

    #[test]
    fn the_resolver_is_read_from_the_files_containerd_mounts() {
        let dir = tempfile::tempdir().unwrap();
        let resolv = dir.path().join("resolv.conf");
        let hosts = dir.path().join("hosts");
        std::fs::write(
            &resolv,
            "search shop.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n",
        )
        .unwrap();
        std::fs::write(&hosts, "127.0.0.1 localhost\n10.244.1.7 web-1\n").unwrap();
        let spec = spec(serde_json::json!({
            "ociVersion": "1.1.0",
            "mounts": [
                {"destination": "/etc/resolv.conf", "type": "bind", "source": resolv, "options": ["rbind", "ro"]},
                {"destination": "/etc/hosts", "type": "bind", "source": hosts, "options": ["rbind"]}
            ]
        }));
        let config = dns_config(&spec).unwrap();
        assert_eq!(
            config.nameservers,
            vec!["10.96.0.10".parse::<std::net::IpAddr>().unwrap()]
        );
        assert_eq!(config.search.len(), 3);
        assert_eq!(config.ndots, 5);
        assert_eq!(
            config.hosts_lookup("WEB-1"),
            vec!["10.244.1.7".parse::<std::net::IpAddr>().unwrap()]
        );
        let bare =
            serde_json::from_value::<Spec>(serde_json::json!({"ociVersion": "1.1.0"})).unwrap();
        assert!(
            dns_config(&bare).is_none(),
            "no resolv.conf mount: the host's resolver"
        );
    }

    #[test]
    fn the_serving_address_is_runwasis_variable_or_8080() {
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(http_address(&env(&[])).unwrap().to_string(), "0.0.0.0:8080");
        let set = env(&[(HTTP_ADDRESS_VAR, "127.0.0.1:9000")]);
        assert_eq!(http_address(&set).unwrap().to_string(), "127.0.0.1:9000");
        let bad = http_address(&env(&[(HTTP_ADDRESS_VAR, "8080")])).unwrap_err();
        assert!(
            bad.to_string()
                .contains("WASMTIME_HTTP_PROXY_SOCKET_ADDR=\"8080\""),
            "{bad}"
        );
    }
}
