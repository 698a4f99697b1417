//! Against the real control plane: the node registers Ready with its labels, taints and
//! capacity, renews its Lease, and reports NotReady when stopped.

mod cluster;

use std::time::Duration;

use anyhow::Result;
use cluster::{Cluster, eventually};
use tokio_util::sync::CancellationToken;
use wasmlet_node::agent::{self, Credentials};

const NODE: &str = "wasm-register";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_registers_ready_and_renews_its_lease() -> Result<()> {
    let cluster = Cluster::start(NODE)?;
    let data = tempfile::tempdir()?;
    let config = cluster::node_config(NODE, data.path())?;
    let credentials = Credentials {
        kubeconfig: Some(cluster.var("WASMLET_NODE_KUBECONFIG").into()),
        ..Default::default()
    };
    let cancel = CancellationToken::new();
    let agent = tokio::spawn(agent::run(config, credentials, cancel.clone()));

    let node = eventually(Duration::from_secs(30), "node Ready", || {
        let node = cluster.kubectl_json(&["get", "node", NODE]).ok()?;
        (condition(&node, "Ready")? == "True").then_some(node)
    })
    .await?;
    let labels = &node["metadata"]["labels"];
    assert_eq!(labels["kubernetes.io/arch"], "wasm32-wasi");
    assert_eq!(labels["kubernetes.io/os"], "wasm32-wasi");
    assert_eq!(labels["kubernetes.io/hostname"], NODE);
    assert_eq!(labels["type"], "wasmlet");
    // The node lifecycle controller may add node.kubernetes.io/not-ready until it sees Ready.
    let taints: Vec<_> = node["spec"]["taints"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let taints: Vec<_> = taints
        .into_iter()
        .filter(|t| t["key"] == "kubernetes.io/arch")
        .collect();
    let effects: Vec<_> = taints
        .iter()
        .map(|t| t["effect"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(effects, ["NoSchedule", "NoExecute"]);
    assert!(taints.iter().all(|t| t["value"] == "wasm32-wasi"));
    let status = &node["status"];
    // The API server writes quantities canonically: 1000 pods read back as 1k.
    assert_eq!(status["capacity"]["pods"], "1k");
    assert_ne!(status["capacity"]["cpu"], "0");
    assert!(
        status["capacity"]["memory"]
            .as_str()
            .unwrap_or("")
            .ends_with("Ki")
    );
    assert_eq!(status["daemonEndpoints"]["kubeletEndpoint"]["Port"], 10250);
    assert_eq!(status["nodeInfo"]["architecture"], "wasm32-wasi");
    for (type_, want) in [
        ("MemoryPressure", "False"),
        ("DiskPressure", "False"),
        ("PIDPressure", "False"),
    ] {
        assert_eq!(condition(&node, type_).as_deref(), Some(want), "{type_}");
    }

    let renew_time = |cluster: &Cluster| -> Option<String> {
        let lease = cluster
            .kubectl_json(&["-n", "kube-node-lease", "get", "lease", NODE])
            .ok()?;
        lease["spec"]["renewTime"].as_str().map(str::to_string)
    };
    let first = eventually(Duration::from_secs(15), "the lease", || {
        renew_time(&cluster)
    })
    .await?;
    let lease = cluster.kubectl_json(&["-n", "kube-node-lease", "get", "lease", NODE])?;
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 40);
    assert_eq!(lease["spec"]["holderIdentity"], NODE);
    eventually(Duration::from_secs(25), "a renewed lease", || {
        renew_time(&cluster).filter(|t| *t != first)
    })
    .await?;

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(15), agent).await???;
    let node = cluster.kubectl_json(&["get", "node", NODE])?;
    assert_eq!(condition(&node, "Ready").as_deref(), Some("False"));
    Ok(())
}

fn condition(node: &serde_json::Value, type_: &str) -> Option<String> {
    let conditions = node["status"]["conditions"].as_array()?;
    let found = conditions.iter().find(|c| c["type"] == type_)?;
    found["status"].as_str().map(str::to_string)
}
