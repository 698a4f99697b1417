//! `wasmlet node` as an operator runs it, against the real control plane: killed with
//! SIGKILL and started again, stopped with SIGTERM, and cut off from a restarting API server.

#[path = "../../node/tests/cluster/mod.rs"]
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
use wasmlet_testkit::{Auth, Registry};

/// A `wasmlet node` process; killed when dropped, its log's tail printed then (the harness
/// shows it when the test fails).
struct Node {
    child: Child,
    log: std::path::PathBuf,
}

impl Node {
    fn start(cluster: &Cluster, name: &str, data: &Path, port: u16) -> Result<Node> {
        Node::start_with(cluster, name, data, port, &[])
    }

    fn start_with(
        cluster: &Cluster,
        name: &str,
        data: &Path,
        port: u16,
        extra: &[&str],
    ) -> Result<Node> {
        let log_path = data.with_extension("log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let child = Command::new(env!("CARGO_BIN_EXE_wasmlet"))
            .args(["node", "--node-name", name, "--node-ip", "127.0.0.1"])
            .args(["--network", "loopback"])
            .arg("--port")
            .arg(port.to_string())
            .arg("--data-dir")
            .arg(data)
            .arg("--kubeconfig")
            .arg(cluster.var("WASMLET_NODE_KUBECONFIG"))
            .args(["--eviction-hard", "nodefs.available<1%"])
            .args(extra)
            .env("WASMLET_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting wasmlet node")?;
        Ok(Node {
            child,
            log: log_path,
        })
    }

    fn signal(&self, signal: &str) -> Result<()> {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -{signal} failed");
        }
        Ok(())
    }

    /// Waits for the process to exit, at most `limit`.
    async fn exited(&mut self, limit: Duration) -> Result<std::process::ExitStatus> {
        let child = &mut self.child;
        eventually(limit, "wasmlet node to exit", || {
            child.try_wait().ok().flatten()
        })
        .await
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = &lines[lines.len().saturating_sub(80)..];
        eprintln!(
            "--- the last lines of {}:\n{}",
            self.log.display(),
            tail.join("\n")
        );
    }
}

fn pod(name: &str, image: &str, restart: &str, args: &[&str]) -> String {
    let args = args
        .iter()
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  \
         restartPolicy: {restart}\n  terminationGracePeriodSeconds: 2\n  \
         containers: [{{name: main, image: '{image}', args: [{args}]}}]\n  \
         tolerations: [{{operator: Exists}}]\n"
    )
}

async fn push(host: &str, path: &str, wasm: &[u8]) -> Result<String> {
    let client = Client::new(ClientConfig::default())?;
    let artifact = Artifact {
        wasm: Bytes::copy_from_slice(wasm),
        file_name: "main.wasm".into(),
        format: Format::CncfArtifact,
        annotations: BTreeMap::new(),
        author: None,
    };
    let image = format!("{host}/{path}");
    push::push(&client, &image.parse()?, &artifact, &NoProgress).await?;
    Ok(image)
}

fn apply(cluster: &Cluster, dir: &Path, manifest: &str) -> Result<()> {
    let path = dir.join("manifest.yaml");
    std::fs::write(&path, manifest)?;
    cluster.kubectl(&["apply", "-f", path.to_str().context("path")?])?;
    Ok(())
}

fn get(cluster: &Cluster, name: &str) -> Option<Value> {
    cluster.kubectl_json(&["get", "pod", name]).ok()
}

fn restarts(pod: &Value) -> i64 {
    pod["status"]["containerStatuses"][0]["restartCount"]
        .as_i64()
        .unwrap_or(-1)
}

async fn phase(cluster: &Cluster, name: &str, phase: &str) -> Result<Value> {
    phase_within(cluster, name, phase, Duration::from_secs(90)).await
}

async fn phase_within(
    cluster: &Cluster,
    name: &str,
    phase: &str,
    limit: Duration,
) -> Result<Value> {
    eventually(limit, &format!("{name} {phase}"), || {
        get(cluster, name).filter(|p| p["status"]["phase"] == phase)
    })
    .await
    .with_context(|| {
        format!(
            "{name} as last seen: {:#}",
            get(cluster, name).unwrap_or_default()
        )
    })
}

