//! Against the real control plane and a real metrics-server: a running wasm pod's CPU and
//! memory reach `kubectl top pod` and `kubectl top node` through the API aggregation layer,
//! and the kubelet API's `/stats/summary`, `/metrics/resource` and `/metrics` answer with
//! the node's and the pod's figures.
//!
//! metrics-server (`tests/setup` installs it) runs on loopback; the `v1beta1.metrics.k8s.io`
//! APIService points at an ExternalName Service naming `localhost`, which the API server
//! dials directly (Endpoints and EndpointSlices may not hold loopback addresses, and there is
//! no kube-proxy for a ClusterIP). It scrapes the node at its InternalIP and the kubelet port
//! of `status.daemonEndpoints`, verifying the serving certificate with the cluster CA.

mod cluster;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use cluster::{Cluster, eventually};
use serde_json::Value;
use wasmlet_oci::client::{Client, ClientConfig, NoProgress};
use wasmlet_oci::format::Format;
use wasmlet_oci::push::{self, Artifact};
use wasmlet_testkit::{Auth, Registry, free_port, tool};

const NODE: &str = "wasm-metrics";
/// The `busy` fixture's memory: one page, then 16 MiB grown.
const BUSY_BYTES: u64 = (1 + 16 * 16) * 65536;

/// Whether `bytes` is the working set of the one `busy` container: its instance's memory plus
/// its compiled code (it is the only container running that program), a few KiB for this
/// fixture and well under a MiB.
fn busy_working_set(bytes: Option<u64>) -> bool {
    bytes.is_some_and(|b| b > BUSY_BYTES && b < BUSY_BYTES + (1 << 20))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_top_shows_a_wasm_pod() -> Result<()> {
    let cluster = Cluster::start(NODE)?;
    let registry = Registry::start(Auth::Open);
    push_busy(&registry.host()).await?;
    let data = tempfile::tempdir()?;
    let port = free_port();
    let (agent, cancel) = cluster::start_agent(&cluster, NODE, data.path(), port).await?;

    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: busy, namespace: default}}\nspec:\n  \
         terminationGracePeriodSeconds: 1\n  \
         containers: [{{name: busy, image: '{}/demo/busy:v1', args: ['16']}}]\n  \
         tolerations: [{{operator: Exists}}]\n",
        registry.host()
    );
    let manifest = data.path().join("pod.yaml");
    std::fs::write(&manifest, pod)?;
    cluster.kubectl(&["apply", "-f", manifest.to_str().context("path")?])?;
    eventually(Duration::from_secs(90), "the pod Running", || {
        let pod = cluster.kubectl_json(&["get", "pod", "busy"]).ok()?;
        (pod["status"]["phase"] == "Running").then_some(())
    })
    .await?;

    check_kubelet_endpoints(&cluster, port).await?;

    let metrics_server = MetricsServer::start(&cluster, data.path())?;
    let top_pod = eventually(Duration::from_secs(120), "kubectl top pod", || {
        cluster
            .kubectl(&["top", "pod", "busy", "--no-headers"])
            .ok()
    })
    .await
    .with_context(|| metrics_server.diagnose(&cluster))?;
    // NAME CPU(cores) MEMORY(bytes), e.g. `busy 62m 16Mi`.
    let columns: Vec<&str> = top_pod.split_whitespace().collect();
    assert_eq!(columns.len(), 3, "{top_pod}");
    assert_eq!(columns[0], "busy", "{top_pod}");
    assert_eq!(columns[2], "16Mi", "{top_pod}");
    let millicores: u64 = columns[1].trim_end_matches('m').parse()?;
    assert!(millicores > 0, "the busy loop shows no CPU: {top_pod}");

    let top_node = eventually(Duration::from_secs(60), "kubectl top node", || {
        cluster.kubectl(&["top", "node", NODE, "--no-headers"]).ok()
    })
    .await
    .with_context(|| metrics_server.diagnose(&cluster))?;
    // NAME CPU(cores) CPU(%) MEMORY(bytes) MEMORY(%)
    let columns: Vec<&str> = top_node.split_whitespace().collect();
    assert_eq!(columns.len(), 5, "{top_node}");
    assert_eq!(columns[0], NODE, "{top_node}");
    assert!(
        columns[1].ends_with('m') && columns[3].ends_with("Mi"),
        "{top_node}"
    );
    assert!(
        columns[3].trim_end_matches("Mi").parse::<u64>()? > 0,
        "{top_node}"
    );

    drop(metrics_server);
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(30), agent).await??;
    Ok(())
}

