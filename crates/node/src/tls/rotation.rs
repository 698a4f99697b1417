//! Certificate rotation while the agent runs, by the rule of the kubelet's certificate manager
//! (`--rotate-certificates`, and `serverTLSBootstrap` for the serving certificate): each
//! certificate is renewed at a random point between 70% and 90% of its lifetime through a new
//! CSR with the same subject, written atomically over its file and put into use at once (the
//! client certificate through [`NodeClient::reload`], the serving one through
//! [`ServingCert::replace`]), nothing restarted. A failed renewal is retried with back-off; the
//! old certificate stays in use meanwhile.
//!
//! The client certificate is renewed only when the node authenticates with the file TLS
//! bootstrap writes, `<data-dir>/pki/kubelet-client-current.pem`, holding a certificate of
//! this node (`system:node:<name>` in `system:nodes`, which the cluster approves for the node
//! itself); an admin-provided kubeconfig with embedded credentials is left alone.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::Client;
use tokio_util::sync::CancellationToken;

use crate::config::NodeConfig;
use crate::node::heartbeat::Backoff;
use crate::tls::certs::{self, CertInfo, KeyedCert};
use crate::tls::identity::{self, NodeClient, ServingCert};

/// Errors renewing a certificate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The new certificate could not be obtained or written.
    #[error(transparent)]
    Certs(#[from] certs::Error),
    /// The new certificate could not be put into use.
    #[error(transparent)]
    Identity(#[from] identity::Error),
    /// The signer returned something that is not a certificate.
    #[error("the signed certificate does not parse")]
    Unparsable,
    /// The certificate in use cannot be renewed by the agent.
    #[error("{0}")]
    NotRenewable(String),
}

/// The result type of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The longest single sleep before the deadline is checked against the clock again (a
/// suspended machine's monotonic clock falls behind).
const LONGEST_SLEEP: Duration = Duration::from_secs(600);

/// When to renew a certificate: `not_before` plus 70% of its lifetime plus `jitter` (in
/// `[0, 1]`) times 20% of it, as the kubelet's certificate manager computes it.
pub fn deadline(info: &CertInfo, jitter: f64) -> i64 {
    let lifetime = (info.not_after - info.not_before) as f64;
    let fraction = 0.7 + 0.2 * jitter.clamp(0.0, 1.0);
    info.not_before + (lifetime * fraction).round() as i64
}

/// A random number in `[0, 1]` for [`deadline`] (0.5 should the system have no randomness).
pub fn jitter() -> f64 {
    let mut bytes = [0u8; 4];
    let provider = rustls::crypto::ring::default_provider();
    match provider.secure_random.fill(&mut bytes) {
        Ok(()) => f64::from(u32::from_le_bytes(bytes)) / f64::from(u32::MAX),
        Err(_) => 0.5,
    }
}

/// Where a renewed certificate is put into use.
pub enum Holder {
    /// The node's API client.
    Client(Box<NodeClient>),
    /// The kubelet API's TLS server.
    Serving(Arc<ServingCert>),
}

impl Holder {
    fn install(&self, cert: &KeyedCert) -> identity::Result<()> {
        match self {
            Self::Client(client) => client.reload(),
            Self::Serving(serving) => serving.replace(cert),
        }
    }
}

/// One certificate kept renewed.
pub struct Rotation {
    /// The client CSRs are made and watched with (the node's own).
    pub client: Client,
    /// What the certificate is for (signer, subject, SANs).
    pub request: certs::Request,
    /// The file it lives in, certificate then key.
    pub path: PathBuf,
    /// Where a new one goes into use.
    pub holder: Holder,
}

impl Rotation {
    /// The kubelet API's serving certificate, put into use through `serving`.
    pub fn serving(
        client: Client,
        request: certs::Request,
        path: PathBuf,
        serving: Arc<ServingCert>,
    ) -> Self {
        Self {
            client,
            request,
            path,
            holder: Holder::Serving(serving),
        }
    }

    /// The node's client certificate, when the agent can renew it: `node` reads it from
    /// `<data-dir>/pki/kubelet-client-current.pem` and it is a certificate of this node.
    pub fn client(node: NodeClient, config: &NodeConfig) -> Result<Self> {
        let path = certs::client_cert_path(&config.data_dir);
        let file = node.certificate_file().ok_or_else(|| {
            Error::NotRenewable("the kubeconfig does not read its certificate from a file".into())
        })?;
        if !same_file(file, &path) {
            let why = format!("the kubeconfig's certificate is not {}", path.display());
            return Err(Error::NotRenewable(why));
        }
        let info = stored(&path).ok_or_else(|| {
            Error::NotRenewable(format!("{} holds no certificate", path.display()))
        })?;
        if !info.is_node(&config.node_name) {
            let why = format!("{} is not system:node:{}", path.display(), config.node_name);
            return Err(Error::NotRenewable(why));
        }
        Ok(Self {
            client: node.client(),
            request: certs::Request::client(&config.node_name),
            path,
            holder: Holder::Client(Box::new(node)),
        })
    }
}

/// Keeps the node's client certificate renewed when [`Rotation::client`] allows; otherwise
/// says once why not and returns.
pub async fn run_client(node: NodeClient, config: NodeConfig, cancel: CancellationToken) {
    if !config.rotate_certificates {
        return tracing::info!("client certificate rotation is off (--rotate-certificates=false)");
    }
    match Rotation::client(node, &config) {
        Ok(rotation) => run(rotation, cancel).await,
        Err(err) => tracing::info!(%err, "the client certificate is not rotated"),
    }
}

/// Renews the certificate at `rotation.path` at each deadline until `cancel` fires.
pub async fn run(rotation: Rotation, cancel: CancellationToken) {
    let Some(mut info) = stored(&rotation.path) else {
        let path = rotation.path.display();
        return tracing::warn!(%path, "no certificate to rotate");
    };
    loop {
        let at = deadline(&info, jitter());
        tracing::info!(
            signer = rotation.request.signer,
            serial = %info.serial,
            rotate_at = %timestamp(at),
            "certificate rotation deadline"
        );
        if !sleep_until(at, &cancel).await {
            return;
        }
        match renew(&rotation, &cancel).await {
            Some(next) => info = next,
            None => return,
        }
    }
}

/// Renews until it succeeds (the new certificate's facts) or `cancel` fires (None).
async fn renew(rotation: &Rotation, cancel: &CancellationToken) -> Option<CertInfo> {
    let mut backoff = Backoff::default();
    loop {
        match renew_once(rotation, cancel).await {
            Ok(info) => return Some(info),
            Err(Error::Certs(certs::Error::Cancelled(_))) => return None,
            Err(err) => tracing::warn!(%err, signer = rotation.request.signer, "renewing"),
        }
        tokio::select! {
            () = cancel.cancelled() => return None,
            () = tokio::time::sleep(backoff.delay()) => {}
        }
    }
}

async fn renew_once(rotation: &Rotation, cancel: &CancellationToken) -> Result<CertInfo> {
    let cert = certs::obtain(&rotation.client, &rotation.request, cancel).await?;
    let info = cert.info().ok_or(Error::Unparsable)?;
    certs::store(&rotation.path, &cert)?;
    rotation.holder.install(&cert)?;
    tracing::info!(
        signer = rotation.request.signer,
        serial = %info.serial,
        not_after = %timestamp(info.not_after),
        "certificate rotated"
    );
    Ok(info)
}

/// Sleeps until the wall clock reaches `at` (Unix seconds): true, or false when cancelled.
async fn sleep_until(at: i64, cancel: &CancellationToken) -> bool {
    loop {
        let left = at.saturating_sub(Timestamp::now().as_second());
        let Ok(left) = u64::try_from(left) else {
            return true;
        };
        if left == 0 {
            return true;
        }
        let wait = Duration::from_secs(left).min(LONGEST_SLEEP);
        tokio::select! {
            () = cancel.cancelled() => return false,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// The facts of the certificate stored at `path`.
fn stored(path: &std::path::Path) -> Option<CertInfo> {
    let text = std::fs::read_to_string(path).ok()?;
    KeyedCert::from_pem(&text)?.info()
}

/// Whether two paths name one file (or are equal, when they cannot be resolved).
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    let resolve = |p: &std::path::Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.into());
    resolve(a) == resolve(b)
}

fn timestamp(seconds: i64) -> String {
    Timestamp::from_second(seconds).map_or_else(|_| seconds.to_string(), |t| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(not_before: i64, not_after: i64) -> CertInfo {
        CertInfo {
            not_before,
            not_after,
            serial: "01".into(),
            common_name: Some("system:node:n1".into()),
            organizations: vec!["system:nodes".into()],
            alt_names: Default::default(),
        }
    }

    #[test]
    fn the_deadline_falls_between_70_and_90_percent_of_the_lifetime() {
        let cert = info(1_000, 2_000);
        assert_eq!(deadline(&cert, 0.0), 1_700);
        assert_eq!(deadline(&cert, 0.5), 1_800);
        assert_eq!(deadline(&cert, 1.0), 1_900);
        assert_eq!(deadline(&cert, 7.0), 1_900, "jitter is clamped");
        for _ in 0..100 {
            let at = deadline(&cert, jitter());
            assert!((1_700..=1_900).contains(&at), "{at}");
        }
    }

    #[test]
    fn a_year_long_certificate_rotates_after_eight_months_or_more() {
        let year = 365 * 24 * 3600;
        let at = deadline(&info(0, year), 0.0);
        assert_eq!(at, year * 7 / 10);
    }

    #[test]
    fn jitter_varies() {
        let draws: Vec<f64> = (0..20).map(|_| jitter()).collect();
        assert!(draws.iter().all(|j| (0.0..=1.0).contains(j)));
        assert!(draws.windows(2).any(|w| w[0] != w[1]), "{draws:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_in_the_past_is_now_and_cancel_stops_the_wait() {
        let cancel = CancellationToken::new();
        assert!(sleep_until(0, &cancel).await);
        cancel.cancel();
        let far = Timestamp::now().as_second() + 3600;
        assert!(!sleep_until(far, &cancel).await);
    }
}
