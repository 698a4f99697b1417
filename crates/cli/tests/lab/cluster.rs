//! The lab's Kubernetes cluster, for the multi-node test and the network benchmark: a
//! control plane (etcd, kube-apiserver, kube-controller-manager allocating each node a pod
//! CIDR, kube-scheduler), the registry holding the wasm images and CoreDNS on one host; two
//! `wasmlet node --network cni` agents whose pods the real bridge, host-local and portmap
//! plugins attach; a stock kubelet on containerd, runc and the wasmlet shim; the real
//! kube-proxy (iptables) on every node of the pod network; routes between the nodes' pod
//! CIDRs written host-gw style. On request ([`Options::loopback_agent`]), one more agent in
//! `--network loopback` mode, whose pods take 127.x addresses of its host.
//!
//! Needs root, as the agent and the kubelet do.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use wasmlet_testkit::image::{File, image_tar};

use super::{Host, Lab, eventually, ok};

/// The cluster's pod network; the controller-manager gives each node a part of it
/// ([`Options::node_cidr_mask`]).
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
/// The Services' network (`tests/cluster/up`'s `--service-cluster-ip-range`).
pub const SERVICE_CIDR: &str = "10.0.0.0/24";
/// The CNI network of the wasm nodes (also the folder of its host-local allocations).
pub const NETWORK: &str = "wasmlet-lab";
/// The registry's port on the control plane's address.
pub const REGISTRY_PORT: u16 = 5000;
/// The wasm nodes in CNI mode.
pub const WASM_NODES: [&str; 2] = ["wasm-a", "wasm-b"];
/// The stock kubelet's node.
pub const NATIVE: &str = "native";
/// The wasm node in loopback mode, when there is one.
pub const LOOPBACK: &str = "wasm-lo";
/// The native busybox image, imported into the kubelet's containerd: `sleep` as a client,
/// or `httpd -h /www` serving [`WWW_INDEX`].
pub const CLIENT_IMAGE: &str = "localhost/wasmlet-test/busybox:v1";
/// What the busybox image's `/www/index.html` holds.
pub const WWW_INDEX: &str = "hello from busybox httpd\n";
/// The wasi:http, wasi:sockets and sleep fixtures in FROM-scratch images, for the shim.
pub const SHIM_HTTP_IMAGE: &str = "localhost/wasmlet-test/http-hello:v1";
pub const SHIM_TCP_IMAGE: &str = "localhost/wasmlet-test/tcp-hello:v1";
pub const SHIM_SLEEP_IMAGE: &str = "localhost/wasmlet-test/sleep:v1";

/// What to build beyond the test's cluster.
#[derive(Clone, Debug)]
pub struct Options {
    /// The size of each node's pod CIDR (the controller-manager's `--node-cidr-mask-size`).
    pub node_cidr_mask: u8,
    /// `--max-pods` of the wasm agents (their default when None).
    pub max_pods: Option<u32>,
    /// One more agent, [`LOOPBACK`], in `--network loopback` mode.
    pub loopback_agent: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            node_cidr_mask: 24,
            max_pods: None,
            loopback_agent: false,
        }
    }
}

/// The lab's cluster: its hosts, the control plane's environment, the nodes' pod CIDRs.
pub struct Cluster {
    pub control: Host,
    /// The agents in CNI mode.
    pub wasm: Vec<Host>,
    pub native: Host,
    /// The agent in loopback mode, when asked for.
    pub loopback: Option<Host>,
    env: HashMap<String, String>,
    pub registry: String,
    /// The pod CIDR of each node of the pod network.
    pub cidrs: BTreeMap<String, Net>,
    options: Options,
}

impl Cluster {
    /// Builds the test's cluster and waits until every node is Ready with its routes and
    /// kube-proxy in place.
    pub fn build(lab: &mut Lab) -> Result<Cluster> {
        Cluster::build_with(lab, Options::default())
    }

    /// Builds the cluster with `options`.
    pub fn build_with(lab: &mut Lab, options: Options) -> Result<Cluster> {
        Cluster::build_with_env(lab, options, &[])
    }