/// The node's Ready condition status.
fn ready(cluster: &Cluster, node: &str) -> Option<String> {
    let node = cluster.kubectl_json(&["get", "node", node]).ok()?;
    let conditions = node["status"]["conditions"].as_array()?;
    let ready = conditions.iter().find(|c| c["type"] == "Ready")?;
    ready["status"].as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_finds_its_pods_again_and_a_terminated_one_stops_them() -> Result<()> {
    const NODE: &str = "wasm-faults";
    let cluster = Cluster::start(NODE)?;
    let registry = Registry::start(Auth::Open);
    let hello = push(&registry.host(), "demo/hello:v1", wasmlet_fixtures::hello()).await?;
    let sleep = push(&registry.host(), "demo/sleep:v1", wasmlet_fixtures::sleep()).await?;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("node");
    let port = wasmlet_testkit::free_port();
    let mut node = Node::start(&cluster, NODE, &data, port)?;
    let csr = eventually(Duration::from_secs(30), "the serving CSR", || {
        cluster::serving_csr(&cluster, NODE)
    })
    .await?;
    cluster.kubectl(&["certificate", "approve", &csr])?;

    apply(&cluster, dir.path(), &pod("once", &hello, "Never", &[]))?;
    apply(
        &cluster,
        dir.path(),
        &pod("sleeper", &sleep, "Always", &["600000"]),
    )?;
    apply(&cluster, dir.path(), &pod("again", &hello, "Always", &[]))?;
    let once = phase(&cluster, "once", "Succeeded").await?;
    phase(&cluster, "sleeper", "Running").await?;
    eventually(Duration::from_secs(60), "a restart of again", || {
        get(&cluster, "again").filter(|p| restarts(p) >= 1)
    })
    .await?;

    // SIGKILL: nothing is cleaned up; a new agent on the same data directory takes over.
    node.signal("KILL")?;
    node.exited(Duration::from_secs(10)).await?;
    let before = get(&cluster, "again").context("again")?;
    let node = Node::start(&cluster, NODE, &data, port)?;
    let sleeper = eventually(Duration::from_secs(60), "sleeper running again", || {
        get(&cluster, "sleeper").filter(|p| {
            restarts(p) >= 1 && !p["status"]["containerStatuses"][0]["state"]["running"].is_null()
        })
    })
    .await?;
    assert_eq!(sleeper["status"]["phase"], "Running", "{sleeper:#}");
    let again = eventually(
        Duration::from_secs(60),
        "again restarted past its count",
        || get(&cluster, "again").filter(|p| restarts(p) > restarts(&before)),
    )
    .await?;
    assert!(restarts(&again) > restarts(&before), "{again:#}");
    // The kubelet API of the new agent serves the previous run's log (a serving certificate
    // the first agent had not received yet is asked for again, and approved).
    let mut last = String::new();
    let previous = eventually(Duration::from_secs(30), "logs --previous", || {
        if let Some(csr) = cluster::serving_csr(&cluster, NODE) {
            let _ = cluster.kubectl(&["certificate", "approve", &csr]);
        }
        let answer = cluster.kubectl(&["logs", "again", "--previous"]);
        answer.map_err(|e| last = e.to_string()).ok()
    })
    .await
    .map_err(|e| {
        let log = std::fs::read_to_string(data.with_extension("log")).unwrap_or_default();
        e.context(format!("{last}\nagent log:\n{log}"))
    })?;
    assert!(previous.contains("hello from stdout!"), "{previous}");
    // The pod that completed is not run a second time.
    let once_now = get(&cluster, "once").context("once")?;
    assert_eq!(
        once_now["status"], once["status"],
        "a completed pod changed"
    );
    let uid = once["metadata"]["uid"].as_str().context("uid")?;
    let logs = data.join("pods").join(uid).join("logs/main");
    let runs = std::fs::read_dir(&logs).map(|d| d.count()).unwrap_or(0);
    assert_eq!(
        runs,
        1,
        "the completed pod's container ran again ({})",
        logs.display()
    );

    // SIGTERM with --drain-on-shutdown: pods stop within their grace period and are reported
    // Failed (Terminated), the node reports NotReady, the process exits cleanly.
    drop(node);
    let mut node = Node::start_with(&cluster, NODE, &data, port, &["--drain-on-shutdown"])?;
    eventually(
        Duration::from_secs(60),
        "sleeper running under the new agent",
        || {
            get(&cluster, "sleeper").filter(|p| {
                !p["status"]["containerStatuses"][0]["state"]["running"].is_null()
                    && restarts(p) > restarts(&sleeper)
            })
        },
    )
    .await?;
    node.signal("TERM")?;
    let status = node.exited(Duration::from_secs(30)).await?;
    assert!(status.success(), "wasmlet node exited with {status}");
    let not_ready = ready(&cluster, NODE);
    assert_ne!(
        not_ready.as_deref(),
        Some("True"),
        "the node stays Ready after SIGTERM"
    );
    let drained = get(&cluster, "sleeper").context("sleeper")?;
    assert_eq!(drained["status"]["phase"], "Failed", "{drained:#}");
    assert_eq!(drained["status"]["reason"], "Terminated", "{drained:#}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_survive_an_api_server_restart() -> Result<()> {
    const NODE: &str = "wasm-apiserver";
    let cluster = Cluster::start(NODE)?;
    let registry = Registry::start(Auth::Open);
    let sleep = push(&registry.host(), "demo/sleep:v1", wasmlet_fixtures::sleep()).await?;
    let hello = push(&registry.host(), "demo/hello:v1", wasmlet_fixtures::hello()).await?;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("node");
    let _node = Node::start(&cluster, NODE, &data, wasmlet_testkit::free_port())?;
    eventually(Duration::from_secs(30), "the node Ready", || {
        ready(&cluster, NODE).filter(|r| r == "True")
    })
    .await?;
    apply(
        &cluster,
        dir.path(),
        &pod("sleeper", &sleep, "Always", &["600000"]),
    )?;
    let before = phase(&cluster, "sleeper", "Running").await?;

    cluster.restart_apiserver(Duration::from_secs(60))?;

    // The pod created once the API server is back is found by the new watch. The watch
    // retries as the kubelet's reflector does (800 ms doubling to 30 s, each delay stretched
    // by up to 100 %), so after a minute's outage its next try may come a minute later.
    apply(&cluster, dir.path(), &pod("late", &hello, "Never", &[]))?;
    phase_within(&cluster, "late", "Succeeded", Duration::from_secs(150)).await?;
    let after = get(&cluster, "sleeper").context("sleeper")?;
    assert_eq!(after["status"]["phase"], "Running", "{after:#}");
    assert_eq!(
        restarts(&after),
        restarts(&before),
        "the sleeper was restarted: {after:#}"
    );
    let ready = eventually(Duration::from_secs(60), "the node Ready again", || {
        ready(&cluster, NODE).filter(|r| r == "True")
    })
    .await?;
    assert_eq!(ready, "True");
    Ok(())
}
