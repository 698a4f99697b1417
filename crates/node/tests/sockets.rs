//! End to end against the real control plane and scheduler: a pod whose component listens
//! with `wasi:sockets` on its pod IP (given to it by the downward API) answers TCP clients at
//! `status.podIP` and passes a tcpSocket readiness probe; one that binds the unspecified
//! address is refused, and `kubectl logs` says why and what to bind instead.

mod cluster;

use std::collections::BTreeMap;
use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use cluster::{Cluster, eventually};
use serde_json::Value;
use wasmlet_oci::client::{Client, ClientConfig, NoProgress};
use wasmlet_oci::format::Format;
use wasmlet_oci::push::{self, Artifact};
use wasmlet_testkit::{Auth, Registry};

const NODE: &str = "wasm-sockets";
/// The port the pods listen on.
const PORT: u16 = 7000;

/// A pod of the tcp_hello image listening on `listen_ip` (a YAML env entry's value part).
fn tcp_pod(name: &str, image: &str, restart: &str, listen_ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  \
         restartPolicy: {restart}\n  terminationGracePeriodSeconds: 1\n  \
         tolerations: [{{operator: Exists}}]\n  containers:\n  - name: {name}\n    \
         image: '{image}'\n    env: [{{name: LISTEN_IP, {listen_ip}}}]\n    \
         ports: [{{containerPort: {PORT}}}]\n    \
         readinessProbe: {{tcpSocket: {{port: {PORT}}}, periodSeconds: 1}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_pod_serves_tcp_on_its_pod_ip() -> Result<()> {
    let cluster = Cluster::start(NODE)?;
    let registry = Registry::start(Auth::Open);
    let image = format!("{}/demo/tcp-hello:v1", registry.host());
    push(&image, wasmlet_fixtures::tcp_hello()).await?;
    let data = tempfile::tempdir()?;
    let (_agent, cancel) =
        cluster::start_agent(&cluster, NODE, data.path(), wasmlet_testkit::free_port()).await?;

    let pod_ip = "valueFrom: {fieldRef: {fieldPath: status.podIP}}";
    apply(
        &cluster,
        data.path(),
        &tcp_pod("tcp-hello", &image, "Always", pod_ip),
    )?;
    let pod = wait_for(&cluster, "tcp-hello", "Ready", |pod| {
        condition(pod, "Ready") == Some("True")
    })
    .await?;
    assert_eq!(pod["spec"]["nodeName"], NODE, "scheduled by kube-scheduler");
    assert_eq!(pod["status"]["phase"], "Running", "{pod:#}");
    let ip = pod["status"]["podIP"]
        .as_str()
        .context("no podIP")?
        .to_owned();
    for _ in 0..2 {
        assert_eq!(greeting(&ip)?, "hello from wasi:sockets!\n", "from {ip}");
    }
    let logs = cluster.kubectl(&["logs", "tcp-hello"])?;
    assert!(logs.contains("tcp_hello: listening"), "{logs}");

    // The unspecified address would take the port on every pod's address: refused, and the
    // log names the fix.
    let wildcard = "value: 0.0.0.0";
    apply(
        &cluster,
        data.path(),
        &tcp_pod("tcp-any", &image, "Never", wildcard),
    )?;
    let pod = wait_for(&cluster, "tcp-any", "Failed", |pod| {
        pod["status"]["phase"] == "Failed"
    })
    .await?;
    let terminated = &pod["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(terminated["exitCode"], 1, "{pod:#}");
    let any_ip = pod["status"]["podIP"].as_str().context("no podIP")?;
    let logs = cluster.kubectl(&["logs", "tcp-any"])?;
    let refusal = format!(
        "wasmlet: refused to bind 0.0.0.0:{PORT}: the unspecified address would listen on \
         every pod's address on this node; bind the pod IP {any_ip} instead"
    );
    assert!(logs.contains(&refusal), "{logs}");
    assert!(logs.contains("fieldPath: status.podIP"), "{logs}");
    // The first pod still serves: nothing took its port.
    assert_eq!(greeting(&ip)?, "hello from wasi:sockets!\n");

    cancel.cancel();
    Ok(())
}

/// Connects to the pod at `ip`:[`PORT`] and reads what it sends until it closes.
fn greeting(ip: &str) -> Result<String> {
    let addr = (ip.parse::<std::net::IpAddr>()?, PORT).into();
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("connecting to {addr}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut text = String::new();
    conn.read_to_string(&mut text)?;
    Ok(text)
}

/// The status of the pod's condition `kind`.
fn condition<'a>(pod: &'a Value, kind: &str) -> Option<&'a str> {
    let conditions = pod["status"]["conditions"].as_array()?;
    let found = conditions.iter().find(|c| c["type"] == kind)?;
    found["status"].as_str()
}

/// Pushes `wasm` (a component) to an open registry as a CNCF wasm artifact.
async fn push(image: &str, wasm: &[u8]) -> Result<()> {
    let client = Client::new(ClientConfig::default())?;
    let artifact = Artifact {
        wasm: Bytes::copy_from_slice(wasm),
        file_name: "tcp_hello.wasm".into(),
        format: Format::CncfArtifact,
        annotations: BTreeMap::new(),
        author: None,
    };
    push::push(&client, &image.parse()?, &artifact, &NoProgress).await?;
    Ok(())
}

fn apply(cluster: &Cluster, dir: &std::path::Path, manifest: &str) -> Result<()> {
    let path = dir.join("manifest.yaml");
    std::fs::write(&path, manifest)?;
    cluster.kubectl(&["apply", "-f", path.to_str().context("path")?])?;
    Ok(())
}

/// Waits until pod `name` is as `wanted` says; fails with the pod's YAML after 90 s.
async fn wait_for(
    cluster: &Cluster,
    name: &str,
    what: &str,
    wanted: impl Fn(&Value) -> bool,
) -> Result<Value> {
    let found = eventually(
        Duration::from_secs(90),
        &format!("pod {name} {what}"),
        || {
            let pod = cluster.kubectl_json(&["get", "pod", name]).ok()?;
            wanted(&pod).then_some(pod)
        },
    )
    .await;
    match found {
        Ok(pod) => Ok(pod),
        Err(err) => {
            let now = cluster
                .kubectl(&["get", "pod", name, "-o", "yaml"])
                .unwrap_or_default();
            bail!("{err}\n{now}")
        }
    }
}
