//! TLS bootstrap: with only a bootstrap kubeconfig (a bootstrap token), obtain the node's
//! client certificate from a `kubernetes.io/kube-apiserver-client-kubelet` CSR (which the
//! cluster's approver signs for `system:node:<name>`), store it, and write the node's own
//! kubeconfig, as the kubelet does with `--bootstrap-kubeconfig`. A later start finds that
//! kubeconfig and skips all of this, unless the certificate it uses has expired (then the node
//! bootstraps again, as the kubelet does); renewal before expiry is [`crate::tls::rotation`]'s.

use std::path::{Path, PathBuf};

use kube::config::{AuthInfo, Context, Kubeconfig, NamedAuthInfo, NamedContext};
use tokio_util::sync::CancellationToken;

use crate::tls::certs;

/// Why TLS bootstrap failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bootstrap kubeconfig could not be read or used.
    #[error("bootstrap kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// Why.
        source: kube::config::KubeconfigError,
    },
    /// The bootstrap kubeconfig has no cluster to copy.
    #[error("bootstrap kubeconfig {0} names no cluster for its current context")]
    NoCluster(PathBuf),
    /// The client could not be built.
    #[error("kubernetes client from the bootstrap kubeconfig: {0}")]
    Client(#[from] kube::Error),
    /// The client certificate could not be obtained.
    #[error("node client certificate: {0}")]
    Certs(#[from] certs::Error),
    /// The node kubeconfig could not be written.
    #[error("writing the node kubeconfig {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The result type of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The user and context names in the kubeconfig bootstrap writes.
const USER: &str = "default-auth";

/// Makes sure `kubeconfig` exists: when it does not, or when the node's stored client
/// certificate has expired, obtains a client certificate through `bootstrap` and writes
/// `kubeconfig` using it (the certificate and key live in
/// `<data_dir>/pki/kubelet-client-current.pem`).
pub async fn ensure_kubeconfig(
    kubeconfig: &Path,
    bootstrap: &Path,
    node_name: &str,
    data_dir: &Path,
    cancel: &CancellationToken,
) -> Result<()> {
    let cert_path = certs::client_cert_path(data_dir);
    if kubeconfig.exists() && !expired(&cert_path) {
        return Ok(());
    }
    let err = |source| Error::Kubeconfig {
        path: bootstrap.to_path_buf(),
        source,
    };
    let boot = Kubeconfig::read_from(bootstrap).map_err(err)?;
    let options = kube::config::KubeConfigOptions::default();
    let config = kube::Config::from_custom_kubeconfig(boot.clone(), &options)
        .await
        .map_err(err)?;
    let client = kube::Client::try_from(config)?;
    let request = certs::Request::client(node_name);
    certs::load_or_request(&client, &request, &cert_path, cancel).await?;
    let node_config = node_kubeconfig(&boot, bootstrap, &cert_path)?;
    write(kubeconfig, &node_config)
}

/// Whether the node's stored client certificate exists and is no longer valid: its kubeconfig
/// cannot authenticate any more (not even to request a new certificate).
fn expired(cert_path: &Path) -> bool {
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    std::fs::read_to_string(cert_path)
        .ok()
        .and_then(|text| certs::KeyedCert::from_pem(&text))
        .and_then(|cert| cert.info())
        .is_some_and(|info| !info.valid_at(now))
}

/// The bootstrap kubeconfig's cluster, with a user authenticating by the certificate file.
fn node_kubeconfig(boot: &Kubeconfig, boot_path: &Path, cert: &Path) -> Result<Kubeconfig> {
    let cluster_name = boot
        .current_context
        .as_ref()
        .and_then(|c| boot.contexts.iter().find(|n| &n.name == c))
        .and_then(|n| n.context.as_ref())
        .map(|c| c.cluster.clone())
        .ok_or_else(|| Error::NoCluster(boot_path.to_path_buf()))?;
    let mut cluster = boot
        .clusters
        .iter()
        .find(|c| c.name == cluster_name)
        .cloned()
        .ok_or_else(|| Error::NoCluster(boot_path.to_path_buf()))?;
    if let Some(c) = cluster.cluster.as_mut() {
        c.certificate_authority = c
            .certificate_authority
            .take()
            .map(|ca| absolute(boot_path, &ca));
    }
    let cert = cert.display().to_string();
    let user = AuthInfo {
        client_certificate: Some(cert.clone()),
        client_key: Some(cert),
        ..AuthInfo::default()
    };
    Ok(Kubeconfig {
        clusters: vec![cluster],
        auth_infos: vec![NamedAuthInfo {
            name: USER.into(),
            auth_info: Some(user),
            other: Default::default(),
        }],
        contexts: vec![NamedContext {
            name: USER.into(),
            context: Some(Context {
                cluster: cluster_name,
                user: Some(USER.into()),
                ..Context::default()
            }),
            other: Default::default(),
        }],
        current_context: Some(USER.into()),
        ..Kubeconfig::default()
    })
}

/// A path from a kubeconfig made absolute against that kubeconfig's folder.
fn absolute(kubeconfig: &Path, path: &str) -> String {
    let p = Path::new(path);
    if p.is_absolute() {
        return path.to_string();
    }
    let dir = kubeconfig.parent().unwrap_or(Path::new("."));
    dir.join(p).display().to_string()
}

/// Writes the kubeconfig (JSON, which is YAML too) atomically, readable by its owner only.
fn write(path: &Path, config: &Kubeconfig) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(config).map_err(std::io::Error::other);
    bytes
        .and_then(|b| certs::write_private(path, &b))
        .map_err(|source| Error::Write {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_kubeconfig_keeps_the_cluster_and_uses_the_certificate() {
        let boot: Kubeconfig = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Config", "current-context": "boot",
            "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443", "certificate-authority": "ca.pem"}}],
            "users": [{"name": "b", "user": {"token": "abcdef.0123456789abcdef"}}],
            "contexts": [{"name": "boot", "context": {"cluster": "c", "user": "b"}}]
        }))
        .unwrap();
        let node = node_kubeconfig(
            &boot,
            Path::new("/etc/k/boot.conf"),
            Path::new("/d/pki/c.pem"),
        )
        .unwrap();
        let cluster = node.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:6443"));
        assert_eq!(
            cluster.certificate_authority.as_deref(),
            Some("/etc/k/ca.pem")
        );
        let user = node.auth_infos[0].auth_info.as_ref().unwrap();
        assert_eq!(user.client_certificate.as_deref(), Some("/d/pki/c.pem"));
        assert_eq!(user.client_key.as_deref(), Some("/d/pki/c.pem"));
        assert!(
            user.token.is_none(),
            "the bootstrap token is not carried over"
        );
        assert_eq!(node.current_context.as_deref(), Some(USER));
    }

    #[test]
    fn a_bootstrap_kubeconfig_without_a_context_is_refused() {
        let boot = Kubeconfig::default();
        let err = node_kubeconfig(&boot, Path::new("b.conf"), Path::new("c.pem")).unwrap_err();
        assert!(err.to_string().contains("names no cluster"), "{err}");
    }
}
