//! The agent: one owner that connects to the API server, registers the node and runs the
//! heartbeat tasks and the kubelet API until cancelled.

use std::path::PathBuf;

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector;
use wasmlet_oci::store::Store;
use wasmlet_runtime::{Runtime, RuntimeConfig};
use wasmlet_worker::{RegistryPuller, StoreResolver};

use crate::api::server;
use crate::config::NodeConfig;
use crate::node::{heartbeat, machine, status};
use crate::pods::network::Network;
use crate::pods::running::RunningPods;
use crate::pods::{self, NodeContext};
use crate::tls::identity::{NodeClient, ServingCert};
use crate::tls::{bootstrap, certs, rotation};

pub use crate::tls::bootstrap::Error as BootstrapError;
pub use crate::tls::identity::Error as IdentityError;

/// Errors starting the agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kubeconfig could not be read or used.
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// Why.
        source: kube::config::KubeconfigError,
    },
    /// The client could not be built from the kubeconfig.
    #[error(transparent)]
    Client(#[from] IdentityError),
    /// TLS bootstrap failed.
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
    /// Neither a kubeconfig nor a bootstrap kubeconfig was given.
    #[error("no kubeconfig: give --kubeconfig (or --bootstrap-kubeconfig)")]
    NoKubeconfig,
    /// What runs pods (the runtime, the image store) could not be set up.
    #[error("{0}")]
    Pods(String),
    /// The data directory could not be created.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The result type of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where the agent's credentials come from.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// The node's kubeconfig (used when it exists).
    pub kubeconfig: Option<PathBuf>,
    /// A bootstrap kubeconfig for TLS bootstrap when `kubeconfig` does not exist yet.
    pub bootstrap_kubeconfig: Option<PathBuf>,
}

/// Runs the agent until `cancel` fires: registers the node, renews its lease and reports its
/// status; on cancel, reports the node NotReady and returns.
pub async fn run(
    config: NodeConfig,
    credentials: Credentials,
    cancel: CancellationToken,
) -> Result<()> {
    match machine::raise_open_files_limit() {
        Ok((before, after)) if before < after => {
            tracing::info!(
                before,
                after,
                "raised the open files limit to its hard limit"
            );
        }
        Ok(_) => {}
        Err(err) => tracing::warn!(%err, "cannot raise the open files limit"),
    }
    std::fs::create_dir_all(&config.data_dir).map_err(|source| Error::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let path = node_kubeconfig(&config, &credentials, &cancel).await?;
    let kube_config = kube_config(&path).await?;
    let client_ca = kube_config.root_cert.clone().unwrap_or_default();
    let node_client = NodeClient::new(kube_config)?;
    let client = node_client.client();
    let Some(node) = heartbeat::register_until_done(&client, &config, &cancel).await else {
        return Ok(());
    };
    tracing::info!(node = %config.node_name, "node registered");
    let network = Arc::new(Network::new(
        &config.network,
        config.node_ip,
        &config.data_dir,
        config.pod_cidr,
    ));
    network.observe_node(&node);
    let rotation = tokio::spawn(rotation::run_client(
        node_client,
        config.clone(),
        cancel.clone(),
    ));
    let lease = tokio::spawn(heartbeat::run_lease(client.clone(), node, cancel.clone()));
    let status = tokio::spawn(heartbeat::run_status(
        client.clone(),
        config.clone(),
        network.clone(),
        cancel.clone(),
    ));
    let running = Arc::new(RunningPods::default());
    let (store, writer) = reflector::store();
    let pods = tokio::spawn(run_pods(
        client.clone(),
        config.clone(),
        (running.clone(), writer, network),
        cancel.clone(),
    ));
    let api = tokio::spawn(run_api(
        client.clone(),
        config.clone(),
        client_ca,
        (running, store),
        cancel.clone(),
    ));
    cancel.cancelled().await;
    let _ = tokio::join!(pods, lease, status, api, rotation);
    Ok(())
}

/// Runs the node's pods until cancelled, then stops them within their grace periods.
async fn run_pods(
    client: Client,
    config: NodeConfig,
    (running, writer, network): (
        Arc<RunningPods>,
        reflector::store::Writer<Pod>,
        Arc<Network>,
    ),
    cancel: CancellationToken,
) {
    let context = match node_context(client, &config, running, network) {
        Ok(context) => Arc::new(context),
        Err(err) => return tracing::error!(%err, "cannot run pods"),
    };
    pods::run(context, writer, cancel).await;
}

/// What the pod tasks share: the runtime, the image store, the pod networks, the recorder.
fn node_context(
    client: Client,
    config: &NodeConfig,
    running: Arc<RunningPods>,
    network: Arc<Network>,
) -> Result<NodeContext> {
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(config.data_dir.join("cache")),
        max_instances: config.max_pods.max(1000),
        engine: config.engine,
        ..RuntimeConfig::default()
    })
    .map_err(|e| Error::Pods(format!("the wasm runtime: {e}")))?;
    let store = Store::open(config.data_dir.join("images"))
        .map_err(|e| Error::Pods(format!("the image store: {e}")))?;
    let readings = machine::read(&config.data_dir).unwrap_or_default();
    let reporter = Reporter {
        controller: "kubelet".into(),
        instance: Some(config.node_name.clone()),
    };
    Ok(NodeContext {
        recorder: Recorder::new(client.clone(), reporter),
        watches: crate::pods::watches::ObjectWatches::new(client.clone()),
        client,
        node_name: config.node_name.clone(),
        node_ip: config.node_ip,
        data_dir: config.data_dir.clone(),
        runtime,
        images: StoreResolver::new(store, RegistryPuller::new(config.registry.clone())),
        network,
        allocatable: status::node_allocatable(config, &readings),
        running,
        drain_on_shutdown: config.drain_on_shutdown,
        dns: config.dns.clone(),
    })
}

