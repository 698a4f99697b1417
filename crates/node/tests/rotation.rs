//! Certificate rotation against the real control plane, with certificates short-lived enough
//! to watch: the node starts with a client and a serving certificate that the cluster CA
//! signed for two minutes (from a minute ago to a minute from now, as an admin could hand them
//! out), and the agent renews each at 70-90% of its lifetime, 24 to 48 s after the start,
//! through CSRs: the client one approved by the cluster for the node itself, the serving one
//! by the admin. Nothing restarts: the Lease is still renewed after the first client
//! certificate expired (the API server, which now refuses that certificate, takes the new one),
//! a pod bound afterwards gets its status from the node, and the kubelet API serves the new
//! serving certificate.

mod cluster;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine;
use cluster::{Cluster, eventually};
use k8s_openapi::jiff::Timestamp;
use rcgen::{
    CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use tokio_util::sync::CancellationToken;
use wasmlet_node::agent::{self, Credentials};

const NODE: &str = "wasm-rotate";
/// The first certificates were valid since this many seconds before the start...
const VALID_BEFORE: i64 = 60;
/// ...and until this many seconds after it.
const VALID_AFTER: i64 = 60;

/// A node agent started with the short-lived certificates.
struct Started {
    files: Files,
    first_client: String,
    first_serving: String,
    expiry: i64,
    port: u16,
    cancel: CancellationToken,
    agent: tokio::task::JoinHandle<Result<(), agent::Error>>,
}

/// Issues the two-minute certificates into `data` and starts the agent on them, with
/// rotation on or off.
fn start(cluster: &Cluster, data: &Path, rotate: bool) -> Result<Started> {
    let files = Files::new(data);
    let now = Timestamp::now().as_second();
    let ca = TestCa::load(cluster)?;
    write(&files.client, &ca.issue(node_params(now, false)?)?)?;
    write(&files.serving, &ca.issue(node_params(now, true)?)?)?;
    std::fs::copy(&files.client, &files.first_client)?;
    write_kubeconfig(cluster, &files.kubeconfig, &files.client)?;
    write_kubeconfig(cluster, &files.first_kubeconfig, &files.first_client)?;
    let mut config = cluster::node_config(NODE, data)?;
    config.port = free_port()?;
    config.rotate_certificates = rotate;
    config.rotate_server_certificates = rotate;
    let port = config.port;
    let credentials = Credentials {
        kubeconfig: Some(files.kubeconfig.clone()),
        ..Default::default()
    };
    let cancel = CancellationToken::new();
    let agent = tokio::spawn(agent::run(config, credentials, cancel.clone()));
    Ok(Started {
        first_client: serial(&files.client)?,
        first_serving: serial(&files.serving)?,
        files,
        expiry: now + VALID_AFTER,
        port,
        cancel,
        agent,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotates_the_client_and_serving_certificates_while_running() -> Result<()> {
    let cluster = Cluster::start(NODE)?;
    let data = tempfile::tempdir()?;
    let Started {
        files,
        first_client,
        first_serving,
        expiry,
        port,
        cancel,
        agent,
    } = start(&cluster, data.path(), true)?;

    // The client certificate: a CSR by the node itself, approved and signed by the cluster,
    // whose certificate is now the file's.
    let csr = eventually(
        Duration::from_secs(90),
        "the rotated client certificate",
        || {
            approve_serving_csrs(&cluster);
            rotated_client_csr(&cluster, &files.client)
        },
    )
    .await?;
    assert_eq!(csr["spec"]["username"], format!("system:node:{NODE}"));
    assert_eq!(csr["status"]["conditions"][0]["type"], "Approved");
    assert_ne!(serial(&files.client)?, first_client);
    assert_eq!(client_csrs(&cluster)?.len(), 1, "one renewal, no more");

    // The serving certificate: renewed through a CSR the admin approved, and served.
    let served = eventually(
        Duration::from_secs(90),
        "the rotated serving certificate",
        || {
            approve_serving_csrs(&cluster);
            let file = serial(&files.serving).ok()?;
            let served = served_serial(port).ok()?;
            (file != first_serving && served == file).then_some(served)
        },
    )
    .await?;
    assert_ne!(served, first_serving);

    // Past the first client certificate's expiry the API server refuses it, and still sees
    // the node renew its Lease: with the new certificate, through the same client.
    let wait = expiry + 1 - Timestamp::now().as_second();
    tokio::time::sleep(Duration::from_secs(u64::try_from(wait).unwrap_or(0))).await;
    let refused = cluster
        .kubectl(&[
            "--kubeconfig",
            path_str(&files.first_kubeconfig)?,
            "get",
            "--raw",
            "/api",
        ])
        .expect_err("the first certificate has expired");
    assert!(refused.to_string().contains("Unauthorized"), "{refused}");
    eventually(
        Duration::from_secs(40),
        "a Lease renewal after the expiry",
        || {
            let renewed = lease_renew_time(&cluster)?;
            (renewed.as_second() > expiry).then_some(())
        },
    )
    .await?;

    // The pod tasks, started before the rotation, still watch and write status.
    let pod = data.path().join("pod.yaml");
    std::fs::write(&pod, POD)?;
    cluster.kubectl(&["apply", "-f", path_str(&pod)?])?;
    eventually(
        Duration::from_secs(60),
        "the pod's status from the node",
        || {
            let pod = cluster.kubectl_json(&["get", "pod", "rotated"]).ok()?;
            pod["status"]["containerStatuses"].as_array().map(|_| ())
        },
    )
    .await?;

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(15), agent).await???;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_rotation_off_the_certificates_are_kept_past_their_deadlines() -> Result<()> {
    let cluster = Cluster::start(NODE)?;
    let data = tempfile::tempdir()?;
    let node = start(&cluster, data.path(), false)?;
    eventually(Duration::from_secs(30), "the kubelet API", || {
        served_serial(node.port).ok()
    })
    .await?;
    // The latest deadline is at 90% of the two minutes, 48 s after the start.
    let past = node.expiry - VALID_AFTER + 50 - Timestamp::now().as_second();
    tokio::time::sleep(Duration::from_secs(u64::try_from(past).unwrap_or(0))).await;
    assert_eq!(serial(&node.files.client)?, node.first_client);
    assert_eq!(serial(&node.files.serving)?, node.first_serving);
    assert_eq!(served_serial(node.port)?, node.first_serving);
    let csrs = cluster.kubectl_json(&["get", "csr"])?;
    assert_eq!(csrs["items"].as_array().map(Vec::len), Some(0), "{csrs:#}");
    node.cancel.cancel();
    tokio::time::timeout(Duration::from_secs(15), node.agent).await???;
    Ok(())
}

const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: rotated, namespace: default}\n\
    spec:\n  nodeName: wasm-rotate\n  restartPolicy: Never\n  \
    containers: [{name: main, image: example.invalid/hello:v1}]\n  \
    tolerations:\n  - {key: kubernetes.io/arch, operator: Equal, value: wasm32-wasi}\n";

/// The files of the test: the node's certificates where TLS bootstrap puts them, its
/// kubeconfig naming the client one, and a copy of the first client certificate.
struct Files {
    client: PathBuf,
    serving: PathBuf,
    kubeconfig: PathBuf,
    first_client: PathBuf,
    first_kubeconfig: PathBuf,
}

impl Files {
    fn new(data: &Path) -> Self {
        Self {
            client: data.join("pki/kubelet-client-current.pem"),
            serving: data.join("pki/kubelet-server-current.pem"),
            kubeconfig: data.join("kubeconfig"),
            first_client: data.join("first-client.pem"),
            first_kubeconfig: data.join("first.kubeconfig"),
        }
    }
}

/// The cluster's CA, signing as the controller-manager would but for any lifetime.
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    fn load(cluster: &Cluster) -> Result<Self> {
        let cert = std::fs::read_to_string(cluster.var("WASMLET_CLUSTER_CA"))?;
        let key = KeyPair::from_pem(&std::fs::read_to_string(
            cluster.var("WASMLET_CLUSTER_CA_KEY"),
        )?)?;
        Ok(Self {
            issuer: Issuer::from_ca_cert_pem(&cert, key)?,
        })
    }

    /// A new key and its certificate, as one PEM text (certificate first).
    fn issue(&self, params: CertificateParams) -> Result<String> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(format!("{}{}", cert.pem(), key.serialize_pem()))
    }
}

/// The node's client (or serving) certificate, valid around `now`.
fn node_params(now: i64, serving: bool) -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, format!("system:node:{NODE}"));
    params
        .distinguished_name
        .push(DnType::OrganizationName, "system:nodes");
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + Duration::from_secs(u64::try_from(now - VALID_BEFORE)?);
    params.not_after = epoch + Duration::from_secs(u64::try_from(now + VALID_AFTER)?);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    if serving {
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.subject_alt_names = vec![
            SanType::IpAddress("127.0.0.1".parse()?),
            SanType::DnsName(NODE.try_into()?),
        ];
    }
    Ok(params)
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::create_dir_all(path.parent().context("no parent")?)?;
    Ok(std::fs::write(path, text)?)
}

