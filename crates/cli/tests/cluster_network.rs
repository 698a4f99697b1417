//! `wasmlet node --network cni` as a member of a cluster of several machines, each a network
//! namespace the test creates (see `lab`): a control plane (etcd, kube-apiserver,
//! kube-controller-manager allocating each node a pod CIDR, kube-scheduler) and the registry
//! holding the wasm images; two `wasmlet node` agents whose pods the real bridge, host-local
//! and portmap plugins attach; a stock kubelet on containerd and runc for native client pods;
//! the real kube-proxy (iptables) on every node; routes between the nodes' pod CIDRs written
//! host-gw style; CoreDNS on the control plane's address serving `cluster.local` from the API
//! server. Everything is checked with kubectl as a user types it.
//!
//! Needs root, as the agent and the kubelet do.

mod lab;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use lab::{Host, Lab, eventually, eventually_ok, ok};
use serde_json::Value;
use wasmlet_testkit::image::{File, image_tar};

/// The cluster's pod network; the controller-manager gives each node a /24 of it.
const CLUSTER_CIDR: &str = "10.244.0.0/16";
/// The CNI network of the wasm nodes (also the folder of its host-local allocations).
const NETWORK: &str = "wasmlet-lab";
/// The registry's port on the control plane's address.
const REGISTRY_PORT: u16 = 5000;
/// The wasm nodes.
const WASM_NODES: [&str; 2] = ["wasm-a", "wasm-b"];
/// The stock kubelet's node.
const NATIVE: &str = "native";
/// The native client image (busybox), imported into the kubelet's containerd.
const CLIENT_IMAGE: &str = "localhost/wasmlet-test/busybox:v1";
const HELLO_HTTP: &str = "hello from wasi:http!";
/// The wasi:http and wasi:sockets fixtures in FROM-scratch images, for the shim.
const SHIM_HTTP_IMAGE: &str = "localhost/wasmlet-test/http-hello:v1";
const SHIM_TCP_IMAGE: &str = "localhost/wasmlet-test/tcp-hello:v1";
const HOST_PORT: u16 = 30080;

#[test]
fn wasm_pods_are_members_of_a_multi_node_cluster_network() -> Result<()> {
    let started = Instant::now();
    let mut lab = Lab::new()?;
    let cluster = Cluster::build(&mut lab)?;
    eprintln!("cluster of 4 hosts ready in {:?}", started.elapsed());
    let outcome = end_to_end(&mut lab, &cluster)
        .context("end to end")
        .and_then(|_| faults(&mut lab, &cluster).context("faults"));
    eprintln!("finished in {:?}", started.elapsed());
    let outcome = outcome.map_err(|err| err.context(cluster.diagnostics(&lab)));
    if let (Err(err), Ok(hold)) = (&outcome, std::env::var("WASMLET_LAB_HOLD")) {
        // For a person investigating: the lab stays up that many seconds.
        eprintln!(
            "{err:?}\nholding the lab ({}) for {hold} s",
            lab.dir().display()
        );
        std::thread::sleep(Duration::from_secs(hold.parse().unwrap_or(600)));
    }
    outcome
}

/// The lab's cluster: its hosts, the control plane's environment, the nodes' pod CIDRs.
struct Cluster {
    control: Host,
    wasm: Vec<Host>,
    native: Host,
    env: HashMap<String, String>,
    registry: String,
    cidrs: BTreeMap<String, Net>,
}