/// The node's kubeconfig: `--kubeconfig` when it exists; else one written by TLS bootstrap
/// (at `--kubeconfig`, or `<data-dir>/kubeconfig`) from `--bootstrap-kubeconfig`.
async fn node_kubeconfig(
    config: &NodeConfig,
    credentials: &Credentials,
    cancel: &CancellationToken,
) -> Result<PathBuf> {
    let path = credentials
        .kubeconfig
        .clone()
        .unwrap_or_else(|| config.data_dir.join("kubeconfig"));
    match &credentials.bootstrap_kubeconfig {
        Some(boot) => {
            let name = &config.node_name;
            bootstrap::ensure_kubeconfig(&path, boot, name, &config.data_dir, cancel).await?;
            Ok(path)
        }
        None if path.exists() || credentials.kubeconfig.is_some() => Ok(path),
        None => Err(Error::NoKubeconfig),
    }
}

/// The kubelet API: waits for the serving certificate (a CSR an admin approves), then serves
/// until cancelled. Failures are logged; the node keeps running without its API.
async fn run_api(
    client: Client,
    config: NodeConfig,
    client_ca: Vec<Vec<u8>>,
    (running, pods): (Arc<RunningPods>, pods::PodStore),
    cancel: CancellationToken,
) {
    let request = certs::Request {
        node_name: config.node_name.clone(),
        signer: certs::SERVING_SIGNER,
        ips: vec![config.node_ip],
        dns_names: vec![config.node_name.clone()],
    };
    let path = config
        .data_dir
        .join("pki")
        .join("kubelet-server-current.pem");
    let serving = match certs::load_or_request(&client, &request, &path, &cancel).await {
        Ok(serving) => serving,
        Err(err) => return tracing::error!(%err, "no serving certificate; the kubelet API is off"),
    };
    let resolver = match ServingCert::new(&serving) {
        Ok(resolver) => Arc::new(resolver),
        Err(err) => return tracing::error!(%err, "the kubelet API is off"),
    };
    let tls = match server::tls_config(resolver.clone(), &client_ca) {
        Ok(tls) => tls,
        Err(err) => return tracing::error!(%err, "the kubelet API is off"),
    };
    let renewal = rotation::Rotation::serving(client.clone(), request, path, resolver);
    let rotation = match config.rotate_server_certificates {
        true => tokio::spawn(rotation::run(renewal, cancel.clone())),
        false => {
            tracing::info!(
                "serving certificate rotation is off (--rotate-server-certificates=false)"
            );
            tokio::spawn(async {})
        }
    };
    let context = server::ApiContext {
        client,
        node_name: config.node_name.clone(),
        data_dir: config.data_dir.clone(),
        running,
        pods,
        rates: Default::default(),
    };
    let addr = std::net::SocketAddr::new(config.node_ip, config.port);
    if let Err(err) = server::serve(addr, tls, context, cancel).await {
        tracing::error!(%err, "the kubelet API stopped");
    }
    let _ = rotation.await;
}

/// The client configuration from a kubeconfig file's current context.
pub async fn kube_config(path: &std::path::Path) -> Result<kube::Config> {
    let err = |source| Error::Kubeconfig {
        path: path.to_path_buf(),
        source,
    };
    let kubeconfig = Kubeconfig::read_from(path).map_err(err)?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(err)
}