/// The kubelet API directly with the admin's client certificate (the API server's node
/// proxy refuses loopback nodes).
async fn check_kubelet_endpoints(cluster: &Cluster, port: u16) -> Result<()> {
    let summary: Value = eventually(Duration::from_secs(30), "the pod in the summary", || {
        let text = get(cluster, port, "/stats/summary").ok()?;
        let summary: Value = serde_json::from_str(&text).ok()?;
        let pods = summary["pods"].as_array()?;
        pods.iter()
            .any(|p| p["podRef"]["name"] == "busy")
            .then_some(summary)
    })
    .await?;
    let node = &summary["node"];
    assert_eq!(node["nodeName"], NODE, "{summary:#}");
    assert!(
        node["cpu"]["usageCoreNanoSeconds"].as_u64() > Some(0),
        "{node:#}"
    );
    assert!(
        node["memory"]["workingSetBytes"].as_u64() > Some(0),
        "{node:#}"
    );
    assert!(node["fs"]["capacityBytes"].as_u64() > Some(0), "{node:#}");
    let pod = &summary["pods"][0];
    assert_eq!(pod["podRef"]["namespace"], "default", "{pod:#}");
    let container = &pod["containers"][0];
    assert_eq!(container["name"], "busy", "{pod:#}");
    assert!(
        busy_working_set(container["memory"]["workingSetBytes"].as_u64()),
        "{pod:#}"
    );
    assert!(
        container["cpu"]["usageCoreNanoSeconds"].as_u64() > Some(0),
        "{pod:#}"
    );
    assert!(container["startTime"].is_string(), "{pod:#}");
    assert_eq!(
        pod["memory"]["workingSetBytes"], container["memory"]["workingSetBytes"],
        "{pod:#}"
    );
    // Disk use: the projected service account volume (token and CA files), the logs.
    let volumes = pod["volume"].as_array().context("volume stats")?;
    let token = (volumes.iter())
        .find(|v| {
            v["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("kube-api-access-"))
        })
        .with_context(|| format!("no service account volume in {pod:#}"))?;
    assert!(token["usedBytes"].as_u64() > Some(0), "{pod:#}");
    assert!(token["inodesUsed"].as_u64() > Some(2), "{pod:#}");
    assert!(token["capacityBytes"].as_u64() > Some(0), "{pod:#}");
    let ephemeral = &pod["ephemeral-storage"];
    assert!(
        ephemeral["usedBytes"].as_u64() >= token["usedBytes"].as_u64(),
        "{pod:#}"
    );
    assert!(
        container["logs"]["inodesUsed"].as_u64() >= Some(2),
        "{pod:#}"
    );

    let resource = get(cluster, port, "/metrics/resource")?;
    let labels = "{container=\"busy\",namespace=\"default\",pod=\"busy\"}";
    let memory = format!("container_memory_working_set_bytes{labels} ");
    let bytes = resource
        .lines()
        .find_map(|l| l.strip_prefix(memory.as_str()))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok());
    assert!(busy_working_set(bytes), "{resource}");
    for wanted in [
        "container_cpu_usage_seconds_total{container=\"busy\"",
        "container_start_time_seconds{container=\"busy\"",
        "pod_memory_working_set_bytes{namespace=\"default\",pod=\"busy\"}",
        "node_cpu_usage_seconds_total ",
        "node_memory_working_set_bytes ",
        "resource_scrape_error 0",
    ] {
        assert!(
            resource.lines().any(|l| l.starts_with(wanted)),
            "{wanted:?} missing from\n{resource}"
        );
    }
    let own = get(cluster, port, "/metrics")?;
    for wanted in [
        "kubelet_running_pods 1",
        "kubelet_running_containers{container_state=\"running\"} 1",
    ] {
        assert!(
            own.lines().any(|l| l == wanted),
            "{wanted:?} missing from\n{own}"
        );
    }
    assert!(own.contains("\nprocess_resident_memory_bytes "), "{own}");
    Ok(())
}

