//! `wasmlet node --network cni` against the real control plane: pods get addresses of the
//! node's `spec.podCIDR` from the real `bridge`, `host-local` and `portmap` plugins, a Service
//! gets them as endpoints, host ports reach them, and nothing is left behind by deletions,
//! a crash of the agent or a failing plugin.
//!
//! Everything (control plane, registry, agent, bridge, pods) lives in a network namespace
//! the test makes and enters: nothing is set up in the machine's own namespace and no
//! address outside the test's namespaces is dialled. Needs root, as the agent does.

mod cluster;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use cluster::workloads::{apply, available, http_get, private_registry, wait_for_phase};
use cluster::{Cluster, eventually};
use serde_json::Value;
use wasmlet_netns::NetNs;
use wasmlet_node::agent::{self, Credentials};
use wasmlet_node::config::{CniPaths, NetworkMode};
use wasmlet_testkit::TokenShape;

const NODE: &str = "wasm-net";
const NETWORK: &str = "wasmlet-test";
const HOST_PORT: u16 = 30080;

/// Debian's plugins, or those named by WASMLET_CNI_BIN_DIR.
fn bin_dir() -> PathBuf {
    std::env::var_os("WASMLET_CNI_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/cni"))
}

/// The cluster's network configuration: a bridge whose host-local IPAM has no range of its
/// own but the node's pod CIDR (`ipRanges`: host-local adds them to its configured ranges),
/// and portmap for host ports.
fn conflist(ipam_dir: &Path) -> String {
    format!(
        r#"{{"cniVersion":"1.0.0","name":"{NETWORK}","plugins":[
          {{"type":"bridge","bridge":"wl0","isGateway":true,"ipMasq":false,
            "capabilities":{{"ipRanges":true}},
            "ipam":{{"type":"host-local","dataDir":"{}"}}}},
          {{"type":"portmap","capabilities":{{"portMappings":true}}}}]}}"#,
        ipam_dir.display()
    )
}