impl Cluster {
    /// Builds the whole cluster and waits until every node is Ready with its routes and
    /// kube-proxy in place.
    fn build(lab: &mut Lab) -> Result<Cluster> {
        let control = lab.host("control", 1)?;
        let wasm = vec![lab.host(WASM_NODES[0], 11)?, lab.host(WASM_NODES[1], 12)?];
        let native = lab.host(NATIVE, 13)?;
        let env = start_control_plane(lab, &control)?;
        let registry = start_registry(lab, &control)?;
        let admin = env
            .get("KUBECONFIG")
            .context("no KUBECONFIG from tests/cluster/up")?;
        start_coredns(lab, &control, admin)?;
        let mut cluster = Cluster {
            control,
            wasm,
            native,
            env,
            registry,
            cidrs: BTreeMap::new(),
        };
        cluster.push_images(lab)?;
        for host in cluster.wasm.clone() {
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

    fn nodes(&self) -> Vec<Host> {
        let mut nodes = self.wasm.clone();
        nodes.push(self.native.clone());
        nodes
    }

    fn var(&self, name: &str) -> String {
        self.env.get(name).cloned().unwrap_or_default()
    }

    /// kubectl as the admin, run on the control plane's host; fails on a non-zero exit.
    fn kubectl(&self, args: &[&str]) -> Result<String> {
        let output = self.kubectl_output(args)?;
        ok(&output).with_context(|| format!("kubectl {}", args.join(" ")))
    }

    fn kubectl_output(&self, args: &[&str]) -> Result<std::process::Output> {
        let output = self
            .control
            .command_within(Duration::from_secs(60), cache_bin().join("kubectl"))
            .args(args)
            .env("KUBECONFIG", self.var("KUBECONFIG"))
            .output()?;
        Ok(output)
    }

    fn kubectl_json(&self, args: &[&str]) -> Result<Value> {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        Ok(serde_json::from_str(&self.kubectl(&args)?)?)
    }

    fn apply(&self, lab: &Lab, manifest: &str) -> Result<()> {
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

    fn image(&self, name: &str) -> String {
        format!("{}/demo/{name}:v1", self.registry)
    }

    fn agent_dir(lab: &Lab, host: &Host) -> PathBuf {
        lab.dir().join(&host.name)
    }

    /// Starts `wasmlet node` on `host` (TLS bootstrap, the lab's CNI configuration) and
    /// approves its serving certificate as an admin would.
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
    fn spawn_agent(&self, lab: &mut Lab, host: &Host) -> Result<()> {
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
            .args(["--network", "cni", "--cni-bin-dir", "/usr/lib/cni"])
            .arg("--cni-conf-dir")
            .arg(dir.join("net.d"))
            .args(["--insecure-registry", &self.registry])
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
                lab::ip(&["-n", &host.ns, "route", "replace", &cidr, "via", &via])?;
            }
        }
        Ok(())
    }

    /// Waits until every node is Ready.
    fn nodes_ready(&self) -> Result<()> {
        eventually(Duration::from_secs(90), "every node Ready", || {
            let list = self.kubectl_json(&["get", "nodes"]).ok()?;
            let ready = list["items"]
                .as_array()?
                .iter()
                .filter(|n| condition(n, "Ready") == Some("True"))
                .count();
            (ready == 3).then_some(())
        })
    }

    /// The node of host `name`.
    fn host(&self, name: &str) -> Result<&Host> {
        let nodes = self.wasm.iter().chain([&self.native]);
        nodes
            .into_iter()
            .find(|h| h.name == name)
            .with_context(|| format!("no host {name}"))
    }

    /// What helps to read a failure: pods, events, and the logs' ends.
    fn diagnostics(&self, lab: &Lab) -> String {
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
        for host in self.nodes() {
            logs.push_str(&lab.log_tail(&agent_name(&host), 15));
            logs.push_str(&lab.log_tail(&format!("kube-proxy-{}", host.name), 8));
            logs.push('\n');
        }
        format!(
            "nodes:\n{nodes}\npods:\n{pods}\nlast events:\n{}\n{logs}",
            events.join("\n")
        )
    }
}

fn agent_name(host: &Host) -> String {
    format!("agent-{}", host.name)
}

/// `tests/cluster/up` on the control plane's host, binding and advertising its address.
fn start_control_plane(lab: &mut Lab, control: &Host) -> Result<HashMap<String, String>> {
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
        .env("WASMLET_NODE_NAME", NATIVE)
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
    let pause = containerd
        .get("WASMLET_PAUSE_IMAGE")
        .context("no pause image")?;
    let http = [File("/http.wasm", wasmlet_fixtures::http_hello(), 0o755)];
    let tcp = [File("/tcp.wasm", wasmlet_fixtures::tcp_hello(), 0o755)];
    let images: [(&str, &[File], &[&str]); 4] = [
        (
            pause.as_str(),
            &files,
            &["/bin/busybox", "sleep", "2147483647"],
        ),
        (CLIENT_IMAGE, &files, &["/bin/busybox", "sleep", "3600"]),
        (SHIM_HTTP_IMAGE, &http, &["/http.wasm"]),
        (SHIM_TCP_IMAGE, &tcp, &["/tcp.wasm"]),
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

// ---- end to end ------------------------------------------------------------------------

/// A Deployment of the wasi:http component on both wasm nodes behind a Service, reached from
/// a native pod by ClusterIP and pod IPs; a hostPort; port-forward; exec's refusal;
/// wasi:sockets reached at its pod IP.
fn end_to_end(lab: &mut Lab, cluster: &Cluster) -> Result<()> {
    cluster.apply(lab, &web(cluster, 4))?;
    cluster.apply(lab, &client_pod())?;
    cluster.apply(lab, &host_port_pod(cluster))?;
    cluster.apply(lab, &tcp_pod(cluster))?;
    let pods = available(cluster, "web", 4)?;
    let spread: BTreeSet<&str> = pods
        .iter()
        .filter_map(|p| p["spec"]["nodeName"].as_str())
        .collect();
    ensure!(
        spread == BTreeSet::from(WASM_NODES),
        "replicas not spread over both wasm nodes: {spread:?}"
    );
    let mut ips = BTreeSet::new();
    for pod in &pods {
        let node = pod["spec"]["nodeName"].as_str().context("nodeName")?;
        let ip = pod_ip(pod)?;
        ensure!(
            cluster.cidrs[node].contains(ip),
            "{ip} is not in {node}'s {}",
            cluster.cidrs[node]
        );
        ips.insert(ip);
    }
    ensure!(ips.len() == 4, "pod IPs are not distinct: {ips:?}");
    let listed = endpoints(cluster, "web", &ips)?;
    ensure!(
        listed == ips,
        "the EndpointSlice lists {listed:?}, not {ips:?}"
    );

    phase(cluster, "client", "Running")?;
    let service = cluster.kubectl_json(&["get", "service", "web"])?;
    let cluster_ip = service["spec"]["clusterIP"].as_str().context("clusterIP")?;
    let answer = eventually_ok(Duration::from_secs(30), "the ClusterIP to answer", || {
        get_from_client(cluster, cluster_ip, 80)
    })?;
    ensure!(answer == HELLO_HTTP, "ClusterIP answered {answer:?}");
    let name = "web.default.svc.cluster.local";
    let lookup = format!("busybox nslookup {name} {}", cluster.control.ip);
    let resolved = eventually_ok(Duration::from_secs(30), "the Service's name", || {
        let out = cluster.kubectl(&["exec", "client", "--", "busybox", "sh", "-c", &lookup])?;
        ensure!(out.contains(cluster_ip), "nslookup {name}: {out}");
        Ok(out)
    })?;
    ensure!(resolved.contains(name), "{resolved}");
    for ip in &ips {
        let what = format!("{ip} to answer");
        let answer = eventually_ok(Duration::from_secs(10), &what, || {
            get_from_client(cluster, &ip.to_string(), 8080)
        })?;
        ensure!(answer == HELLO_HTTP, "{ip} answered {answer:?}");
    }

    phase(cluster, "hp", "Running")?;
    let node = cluster.host(WASM_NODES[1])?.ip.to_string();
    let answer = eventually_ok(Duration::from_secs(30), "the hostPort to answer", || {
        get_from_client(cluster, &node, HOST_PORT)
    })?;
    ensure!(answer == HELLO_HTTP, "the hostPort answered {answer:?}");

    let tcp = phase(cluster, "tcp", "Running")?;
    let tcp_ip = pod_ip(&tcp)?;
    let script = format!("busybox nc -w 5 {tcp_ip} 7000 </dev/null");
    let greeting = eventually(Duration::from_secs(30), "wasi:sockets to answer", || {
        let out = cluster.kubectl(&["exec", "client", "--", "busybox", "sh", "-c", &script]);
        out.ok().filter(|o| !o.is_empty())
    })?;
    ensure!(
        greeting.trim() == "hello from wasi:sockets!",
        "tcp_hello answered {greeting:?}"
    );

    wasm_clients(lab, cluster, cluster_ip)?;
    shim_pods(lab, cluster)?;

    let first = pods[0]["metadata"]["name"].as_str().context("name")?;
    port_forward(lab, cluster, first)?;
    exec_refused(cluster, first)?;

    let owned = [
        "deployment/web",
        "pod/hp",
        "pod/tcp",
        "service/web",
        "service/greeter",
    ];
    let shim = [
        "deployment/shimweb",
        "service/shimweb",
        "pod/shimtcp",
        "service/shimtcp",
    ];
    let more = ["pod/fetch", "pod/proxy", "pod/fetch-shim"]
        .into_iter()
        .chain(shim);
    for kind_name in owned.into_iter().chain(more) {
        cluster.kubectl(&["delete", kind_name, "--wait=false"])?;
    }
    Ok(())
}

/// Wasm pods as clients of the cluster, by Service name through CoreDNS (the agents'
/// `--cluster-dns`) and by ClusterIP through kube-proxy: `tcp_fetch` (wasi:sockets name
/// lookup and connect) reaches the `tcp` pod through its Service `greeter`; `http_fetch`
/// (outgoing wasi:http) reaches the `web` Service by its short name.
fn wasm_clients(lab: &mut Lab, cluster: &Cluster, web_ip: &str) -> Result<()> {
    cluster.kubectl(&["label", "pod", "tcp", "app=tcp"])?;
    cluster.apply(lab, GREETER)?;
    let service = cluster.kubectl_json(&["get", "service", "greeter"])?;
    let greeter_ip = service["spec"]["clusterIP"].as_str().context("clusterIP")?;
    let tcp = pod_ip(&cluster.kubectl_json(&["get", "pod", "tcp"])?)?;
    let listed = endpoints(cluster, "greeter", &BTreeSet::from([tcp]))?;
    ensure!(
        listed == BTreeSet::from([tcp]),
        "greeter's endpoints: {listed:?}"
    );
    // kube-proxy programs a new Service within moments of its endpoints, as for any
    // client pod: one started before that is retried (restartPolicy OnFailure).
    cluster.apply(lab, &fetch_pod(cluster))?;
    let fetch = phase(cluster, "fetch", "Succeeded")
        .map_err(|e| e.context(cluster.kubectl(&["logs", "fetch"]).unwrap_or_default()))?;
    let logs = cluster.kubectl(&["logs", "fetch"])?;
    ensure!(
        logs.contains(&format!("tcp_fetch: TARGET_HOST resolved to {greeter_ip}")),
        "the short name resolved through the pod's search path to the ClusterIP: {logs}"
    );
    ensure!(logs.contains("hello from wasi:sockets!"), "{logs}");
    ensure!(
        fetch["spec"]["nodeName"] == WASM_NODES[1],
        "{}",
        fetch["spec"]
    );

    cluster.apply(lab, &proxy_pod(cluster))?;
    let proxy = phase(cluster, "proxy", "Running")?;
    let proxy_ip = pod_ip(&proxy)?.to_string();
    let answer = eventually_ok(Duration::from_secs(30), "http_fetch to answer", || {
        get_from_client(cluster, &proxy_ip, 8080)
    })?;
    ensure!(
        answer == HELLO_HTTP,
        "http://web/ fetched from a wasm pod ({web_ip}) answered {answer:?}"
    );
    Ok(())
}

/// The stock kubelet's path: pods of RuntimeClass `wasm` (the shipped one) run by the
/// wasmlet containerd shim in the pod network the CNI bridge gave their sandboxes. A
/// wasi:http Deployment turns Ready by an httpGet probe and answers on its pod IPs and
/// behind its Service; a wasi:sockets pod answers TCP, logs through `kubectl logs`, and is
/// reached from a pod of a wasm node by its Service's name.
fn shim_pods(lab: &mut Lab, cluster: &Cluster) -> Result<()> {
    let class = std::fs::read_to_string(repo_root().join("deploy/shim/runtimeclass.yaml"))?;
    cluster.apply(lab, &class)?;
    cluster.apply(lab, SHIM_WEB)?;
    cluster.apply(lab, SHIM_TCP)?;
    let pods = available(cluster, "shimweb", 2)?;
    let mut ips = BTreeSet::new();
    for pod in &pods {
        ensure!(pod["spec"]["nodeName"] == NATIVE, "{}", pod["spec"]);
        ips.insert(pod_ip(pod)?);
    }
    let cidr = cluster.cidrs[NATIVE];
    ensure!(
        ips.iter().all(|ip| cidr.contains(*ip)),
        "{ips:?} not in {cidr}"
    );
    let listed = endpoints(cluster, "shimweb", &ips)?;
    ensure!(
        listed == ips,
        "shimweb's endpoints: {listed:?}, not {ips:?}"
    );
    for ip in &ips {
        let answer = get_from_client(cluster, &ip.to_string(), 8080)?;
        ensure!(answer == HELLO_HTTP, "{ip} answered {answer:?}");
    }
    let service = cluster.kubectl_json(&["get", "service", "shimweb"])?;
    let service_ip = service["spec"]["clusterIP"].as_str().context("clusterIP")?;
    let answer = eventually_ok(Duration::from_secs(30), "shimweb's ClusterIP", || {
        get_from_client(cluster, service_ip, 80)
    })?;
    ensure!(
        answer == HELLO_HTTP,
        "shimweb's ClusterIP answered {answer:?}"
    );

    let tcp = phase(cluster, "shimtcp", "Running")?;
    let tcp_ip = pod_ip(&tcp)?;
    let script = format!("busybox nc -w 5 {tcp_ip} 7000 </dev/null");
    let greeting = eventually(Duration::from_secs(30), "the shim's wasi:sockets", || {
        let out = cluster.kubectl(&["exec", "client", "--", "busybox", "sh", "-c", &script]);
        out.ok().filter(|o| !o.is_empty())
    })?;
    ensure!(
        greeting.trim() == "hello from wasi:sockets!",
        "{greeting:?}"
    );
    let logs = cluster.kubectl(&["logs", "shimtcp"])?;
    ensure!(
        logs.contains("tcp_hello: listening"),
        "kubectl logs shimtcp: {logs}"
    );
    let listed = endpoints(cluster, "shimtcp", &BTreeSet::from([tcp_ip]))?;
    ensure!(
        listed == BTreeSet::from([tcp_ip]),
        "shimtcp's endpoints: {listed:?}"
    );
    let fetch = fetch_pod(cluster).replace("name: fetch,", "name: fetch-shim,");
    cluster.apply(lab, &fetch.replace("value: greeter", "value: shimtcp"))?;
    phase(cluster, "fetch-shim", "Succeeded")?;
    let logs = cluster.kubectl(&["logs", "fetch-shim"])?;
    ensure!(
        logs.contains("hello from wasi:sockets!"),
        "a wasm node's pod reached the shim's pod by name: {logs}"
    );
    Ok(())
}

/// `kubectl port-forward pod/NAME 18080:8080` on the control plane's host answers there.
fn port_forward(lab: &mut Lab, cluster: &Cluster, pod: &str) -> Result<()> {
    let mut command = cluster.control.command(cache_bin().join("kubectl"));
    command
        .args(["port-forward", &format!("pod/{pod}"), "18080:8080"])
        .env("KUBECONFIG", cluster.var("KUBECONFIG"));
    lab.spawn("port-forward", command)?;
    let answer = eventually(Duration::from_secs(30), "port-forward to answer", || {
        let url = "http://127.0.0.1:18080/";
        cluster
            .control
            .run(&["curl", "-sf", "--max-time", "5", url])
            .ok()
    })
    .map_err(|e| e.context(lab.log_tail("port-forward", 20)));
    lab.kill("port-forward")?;
    let answer = answer?;
    ensure!(
        answer.trim_end() == HELLO_HTTP,
        "port-forward answered {answer:?}"
    );
    Ok(())
}

/// `kubectl exec` into a wasm pod fails with wasmlet's refusal.
fn exec_refused(cluster: &Cluster, pod: &str) -> Result<()> {
    let output = cluster.kubectl_output(&["exec", pod, "--", "sh"])?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        !output.status.success(),
        "kubectl exec into a wasm pod succeeded"
    );
    ensure!(
        stderr.contains("exec is not supported for WebAssembly containers"),
        "kubectl exec printed: {stderr}"
    );
    Ok(())
}

/// The body of `GET /` from `host:port`, sent by `busybox nc` in the native client pod
/// through `kubectl exec` (busybox-static's own wget crashes in glibc's static resolver).
/// The request's end is held back a second: busybox nc stops reading the answer once its
/// input ends.
fn get_from_client(cluster: &Cluster, host: &str, port: u16) -> Result<String> {
    let script = format!(
        "(printf 'GET / HTTP/1.0\\r\\nHost: {host}\\r\\n\\r\\n'; sleep 1) | busybox nc -w 5 {host} {port}"
    );
    let out = cluster.kubectl(&["exec", "client", "--", "busybox", "sh", "-c", &script])?;
    let (head, body) = out
        .split_once("\r\n\r\n")
        .with_context(|| format!("not an HTTP answer: {out:?}"))?;
    ensure!(head.split(' ').nth(1) == Some("200"), "{head}");
    Ok(body.trim_end().to_owned())
}

// ---- faults ------------------------------------------------------------------------------

/// 200 pods created and deleted leave no pinned namespace, veth or IP allocation on the wasm
/// nodes; so do 200 more whose creation a `kill -9` of an agent interrupts, followed by a
/// restart and the deletion.
fn faults(lab: &mut Lab, cluster: &Cluster) -> Result<()> {
    leaves_nothing(lab, cluster, "before the faults")?;
    let started = Instant::now();
    cluster.apply(lab, &many(cluster, 200))?;
    running(cluster, 200, Duration::from_secs(240))?;
    eprintln!("200 pods Running in {:?}", started.elapsed());
    cluster.kubectl(&["scale", "deployment", "many", "--replicas=0"])?;
    leaves_nothing(lab, cluster, "after 200 pods were deleted")?;
    eprintln!("200 pods created and deleted in {:?}", started.elapsed());

    let started = Instant::now();
    cluster.kubectl(&["scale", "deployment", "many", "--replicas=200"])?;
    let victim = cluster.host(WASM_NODES[0])?.clone();
    eventually(
        Duration::from_secs(120),
        "pods starting on the victim",
        || (pinned(&Cluster::agent_dir(lab, &victim)) >= 30).then_some(()),
    )?;
    let before = pod_ips_on(cluster, &victim.name)?;
    lab.kill_process(&agent_name(&victim))?;
    let at_kill = pinned(&Cluster::agent_dir(lab, &victim));
    cluster.spawn_agent(lab, &victim)?;
    running(cluster, 200, Duration::from_secs(240))?;
    eprintln!(
        "200 pods Running across a kill -9 (with {at_kill} pod namespaces on {}) in {:?}",
        victim.name,
        started.elapsed()
    );
    let after = pod_ips_on(cluster, &victim.name)?;
    ensure!(
        !before.is_empty(),
        "no pod was Running on {} at the kill",
        victim.name
    );
    for (pod, ip) in &before {
        ensure!(
            after.get(pod) == Some(ip),
            "{pod} had {ip} before the agent was killed, {:?} after",
            after.get(pod)
        );
    }
    cluster.kubectl(&["delete", "deployment", "many"])?;
    leaves_nothing(lab, cluster, "after a kill -9, a restart and the deletion")
}

/// Waits until no pod is left and no wasm node holds a pinned namespace, a pod veth, a
/// cached attachment or an allocated address.
fn leaves_nothing(lab: &Lab, cluster: &Cluster, when: &str) -> Result<()> {
    let left = || -> Vec<String> {
        let mut left = Vec::new();
        for host in &cluster.wasm {
            let dir = Cluster::agent_dir(lab, host);
            let counts = [
                ("pinned namespaces", pinned(&dir)),
                ("netns files", files(&dir.join("data/netns"), |_| true)),
                (
                    "cached attachments",
                    files(&dir.join("data/cni"), |n| n.ends_with(".json")),
                ),
                ("allocated addresses", allocations(&dir)),
                ("pod veths", pod_veths(host)),
            ];
            for (what, count) in counts.into_iter().filter(|(_, c)| *c > 0) {
                left.push(format!("{}: {count} {what}", host.name));
            }
        }
        left
    };
    let what = format!("nothing left {when}");
    eventually(Duration::from_secs(180), &what, || {
        let pods = cluster
            .kubectl_json(&["get", "pods", "-l", "app=many"])
            .ok()?;
        let none = pods["items"].as_array()?.is_empty();
        (none && left().is_empty()).then_some(())
    })
    .map_err(|e| e.context(left().join("\n")))
}

/// Waits until `want` pods of `many` are Running with an IP.
fn running(cluster: &Cluster, want: usize, limit: Duration) -> Result<()> {
    let what = format!("{want} pods Running");
    let mut last = 0;
    eventually(limit, &what, || {
        let pods = cluster
            .kubectl_json(&["get", "pods", "-l", "app=many"])
            .ok()?;
        let items = pods["items"].as_array()?;
        last = items
            .iter()
            .filter(|p| p["status"]["phase"] == "Running" && p["status"]["podIP"].is_string())
            .count();
        (last == want && items.len() == want).then_some(())
    })
    .map_err(|e| e.context(format!("{last} Running")))
}

/// The IPs of the Running pods of `many` on `node`, by pod name.
fn pod_ips_on(cluster: &Cluster, node: &str) -> Result<BTreeMap<String, String>> {
    let selector = format!("spec.nodeName={node}");
    let pods = cluster.kubectl_json(&[
        "get",
        "pods",
        "-l",
        "app=many",
        "--field-selector",
        &selector,
    ])?;
    let items = pods["items"].as_array().context("items")?;
    let running = items.iter().filter(|p| p["status"]["phase"] == "Running");
    let ips = running.filter_map(|p| {
        let name = p["metadata"]["name"].as_str()?;
        Some((name.to_owned(), p["status"]["podIP"].as_str()?.to_owned()))
    });
    Ok(ips.collect())
}

/// The pod namespaces pinned under an agent's data directory.
fn pinned(agent_dir: &Path) -> usize {
    lab::nsfs_mounts_under(&agent_dir.join("data/netns")).len()
}

/// The addresses host-local holds for the agent's network.
fn allocations(agent_dir: &Path) -> usize {
    let dir = agent_dir.join("ipam").join(NETWORK);
    files(&dir, |n| n.parse::<Ipv4Addr>().is_ok())
}

/// The veths in a node's namespace other than its own link to the switch.
fn pod_veths(host: &Host) -> usize {
    let links = lab::ip(&["-n", &host.ns, "-o", "link", "show", "type", "veth"]);
    let links = links.unwrap_or_default();
    links.lines().filter(|l| !l.contains(" eth0@")).count()
}

fn files(dir: &Path, matches: impl Fn(&str) -> bool) -> usize {
    let entries = std::fs::read_dir(dir).into_iter().flatten().flatten();
    entries
        .filter(|e| matches(&e.file_name().to_string_lossy()))
        .count()
}

// ---- waits on what kubectl shows ---------------------------------------------------------

/// Waits until Deployment `name` has `replicas` available pods; returns its pods.
fn available(cluster: &Cluster, name: &str, replicas: i64) -> Result<Vec<Value>> {
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

fn phase(cluster: &Cluster, pod: &str, phase: &str) -> Result<Value> {
    let what = format!("pod {pod} {phase}");
    eventually(Duration::from_secs(90), &what, || {
        let pod = cluster.kubectl_json(&["get", "pod", pod]).ok()?;
        (pod["status"]["phase"] == phase).then_some(pod)
    })
}

/// Waits until Service `name`'s EndpointSlices list `want` as Ready; returns what they list.
fn endpoints(
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

fn pod_ip(pod: &Value) -> Result<Ipv4Addr> {
    let ip = pod["status"]["podIP"].as_str().context("no podIP")?;
    ensure!(
        pod["status"]["podIPs"][0]["ip"] == ip,
        "podIPs starts with podIP"
    );
    Ok(ip.parse()?)
}

fn condition<'a>(object: &'a Value, kind: &str) -> Option<&'a str> {
    let conditions = object["status"]["conditions"].as_array()?;
    let found = conditions.iter().find(|c| c["type"] == kind)?;
    found["status"].as_str()
}

// ---- manifests and configurations --------------------------------------------------------

/// What lets a pod onto a wasm node: the taints tolerated, the arch selected.
const WASM_PLACEMENT: &str = "nodeSelector: {kubernetes.io/arch: wasm32-wasi}\n      \
     tolerations:\n      - {key: kubernetes.io/arch, value: wasm32-wasi, effect: NoSchedule}\n      \
     - {key: kubernetes.io/arch, value: wasm32-wasi, effect: NoExecute}";

fn web(cluster: &Cluster, replicas: u32) -> String {
    let image = cluster.image("http-hello");
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: default}}\n\
         spec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    \
         metadata: {{labels: {{app: web}}}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      \
         {WASM_PLACEMENT}\n      \
         topologySpreadConstraints:\n      - {{maxSkew: 1, topologyKey: kubernetes.io/hostname, \
         whenUnsatisfiable: DoNotSchedule, labelSelector: {{matchLabels: {{app: web}}}}}}\n      \
         containers:\n      - name: web\n        image: '{image}'\n        \
         ports: [{{containerPort: 8080}}]\n        \
         readinessProbe: {{httpGet: {{path: /, port: 8080}}, periodSeconds: 1}}\n\
         ---\napiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: default}}\n\
         spec:\n  selector: {{app: web}}\n  ports: [{{port: 80, targetPort: 8080}}]\n"
    )
}