/// A kubeconfig for the test cluster authenticating with the certificate file `cert`.
fn write_kubeconfig(cluster: &Cluster, path: &Path, cert: &Path) -> Result<()> {
    let cert = path_str(cert)?;
    let config = serde_json::json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "node",
        "clusters": [{"name": "wasmlet", "cluster": {
            "server": cluster.var("WASMLET_APISERVER"),
            "certificate-authority": cluster.var("WASMLET_CLUSTER_CA"),
        }}],
        "users": [{"name": "node", "user": {"client-certificate": cert, "client-key": cert}}],
        "contexts": [{"name": "node", "context": {"cluster": "wasmlet", "user": "node"}}],
    });
    write(path, &serde_json::to_string_pretty(&config)?)
}

/// The client CSRs of the node.
fn client_csrs(cluster: &Cluster) -> Result<Vec<serde_json::Value>> {
    let list = cluster.kubectl_json(&["get", "csr"])?;
    let items = list["items"].as_array().cloned().unwrap_or_default();
    Ok(items
        .into_iter()
        .filter(|c| c["spec"]["signerName"] == "kubernetes.io/kube-apiserver-client-kubelet")
        .filter(|c| c["spec"]["username"] == format!("system:node:{NODE}"))
        .collect())
}

/// The client CSR whose certificate is the one in `file`, once there is one.
fn rotated_client_csr(cluster: &Cluster, file: &Path) -> Option<serde_json::Value> {
    let stored = std::fs::read_to_string(file).ok()?;
    client_csrs(cluster).ok()?.into_iter().find(|csr| {
        let cert = csr["status"]["certificate"].as_str().unwrap_or_default();
        let pem = base64::engine::general_purpose::STANDARD.decode(cert);
        pem.is_ok_and(|pem| !pem.is_empty() && stored.as_bytes().starts_with(&pem))
    })
}

