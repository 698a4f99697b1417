//! `wasmlet node`: run the node agent, joining a Kubernetes cluster as a Node.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use wasmlet_node::agent::{self, Credentials};
use wasmlet_node::config::{CniPaths, EvictionHard, NetworkMode, NodeConfig};
use wasmlet_runtime::EngineKind;

/// Flags of `wasmlet node`, named as the kubelet's.
#[derive(clap::Args, Debug)]
pub struct NodeArgs {
    /// A YAML file of settings, keyed by these flags' names without their dashes
    /// (`node-ip: 10.0.0.21`, a list for a repeatable flag), as the kubelet's `--config`;
    /// flags given on the command line win over it.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// The node's kubeconfig; written by TLS bootstrap when it does not exist (or its
    /// certificate has expired). A client certificate it reads from
    /// `<data-dir>/pki/kubelet-client-current.pem` is rotated while the node runs.
    #[arg(long)]
    pub(crate) kubeconfig: Option<PathBuf>,
    /// A bootstrap kubeconfig (bootstrap token) used to obtain a client certificate.
    #[arg(long)]
    pub(crate) bootstrap_kubeconfig: Option<PathBuf>,
    /// The Node's name [default: the host name].
    #[arg(long)]
    pub(crate) node_name: Option<String>,
    /// The node's InternalIP, where the API server reaches the kubelet API.
    #[arg(long, default_value = "127.0.0.1")]
    pub(crate) node_ip: IpAddr,
    /// The kubelet API's HTTPS port.
    #[arg(long, default_value_t = 10250)]
    pub(crate) port: u16,
    /// Where certificates, logs and volumes live.
    #[arg(long, default_value = "/var/lib/wasmlet")]
    pub(crate) data_dir: PathBuf,
    /// The number of pods the node accepts.
    #[arg(long, default_value_t = 1000)]
    pub(crate) max_pods: u32,
    /// The engine pods run on: `wasmtime` or `wasmer` (a build with the `wasmer` feature);
    /// a pod may ask for another with the annotation `wasmlet.dev/engine`. The Node's
    /// nodeInfo.containerRuntimeVersion names it.
    #[arg(long, default_value = "wasmtime", value_name = "ENGINE")]
    pub(crate) engine: EngineKind,
    /// Labels to add or override, `key=value,...` (kubernetes.io/arch and kubernetes.io/os
    /// default to wasm32-wasi, type to wasmlet).
    #[arg(long, default_value = "")]
    pub(crate) node_labels: String,
    /// Taints to register with, `key=value:Effect,...` [default:
    /// kubernetes.io/arch=wasm32-wasi:NoSchedule,kubernetes.io/arch=wasm32-wasi:NoExecute].
    #[arg(long)]
    pub(crate) register_with_taints: Option<String>,
    /// Hard eviction thresholds below which the node reports pressure, e.g.
    /// `memory.available<100Mi,nodefs.available<10%,nodefs.inodesFree<5%,pid.available<5%`
    /// (the kubelet's defaults; unnamed signals keep theirs).
    #[arg(long, default_value = "")]
    pub(crate) eviction_hard: String,
    /// How pods get their addresses: `cni` (each pod in a network namespace of its own,
    /// attached by the cluster's CNI configuration) or `loopback` (addresses of a loopback
    /// range of this machine, for one machine) [default: cni when --cni-conf-dir holds a
    /// configuration, else loopback].
    #[arg(long, value_enum)]
    pub(crate) network: Option<NetworkFlag>,
    /// Where the CNI network configuration is (the first .conflist, .conf or .json in
    /// lexical order is used).
    #[arg(long, default_value = "/etc/cni/net.d")]
    pub(crate) cni_conf_dir: PathBuf,
    /// Where CNI plugins are (repeatable, or comma-separated; searched in order).
    #[arg(long, default_value = "/opt/cni/bin", value_delimiter = ',')]
    pub(crate) cni_bin_dir: Vec<PathBuf>,
    /// Loopback mode: the range pod IPs are taken from [default: 127.64.0.0/16]. CNI mode:
    /// overrides the node's spec.podCIDR as the range given to IPAM plugins.
    #[arg(long)]
    pub(crate) pod_cidr: Option<String>,
    /// The cluster DNS Service's IP(s), comma-separated: the nameserver of pods under
    /// dnsPolicy ClusterFirst (the kubelet's flag).
    #[arg(long, value_delimiter = ',')]
    pub(crate) cluster_dns: Vec<IpAddr>,
    /// The cluster's domain (e.g. cluster.local): pods search `<namespace>.svc.<domain>`,
    /// `svc.<domain>` and `<domain>` (the kubelet's flag).
    #[arg(long, default_value = "")]
    pub(crate) cluster_domain: String,
    /// The node's resolver configuration, the base of every pod's; empty for none (pods
    /// under dnsPolicy Default then use 127.0.0.1) (the kubelet's flag).
    #[arg(long, default_value = "/etc/resolv.conf", value_parser = path_or_empty())]
    pub(crate) resolv_conf: PathBuf,
    /// Extra PEM CA certificate to trust for registries (repeatable).
    #[arg(long)]
    pub(crate) registry_ca_file: Vec<PathBuf>,
    /// A registry (host:port) to reach over plain HTTP; loopback registries always may be.
    #[arg(long)]
    pub(crate) insecure_registry: Vec<String>,
    /// On SIGTERM, stop the pods within their grace periods and report them Failed
    /// (reason Terminated), as the kubelet's graceful node shutdown does, so their
    /// controllers replace them on other nodes.
    #[arg(long)]
    pub(crate) drain_on_shutdown: bool,
    /// Renew the client certificate (from TLS bootstrap) at 70-90% of its life, as the
    /// kubelet's flag of the same name; `=false` uses it until it expires.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub(crate) rotate_certificates: bool,
    /// Renew the kubelet API's serving certificate (a `kubernetes.io/kubelet-serving` CSR)
    /// at 70-90% of its life; `=false` asks for a new one only at a start that finds it
    /// expired.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub(crate) rotate_server_certificates: bool,
}