/// A pod of one wasm container on wasm node `node` (the spec's lines after `containers:`).
fn wasm_pod(name: &str, node: &str, container: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  \
         terminationGracePeriodSeconds: 1\n  \
         nodeSelector: {{kubernetes.io/hostname: {node}}}\n  \
         tolerations: [{{key: kubernetes.io/arch, operator: Exists}}]\n  \
         containers:\n{container}"
    )
}

fn host_port_pod(cluster: &Cluster) -> String {
    let container = format!(
        "  - name: web\n    image: '{}'\n    ports: [{{containerPort: 8080, hostPort: {HOST_PORT}}}]\n",
        cluster.image("http-hello")
    );
    wasm_pod("hp", WASM_NODES[1], &container)
}

fn tcp_pod(cluster: &Cluster) -> String {
    let container = format!(
        "  - name: tcp\n    image: '{}'\n    ports: [{{containerPort: 7000}}]\n    \
         env: [{{name: LISTEN_IP, valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}}}]\n",
        cluster.image("tcp-hello")
    );
    wasm_pod("tcp", WASM_NODES[0], &container)
}

/// The Service of the `tcp` pod (wasi:sockets on port 7000).
const GREETER: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: greeter, namespace: default}\n\
     spec:\n  selector: {app: tcp}\n  ports: [{port: 7000, targetPort: 7000}]\n";