/// metrics-server on a free loopback port, registered as `v1beta1.metrics.k8s.io`; killed
/// when dropped (the cluster, and so the APIService, goes with the test).
struct MetricsServer {
    child: Child,
    log: std::path::PathBuf,
}

impl MetricsServer {
    fn start(cluster: &Cluster, dir: &Path) -> Result<MetricsServer> {
        let port = free_port();
        let kubeconfig = cluster.var("KUBECONFIG");
        let cert_dir = dir.join("metrics-server");
        std::fs::create_dir_all(&cert_dir)?;
        let log = dir.join("metrics-server.log");
        let child = Command::new(tool("metrics-server"))
            .arg(format!("--kubeconfig={kubeconfig}"))
            .arg(format!("--authentication-kubeconfig={kubeconfig}"))
            .arg(format!("--authorization-kubeconfig={kubeconfig}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--secure-port={port}"))
            .arg(format!("--cert-dir={}", cert_dir.display()))
            .arg("--kubelet-preferred-address-types=InternalIP")
            .arg("--kubelet-use-node-status-port")
            .arg(format!(
                "--kubelet-certificate-authority={}",
                cluster.var("WASMLET_CLUSTER_CA")
            ))
            // The shortest resolution it allows; it must exceed the request timeout.
            .arg("--metric-resolution=10s")
            .arg("--kubelet-request-timeout=5s")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting metrics-server")?;
        let server = MetricsServer { child, log };
        let objects = format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: metrics-server, namespace: kube-system}}\n\
             spec: {{type: ExternalName, externalName: localhost, ports: [{{port: {port}}}]}}\n---\n\
             apiVersion: apiregistration.k8s.io/v1\nkind: APIService\n\
             metadata: {{name: v1beta1.metrics.k8s.io}}\n\
             spec:\n  group: metrics.k8s.io\n  version: v1beta1\n  insecureSkipTLSVerify: true\n  \
             groupPriorityMinimum: 100\n  versionPriority: 100\n  \
             service: {{name: metrics-server, namespace: kube-system, port: {port}}}\n"
        );
        let manifest = dir.join("metrics-server.yaml");
        std::fs::write(&manifest, objects)?;
        cluster.kubectl(&["apply", "-f", manifest.to_str().context("path")?])?;
        Ok(server)
    }

    /// What to look at when `kubectl top` does not answer: the APIService's conditions and
    /// the end of metrics-server's log.
    fn diagnose(&self, cluster: &Cluster) -> String {
        let conditions = cluster
            .kubectl(&[
                "get",
                "apiservice",
                "v1beta1.metrics.k8s.io",
                "-o",
                "jsonpath={.status.conditions}",
            ])
            .unwrap_or_else(|e| e.to_string());
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "APIService conditions: {conditions}\nmetrics-server log:\n{}",
            tail.join("\n")
        )
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GETs a kubelet API path with the admin's client certificate.
fn get(cluster: &Cluster, port: u16, path: &str) -> Result<String> {
    let pki = Path::new(&cluster.var("WASMLET_CLUSTER_STATE")).join("pki");
    let output = Command::new("curl")
        .args(["-sk", "--fail", "--max-time", "10", "--cert"])
        .arg(pki.join("admin.crt"))
        .arg("--key")
        .arg(pki.join("admin.key"))
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()?;
    if !output.status.success() {
        bail!("GET {path}: curl exited with {}", output.status);
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Pushes the `busy` fixture as `demo/busy:v1`.
async fn push_busy(host: &str) -> Result<()> {
    let client = Client::new(ClientConfig::default())?;
    let artifact = Artifact {
        wasm: Bytes::copy_from_slice(wasmlet_fixtures::busy()),
        file_name: "busy.wasm".into(),
        format: Format::WasmToOci,
        annotations: BTreeMap::new(),
        author: None,
    };
    let reference = format!("{host}/demo/busy:v1").parse()?;
    push::push(&client, &reference, &artifact, &NoProgress).await?;
    Ok(())
}