#[test]
fn wasm_pods_join_the_cni_network_of_the_node() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let lab_path = dir.path().join("lab");
    let lab = NetNs::create(&lab_path).context("creating the test's namespace (needs root)")?;
    lab.set_loopback_up()?;
    let root = dir.path().to_owned();
    let outcome = std::thread::spawn(move || -> Result<()> {
        lab.enter()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        runtime.block_on(scenario(&root))
    })
    .join();
    unpin_all(&dir.path().join("data/netns"));
    let _ = wasmlet_netns::remove(&lab_path);
    match outcome {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

async fn scenario(root: &Path) -> Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let cluster = Cluster::start_with(NODE, &[("WASMLET_CLUSTER_CIDR", "10.244.0.0/16")])?;
    let images: [(&str, &[u8]); 1] = [("demo/http-hello:v1", wasmlet_fixtures::http_hello())];
    let (_tokens, _registry, host) = private_registry(&cluster, TokenShape::Token, &images).await?;
    let conf_dir = root.join("net.d");
    let ipam_dir = root.join("ipam");
    std::fs::create_dir_all(&conf_dir)?;
    std::fs::write(conf_dir.join("10-wasmlet.conflist"), conflist(&ipam_dir))?;
    let data = root.join("data");
    let mut config = cluster::node_config(NODE, &data)?;
    config.port = wasmlet_testkit::free_port();
    config.network = NetworkMode::Cni(CniPaths {
        conf_dir: conf_dir.clone(),
        bin_dirs: vec![bin_dir()],
    });
    let (_agent, cancel) = cluster::start_agent_with(&cluster, config.clone()).await?;
    let cidr = pod_cidr(&cluster).await?;

    // What an operator reads: the engine, and the pod network with its allocated range.
    let annotation = eventually(
        Duration::from_secs(60),
        "the pod network on the node",
        || {
            let node = cluster.kubectl_json(&["get", "node", NODE]).ok()?;
            let value = node["metadata"]["annotations"]["wasmlet.dev/pod-network"].as_str()?;
            value
                .contains(&format!("pod CIDRs {}", cidr.1))
                .then(|| value.to_owned())
        },
    )
    .await?;
    assert!(annotation.contains("10-wasmlet.conflist"), "{annotation}");
    let described = describe_node(&cluster).context("kubectl describe node")?;
    let network = format!("wasmlet.dev/pod-network: cni: network {NETWORK} (bridge, portmap)");
    assert!(described.contains(&network), "{network} in {described}");
    let engine = wasmlet_runtime::engine_version();
    assert!(
        described
            .lines()
            .any(|l| l.contains("Container Runtime Version:") && l.ends_with(&engine)),
        "{engine} in {described}"
    );

    // A Deployment behind a Service, and a pod with a host port.
    apply(&cluster, root, &web(&host, 2))?;
    apply(&cluster, root, &host_port_pod(&host))?;
    let pods = available(&cluster, 2).await?;
    let ips: BTreeSet<Ipv4Addr> = pods.iter().map(pod_ip).collect::<Result<_>>()?;
    assert_eq!(ips.len(), 2, "pod IPs are not distinct: {ips:?}");
    for ip in &ips {
        assert!(cidr.0.contains(ip), "{ip} is not in the node's {}", cidr.1);
        assert_eq!(
            http_get(&format!("http://{ip}:8080/"))?,
            "hello from wasi:http!"
        );
    }
    let slices = service_endpoints(&cluster, &ips).await?;
    assert_eq!(slices, ips, "the Service's EndpointSlice lists every pod");
    wait_for_phase(&cluster, "hp", "Running").await?;
    let gateway = cidr.0.first_host();
    let via_host_port = eventually(Duration::from_secs(30), "the host port answers", || {
        http_get(&format!("http://{gateway}:{HOST_PORT}/")).ok()
    })
    .await?;
    assert_eq!(via_host_port, "hello from wasi:http!");
    assert_eq!(pinned(&data.join("netns")), 3, "one namespace per pod");

    // Deletion leaves no namespace, cached attachment or IP allocation behind.
    cluster.kubectl(&["scale", "deployment", "web", "--replicas=0"])?;
    cluster.kubectl(&["delete", "pod", "hp", "--wait=false"])?;
    leaves_nothing(&data, &ipam_dir, "after deletions").await?;

    // A pod deleted while the agent is down (its network left as a crash leaves it) is
    // cleaned up when the agent starts again.
    cluster.kubectl(&["scale", "deployment", "web", "--replicas=1"])?;
    available(&cluster, 1).await?;
    cancel.cancel();
    eventually(Duration::from_secs(30), "the agent to stop", || {
        _agent.is_finished().then_some(())
    })
    .await?;
    assert_eq!(
        pinned(&data.join("netns")),
        1,
        "a stopped agent keeps its pods' networks"
    );
    cluster.kubectl(&["delete", "deployment", "web"])?;
    cluster.kubectl(&[
        "delete",
        "pods",
        "-l",
        "app=web",
        "--force",
        "--grace-period=0",
    ])?;
    let cancel = tokio_util::sync::CancellationToken::new();
    let credentials = Credentials {
        kubeconfig: Some(cluster.var("WASMLET_NODE_KUBECONFIG").into()),
        ..Default::default()
    };
    let _again = tokio::spawn(agent::run(config, credentials, cancel.clone()));
    leaves_nothing(&data, &ipam_dir, "after a restart").await?;

    // A failing plugin: the kubelet's event with the plugin's error, and the pod Pending.
    let broken = conflist(&ipam_dir).replace("\"portmap\"", "\"wasmlet-missing-plugin\"");
    std::fs::write(conf_dir.join("00-broken.conflist"), broken)?;
    apply(&cluster, root, &plain_pod(&host, "unlucky"))?;
    let event = eventually(Duration::from_secs(60), "FailedCreatePodSandBox", || {
        sandbox_event(&cluster, "unlucky", "FailedCreatePodSandBox")
    })
    .await?;
    assert!(event.contains("wasmlet-missing-plugin"), "{event}");
    let pod = cluster.kubectl_json(&["get", "pod", "unlucky"])?;
    assert_eq!(pod["status"]["phase"], "Pending", "{pod:#}");
    assert_eq!(pinned(&data.join("netns")), 0, "a failed ADD is undone");

    // No configuration at all: the node is NotReady as a kubelet without a network is.
    for entry in std::fs::read_dir(&conf_dir)? {
        std::fs::remove_file(entry?.path())?;
    }
    let message = eventually(Duration::from_secs(60), "the node NotReady", || {
        let node = cluster.kubectl_json(&["get", "node", NODE]).ok()?;
        let conditions = node["status"]["conditions"].as_array()?.clone();
        let ready = conditions.into_iter().find(|c| c["type"] == "Ready")?;
        (ready["status"] == "False").then(|| ready["message"].to_string())
    })
    .await?;
    assert!(
        message.contains("container runtime network not ready"),
        "{message}"
    );
    let mut last = String::new();
    let described = eventually(
        Duration::from_secs(30),
        "the node described not ready",
        || {
            last = describe_node(&cluster)?;
            let found = last.contains("wasmlet.dev/pod-network: cni: not ready");
            found.then_some(())
        },
    )
    .await;
    described.with_context(|| format!("kubectl describe node:\n{last}"))?;
    cancel.cancel();
    Ok(())
}