/// `tcp_fetch` on wasm-b, fetching `greeter:7000` once.
fn fetch_pod(cluster: &Cluster) -> String {
    let container = format!(
        "  - name: fetch\n    image: '{}'\n    \
         env: [{{name: TARGET_HOST, value: greeter}}, {{name: TARGET_PORT, value: '7000'}}]\n",
        cluster.image("tcp-fetch")
    );
    let pod = wasm_pod("fetch", WASM_NODES[1], &container);
    pod.replace("spec:\n", "spec:\n  restartPolicy: OnFailure\n")
}

/// `http_fetch` on wasm-a, answering each request with a GET of `http://web/`.
fn proxy_pod(cluster: &Cluster) -> String {
    let container = format!(
        "  - name: proxy\n    image: '{}'\n    ports: [{{containerPort: 8080}}]\n    \
         env: [{{name: FETCH_URL, value: 'http://web/'}}]\n",
        cluster.image("http-fetch")
    );
    wasm_pod("proxy", WASM_NODES[0], &container)
}

/// Two replicas of the wasi:http fixture under RuntimeClass `wasm`, ready by an httpGet
/// probe, behind a Service.
const SHIM_WEB: &str = "apiVersion: apps/v1\nkind: Deployment\n\
     metadata: {name: shimweb, namespace: default}\nspec:\n  replicas: 2\n  \
     selector: {matchLabels: {app: shimweb}}\n  template:\n    \
     metadata: {labels: {app: shimweb}}\n    spec:\n      runtimeClassName: wasm\n      \
     terminationGracePeriodSeconds: 1\n      containers:\n      - name: web\n        \
     image: localhost/wasmlet-test/http-hello:v1\n        imagePullPolicy: Never\n        \
     ports: [{containerPort: 8080}]\n        \
     readinessProbe: {httpGet: {path: /, port: 8080}, periodSeconds: 1}\n\
     ---\napiVersion: v1\nkind: Service\nmetadata: {name: shimweb, namespace: default}\n\
     spec:\n  selector: {app: shimweb}\n  ports: [{port: 80, targetPort: 8080}]\n";