/// Approves the node's pending serving CSRs, as the admin does.
fn approve_serving_csrs(cluster: &Cluster) {
    if let Some(name) = cluster::serving_csr(cluster, NODE) {
        let _ = cluster.kubectl(&["certificate", "approve", &name]);
    }
}

/// When the API server last saw the node renew its Lease.
fn lease_renew_time(cluster: &Cluster) -> Option<Timestamp> {
    let lease = cluster
        .kubectl_json(&["-n", "kube-node-lease", "get", "lease", NODE])
        .ok()?;
    lease["spec"]["renewTime"].as_str()?.parse().ok()
}

/// The serial of the first certificate in a PEM file, as openssl prints it.
fn serial(file: &Path) -> Result<String> {
    let output = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(file)
        .output()?;
    serial_line(&output.stdout)
}

/// The serial of the certificate the kubelet API serves on `port`.
fn served_serial(port: u16) -> Result<String> {
    let script = format!(
        "openssl s_client -connect 127.0.0.1:{port} </dev/null 2>/dev/null | openssl x509 -noout -serial"
    );
    let output = Command::new("timeout")
        .args(["10", "bash", "-c", &script])
        .output()?;
    serial_line(&output.stdout)
}

fn serial_line(stdout: &[u8]) -> Result<String> {
    let text = String::from_utf8_lossy(stdout);
    match text.trim().strip_prefix("serial=") {
        Some(serial) if !serial.is_empty() => Ok(serial.to_string()),
        _ => bail!("no serial in {text:?}"),
    }
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str().context("a path that is not UTF-8")
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