    /// Builds the cluster with `options`, `tests/cluster/up` run with the variables of
    /// `control_env` too (`WASMLET_AGGREGATOR_ROUTING=1` and the like).
    pub fn build_with_env(
        lab: &mut Lab,
        options: Options,
        control_env: &[(&str, &str)],
    ) -> Result<Cluster> {
        let control = lab.host("control", 1)?;
        let wasm = vec![lab.host(WASM_NODES[0], 11)?, lab.host(WASM_NODES[1], 12)?];
        let native = lab.host(NATIVE, 13)?;
        let loopback = match options.loopback_agent {
            true => Some(lab.host(LOOPBACK, 14)?),
            false => None,
        };
        let env = start_control_plane(lab, &control, options.node_cidr_mask, control_env)?;
        let registry = start_registry(lab, &control)?;
        let admin = env
            .get("KUBECONFIG")
            .context("no KUBECONFIG from tests/cluster/up")?;
        start_coredns(lab, &control, admin)?;
        let mut cluster = Cluster {
            control,
            wasm,
            native,
            loopback,
            env,
            registry,
            cidrs: BTreeMap::new(),
            options,
        };
        cluster.push_images(lab)?;
        for host in cluster.wasm.clone() {
            cluster.start_agent(lab, &host)?;
        }
        if let Some(host) = cluster.loopback.clone() {
            cluster.start_agent(lab, &host)?;
        }
        cluster.start_kubelet(lab)?;
        cluster.cidrs = cluster.pod_cidrs()?;
        cluster.write_routes()?;
        for host in cluster.nodes() {
            start_kube_proxy(lab, &cluster, &host)?;
        }
        cluster.nodes_ready()?;
        Ok(cluster)
    }

    /// The nodes of the pod network: the CNI agents' and the kubelet's.
    pub fn nodes(&self) -> Vec<Host> {
        let mut nodes = self.wasm.clone();
        nodes.push(self.native.clone());
        nodes
    }

    /// Whether `host` is the loopback-mode agent's.
    fn is_loopback(&self, host: &Host) -> bool {
        self.loopback.as_ref().is_some_and(|l| l.name == host.name)
    }

    pub fn var(&self, name: &str) -> String {
        self.env.get(name).cloned().unwrap_or_default()
    }