/// The wasi:sockets fixture under RuntimeClass `wasm`, listening on its pod IP, and its
/// Service.
const SHIM_TCP: &str = "apiVersion: v1\nkind: Pod\n\
     metadata: {name: shimtcp, namespace: default, labels: {app: shimtcp}}\nspec:\n  \
     runtimeClassName: wasm\n  terminationGracePeriodSeconds: 1\n  containers:\n  \
     - name: tcp\n    image: localhost/wasmlet-test/tcp-hello:v1\n    \
     imagePullPolicy: Never\n    ports: [{containerPort: 7000}]\n    \
     env: [{name: LISTEN_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}]\n\
     ---\napiVersion: v1\nkind: Service\nmetadata: {name: shimtcp, namespace: default}\n\
     spec:\n  selector: {app: shimtcp}\n  ports: [{port: 7000, targetPort: 7000}]\n";

/// The native busybox pod on the kubelet's node, that the checks `kubectl exec` into.
fn client_pod() -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: client, namespace: default}}\nspec:\n  \
         terminationGracePeriodSeconds: 1\n  nodeSelector: {{kubernetes.io/hostname: {NATIVE}}}\n  \
         containers:\n  - name: client\n    image: {CLIENT_IMAGE}\n    imagePullPolicy: Never\n"
    )
}

/// `replicas` pods of the `sleep` module on the wasm nodes.
fn many(cluster: &Cluster, replicas: u32) -> String {
    let image = cluster.image("sleep");
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: many, namespace: default}}\n\
         spec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: many}}}}\n  template:\n    \
         metadata: {{labels: {{app: many}}}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      \
         {WASM_PLACEMENT}\n      \
         containers:\n      - name: sleep\n        image: '{image}'\n        args: ['600000']\n"
    )
}

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
struct Net {
    base: Ipv4Addr,
    prefix: u32,
}

impl Net {
    fn contains(&self, ip: Ipv4Addr) -> bool {
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

/// The folder of the built `containerd-shim-wasmlet-v1` (`cargo test --workspace` builds it).
fn shim_dir() -> Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/wasmlet/target"));
    let dir = target.join("debug");
    ensure!(
        dir.join("containerd-shim-wasmlet-v1").is_file(),
        "no containerd-shim-wasmlet-v1 in {}: build it (cargo build -p wasmlet-shim)",
        dir.display()
    );
    Ok(dir)
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn cache_bin() -> PathBuf {
    let cache = std::env::var("WASMLET_CACHE").unwrap_or_else(|_| "/var/cache/wasmlet".into());
    Path::new(&cache).join("bin")
}
