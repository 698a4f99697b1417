//! The agent: one owner that connects to the API server, registers the node and runs the
//! heartbeat tasks until cancelled.

use std::path::PathBuf;

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio_util::sync::CancellationToken;

use crate::config::NodeConfig;
use crate::heartbeat;

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
    #[error("kubernetes client: {0}")]
    Client(#[from] kube::Error),
    /// Neither a kubeconfig nor a bootstrap kubeconfig was given.
    #[error("no kubeconfig: give --kubeconfig (or --bootstrap-kubeconfig)")]
    NoKubeconfig,
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
    std::fs::create_dir_all(&config.data_dir).map_err(|source| Error::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let client = connect(&credentials).await?;
    let Some(node) = heartbeat::register_until_done(&client, &config, &cancel).await else {
        return Ok(());
    };
    tracing::info!(node = %config.node_name, "node registered");
    let lease = tokio::spawn(heartbeat::run_lease(client.clone(), node, cancel.clone()));
    let status = tokio::spawn(heartbeat::run_status(
        client.clone(),
        config.clone(),
        cancel.clone(),
    ));
    cancel.cancelled().await;
    let _ = tokio::join!(lease, status);
    Ok(())
}

async fn connect(credentials: &Credentials) -> Result<Client> {
    let path = credentials.kubeconfig.clone().ok_or(Error::NoKubeconfig)?;
    client_from_kubeconfig(&path).await
}

/// A client from a kubeconfig file's current context.
pub async fn client_from_kubeconfig(path: &std::path::Path) -> Result<Client> {
    let err = |source| Error::Kubeconfig {
        path: path.to_path_buf(),
        source,
    };
    let kubeconfig = Kubeconfig::read_from(path).map_err(err)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(err)?;
    Ok(Client::try_from(config)?)
}
