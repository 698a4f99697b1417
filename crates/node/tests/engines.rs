//! End to end against the real control plane: a node whose engine is wasmer (`--engine
//! wasmer`) names it in its nodeInfo and runs the seed's pods on it, with exact exit codes, a
//! trap and the memory limit as a kubelet shows them, and `kubectl logs`; a pod asks for
//! wasmtime with the `wasmlet.dev/engine` annotation and runs a component there, which the
//! node's own engine refuses with a message naming the fix.

mod cluster;

use anyhow::Result;
use cluster::workloads::{apply, private_registry, wait_for_phase};
use cluster::{Cluster, eventually};
use std::time::Duration;
use wasmlet_runtime::EngineKind;
use wasmlet_testkit::TokenShape;

const NODE: &str = "wasmer-node";

fn pod(name: &str, image: &str, extra: &str, annotations: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default, \
         annotations: {{{annotations}}}}}\nspec:\n  restartPolicy: Never\n  \
         imagePullSecrets: [{{name: regcred}}]\n  \
         containers: [{{name: {name}, image: '{image}'{extra}}}]\n  \
         tolerations:\n  - {{key: kubernetes.io/arch, operator: Equal, value: wasm32-wasi, effect: NoExecute}}\n  \
         - {{key: kubernetes.io/arch, operator: Equal, value: wasm32-wasi, effect: NoSchedule}}\n"
    )
}

fn terminated(pod: &serde_json::Value) -> &serde_json::Value {
    &pod["status"]["containerStatuses"][0]["state"]["terminated"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasmer_node_runs_modules_and_a_pod_may_ask_for_wasmtime() -> Result<()> {
    let Some(version) = EngineKind::Wasmer.version() else {
        anyhow::bail!("this build has no wasmer engine: build with the `wasmer` feature");
    };
    let cluster = Cluster::start(NODE)?;
    let images: [(&str, &[u8]); 4] = [
        ("engines/hello:v1", wasmlet_fixtures::hello()),
        ("engines/exit:v1", wasmlet_fixtures::exit()),
        ("engines/membomb:v1", wasmlet_fixtures::membomb()),
        ("engines/component:v1", wasmlet_fixtures::hello_component()),
    ];
    let (_tokens, _registry, host) =
        private_registry(&cluster, TokenShape::Harbor, &images).await?;
    let data = tempfile::tempdir()?;
    let mut config = cluster::node_config(NODE, data.path())?;
    config.port = wasmlet_testkit::free_port();
    config.engine = EngineKind::Wasmer;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let (_agent, cancel) = cluster::start_agent_with(&cluster, config).await?;

    let ready = eventually(Duration::from_secs(60), "the node Ready", || {
        let node = cluster.kubectl_json(&["get", "node", NODE]).ok()?;
        let conditions = node["status"]["conditions"].as_array()?.clone();
        conditions
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
            .then_some(node)
    })
    .await;
    let node = match ready {
        Ok(node) => node,
        Err(err) => {
            let node = cluster.kubectl_json(&["get", "node", NODE])?;
            anyhow::bail!("{err}: {:#}", node["status"]["conditions"]);
        }
    };
    assert_eq!(
        node["status"]["nodeInfo"]["containerRuntimeVersion"],
        format!("wasmer://{version}"),
        "{node:#}"
    );

    let hello = pod("hello", &format!("{host}/engines/hello:v1"), "", "");
    apply(&cluster, data.path(), &hello)?;
    let done = wait_for_phase(&cluster, "hello", "Succeeded").await?;
    assert_eq!(terminated(&done)["exitCode"], 0, "{done:#}");
    let logs = cluster.kubectl(&["logs", "hello"])?;
    assert_eq!(
        logs.lines().collect::<Vec<_>>(),
        ["hello from stdout!", "hello from stderr!", "Args are: []"],
        "{logs}"
    );

    let exit = pod(
        "exit",
        &format!("{host}/engines/exit:v1"),
        ", args: ['42']",
        "",
    );
    apply(&cluster, data.path(), &exit)?;
    let done = wait_for_phase(&cluster, "exit", "Failed").await?;
    assert_eq!(terminated(&done)["exitCode"], 42, "{done:#}");

    let limits = ", resources: {limits: {memory: 16Mi}}";
    let bomb = pod("bomb", &format!("{host}/engines/membomb:v1"), limits, "");
    apply(&cluster, data.path(), &bomb)?;
    let done = wait_for_phase(&cluster, "bomb", "Failed").await?;
    assert_eq!(
        (&terminated(&done)["exitCode"], &terminated(&done)["reason"]),
        (&serde_json::json!(137), &serde_json::json!("OOMKilled")),
        "{done:#}"
    );

    // A component on the node's engine is refused, naming the fix; with the annotation it
    // runs on wasmtime.
    let component = format!("{host}/engines/component:v1");
    apply(&cluster, data.path(), &pod("refused", &component, "", ""))?;
    let waiting = eventually(Duration::from_secs(60), "the refusal", || {
        let pod = cluster.kubectl_json(&["get", "pod", "refused"]).ok()?;
        let waiting = pod["status"]["containerStatuses"][0]["state"]["waiting"].clone();
        (waiting["reason"] == "CreateContainerError").then_some(waiting)
    })
    .await?;
    let message = waiting["message"].as_str().unwrap_or_default();
    assert!(message.contains("wasmtime"), "{waiting:#}");
    let annotated = pod(
        "on-wasmtime",
        &component,
        "",
        "\"wasmlet.dev/engine\": wasmtime",
    );
    apply(&cluster, data.path(), &annotated)?;
    let done = wait_for_phase(&cluster, "on-wasmtime", "Succeeded").await?;
    assert_eq!(terminated(&done)["exitCode"], 0, "{done:#}");
    let logs = cluster.kubectl(&["logs", "on-wasmtime"])?;
    assert!(logs.contains("hello"), "{logs}");

    cancel.cancel();
    Ok(())
}