    /// kubectl as the admin, run on the control plane's host; fails on a non-zero exit.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        let output = self.kubectl_output(args)?;
        ok(&output).with_context(|| format!("kubectl {}", args.join(" ")))
    }

    pub fn kubectl_output(&self, args: &[&str]) -> Result<std::process::Output> {
        self.kubectl_output_within(Duration::from_secs(60), args)
    }

    /// kubectl as the admin, killed after `limit`; fails on a non-zero exit.
    pub fn kubectl_within(&self, limit: Duration, args: &[&str]) -> Result<String> {
        let output = self.kubectl_output_within(limit, args)?;
        ok(&output).with_context(|| format!("kubectl {}", args.join(" ")))
    }

    fn kubectl_output_within(
        &self,
        limit: Duration,
        args: &[&str],
    ) -> Result<std::process::Output> {
        let output = self
            .control
            .command_within(limit, cache_bin().join("kubectl"))
            .args(args)
            .env("KUBECONFIG", self.var("KUBECONFIG"))
            .output()?;
        Ok(output)
    }

    pub fn kubectl_json(&self, args: &[&str]) -> Result<Value> {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        Ok(serde_json::from_str(&self.kubectl(&args)?)?)
    }

    pub fn apply(&self, lab: &Lab, manifest: &str) -> Result<()> {
        let path = lab.dir().join("manifest.yaml");
        std::fs::write(&path, manifest)?;
        self.kubectl(&["apply", "-f", &path.to_string_lossy()])?;
        Ok(())
    }

    /// `wasmlet push`, on the control plane's host, of every wasm image the test runs.
    fn push_images(&self, lab: &Lab) -> Result<()> {
        let images: [(&str, &[u8]); 5] = [
            ("http-hello", wasmlet_fixtures::http_hello()),
            ("tcp-hello", wasmlet_fixtures::tcp_hello()),
            ("sleep", wasmlet_fixtures::sleep()),
            ("tcp-fetch", wasmlet_fixtures::tcp_fetch()),
            ("http-fetch", wasmlet_fixtures::http_fetch()),
        ];
        for (name, wasm) in images {
            let file = lab.dir().join(format!("{name}.wasm"));
            std::fs::write(&file, wasm)?;
            let output = self
                .control
                .command_within(Duration::from_secs(60), env!("CARGO_BIN_EXE_wasmlet"))
                .args(["push", "--quiet", "--insecure-registry", &self.registry])
                .arg(&file)
                .arg(self.image(name))
                .env("WASMLET_STORE", lab.dir().join("store"))
                .output()?;
            ok(&output).with_context(|| format!("wasmlet push {name}"))?;
        }
        Ok(())
    }

    pub fn image(&self, name: &str) -> String {
        format!("{}/demo/{name}:v1", self.registry)
    }

    pub fn agent_dir(lab: &Lab, host: &Host) -> PathBuf {
        lab.dir().join(&host.name)
    }

    /// Starts `wasmlet node` on `host` (TLS bootstrap, the lab's CNI configuration unless it
    /// is the loopback-mode agent's) and approves its serving certificate as an admin would.
    fn start_agent(&self, lab: &mut Lab, host: &Host) -> Result<()> {
        let dir = Self::agent_dir(lab, host);
        let conf_dir = dir.join("net.d");
        std::fs::create_dir_all(&conf_dir)?;
        std::fs::write(
            conf_dir.join("10-wasmlet.conflist"),
            wasm_conflist(&dir.join("ipam")),
        )?;
        self.spawn_agent(lab, host)?;
        self.joined(host)
            .map_err(|e| e.context(lab.log_tail(&agent_name(host), 20)))
    }

    /// Waits until the agent of `host` has its serving certificate (approved here) and
    /// serves the kubelet API on its address.
    fn joined(&self, host: &Host) -> Result<()> {
        self.serving_certificates_approved(&[&host.name])?;
        let url = format!("https://{}:10250/healthz", host.ip);
        eventually(Duration::from_secs(30), "the kubelet API to listen", || {
            let answer = self.control.run(&["curl", "-sk", "-o", "/dev/null", &url]);
            answer.ok()
        })?;
        Ok(())
    }

    /// The agent process of `host`, on its data directory (a restart finds its state).
    pub fn spawn_agent(&self, lab: &mut Lab, host: &Host) -> Result<()> {
        let dir = Self::agent_dir(lab, host);
        let data = dir.join("data");
        let mut command = host.command(env!("CARGO_BIN_EXE_wasmlet"));
        command
            .args(["node", "--node-name", &host.name])
            .args(["--node-ip", &host.ip.to_string(), "--port", "10250"])
            .arg("--data-dir")
            .arg(&data)
            .arg("--kubeconfig")
            .arg(data.join("kubeconfig"))
            .args([
                "--bootstrap-kubeconfig",
                &self.var("WASMLET_BOOTSTRAP_KUBECONFIG"),
            ])
            .args(["--insecure-registry", &self.registry]);
        if self.is_loopback(host) {
            command.args(["--network", "loopback"]);
        } else {
            command
                .args(["--network", "cni", "--cni-bin-dir", "/usr/lib/cni"])
                .arg("--cni-conf-dir")
                .arg(dir.join("net.d"));
        }
        if let Some(max) = self.options.max_pods {
            command.args(["--max-pods", &max.to_string()]);
        }
        command
            // CoreDNS on the control plane; no resolver of the machine's own is handed on.
            .args(["--cluster-dns", &self.control.ip.to_string()])
            .args(["--cluster-domain", "cluster.local", "--resolv-conf="])
            .args(["--eviction-hard", "nodefs.available<1%"])
            .env("WASMLET_LOG", "info");
        lab.spawn(&agent_name(host), command)
    }

    /// Approves the pending serving CSRs of `nodes` until each has one approved.
    fn serving_certificates_approved(&self, nodes: &[&str]) -> Result<()> {
        let mut left: BTreeSet<String> = nodes.iter().map(|n| n.to_string()).collect();
        eventually(Duration::from_secs(60), "serving CSRs to approve", || {
            let list = self.kubectl_json(&["get", "csr"]).ok()?;
            for csr in list["items"].as_array()? {
                let user = csr["spec"]["username"].as_str().unwrap_or_default();
                let Some(node) = user.strip_prefix("system:node:") else {
                    continue;
                };
                let serving = csr["spec"]["signerName"] == "kubernetes.io/kubelet-serving";
                let pending = csr["status"]["conditions"].is_null();
                if serving && pending && left.contains(node) {
                    let name = csr["metadata"]["name"].as_str()?;
                    self.kubectl(&["certificate", "approve", name]).ok()?;
                    left.remove(node);
                }
            }
            left.is_empty().then_some(())
        })
    }

    /// containerd (runc, the CNI bridge rendered from a template with the node's pod CIDR)
    /// and the stock kubelet on the native node, with the busybox image imported.
    fn start_kubelet(&self, lab: &mut Lab) -> Result<()> {
        let state = lab.dir().join("containerd");
        let template = lab.dir().join("native-cni.template");
        std::fs::write(&template, native_conflist_template(&state.join("ipam")))?;
        let root = repo_root();
        let down_state = state.clone();
        let down_root = root.clone();
        lab.on_teardown(move || {
            let _ = std::process::Command::new("timeout")
                .args(["60", "bash"])
                .arg(down_root.join("tests/containerd/down"))
                .arg(&down_state)
                .output();
        });
        let output = self
            .native
            .command_within(Duration::from_secs(90), "bash")
            .arg(root.join("tests/containerd/up"))
            .arg(&state)
            .env("WASMLET_SHIM_DIR", shim_dir()?)
            .env("WASMLET_CNI_CONF_TEMPLATE", &template)
            .output()?;
        let env_file = ok(&output).context("tests/containerd/up")?;
        let containerd = parse_env(&std::fs::read_to_string(env_file.trim())?);
        import_native_images(lab, &containerd)?;
        let output = self
            .native
            .command_within(Duration::from_secs(150), "bash")
            .arg(root.join("tests/containerd/kubelet"))
            .arg(self.var("WASMLET_CLUSTER_STATE") + "/env")
            .arg(&state)
            .env("WASMLET_KUBELET_NODE_IP", self.native.ip.to_string())
            .output()?;
        ok(&output).context("tests/containerd/kubelet")?;
        Ok(())
    }

    /// Every node's `spec.podCIDR`, once the controller-manager has allocated them.
    fn pod_cidrs(&self) -> Result<BTreeMap<String, Net>> {
        let names: Vec<String> = self.nodes().iter().map(|h| h.name.clone()).collect();
        eventually(Duration::from_secs(60), "every node's podCIDR", || {
            let list = self.kubectl_json(&["get", "nodes"]).ok()?;
            let cidrs: BTreeMap<String, Net> = list["items"]
                .as_array()?
                .iter()
                .filter_map(|n| {
                    let name = n["metadata"]["name"].as_str()?;
                    let cidr = n["spec"]["podCIDR"].as_str()?.parse().ok()?;
                    Some((name.to_string(), cidr))
                })
                .collect();
            names.iter().all(|n| cidrs.contains_key(n)).then_some(cidrs)
        })
    }

    /// host-gw routes: on every host, each other node's pod CIDR via that node's address.
    fn write_routes(&self) -> Result<()> {
        let mut hosts = self.nodes();
        hosts.push(self.control.clone());
        for host in &hosts {
            for node in self.nodes().iter().filter(|n| n.name != host.name) {
                let cidr = self.cidrs[&node.name].to_string();
                let via = node.ip.to_string();
                super::ip(&["-n", &host.ns, "route", "replace", &cidr, "via", &via])?;
            }
        }
        Ok(())
    }

    /// Waits until every node is Ready.
    fn nodes_ready(&self) -> Result<()> {
        let nodes = self.nodes().len() + usize::from(self.loopback.is_some());
        eventually(Duration::from_secs(90), "every node Ready", || {
            let list = self.kubectl_json(&["get", "nodes"]).ok()?;
            let ready = list["items"]
                .as_array()?
                .iter()
                .filter(|n| condition(n, "Ready") == Some("True"))
                .count();
            (ready == nodes).then_some(())
        })
    }

    /// Routes the Service network out of the kubelet's node through its eth0: the lab's hosts
    /// have no default route, and a node's connections to a ClusterIP must leave it for
    /// kube-proxy's rules to rewrite them.
    pub fn route_services_from_native(&self) -> Result<()> {
        let ns = &self.native.ns;
        super::ip(&["-n", ns, "route", "replace", SERVICE_CIDR, "dev", "eth0"]).map(drop)
    }

    /// The node of host `name`.
    pub fn host(&self, name: &str) -> Result<&Host> {
        let mut nodes = self.wasm.iter().chain([&self.native]).chain(&self.loopback);
        nodes
            .find(|h| h.name == name)
            .with_context(|| format!("no host {name}"))
    }

    /// What helps to read a failure: pods, events, and the logs' ends.
    pub fn diagnostics(&self, lab: &Lab) -> String {
        let pods = self
            .kubectl(&["get", "pods", "-o", "wide", "-A"])
            .unwrap_or_default();
        let nodes = self
            .kubectl(&["get", "nodes", "-o", "wide"])
            .unwrap_or_default();
        let events = self
            .kubectl(&["get", "events", "--sort-by=.lastTimestamp"])
            .unwrap_or_default();
        let events: Vec<&str> = events.lines().rev().take(40).collect();
        let mut logs = String::new();
        for host in self.nodes().iter().chain(&self.loopback) {
            logs.push_str(&lab.log_tail(&agent_name(host), 15));
            logs.push_str(&lab.log_tail(&format!("kube-proxy-{}", host.name), 8));
            logs.push('\n');
        }
        format!(
            "nodes:\n{nodes}\npods:\n{pods}\nlast events:\n{}\n{logs}",
            events.join("\n")
        )
    }
}