/// `kubectl describe node` as a user reads it, its wrapped lines joined (kubectl puts a long
/// annotation's value on the next line) and runs of spaces made one.
fn describe_node(cluster: &Cluster) -> Option<String> {
    let text = cluster.kubectl(&["describe", "node", NODE]).ok()?;
    let lines: Vec<String> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    Some(lines.join("\n").replace("pod-network:\n", "pod-network: "))
}

/// An IPv4 network, as the test reads `spec.podCIDR`.
struct Net {
    base: u32,
    prefix: u32,
}

impl Net {
    fn contains(&self, ip: &Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - self.prefix);
        u32::from(*ip) & mask == self.base
    }

    fn first_host(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base + 1)
    }
}

/// The node's `spec.podCIDR`, once the controller-manager has allocated it.
async fn pod_cidr(cluster: &Cluster) -> Result<(Net, String)> {
    let text = eventually(Duration::from_secs(60), "spec.podCIDR", || {
        let node = cluster.kubectl_json(&["get", "node", NODE]).ok()?;
        node["spec"]["podCIDR"].as_str().map(str::to_owned)
    })
    .await?;
    let (ip, prefix) = text.split_once('/').context("podCIDR")?;
    let net = Net {
        base: u32::from(ip.parse::<Ipv4Addr>()?),
        prefix: prefix.parse()?,
    };
    if !text.starts_with("10.244.") {
        bail!("podCIDR {text} is not of the cluster CIDR");
    }
    Ok((net, text))
}

fn pod_ip(pod: &Value) -> Result<Ipv4Addr> {
    let ip = pod["status"]["podIP"].as_str().context("no podIP")?;
    let ips = pod["status"]["podIPs"].as_array().context("no podIPs")?;
    assert_eq!(ips[0]["ip"], ip, "podIPs starts with podIP");
    Ok(ip.parse()?)
}