/// Runs the agent until SIGINT or SIGTERM. `matches` are the `node` subcommand's, which
/// tell the flags given on the command line from a `--config` file's settings.
pub fn main(args: NodeArgs, matches: &clap::ArgMatches) -> anyhow::Result<std::process::ExitCode> {
    let args = match &args.config {
        Some(file) => crate::node_config::merge(file, matches)?,
        None => args,
    };
    let config = config(&args)?;
    let credentials = Credentials {
        kubeconfig: args.kubeconfig,
        bootstrap_kubeconfig: args.bootstrap_kubeconfig,
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let cancel = CancellationToken::new();
        tokio::spawn(cancel_on_signal(cancel.clone()));
        agent::run(config, credentials, cancel).await
    })?;
    Ok(std::process::ExitCode::SUCCESS)
}

fn config(args: &NodeArgs) -> anyhow::Result<NodeConfig> {
    let name = match &args.node_name {
        Some(name) => name.clone(),
        None => hostname()?,
    };
    let mut config = NodeConfig::new(&name, args.node_ip, args.data_dir.clone())
        .with_labels(&args.node_labels)?;
    if let Some(taints) = &args.register_with_taints {
        config = config.with_taints(taints)?;
    }
    config.port = args.port;
    config.max_pods = args.max_pods;
    config.engine = args.engine;
    config.eviction_hard = EvictionHard::parse(&args.eviction_hard)?;
    config.pod_cidr = args.pod_cidr.as_deref().map(str::parse).transpose()?;
    config.network = network_mode(args);
    config.registry.ca_files = args.registry_ca_file.clone();
    config.registry.insecure = args.insecure_registry.clone();
    config.drain_on_shutdown = args.drain_on_shutdown;
    config.rotate_certificates = args.rotate_certificates;
    config.rotate_server_certificates = args.rotate_server_certificates;
    config.dns.cluster_dns = args.cluster_dns.clone();
    config.dns.cluster_domain = args.cluster_domain.trim_end_matches('.').to_owned();
    config.dns.resolv_conf = Some(args.resolv_conf.clone()).filter(|p| !p.as_os_str().is_empty());
    Ok(config)
}

/// A path that may be empty (clap's own path parser refuses an empty value).
fn path_or_empty() -> impl clap::builder::TypedValueParser<Value = PathBuf> {
    use clap::builder::TypedValueParser;
    clap::builder::OsStringValueParser::new().map(PathBuf::from)
}

/// `--network`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(crate) enum NetworkFlag {
    /// The cluster's network through CNI.
    Cni,
    /// Loopback addresses of this machine.
    Loopback,
}

fn network_mode(args: &NodeArgs) -> NetworkMode {
    let paths = CniPaths {
        conf_dir: args.cni_conf_dir.clone(),
        bin_dirs: args.cni_bin_dir.clone(),
    };
    let flag = args.network.unwrap_or_else(|| match paths.has_config() {
        true => NetworkFlag::Cni,
        false => NetworkFlag::Loopback,
    });
    tracing::info!(network = ?flag, conf_dir = %paths.conf_dir.display(), "pod network");
    match flag {
        NetworkFlag::Cni => NetworkMode::Cni(paths),
        NetworkFlag::Loopback => NetworkMode::Loopback,
    }
}

fn hostname() -> anyhow::Result<String> {
    let name =
        std::fs::read_to_string("/proc/sys/kernel/hostname").context("reading the host name")?;
    Ok(name.trim().to_lowercase())
}

async fn cancel_on_signal(cancel: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("signal received; stopping");
    cancel.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        node: NodeArgs,
    }

    fn resolv_conf(args: &[&str]) -> Option<PathBuf> {
        let argv = ["wasmlet-node", "--node-name", "n"].iter().chain(args);
        let cli = Cli::try_parse_from(argv).expect("the flags parse");
        config(&cli.node).expect("a config").dns.resolv_conf
    }

    #[test]
    fn an_empty_resolv_conf_gives_pods_no_resolver_of_the_node_as_the_kubelets_does() {
        assert_eq!(resolv_conf(&["--resolv-conf="]), None);
        assert_eq!(resolv_conf(&["--resolv-conf", ""]), None);
        assert_eq!(resolv_conf(&[]), Some(PathBuf::from("/etc/resolv.conf")));
        assert_eq!(
            resolv_conf(&["--resolv-conf", "/run/resolv.conf"]),
            Some(PathBuf::from("/run/resolv.conf"))
        );
    }
}