pub fn agent_name(host: &Host) -> String {
    format!("agent-{}", host.name)
}

/// `tests/cluster/up` on the control plane's host, binding and advertising its address,
/// with `control_env` in its environment.
fn start_control_plane(
    lab: &mut Lab,
    control: &Host,
    node_cidr_mask: u8,
    control_env: &[(&str, &str)],
) -> Result<HashMap<String, String>> {
    let state = lab.dir().join("cluster");
    std::fs::create_dir_all(&state)?;
    let root = repo_root();
    let down_state = state.clone();
    let down_root = root.clone();
    lab.on_teardown(move || {
        let _ = std::process::Command::new("timeout")
            .args(["60", "bash"])
            .arg(down_root.join("tests/cluster/down"))
            .arg(&down_state)
            .output();
    });
    let output = control
        .command_within(Duration::from_secs(240), "bash")
        .arg(root.join("tests/cluster/up"))
        .arg(&state)
        .env("WASMLET_CLUSTER_ADDRESS", control.ip.to_string())
        .env("WASMLET_CLUSTER_CIDR", CLUSTER_CIDR)
        .env("WASMLET_NODE_CIDR_MASK", node_cidr_mask.to_string())
        .env("WASMLET_NODE_NAME", NATIVE)
        .envs(control_env.iter().copied())
        .output()?;
    let env_file = ok(&output).context("tests/cluster/up")?;
    Ok(parse_env(&std::fs::read_to_string(env_file.trim())?))
}