/// Waits until the `web` Service's EndpointSlice lists `want`, Ready; returns what it lists.
async fn service_endpoints(
    cluster: &Cluster,
    want: &BTreeSet<Ipv4Addr>,
) -> Result<BTreeSet<Ipv4Addr>> {
    let found = eventually(Duration::from_secs(60), "the Service's endpoints", || {
        let list = cluster
            .kubectl_json(&[
                "get",
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=web",
            ])
            .ok()?;
        let endpoints = list["items"]
            .as_array()?
            .iter()
            .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default());
        let ready: BTreeSet<Ipv4Addr> = endpoints
            .filter(|e| e["conditions"]["ready"] == true)
            .filter_map(|e| e["addresses"][0].as_str()?.parse().ok())
            .collect();
        (&ready == want).then_some(ready)
    })
    .await;
    found.map_err(|err| {
        let slices = cluster
            .kubectl(&["get", "endpointslices", "-o", "yaml"])
            .unwrap_or_default();
        err.context(slices)
    })
}

/// Waits until no pod namespace is pinned, no attachment is cached and host-local holds no
/// address.
async fn leaves_nothing(data: &Path, ipam_dir: &Path, when: &str) -> Result<()> {
    let what = format!("nothing left {when}");
    let left = || {
        let netns = pinned(&data.join("netns"));
        let cached = files(&data.join("cni"), |n| n.ends_with(".json"));
        let ips = files(&ipam_dir.join(NETWORK), |n| n.parse::<Ipv4Addr>().is_ok());
        (netns, cached, ips)
    };
    let done = eventually(Duration::from_secs(90), &what, || {
        (left() == (0, 0, 0)).then_some(())
    })
    .await;
    done.map_err(|err| {
        let (netns, cached, ips) = left();
        err.context(format!(
            "{netns} namespaces, {cached} attachments, {ips} addresses left"
        ))
    })
}

fn files(dir: &Path, matches: impl Fn(&str) -> bool) -> usize {
    let entries = std::fs::read_dir(dir).into_iter().flatten().flatten();
    entries
        .filter(|e| matches(&e.file_name().to_string_lossy()))
        .count()
}

fn pinned(dir: &Path) -> usize {
    let entries = std::fs::read_dir(dir).into_iter().flatten().flatten();
    entries
        .filter(|e| wasmlet_netns::is_pinned(&e.path()))
        .count()
}

fn unpin_all(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let _ = wasmlet_netns::remove(&entry.path());
    }
}

/// The message of the latest Warning event `reason` about pod `name`.
fn sandbox_event(cluster: &Cluster, name: &str, reason: &str) -> Option<String> {
    let selector = format!("involvedObject.name={name},reason={reason}");
    let list = cluster
        .kubectl_json(&["get", "events", "--field-selector", &selector])
        .ok()?;
    let last = list["items"].as_array()?.last()?;
    last["message"].as_str().map(str::to_owned)
}

const TOLERATE: &str = "tolerations: [{operator: Exists}]";

fn web(host: &str, replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: default}}\n\
         spec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    \
         metadata: {{labels: {{app: web}}}}\n    spec:\n      imagePullSecrets: [{{name: regcred}}]\n      \
         terminationGracePeriodSeconds: 1\n      {TOLERATE}\n      \
         containers:\n      - name: web\n        image: '{host}/demo/http-hello:v1'\n        \
         ports: [{{containerPort: 8080}}]\n        \
         readinessProbe: {{httpGet: {{path: /, port: 8080}}, periodSeconds: 1}}\n\
         ---\napiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: default}}\n\
         spec:\n  selector: {{app: web}}\n  ports: [{{port: 80, targetPort: 8080}}]\n"
    )
}

fn host_port_pod(host: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: hp, namespace: default}}\nspec:\n  \
         imagePullSecrets: [{{name: regcred}}]\n  terminationGracePeriodSeconds: 1\n  {TOLERATE}\n  \
         containers:\n  - name: web\n    image: '{host}/demo/http-hello:v1'\n    \
         ports: [{{containerPort: 8080, hostPort: {HOST_PORT}}}]\n"
    )
}

fn plain_pod(host: &str, name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  \
         imagePullSecrets: [{{name: regcred}}]\n  terminationGracePeriodSeconds: 1\n  {TOLERATE}\n  \
         containers:\n  - name: web\n    image: '{host}/demo/http-hello:v1'\n"
    )
}
