//! End to end against the real control plane, the scheduler and a real registry behind a
//! Harbor-shaped token server: pods scheduled to `wasmlet node` run as a kubelet runs them,
//! and `kubectl` (get, logs, delete) reads them as it reads any pod.

mod cluster;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cluster::workloads::{apply, available, http_get, private_registry, wait_for_phase};
use cluster::{Cluster, eventually};
use tokio_util::sync::CancellationToken;
use wasmlet_node::agent::{self, Credentials};
use wasmlet_testkit::TokenShape;

const NODE: &str = "wasm-pods";

/// The seed's pod, with a pull secret for the private registry.
fn seed_pod(name: &str, image: &str, restart: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  \
         restartPolicy: {restart}\n  imagePullSecrets: [{{name: regcred}}]\n  \
         containers: [{{name: {name}, image: '{image}'}}]\n  \
         tolerations:\n  - {{key: kubernetes.io/arch, operator: Equal, value: wasm32-wasi, effect: NoExecute}}\n  \
         - {{key: kubernetes.io/arch, operator: Equal, value: wasm32-wasi, effect: NoSchedule}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_pods_run_as_a_kubelet_runs_them() -> Result<()> {
    let cluster = Cluster::start(NODE)?;
    let images: [(&str, &[u8]); 4] = [
        ("bifrost/hello-wasm:v1", wasmlet_fixtures::hello()),
        ("bifrost/exit:v1", wasmlet_fixtures::exit()),
        ("bifrost/sleep:v1", wasmlet_fixtures::sleep()),
        ("bifrost/env:v1", wasmlet_fixtures::env()),
    ];
    let (_tokens, _registry, host) =
        private_registry(&cluster, TokenShape::Harbor, &images).await?;
    let data = tempfile::tempdir()?;
    let (_agent, cancel) = start_agent(&cluster, data.path()).await?;
    let hello = format!("{host}/bifrost/hello-wasm:v1");

    // Never: runs once, Succeeded, exit code 0, the three lines in `kubectl logs`.
    apply(
        &cluster,
        data.path(),
        &seed_pod("wasm-hello", &hello, "Never"),
    )?;
    let pod = wait_for_phase(&cluster, "wasm-hello", "Succeeded").await?;
    assert_eq!(pod["spec"]["nodeName"], NODE, "scheduled by kube-scheduler");
    let state = &pod["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(state["exitCode"], 0, "{pod:#}");
    assert_eq!(state["reason"], "Completed", "{pod:#}");
    assert!(
        pod["status"]["podIP"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("127.64.")),
        "{pod:#}"
    );
    let logs = cluster.kubectl(&["logs", "wasm-hello"])?;
    assert_eq!(
        logs.lines().collect::<Vec<_>>(),
        ["hello from stdout!", "hello from stderr!", "Args are: []"],
        "{logs}"
    );

    // `kubectl describe` tells the story in the kubelet's words.
    let described = cluster.kubectl(&["describe", "pod", "wasm-hello"])?;
    for wanted in [
        "Successfully assigned default/wasm-hello to wasm-pods",
        "Pulling image",
        "Successfully pulled image",
        "Created container: wasm-hello",
        "Started container wasm-hello",
    ] {
        assert!(
            described.contains(wanted),
            "{wanted:?} missing from:\n{described}"
        );
    }

    // Exit codes are shown exactly.
    let exit = seed_pod("exit-42", &format!("{host}/bifrost/exit:v1"), "Never")
        .replace("image: ", "args: ['42'], image: ");
    apply(&cluster, data.path(), &exit)?;
    let pod = wait_for_phase(&cluster, "exit-42", "Failed").await?;
    let state = &pod["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(state["exitCode"], 42, "{pod:#}");
    assert_eq!(state["reason"], "Error", "{pod:#}");

    // Always: the container is restarted, with the kubelet's back-off.
    apply(
        &cluster,
        data.path(),
        &seed_pod("wasm-hello-always", &hello, "Always"),
    )?;
    let restarted = eventually(Duration::from_secs(90), "a restart", || {
        let pod = cluster
            .kubectl_json(&["get", "pod", "wasm-hello-always"])
            .ok()?;
        let count = pod["status"]["containerStatuses"][0]["restartCount"].as_i64()?;
        (count >= 1).then_some(pod)
    })
    .await?;
    assert_eq!(restarted["status"]["phase"], "Running", "{restarted:#}");

    // A ConfigMap read through envFrom.
    cluster.kubectl(&[
        "create",
        "configmap",
        "greeting",
        "--from-literal=GREETING=hi",
    ])?;
    let env = seed_pod("env", &format!("{host}/bifrost/env:v1"), "Never").replace(
        "image: ",
        "envFrom: [{configMapRef: {name: greeting}}], image: ",
    );
    apply(&cluster, data.path(), &env)?;
    wait_for_phase(&cluster, "env", "Succeeded").await?;
    let logs = cluster.kubectl(&["logs", "env"])?;
    assert!(logs.lines().any(|l| l == "env=GREETING=hi"), "{logs}");

    // Deletion stops a WASI command, which cannot observe SIGTERM, within about a second
    // rather than its 30 s grace period (as a process ends at once on SIGTERM's default
    // action), then the object is gone.
    let sleeper = seed_pod("sleeper", &format!("{host}/bifrost/sleep:v1"), "Always")
        .replace("image: ", "args: ['600000'], image: ")
        .replace(
            "  restartPolicy",
            "  terminationGracePeriodSeconds: 30\n  restartPolicy",
        );
    apply(&cluster, data.path(), &sleeper)?;
    wait_for_phase(&cluster, "sleeper", "Running").await?;
    let started = Instant::now();
    cluster.kubectl(&["delete", "pod", "sleeper", "--wait=true", "--timeout=60s"])?;
    let took = started.elapsed();
    assert!(
        took >= wasmlet_runtime::COMMAND_STOP_GRACE && took < Duration::from_secs(20),
        "a command is not held for a grace period it cannot use: {took:?}"
    );
    assert!(
        cluster.kubectl(&["get", "pod", "sleeper"]).is_err(),
        "the pod object remains"
    );

    // A pull that cannot succeed shows ErrImagePull, then ImagePullBackOff.
    let missing = seed_pod("missing", &format!("{host}/bifrost/nothing:v1"), "Never");
    apply(&cluster, data.path(), &missing)?;
    let reasons = eventually(Duration::from_secs(60), "ImagePullBackOff", || {
        let pod = cluster.kubectl_json(&["get", "pod", "missing"]).ok()?;
        let reason = pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"].clone();
        (reason == "ImagePullBackOff").then_some(pod)
    })
    .await?;
    assert_eq!(reasons["status"]["phase"], "Pending", "{reasons:#}");

    cancel.cancel();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_on_one_machine_share_a_deployment_of_http_pods() -> Result<()> {
    const OTHER: &str = "wasm-pods-b";
    let cluster = Cluster::start(NODE)?;
    let images: [(&str, &[u8]); 1] = [("demo/http-hello:v1", wasmlet_fixtures::http_hello())];
    let (_tokens, _registry, host) = private_registry(&cluster, TokenShape::Both, &images).await?;
    let data = tempfile::tempdir()?;
    let (_first, cancel) = start_agent(&cluster, &data.path().join("a")).await?;
    // The second joins through TLS bootstrap, with its own name, port and pod range.
    let mut config = cluster::node_config(OTHER, &data.path().join("b"))?;
    let port = wasmlet_testkit::free_port();
    config.port = port;
    config.pod_cidr = Some("127.65.0.0/16".parse()?);
    let credentials = Credentials {
        bootstrap_kubeconfig: Some(cluster.var("WASMLET_BOOTSTRAP_KUBECONFIG").into()),
        ..Default::default()
    };
    let _second = tokio::spawn(agent::run(config, credentials, cancel.clone()));
    let csr = eventually(Duration::from_secs(60), "the second serving CSR", || {
        cluster::serving_csr(&cluster, OTHER)
    })
    .await?;
    cluster.kubectl(&["certificate", "approve", &csr])?;
    cluster::kubelet_api_up(port).await?;

    let deployment = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: default}}\n\
         spec:\n  replicas: 4\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    \
         metadata: {{labels: {{app: web}}}}\n    spec:\n      imagePullSecrets: [{{name: regcred}}]\n      \
         terminationGracePeriodSeconds: 1\n      tolerations: [{{operator: Exists}}]\n      \
         containers:\n      - name: web\n        image: '{host}/demo/http-hello:v1'\n        \
         ports: [{{containerPort: 8080}}]\n        \
         readinessProbe: {{httpGet: {{path: /, port: 8080}}, periodSeconds: 1}}\n"
    );
    apply(&cluster, data.path(), &deployment)?;
    let pods = available(&cluster, 4).await?;
    let on = |node: &str| {
        pods.iter()
            .filter(|p| p["spec"]["nodeName"] == node)
            .count()
    };
    assert!(
        on(NODE) > 0 && on(OTHER) > 0,
        "one node took every pod: {} vs {}",
        on(NODE),
        on(OTHER)
    );
    let ips: std::collections::BTreeSet<&str> = pods
        .iter()
        .filter_map(|p| p["status"]["podIP"].as_str())
        .collect();
    assert_eq!(ips.len(), 4, "pod IPs are not distinct: {ips:?}");
    for ip in &ips {
        let body = http_get(&format!("http://{ip}:8080/"))?;
        assert_eq!(body, "hello from wasi:http!", "from {ip}");
    }

    port_forward(
        &cluster,
        pods[0]["metadata"]["name"].as_str().unwrap_or_default(),
    )
    .await?;

    // Scaling to zero stops and deletes every pod on both nodes; scaling back serves again.
    cluster.kubectl(&["scale", "deployment", "web", "--replicas=0"])?;
    eventually(Duration::from_secs(60), "no pods left", || {
        let list = cluster
            .kubectl_json(&["get", "pods", "-l", "app=web"])
            .ok()?;
        list["items"].as_array()?.is_empty().then_some(())
    })
    .await?;
    cluster.kubectl(&["scale", "deployment", "web", "--replicas=3"])?;
    let pods = available(&cluster, 3).await?;
    for ip in pods.iter().filter_map(|p| p["status"]["podIP"].as_str()) {
        assert_eq!(
            http_get(&format!("http://{ip}:8080/"))?,
            "hello from wasi:http!"
        );
    }
    cancel.cancel();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_init_order_limits_and_back_off_read_as_in_kubectl() -> Result<()> {
    let cluster = Cluster::start(NODE)?;
    let images: [(&str, &[u8]); 4] = [
        ("demo/fs:v1", wasmlet_fixtures::fs()),
        ("demo/membomb:v1", wasmlet_fixtures::membomb()),
        ("demo/exit:v1", wasmlet_fixtures::exit()),
        ("demo/sleep:v1", wasmlet_fixtures::sleep()),
    ];
    let (_tokens, _registry, host) = private_registry(&cluster, TokenShape::Token, &images).await?;
    cluster.kubectl(&[
        "create",
        "secret",
        "generic",
        "creds",
        "--from-literal=token=t0ps3cret",
    ])?;
    let data = tempfile::tempdir()?;
    let (_agent, cancel) = start_agent(&cluster, data.path()).await?;

    // Two init containers in order share an emptyDir with the container; a Secret volume.
    let fs = format!("{host}/demo/fs:v1");
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: files, namespace: default}}\nspec:\n  \
         restartPolicy: Never\n  automountServiceAccountToken: false\n  \
         imagePullSecrets: [{{name: regcred}}]\n  tolerations: [{{operator: Exists}}]\n  \
         volumes:\n  - {{name: shared, emptyDir: {{}}}}\n  - {{name: creds, secret: {{secretName: creds}}}}\n  \
         initContainers:\n  \
         - {{name: first, image: '{fs}', args: [write, a, first], volumeMounts: [{{name: shared, mountPath: /data}}]}}\n  \
         - {{name: second, image: '{fs}', args: [read, a], volumeMounts: [{{name: shared, mountPath: /data}}]}}\n  \
         containers:\n  \
         - {{name: reader, image: '{fs}', args: [read, a], volumeMounts: [{{name: shared, mountPath: /data}}]}}\n  \
         - {{name: secret, image: '{fs}', args: [read, token], volumeMounts: [{{name: creds, mountPath: /creds}}]}}\n"
    );
    apply(&cluster, data.path(), &pod)?;
    wait_for_phase(&cluster, "files", "Succeeded").await?;
    assert_eq!(
        cluster.kubectl(&["logs", "files", "-c", "second"])?.trim(),
        "first"
    );
    assert_eq!(
        cluster.kubectl(&["logs", "files", "-c", "reader"])?.trim(),
        "first"
    );
    assert_eq!(
        cluster.kubectl(&["logs", "files", "-c", "secret"])?.trim(),
        "t0ps3cret"
    );

    // A memory bomb under a 16Mi limit is OOMKilled, exit code 137.
    let bomb = seed_pod("bomb", &format!("{host}/demo/membomb:v1"), "Never")
        .replace("image: ", "resources: {limits: {memory: 16Mi}}, image: ");
    apply(&cluster, data.path(), &bomb)?;
    let pod = wait_for_phase(&cluster, "bomb", "Failed").await?;
    let state = &pod["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(
        (state["exitCode"].as_i64(), state["reason"].as_str()),
        (Some(137), Some("OOMKilled")),
        "{pod:#}"
    );

    // A container that keeps failing shows CrashLoopBackOff and the BackOff event.
    let crash = seed_pod("crash", &format!("{host}/demo/exit:v1"), "Always")
        .replace("image: ", "args: ['3'], image: ");
    apply(&cluster, data.path(), &crash)?;
    let pod = eventually(Duration::from_secs(90), "CrashLoopBackOff", || {
        let pod = cluster.kubectl_json(&["get", "pod", "crash"]).ok()?;
        let status = &pod["status"]["containerStatuses"][0];
        (status["state"]["waiting"]["reason"] == "CrashLoopBackOff").then_some(pod)
    })
    .await?;
    let last = &pod["status"]["containerStatuses"][0]["lastState"]["terminated"];
    assert_eq!(last["exitCode"], 3, "{pod:#}");
    let table = cluster.kubectl(&["get", "pod", "crash"])?;
    assert!(table.contains("CrashLoopBackOff"), "{table}");
    let described = cluster.kubectl(&["describe", "pod", "crash"])?;
    assert!(
        described.contains("Back-off restarting failed container crash"),
        "{described}"
    );

    // `kubectl logs -f` streams a running container's output as it comes.
    let sleeper = seed_pod("sleeper", &format!("{host}/demo/sleep:v1"), "Never")
        .replace("image: ", "args: ['3000'], image: ");
    apply(&cluster, data.path(), &sleeper)?;
    wait_for_phase(&cluster, "sleeper", "Running").await?;
    let followed = cluster.kubectl(&["logs", "-f", "sleeper"])?;
    assert_eq!(
        followed.trim(),
        "slept",
        "logs -f must wait for the output and end with the container"
    );

    // The service account token is requested for the pod and projected into its volume;
    // the API server accepts it as the pod's service account.
    let token_pod =
        seed_pod("token", &fs, "Never").replace("image: ", "args: [read, token], image: ");
    apply(&cluster, data.path(), &token_pod)?;
    wait_for_phase(&cluster, "token", "Succeeded").await?;
    let token = cluster.kubectl(&["logs", "token"])?;
    let review = format!(
        "apiVersion: authentication.k8s.io/v1\nkind: TokenReview\nspec: {{token: '{}'}}\n",
        token.trim()
    );
    let path = data.path().join("review.yaml");
    std::fs::write(&path, review)?;
    let reviewed = cluster.kubectl_json(&["create", "-f", path.to_str().context("path")?])?;
    assert_eq!(reviewed["status"]["authenticated"], true, "{reviewed:#}");
    assert_eq!(
        reviewed["status"]["user"]["username"],
        "system:serviceaccount:default:default"
    );

    // A ConfigMap changed while a pod runs reaches its volume.
    cluster.kubectl(&[
        "create",
        "configmap",
        "live",
        "--from-literal=greeting=first",
    ])?;
    let live = seed_pod("live", &format!("{host}/demo/sleep:v1"), "Never")
        .replace(
            "image: ",
            "args: ['600000'], volumeMounts: [{name: cfg, mountPath: /cfg}], image: ",
        )
        .replace(
            "  containers:",
            "  volumes: [{name: cfg, configMap: {name: live}}]\n  containers:",
        );
    apply(&cluster, data.path(), &live)?;
    let pod = wait_for_phase(&cluster, "live", "Running").await?;
    let uid = pod["metadata"]["uid"].as_str().context("uid")?;
    let file = wasmlet_worker::PodDir::new(data.path(), uid)?
        .volume("cfg")
        .join("greeting");
    assert_eq!(std::fs::read_to_string(&file)?, "first");
    cluster.kubectl(&[
        "patch",
        "configmap",
        "live",
        "-p",
        r#"{"data":{"greeting":"second"}}"#,
    ])?;
    eventually(
        Duration::from_secs(60),
        "the new greeting in the volume",
        || (std::fs::read_to_string(&file).ok()? == "second").then_some(()),
    )
    .await?;
    cancel.cancel();
    Ok(())
}

/// `kubectl port-forward` to a pod's wasi:http port answers on a local port, request after
/// request over the one SPDY session; forwarding a port the pod does not listen on prints the
/// kubelet's error.
async fn port_forward(cluster: &Cluster, pod: &str) -> Result<()> {
    let local = wasmlet_testkit::free_port();
    let target = format!("pod/{pod}");
    let ports = format!("{local}:8080");
    let mut forward = cluster.kubectl_background(&["port-forward", &target, &ports])?;
    let url = format!("http://127.0.0.1:{local}/");
    let first = eventually(Duration::from_secs(30), "port-forward answers", || {
        http_get(&url).ok()
    })
    .await;
    let again = http_get(&url);
    let _ = forward.kill();
    let _ = forward.wait();
    assert_eq!(first?, "hello from wasi:http!");
    assert_eq!(again?, "hello from wasi:http!");

    let local = wasmlet_testkit::free_port();
    let ports = format!("{local}:9");
    let mut forward = cluster.kubectl_background(&["port-forward", &target, &ports])?;
    let url = format!("http://127.0.0.1:{local}/");
    eventually(Duration::from_secs(30), "kubectl listens", || {
        std::net::TcpStream::connect(("127.0.0.1", local)).ok()
    })
    .await?;
    assert!(
        http_get(&url).is_err(),
        "nothing listens on port 9 of the pod"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = forward.kill();
    let output = forward.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("error forwarding port 9 to pod {pod}")),
        "{stderr}"
    );
    Ok(())
}

/// Starts the agent as [`NODE`] on its own port, logging to the test output with RUST_LOG.
async fn start_agent(
    cluster: &Cluster,
    data: &std::path::Path,
) -> Result<(tokio::task::JoinHandle<()>, CancellationToken)> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    cluster::start_agent(cluster, NODE, data, wasmlet_testkit::free_port()).await
}