/// Debian's `docker-registry` on the control plane's address (open: the cluster's own).
fn start_registry(lab: &mut Lab, control: &Host) -> Result<String> {
    let host = format!("{}:{REGISTRY_PORT}", control.ip);
    let dir = lab.dir().join("registry");
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: {host}\n",
            dir.join("storage").display()
        ),
    )?;
    let mut command = control.command(wasmlet_testkit::tool("docker-registry"));
    command.arg("serve").arg(&config);
    lab.spawn("registry", command)?;
    let url = format!("http://{host}/v2/");
    eventually(Duration::from_secs(20), "the registry", || {
        control.run(&["curl", "-sf", "-o", "/dev/null", &url]).ok()
    })?;
    Ok(host)
}

/// CoreDNS on port 53 of the control plane's host: the cluster's DNS server
/// (`--cluster-dns` of the nodes), answering for `cluster.local` from the API server.
fn start_coredns(lab: &mut Lab, control: &Host, kubeconfig: &str) -> Result<()> {
    let corefile = lab.dir().join("Corefile");
    std::fs::write(
        &corefile,
        format!(
            ".:53 {{\n  errors\n  health 127.0.0.1:8080\n  ready 127.0.0.1:8181\n  \
             kubernetes cluster.local in-addr.arpa ip6.arpa {{\n    kubeconfig {kubeconfig}\n    \
             pods insecure\n  }}\n  cache 30\n}}\n"
        ),
    )?;
    let mut command = control.command(cache_bin().join("coredns"));
    command.arg("-conf").arg(&corefile);
    lab.spawn("coredns", command)?;
    eventually(Duration::from_secs(30), "CoreDNS ready", || {
        let ready = "http://127.0.0.1:8181/ready";
        control.run(&["curl", "-sf", "-o", "/dev/null", ready]).ok()
    })
    .map_err(|e| e.context(lab.log_tail("coredns", 20)))?;
    Ok(())
}

