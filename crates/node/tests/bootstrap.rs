//! TLS bootstrap against the real control plane: with only the bootstrap-token kubeconfig,
//! the agent obtains a client certificate (a CSR the controller-manager approves and signs),
//! writes its kubeconfig, registers Ready, and on the next start reuses both; once that
//! certificate has expired, the next start bootstraps again.

mod cluster;

use std::time::Duration;

use anyhow::Result;
use cluster::{Cluster, eventually};
use tokio_util::sync::CancellationToken;
use wasmlet_node::agent::{self, Credentials};

const NODE: &str = "wasm-bootstrap";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstraps_its_client_certificate_and_reuses_it() -> Result<()> {
    let cluster = Cluster::start("some-other-node")?;
    let data = tempfile::tempdir()?;
    let credentials = Credentials {
        kubeconfig: None,
        bootstrap_kubeconfig: Some(cluster.var("WASMLET_BOOTSTRAP_KUBECONFIG").into()),
    };
    run_until_ready(&cluster, data.path(), credentials.clone()).await?;
    assert!(data.path().join("kubeconfig").is_file());
    assert!(data.path().join("pki/kubelet-client-current.pem").is_file());
    let first = client_csrs(&cluster)?;
    assert_eq!(first.len(), 1, "one client CSR: {first:?}");
    let csr = cluster.kubectl_json(&["get", "csr", &first[0]])?;
    let requester = csr["spec"]["username"].as_str().unwrap_or_default();
    assert!(
        requester.starts_with("system:bootstrap:"),
        "requested by {requester}"
    );
    let approved = csr["status"]["conditions"][0]["type"].as_str();
    assert_eq!(approved, Some("Approved"));

    run_until_ready(&cluster, data.path(), credentials.clone()).await?;
    assert_eq!(
        client_csrs(&cluster)?,
        first,
        "the second start reuses the certificate"
    );

    // An expired certificate cannot even request its successor: bootstrap again.
    expire_client_certificate(data.path())?;
    run_until_ready(&cluster, data.path(), credentials).await?;
    assert_eq!(client_csrs(&cluster)?.len(), 2, "a second bootstrap");
    Ok(())
}

/// Replaces the node's client certificate with one that expired years ago.
fn expire_client_certificate(data: &std::path::Path) -> Result<()> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let cert = params.self_signed(&key)?;
    let pem = format!("{}{}", cert.pem(), key.serialize_pem());
    std::fs::write(data.join("pki/kubelet-client-current.pem"), pem)?;
    Ok(())
}

/// Runs the agent until the node reports Ready, then stops it.
async fn run_until_ready(
    cluster: &Cluster,
    data: &std::path::Path,
    credentials: Credentials,
) -> Result<()> {
    let config = cluster::node_config(NODE, data)?;
    let cancel = CancellationToken::new();
    let agent = tokio::spawn(agent::run(config, credentials, cancel.clone()));
    eventually(Duration::from_secs(60), "node Ready", || {
        let node = cluster.kubectl_json(&["get", "node", NODE]).ok()?;
        let conditions = node["status"]["conditions"].as_array()?.clone();
        conditions
            .iter()
            .find(|c| c["type"] == "Ready" && c["status"] == "True")
            .map(|_| ())
    })
    .await?;
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(15), agent).await???;
    Ok(())
}

/// The names of the node client CSRs made for this node.
fn client_csrs(cluster: &Cluster) -> Result<Vec<String>> {
    let list = cluster.kubectl_json(&["get", "csr"])?;
    let items = list["items"].as_array().cloned().unwrap_or_default();
    Ok(items
        .iter()
        .filter(|c| c["spec"]["signerName"] == "kubernetes.io/kube-apiserver-client-kubelet")
        .filter(|c| {
            c["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.contains(NODE))
        })
        .filter_map(|c| c["metadata"]["name"].as_str().map(str::to_string))
        .collect())
}
