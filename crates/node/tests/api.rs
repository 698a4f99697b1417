//! Against the real control plane: the kubelet API gets its serving certificate from a CSR an
//! admin approves, answers the API server (`kubectl get --raw .../proxy`, `kubectl logs`),
//! refuses anonymous callers and checks bearer tokens with TokenReview and SubjectAccessReview.

mod cluster;

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use cluster::{Cluster, eventually};

const NODE: &str = "wasm-api";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_api_serves_logs_to_the_api_server_only() -> Result<()> {
    let cluster = Cluster::start(NODE)?;
    let data = tempfile::tempdir()?;
    let port = free_port()?;
    // The admin approves the node's serving certificate request, as in a real cluster.
    let (agent, cancel) = cluster::start_agent(&cluster, NODE, data.path(), port).await?;
    // The API server's node proxy refuses loopback nodes, so the admin's client certificate
    // (cluster CA, group system:masters) calls the API directly; `kubectl logs` goes through
    // the API server below.
    let pki = std::path::Path::new(&cluster.var("WASMLET_CLUSTER_STATE")).join("pki");
    let admin_cert = pki.join("admin.crt").display().to_string();
    let admin_key = pki.join("admin.key").display().to_string();
    let admin = ["--cert", admin_cert.as_str(), "--key", admin_key.as_str()];
    let answer = eventually(
        Duration::from_secs(30),
        "healthz with the admin certificate",
        || {
            get(port, "/healthz", &admin)
                .ok()
                .filter(|body| body == "ok")
        },
    )
    .await?;
    assert_eq!(answer, "ok");

    // Anonymous callers are refused; a service account token is reviewed and denied.
    assert_eq!(curl(port, &[])?, "401");
    cluster.kubectl(&["-n", "default", "create", "serviceaccount", "reader"])?;
    let token = cluster.kubectl(&["-n", "default", "create", "token", "reader"])?;
    let bearer = format!("Authorization: Bearer {}", token.trim());
    assert_eq!(curl(port, &["-H", &bearer])?, "403");

    // A pod bound to the node, with a CRI log where the worker writes it.
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: wasm-hello, namespace: default}\nspec:\n  \
        nodeName: wasm-api\n  containers: [{name: wasm-hello, image: example.invalid/hello:v1}]\n  \
        tolerations:\n  - {key: kubernetes.io/arch, operator: Equal, value: wasm32-wasi}\n";
    let manifest = data.path().join("pod.yaml");
    std::fs::write(&manifest, pod)?;
    cluster.kubectl(&["apply", "-f", manifest.to_str().context("path")?])?;
    let uid = cluster.kubectl(&["get", "pod", "wasm-hello", "-o", "jsonpath={.metadata.uid}"])?;
    let logs = data
        .path()
        .join("pods")
        .join(uid.trim())
        .join("logs/wasm-hello");
    std::fs::create_dir_all(&logs)?;
    std::fs::write(
        logs.join("0.log"),
        "2024-01-01T00:00:01Z stdout F first run\n",
    )?;
    std::fs::write(
        logs.join("1.log"),
        "2024-01-01T00:01:01Z stdout F hello from stdout!\n\
         2024-01-01T00:01:02Z stderr F hello from stderr!\n\
         2024-01-01T00:01:03Z stdout F Args are: []\n",
    )?;
    let all = cluster.kubectl(&["logs", "wasm-hello"])?;
    assert_eq!(
        all,
        "hello from stdout!\nhello from stderr!\nArgs are: []\n"
    );
    assert_eq!(
        cluster.kubectl(&["logs", "wasm-hello", "--tail=1"])?,
        "Args are: []\n"
    );
    assert_eq!(
        cluster.kubectl(&["logs", "wasm-hello", "--previous"])?,
        "first run\n"
    );
    let stamped = cluster.kubectl(&["logs", "wasm-hello", "--timestamps", "--limit-bytes=30"])?;
    assert_eq!(stamped, "2024-01-01T00:01:01Z hello fro");
    // exec and attach reach the node through the API server and are refused with the reason.
    for verb in [
        &["exec", "wasm-hello", "--", "sh"][..],
        &["attach", "wasm-hello"][..],
    ] {
        let err = cluster.kubectl(verb).unwrap_err().to_string();
        assert!(
            err.contains("not supported for WebAssembly containers: a wasm pod has no shell; use kubectl logs, or kubectl port-forward"),
            "{err}"
        );
    }
    let pods = get(port, "/pods", &admin)?;
    let pods: serde_json::Value = serde_json::from_str(&pods)?;
    assert_eq!(pods["items"][0]["metadata"]["name"], "wasm-hello");

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(15), agent).await??;

    // Started again on another address, the node asks for a serving certificate for it
    // instead of serving the stored one, which does not name it.
    let mut config = cluster::node_config(NODE, data.path())?;
    config.node_ip = "127.0.0.2".parse()?;
    config.port = port;
    let credentials = wasmlet_node::agent::Credentials {
        kubeconfig: Some(cluster.var("WASMLET_NODE_KUBECONFIG").into()),
        ..Default::default()
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    let agent = tokio::spawn(wasmlet_node::agent::run(
        config,
        credentials,
        cancel.clone(),
    ));
    let csr = eventually(
        Duration::from_secs(30),
        "a serving CSR for 127.0.0.2",
        || cluster::serving_csr(&cluster, NODE),
    )
    .await?;
    cluster.kubectl(&["certificate", "approve", &csr])?;
    let url = format!("https://127.0.0.2:{port}/healthz");
    let answer = eventually(Duration::from_secs(30), "healthz on 127.0.0.2", || {
        let output = Command::new("curl")
            .args(["-sk", "--max-time", "10"])
            .args(admin)
            .arg(&url)
            .output()
            .ok()?;
        Some(String::from_utf8_lossy(&output.stdout).into_owned()).filter(|body| body == "ok")
    })
    .await?;
    assert_eq!(answer, "ok");
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(15), agent).await???;
    Ok(())
}

fn curl(port: u16, extra: &[&str]) -> Result<String> {
    let output = Command::new("curl")
        .args([
            "-sk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
        ])
        .args(extra)
        .arg(format!("https://127.0.0.1:{port}/healthz"))
        .output()?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn get(port: u16, path: &str, extra: &[&str]) -> Result<String> {
    let output = Command::new("curl")
        .args(["-sk", "--max-time", "10"])
        .args(extra)
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