/// kube-proxy (iptables mode) on `host`, as node `host.name`, waiting for its health check.
fn start_kube_proxy(lab: &mut Lab, cluster: &Cluster, host: &Host) -> Result<()> {
    let config = lab.dir().join(format!("kube-proxy-{}.yaml", host.name));
    std::fs::write(
        &config,
        format!(
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
             clientConnection: {{kubeconfig: {}}}\nhostnameOverride: {}\nmode: iptables\n\
             clusterCIDR: {CLUSTER_CIDR}\nhealthzBindAddress: {}:10256\n\
             metricsBindAddress: 127.0.0.1:10249\nnodePortAddresses: [primary]\noomScoreAdj: 0\n\
             conntrack: {{maxPerCore: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}}\n",
            cluster.var("WASMLET_KUBE_PROXY_KUBECONFIG"),
            host.name,
            host.ip
        ),
    )?;
    let mut command = host.command(cache_bin().join("kube-proxy"));
    command.arg("--config").arg(&config);
    let name = format!("kube-proxy-{}", host.name);
    lab.spawn(&name, command)?;
    let url = format!("http://{}:10256/healthz", host.ip);
    eventually(Duration::from_secs(60), "kube-proxy healthy", || {
        host.run(&["curl", "-sf", "-o", "/dev/null", &url]).ok()
    })
    .map_err(|e| e.context(lab.log_tail(&name, 20)))?;
    Ok(())
}

/// The pause image containerd's CRI is configured with, the busybox client image, and the
/// FROM-scratch images of the wasm programs the shim runs.
fn import_native_images(lab: &Lab, containerd: &HashMap<String, String>) -> Result<()> {
    let busybox = std::fs::read("/bin/busybox").context("busybox-static (tests/setup)")?;
    let files = [File("/bin/busybox", &busybox, 0o755)];
    let client = [
        File("/bin/busybox", &busybox, 0o755),
        File("/www/index.html", WWW_INDEX.as_bytes(), 0o644),
    ];
    let pause = containerd
        .get("WASMLET_PAUSE_IMAGE")
        .context("no pause image")?;
    let http = [File("/http.wasm", wasmlet_fixtures::http_hello(), 0o755)];
    let tcp = [File("/tcp.wasm", wasmlet_fixtures::tcp_hello(), 0o755)];
    let sleep = [File("/sleep.wasm", wasmlet_fixtures::sleep(), 0o755)];
    let images: [(&str, &[File], &[&str]); 5] = [
        (
            pause.as_str(),
            &files,
            &["/bin/busybox", "sleep", "2147483647"],
        ),
        (CLIENT_IMAGE, &client, &["/bin/busybox", "sleep", "3600"]),
        (SHIM_HTTP_IMAGE, &http, &["/http.wasm"]),
        (SHIM_TCP_IMAGE, &tcp, &["/tcp.wasm"]),
        (SHIM_SLEEP_IMAGE, &sleep, &["/sleep.wasm"]),
    ];
    for (name, files, entry) in images {
        let tar = image_tar(lab.dir(), name, files, entry, &[])?;
        let output = std::process::Command::new(cache_bin().join("ctr"))
            .args(["--address", &containerd["CONTAINERD_ADDRESS"]])
            .args([
                "-n",
                "k8s.io",
                "images",
                "import",
                "--platform",
                "linux/amd64",
            ])
            .arg(&tar)
            .output()?;
        ok(&output).with_context(|| format!("ctr images import {name}"))?;
    }
    Ok(())
}

// ---- what the nodes hold ----------------------------------------------------------------

/// The pod namespaces pinned under an agent's data directory.
pub fn pinned(agent_dir: &Path) -> usize {
    super::nsfs_mounts_under(&agent_dir.join("data/netns")).len()
}

/// The addresses host-local holds for the agent's network.
pub fn allocations(agent_dir: &Path) -> usize {
    let dir = agent_dir.join("ipam").join(NETWORK);
    files(&dir, |n| n.parse::<Ipv4Addr>().is_ok())
}

/// The veths in a node's namespace other than its own link to the switch.
pub fn pod_veths(host: &Host) -> usize {
    let links = super::ip(&["-n", &host.ns, "-o", "link", "show", "type", "veth"]);
    let links = links.unwrap_or_default();
    links.lines().filter(|l| !l.contains(" eth0@")).count()
}

pub fn files(dir: &Path, matches: impl Fn(&str) -> bool) -> usize {
    let entries = std::fs::read_dir(dir).into_iter().flatten().flatten();
    entries
        .filter(|e| matches(&e.file_name().to_string_lossy()))
        .count()
}

// ---- waits on what kubectl shows ---------------------------------------------------------

/// Waits until Deployment `name` has `replicas` available pods; returns its pods.
pub fn available(cluster: &Cluster, name: &str, replicas: i64) -> Result<Vec<Value>> {
    let what = format!("{replicas} available replicas of {name}");
    let selector = format!("app={name}");
    eventually(Duration::from_secs(120), &what, || {
        let deployment = cluster.kubectl_json(&["get", "deployment", name]).ok()?;
        let status = &deployment["status"];
        let done = status["availableReplicas"].as_i64() == Some(replicas)
            && status["replicas"].as_i64() == Some(replicas);
        done.then_some(())?;
        let list = cluster
            .kubectl_json(&["get", "pods", "-l", &selector])
            .ok()?;
        let items = list["items"].as_array()?.clone();
        (items.len() as i64 == replicas).then_some(items)
    })
}

pub fn phase(cluster: &Cluster, pod: &str, phase: &str) -> Result<Value> {
    let what = format!("pod {pod} {phase}");
    eventually(Duration::from_secs(90), &what, || {
        let pod = cluster.kubectl_json(&["get", "pod", pod]).ok()?;
        (pod["status"]["phase"] == phase).then_some(pod)
    })
}

/// Waits until Service `name`'s EndpointSlices list `want` as Ready; returns what they list.
pub fn endpoints(
    cluster: &Cluster,
    name: &str,
    want: &BTreeSet<Ipv4Addr>,
) -> Result<BTreeSet<Ipv4Addr>> {
    let selector = format!("kubernetes.io/service-name={name}");
    let mut ready = BTreeSet::new();
    let found = eventually(Duration::from_secs(60), "the Service's endpoints", || {
        let list = cluster
            .kubectl_json(&["get", "endpointslices", "-l", &selector])
            .ok()?;
        let endpoints = list["items"]
            .as_array()?
            .iter()
            .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default());
        ready = endpoints
            .filter(|e| e["conditions"]["ready"] == true)
            .filter_map(|e| e["addresses"][0].as_str()?.parse().ok())
            .collect();
        (&ready == want).then(|| ready.clone())
    });
    found.or(Ok(ready))
}

pub fn pod_ip(pod: &Value) -> Result<Ipv4Addr> {
    let ip = pod["status"]["podIP"].as_str().context("no podIP")?;
    ensure!(
        pod["status"]["podIPs"][0]["ip"] == ip,
        "podIPs starts with podIP"
    );
    Ok(ip.parse()?)
}

pub fn condition<'a>(object: &'a Value, kind: &str) -> Option<&'a str> {
    let conditions = object["status"]["conditions"].as_array()?;
    let found = conditions.iter().find(|c| c["type"] == kind)?;
    found["status"].as_str()
}

// ---- configurations ---------------------------------------------------------------------

/// The wasm nodes' network: a bridge (the pods' default gateway) whose host-local IPAM takes
/// the node's pod CIDR from the runtime (`ipRanges`), and portmap for host ports.
fn wasm_conflist(ipam_dir: &Path) -> String {
    format!(
        r#"{{"cniVersion":"1.0.0","name":"{NETWORK}","plugins":[
          {{"type":"bridge","bridge":"wl0","isDefaultGateway":true,"ipMasq":false,
            "capabilities":{{"ipRanges":true}},
            "ipam":{{"type":"host-local","dataDir":"{}"}}}},
          {{"type":"portmap","capabilities":{{"portMappings":true}}}}]}}"#,
        ipam_dir.display()
    )
}

/// The native node's network, as containerd renders it with the node's pod CIDR.
fn native_conflist_template(ipam_dir: &Path) -> String {
    format!(
        r#"{{"cniVersion":"1.0.0","name":"native","plugins":[
          {{"type":"bridge","bridge":"cni0","isDefaultGateway":true,"ipMasq":false,
            "ipam":{{"type":"host-local","dataDir":"{}",
              "ranges":[{{{{range $i, $r := .PodCIDRRanges}}}}{{{{if $i}}}},{{{{end}}}}[{{"subnet":"{{{{$r}}}}"}}]{{{{end}}}}]}}}},
          {{"type":"portmap","capabilities":{{"portMappings":true}}}}]}}"#,
        ipam_dir.display()
    )
}

// ---- small things ------------------------------------------------------------------------

/// An IPv4 network, as the test reads `spec.podCIDR`.
#[derive(Clone, Copy, Debug)]
pub struct Net {
    pub base: Ipv4Addr,
    pub prefix: u32,
}

impl Net {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX.checked_shl(32 - self.prefix).unwrap_or(0);
        u32::from(ip) & mask == u32::from(self.base)
    }
}

impl std::str::FromStr for Net {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Net> {
        let (ip, prefix) = text.split_once('/').context("no prefix length")?;
        let prefix: u32 = prefix.parse()?;
        if prefix > 32 {
            bail!("prefix length {prefix}");
        }
        Ok(Net {
            base: ip.parse()?,
            prefix,
        })
    }
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

fn parse_env(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("export "))
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.to_string(), value.trim_matches('"').to_string()))
        .collect()
}

/// The folder of the built `containerd-shim-wasmlet-v1`: `$WASMLET_SHIM_DIR` when set, else
/// the target directory's profile this test was built with (`cargo test --workspace` builds
/// the shim; `--release` the release one).
pub fn shim_dir() -> Result<PathBuf> {
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let dir = match std::env::var_os("WASMLET_SHIM_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/cache/wasmlet/target"))
            .join(profile),
    };
    ensure!(
        dir.join("containerd-shim-wasmlet-v1").is_file(),
        "no containerd-shim-wasmlet-v1 in {}: build it (cargo build{} -p wasmlet-shim)",
        dir.display(),
        if profile == "release" {
            " --release"
        } else {
            ""
        }
    );
    Ok(dir)
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn cache_bin() -> PathBuf {
    let cache = std::env::var("WASMLET_CACHE").unwrap_or_else(|_| "/var/cache/wasmlet".into());
    Path::new(&cache).join("bin")
}
