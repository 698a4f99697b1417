//! Benchmark (numbers, never a timed test) of what the pod network costs a `wasmlet node`
//! agent, in the lab's cluster (see `lab::cluster`) with one more agent in `--network
//! loopback` mode, everything in one run:
//!
//! 1. **Pod creation -> Ready**, p50/p90/p99 and the raw samples, for the same workloads on
//!    the CNI-mode agent, the loopback-mode agent and the stock kubelet's node (containerd
//!    with runc, and the wasmlet shim under RuntimeClass `wasm`): an idle sleeper (Ready when
//!    its container started) and a wasi:http server behind an httpGet readiness probe (busybox
//!    `httpd` on runc), timed by `benches/podlatency.py` on the control plane's host, the
//!    profiles alternating round by round.
//! 2. **Service requests/s through kube-proxy**: wrk, run in a host of the lab, against the
//!    ClusterIP of a wasi:http pod of the CNI-mode agent, against that pod's IP (from another
//!    node and from its own), against the same component on the loopback-mode agent dialled on
//!    its pod IP, and against the shim's pod behind its ClusterIP; rounds alternate between
//!    the targets.
//! 3. **Density**: idle pods (half sleepers, half wasi:http servers) on the CNI-mode agent in
//!    steps until a step is not reached (in its time, or pods stop turning Running) or the
//!    last step is; per step the agent's memory, descriptors and CPU, the pods' namespaces,
//!    veths and IP allocations, and the kernel's memory (unreclaimable slab and per-CPU), each
//!    per pod; what gave out, from the pods' states and the Warning events. One step of the
//!    same pods on the loopback-mode agent is the peer.
//!
//! Run it on the release build (the shim of the same profile is used):
//!
//! ```sh
//! cargo build --release -p wasmlet-shim
//! cargo test --release -p wasmlet --test cluster_bench -- --ignored --nocapture
//! ```
//! It prints a table per part and one line `NETBENCH {json}` per result, which
//! `benches/collect.py netbench` turns into the suite's records (`benches/run --items 7`).
//! Knobs (environment): `WASMLET_NETBENCH_PARTS` (latency,http,density), `_PODS` (pods per
//! latency profile, 50), `_BATCH` (10), `_ROUNDS` (latency rounds, 2), `_PROFILES` (all),
//! `_HTTP_SECONDS` (10), `_HTTP_ROUNDS` (2), `_HTTP_CONNECTIONS` (16), `_STEPS`
//! (250,500,1000,1500,2000), `_STEP_TIMEOUT` (300 s), `_STALL` (60 s without a pod turning
//! Running ends a step), `_SETTLE` (10 s idle before a step is sampled), `_LOOPBACK_STEP` (250;
//! 0 skips the peer), `_OUT` (a folder for the raw outputs). Needs root, wrk and python3.

mod lab;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use lab::cluster::*;
use lab::{Host, Lab, eventually, eventually_ok, ok};
use serde_json::{Value, json};

#[test]
#[ignore = "a benchmark: run it with --ignored --nocapture on the release build"]
fn pod_network_benchmark() -> Result<()> {
    let knobs = Knobs::from_env()?;
    let started = Instant::now();
    let mut lab = Lab::new()?;
    let top = knobs.steps.iter().copied().max().unwrap_or(0);
    let options = Options {
        node_cidr_mask: mask_for(top + 300),
        max_pods: Some(u32::try_from(top + 200)?),
        loopback_agent: true,
    };
    let mask = options.node_cidr_mask;
    let cluster = Cluster::build_with(&mut lab, options)?;
    let mut out = Report::new(knobs.out.clone())?;
    out.emit(json!({
        "kind": "setup", "seconds": secs(started.elapsed()), "loadavg": loadavg(),
        "node_cidr_mask": mask, "knobs": knobs.json(), "build": build_profile(),
    }))?;
    eprintln!(
        "cluster of 5 hosts ready in {:?} (load {:.1})",
        started.elapsed(),
        loadavg()
    );
    let outcome = run_parts(&mut lab, &cluster, &knobs, &mut out);
    out.keep_logs(&lab);
    out.emit(json!({"kind": "done", "seconds": secs(started.elapsed()), "loadavg": loadavg()}))?;
    eprintln!("benchmark finished in {:?}", started.elapsed());
    outcome.map_err(|err| err.context(cluster.diagnostics(&lab)))
}

fn run_parts(lab: &mut Lab, cluster: &Cluster, knobs: &Knobs, out: &mut Report) -> Result<()> {
    let class = std::fs::read_to_string(repo_root().join("deploy/shim/runtimeclass.yaml"))?;
    cluster.apply(lab, &class)?;
    if knobs.part("latency") {
        latency(lab, cluster, knobs, out).context("pod creation -> Ready")?;
    }
    if knobs.part("http") {
        http(lab, cluster, knobs, out).context("requests/s")?;
    }
    if knobs.part("density") {
        density(lab, cluster, knobs, out).context("density")?;
    }
    Ok(())
}

// ---- knobs and output --------------------------------------------------------------------

struct Knobs {
    parts: Vec<String>,
    pods: usize,
    batch: usize,
    rounds: usize,
    profiles: Vec<String>,
    http_seconds: u64,
    http_rounds: usize,
    connections: usize,
    steps: Vec<usize>,
    step_timeout: u64,
    stall: u64,
    settle: u64,
    loopback_step: usize,
    out: Option<PathBuf>,
}

fn knob<T: std::str::FromStr>(name: &str, default: T) -> Result<T> {
    match std::env::var(format!("WASMLET_NETBENCH_{name}")) {
        Ok(v) if !v.is_empty() => v
            .parse()
            .map_err(|_| anyhow::anyhow!("WASMLET_NETBENCH_{name}={v}: not a number")),
        _ => Ok(default),
    }
}

fn knob_list(name: &str, default: &str) -> Vec<String> {
    let value = std::env::var(format!("WASMLET_NETBENCH_{name}")).unwrap_or_default();
    let value = if value.is_empty() { default } else { &value };
    value.split(',').map(|s| s.trim().to_owned()).collect()
}

impl Knobs {
    fn from_env() -> Result<Knobs> {
        let steps = knob_list("STEPS", "250,500,1000,1500,2000");
        let steps = steps.iter().map(|s| s.parse()).collect::<Result<_, _>>();
        Ok(Knobs {
            parts: knob_list("PARTS", "latency,http,density"),
            pods: knob("PODS", 50)?,
            batch: knob("BATCH", 10)?,
            rounds: knob("ROUNDS", 2)?,
            profiles: knob_list("PROFILES", "all"),
            http_seconds: knob("HTTP_SECONDS", 10)?,
            http_rounds: knob("HTTP_ROUNDS", 2)?,
            connections: knob("HTTP_CONNECTIONS", 16)?,
            steps: steps.context("WASMLET_NETBENCH_STEPS: numbers, comma-separated")?,
            step_timeout: knob("STEP_TIMEOUT", 300)?,
            stall: knob("STALL", 60)?,
            settle: knob("SETTLE", 10)?,
            loopback_step: knob("LOOPBACK_STEP", 250)?,
            out: std::env::var_os("WASMLET_NETBENCH_OUT").map(PathBuf::from),
        })
    }

    fn part(&self, name: &str) -> bool {
        self.parts.iter().any(|p| p == name)
    }

    fn json(&self) -> Value {
        json!({
            "parts": self.parts, "pods": self.pods, "batch": self.batch, "rounds": self.rounds,
            "profiles": self.profiles, "http_seconds": self.http_seconds,
            "http_rounds": self.http_rounds, "connections": self.connections,
            "steps": self.steps, "step_timeout_s": self.step_timeout, "stall_s": self.stall, "settle_s": self.settle,
            "loopback_step": self.loopback_step,
        })
    }
}

/// The smallest node CIDR (not under /24) whose host-local range holds `pods` addresses.
fn mask_for(pods: usize) -> u8 {
    let mut mask = 24u8;
    while mask > 16 && (1usize << (32 - mask)) - 3 < pods {
        mask -= 1;
    }
    mask
}

/// Where the results go: `NETBENCH {json}` lines on stdout, and `netbench.jsonl` in the
/// output folder when there is one.
struct Report {
    dir: Option<PathBuf>,
}

impl Report {
    fn new(dir: Option<PathBuf>) -> Result<Report> {
        if let Some(dir) = &dir {
            std::fs::create_dir_all(dir)?;
            std::fs::write(dir.join("netbench.jsonl"), "")?;
        }
        Ok(Report { dir })
    }

    fn emit(&mut self, record: Value) -> Result<()> {
        let line = serde_json::to_string(&record)?;
        println!("NETBENCH {line}");
        if let Some(dir) = &self.dir {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(dir.join("netbench.jsonl"))?;
            writeln!(file, "{line}")?;
        }
        Ok(())
    }

    /// Copies the lab's logs (agents, kube-proxy, control plane's helpers) to `logs/` of the
    /// output folder, when there is one: the lab's own folder goes with the lab.
    fn keep_logs(&self, lab: &Lab) {
        let Some(dir) = &self.dir else { return };
        let to = dir.join("logs");
        let _ = std::fs::create_dir_all(&to);
        let entries = std::fs::read_dir(lab.dir().join("logs"))
            .into_iter()
            .flatten();
        for entry in entries.flatten() {
            let _ = std::fs::copy(entry.path(), to.join(entry.file_name()));
        }
    }

    /// A folder for raw outputs: the output folder, else `fallback`.
    fn raw_dir(&self, fallback: &Path) -> PathBuf {
        self.dir.clone().unwrap_or_else(|| fallback.to_owned())
    }
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

fn loadavg() -> f64 {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn build_profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

/// Nearest-rank percentile (p in 0..=100), as the Kubernetes SLO documents (and
/// podlatency.py) use.
fn percentile(values: &[f64], p: f64) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((sorted.len() as f64) * p / 100.0).ceil().max(1.0) as usize;
    sorted.get(rank - 1).copied()
}

fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

// ---- 1. pod creation -> Ready ------------------------------------------------------------

/// A way to run one workload: the node, and the pod template podlatency.py creates.
struct Profile {
    name: &'static str,
    /// cni, loopback, shim or runc.
    mode: &'static str,
    /// sleep or http.
    workload: &'static str,
    node: String,
    template: Value,
}

const SLEEP_MS: &str = "3600000";

fn profiles(cluster: &Cluster) -> Vec<Profile> {
    let probe = json!({"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1});
    let wasm = |name: &str, node: &str, image: String, http: bool| {
        let mut container = json!({"name": name, "image": image});
        if http {
            container["ports"] = json!([{"containerPort": 8080}]);
            container["readinessProbe"] = probe.clone();
        } else {
            container["args"] = json!([SLEEP_MS]);
        }
        pod_template(node, container, None)
    };
    let shim = |name: &str, image: &str, http: bool| {
        let mut container = json!({"name": name, "image": image, "imagePullPolicy": "Never"});
        if http {
            container["ports"] = json!([{"containerPort": 8080}]);
            container["readinessProbe"] = probe.clone();
        } else {
            container["args"] = json!([SLEEP_MS]);
        }
        pod_template(NATIVE, container, Some("wasm"))
    };
    let busybox = |name: &str, command: &[&str], http: bool| {
        let mut container = json!({
            "name": name, "image": CLIENT_IMAGE, "imagePullPolicy": "Never", "command": command,
        });
        if http {
            container["ports"] = json!([{"containerPort": 8080}]);
            container["readinessProbe"] = probe.clone();
        }
        pod_template(NATIVE, container, None)
    };
    let (a, lo) = (WASM_NODES[0], LOOPBACK);
    let (sleep, http) = (cluster.image("sleep"), cluster.image("http-hello"));
    let httpd = ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"];
    let profile = |name, mode, workload, node: &str, template| Profile {
        name,
        mode,
        workload,
        node: node.to_owned(),
        template,
    };
    vec![
        profile(
            "cni-sleep",
            "cni",
            "sleep",
            a,
            wasm("sleep", a, sleep.clone(), false),
        ),
        profile(
            "loopback-sleep",
            "loopback",
            "sleep",
            lo,
            wasm("sleep", lo, sleep, false),
        ),
        profile(
            "shim-sleep",
            "shim",
            "sleep",
            NATIVE,
            shim("sleep", SHIM_SLEEP_IMAGE, false),
        ),
        profile(
            "runc-sleep",
            "runc",
            "sleep",
            NATIVE,
            busybox("sleep", &["/bin/busybox", "sleep", "3600"], false),
        ),
        profile(
            "cni-http",
            "cni",
            "http",
            a,
            wasm("web", a, http.clone(), true),
        ),
        profile(
            "loopback-http",
            "loopback",
            "http",
            lo,
            wasm("web", lo, http, true),
        ),
        profile(
            "shim-http",
            "shim",
            "http",
            NATIVE,
            shim("web", SHIM_HTTP_IMAGE, true),
        ),
        profile(
            "runc-http",
            "runc",
            "http",
            NATIVE,
            busybox("web", &httpd, true),
        ),
    ]
}

/// A pod on `node` (the wasm nodes' taints tolerated) running `container`.
fn pod_template(node: &str, container: Value, runtime_class: Option<&str>) -> Value {
    let mut spec = json!({
        "nodeSelector": {"kubernetes.io/hostname": node},
        "tolerations": [{"key": "kubernetes.io/arch", "operator": "Exists"}],
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 1,
        "containers": [container],
    });
    if let Some(class) = runtime_class {
        spec["runtimeClassName"] = json!(class);
    }
    json!({"spec": spec})
}

/// Each profile: one pod to warm up (the agent pulls the image and compiles the module),
/// then `rounds` rounds of its share of the pods, the profiles taking turns round by round.
fn latency(lab: &mut Lab, cluster: &Cluster, knobs: &Knobs, out: &mut Report) -> Result<()> {
    let all = profiles(cluster);
    let chosen: Vec<&Profile> = all
        .iter()
        .filter(|p| knobs.profiles.iter().any(|k| k == "all" || k == p.name))
        .collect();
    let raw = out.raw_dir(lab.dir()).join("pods");
    std::fs::create_dir_all(&raw)?;
    // A node that runs no pod of a namespace follows none of its objects: the first pods of
    // the namespace there wait for a new watch of `kube-root-ca.crt` (their token volume's),
    // whose first try the Node authorizer may refuse until it has seen them bound, retried
    // a second later. One pod kept on each node for the part's length measures pod starts
    // as they are on a node in use.
    let keepers =
        [WASM_NODES[0], LOOPBACK, NATIVE].map(|node| (format!("bench-keeper-{node}"), node));
    for (name, node) in &keepers {
        let mut pod = match *node {
            NATIVE => all.iter().find(|p| p.name == "runc-sleep"),
            _ => all.iter().find(|p| p.name == "cni-sleep"),
        }
        .context("no sleeper profile")?
        .template
        .clone();
        pod["spec"]["nodeSelector"] = json!({"kubernetes.io/hostname": node});
        pod["apiVersion"] = json!("v1");
        pod["kind"] = json!("Pod");
        pod["metadata"] = json!({"name": name, "namespace": "default"});
        cluster.apply(lab, &serde_json::to_string(&pod)?)?;
    }
    for (name, _) in &keepers {
        phase(cluster, name, "Running")?;
    }
    for profile in &chosen {
        let file = podlatency(lab, cluster, profile, "warm", 1, 1, &raw)?;
        let warm: Value = serde_json::from_str(&std::fs::read_to_string(&file)?)?;
        let ok = warm["summary"]["ok"].as_u64().unwrap_or(0);
        ensure!(
            ok == 1,
            "the warm-up pod of {} did not turn Ready: {}",
            profile.name,
            warm["samples"]
        );
    }
    let rounds = knobs.rounds.max(1);
    let mut samples: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    let mut loads: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for round in 0..rounds {
        let count = knobs.pods / rounds + usize::from(round < knobs.pods % rounds);
        for profile in &chosen {
            let tag = format!("r{round}");
            let file = podlatency(lab, cluster, profile, &tag, count, knobs.batch, &raw)?;
            let run: Value = serde_json::from_str(&std::fs::read_to_string(&file)?)?;
            let got = run["samples"].as_array().cloned().unwrap_or_default();
            samples.entry(profile.name).or_default().extend(got);
            loads.entry(profile.name).or_default().push(loadavg());
        }
    }
    eprintln!(
        "\npod creation -> Ready (s), {} pods a profile in batches of {}, {rounds} rounds",
        knobs.pods, knobs.batch
    );
    eprintln!(
        "{:<16} {:<8} {:>4} {:>4} {:>7} {:>7} {:>7} {:>7}  p50 / cni's",
        "profile", "node", "n", "ok", "p50", "p90", "p99", "max"
    );
    let mut p50s = BTreeMap::new();
    for profile in &chosen {
        let all = &samples[profile.name];
        let ok: Vec<f64> = all
            .iter()
            .filter(|s| s["outcome"] == "ok")
            .filter_map(|s| s["latency_s"].as_f64())
            .collect();
        let sli: Vec<f64> = all
            .iter()
            .filter(|s| s["outcome"] == "ok")
            .filter_map(|s| s["sli_latency_s"].as_f64())
            .collect();
        let p = |q| percentile(&ok, q);
        p50s.insert(profile.name, p(50.0));
        let cni = format!("cni-{}", profile.workload);
        let ratio = match (p(50.0), p50s.get(cni.as_str()).copied().flatten()) {
            (Some(v), Some(c)) if c > 0.0 => format!("{:.2}", v / c),
            _ => "-".into(),
        };
        eprintln!(
            "{:<16} {:<8} {:>4} {:>4} {:>7} {:>7} {:>7} {:>7}  {ratio}",
            profile.name,
            profile.node,
            all.len(),
            ok.len(),
            fmt_opt(p(50.0), 3),
            fmt_opt(p(90.0), 3),
            fmt_opt(p(99.0), 3),
            fmt_opt(ok.iter().copied().reduce(f64::max), 3)
        );
        out.emit(json!({
            "kind": "latency", "profile": profile.name, "mode": profile.mode,
            "workload": profile.workload, "node": profile.node, "until": "Ready",
            "n": all.len(), "ok": ok.len(), "batch": knobs.batch, "rounds": rounds,
            "p50": p(50.0), "p90": p(90.0), "p99": p(99.0),
            "max": ok.iter().copied().reduce(f64::max),
            "sli_p50": percentile(&sli, 50.0), "sli_p99": percentile(&sli, 99.0),
            "samples": ok, "template": profile.template,
            "loadavg": loads[profile.name],
        }))?;
    }
    for (name, _) in &keepers {
        cluster.kubectl(&["delete", "pod", name, "--wait=false"])?;
    }
    Ok(())
}

/// `benches/podlatency.py latency` on the control plane's host: `count` pods of `profile`
/// in batches of `batch`, each timed from its create request until a watch sees it Ready;
/// they are deleted at the end. Returns the JSON it wrote.
fn podlatency(
    lab: &Lab,
    cluster: &Cluster,
    profile: &Profile,
    tag: &str,
    count: usize,
    batch: usize,
    raw: &Path,
) -> Result<PathBuf> {
    let template = lab.dir().join(format!("{}.json", profile.name));
    std::fs::write(&template, serde_json::to_vec(&profile.template)?)?;
    let name = format!("{}-{tag}", profile.name);
    let file = raw.join(format!("{name}.json"));
    let path = format!(
        "{}:{}",
        cache_bin().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = cluster
        .control
        .command_within(Duration::from_secs(900), "python3")
        .arg(repo_root().join("benches/podlatency.py"))
        .args(["latency", "--kubeconfig", &cluster.var("KUBECONFIG")])
        .arg("--template")
        .arg(&template)
        .args(["--name", &name, "--until", "Ready"])
        .args(["--count", &count.to_string(), "--batch", &batch.to_string()])
        .args(["--batch-timeout", "120", "--max-seconds", "600"])
        .args(["--delete-timeout", "180"])
        .arg("--out")
        .arg(&file)
        .env("PATH", path)
        .output()?;
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    ok(&output).with_context(|| format!("podlatency.py {name}"))?;
    Ok(file)
}

// ---- 2. requests/s -------------------------------------------------------------------------

/// A wasi:http server to load: where wrk runs, what it dials.
struct Target {
    name: &'static str,
    what: String,
    from: Host,
    url: String,
}

fn http(lab: &mut Lab, cluster: &Cluster, knobs: &Knobs, out: &mut Report) -> Result<()> {
    let a = cluster.host(WASM_NODES[0])?.clone();
    let lo = cluster.loopback.clone().context("no loopback agent")?;
    cluster.apply(
        lab,
        &web_manifest("bench-web", &cluster.image("http-hello"), &a.name, None),
    )?;
    cluster.apply(
        lab,
        &web_manifest("bench-shimweb", SHIM_HTTP_IMAGE, NATIVE, Some("wasm")),
    )?;
    let lo_pod = wasm_web_pod("bench-loweb", &cluster.image("http-hello"), &lo.name);
    cluster.apply(lab, &lo_pod)?;
    let web = available(cluster, "bench-web", 1)?;
    let web_ip = pod_ip(&web[0])?;
    let shim = available(cluster, "bench-shimweb", 1)?;
    let shim_ip = pod_ip(&shim[0])?;
    let lo_ip = eventually(Duration::from_secs(90), "bench-loweb Ready", || {
        let pod = cluster.kubectl_json(&["get", "pod", "bench-loweb"]).ok()?;
        (condition(&pod, "Ready") == Some("True")).then(|| pod["status"]["podIP"].clone())
    })?;
    let lo_ip = lo_ip.as_str().context("no podIP")?.to_owned();
    endpoints(cluster, "bench-web", &[web_ip].into())?;
    endpoints(cluster, "bench-shimweb", &[shim_ip].into())?;
    let service_ip = |name: &str| -> Result<String> {
        let service = cluster.kubectl_json(&["get", "service", name])?;
        let ip = service["spec"]["clusterIP"].as_str().context("clusterIP")?;
        Ok(ip.to_owned())
    };
    let native = cluster.native.clone();
    cluster.route_services_from_native()?;
    let targets = vec![
        Target {
            name: "cni-service",
            what: "CNI-mode agent's pod behind its ClusterIP (kube-proxy), from the kubelet's node"
                .into(),
            from: native.clone(),
            url: format!("http://{}/", service_ip("bench-web")?),
        },
        Target {
            name: "cni-pod",
            what: "CNI-mode agent's pod on its pod IP, from the kubelet's node".into(),
            from: native.clone(),
            url: format!("http://{web_ip}:8080/"),
        },
        Target {
            name: "cni-pod-same-node",
            what: "CNI-mode agent's pod on its pod IP, from its own node's namespace".into(),
            from: a.clone(),
            url: format!("http://{web_ip}:8080/"),
        },
        Target {
            name: "loopback-pod",
            what: "loopback-mode agent's pod on its pod IP, from its node's namespace".into(),
            from: lo.clone(),
            url: format!("http://{lo_ip}:8080/"),
        },
        Target {
            name: "shim-service",
            what: "wasmlet shim's pod (kubelet + containerd) behind its ClusterIP, from its node"
                .into(),
            from: native.clone(),
            url: format!("http://{}/", service_ip("bench-shimweb")?),
        },
    ];
    for target in &targets {
        let what = format!("{} to answer", target.name);
        eventually_ok(Duration::from_secs(60), &what, || {
            target
                .from
                .run(&["curl", "-sf", "--max-time", "5", &target.url])
        })?;
        wrk(target, 2, knobs.connections)?;
    }
    let mut rounds: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    let mut loads: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for round in 0..knobs.http_rounds.max(1) {
        for target in &targets {
            let result = wrk(target, knobs.http_seconds, knobs.connections)?;
            eprintln!(
                "round {}: {:<18} {:>9.0} req/s  p99 {:.2} ms",
                round + 1,
                target.name,
                result["rps"].as_f64().unwrap_or(0.0),
                result["latency_ms"]["99"].as_f64().unwrap_or(0.0)
            );
            rounds.entry(target.name).or_default().push(result);
            loads.entry(target.name).or_default().push(loadavg());
        }
    }
    eprintln!(
        "\nwasi:http hello, wrk -t2 -c{} -d{}s, median of {} rounds",
        knobs.connections,
        knobs.http_seconds,
        knobs.http_rounds.max(1)
    );
    eprintln!(
        "{:<18} {:<9} {:>9} {:>8} {:>8}  req/s / loopback's",
        "target", "client", "req/s", "p50 ms", "p99 ms"
    );
    let med = |name: &str, key: &dyn Fn(&Value) -> Option<f64>| {
        median(&rounds[name].iter().filter_map(key).collect::<Vec<_>>())
    };
    let rps = |v: &Value| v["rps"].as_f64();
    let lo_rps = med("loopback-pod", &rps);
    for target in &targets {
        let p = |q: &'static str| move |v: &Value| v["latency_ms"][q].as_f64();
        let value = med(target.name, &rps);
        let ratio = match (value, lo_rps) {
            (Some(v), Some(l)) if l > 0.0 => format!("{:.2}", v / l),
            _ => "-".into(),
        };
        eprintln!(
            "{:<18} {:<9} {:>9} {:>8} {:>8}  {ratio}",
            target.name,
            target.from.name,
            fmt_opt(value, 0),
            fmt_opt(med(target.name, &p("50")), 2),
            fmt_opt(med(target.name, &p("99")), 2),
        );
        out.emit(json!({
            "kind": "http", "target": target.name, "what": target.what,
            "from": target.from.name, "url": target.url, "rps": value,
            "p50_ms": med(target.name, &p("50")), "p99_ms": med(target.name, &p("99")),
            "seconds": knobs.http_seconds, "connections": knobs.connections,
            "rounds": rounds[target.name], "loadavg": loads[target.name],
        }))?;
    }
    for kind_name in [
        "deployment/bench-web",
        "service/bench-web",
        "deployment/bench-shimweb",
        "service/bench-shimweb",
        "pod/bench-loweb",
    ] {
        cluster.kubectl(&["delete", kind_name, "--wait=false"])?;
    }
    Ok(())
}

/// One wrk run from the target's host: requests/s, the latency percentiles (ms), errors.
fn wrk(target: &Target, seconds: u64, connections: usize) -> Result<Value> {
    let output = target
        .from
        .command_within(Duration::from_secs(seconds + 60), "wrk")
        .args(["-t2", &format!("-c{connections}"), &format!("-d{seconds}s")])
        .args(["--latency", &target.url])
        .output()?;
    let text = ok(&output).with_context(|| format!("wrk {}", target.url))?;
    parse_wrk(&text).with_context(|| format!("wrk's output: {text}"))
}

fn parse_wrk(text: &str) -> Result<Value> {
    let mut latency = serde_json::Map::new();
    let mut rps = None;
    let (mut requests, mut non_2xx, mut errors) = (None, 0u64, None);
    for line in text.lines().map(str::trim) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let [p, value] = fields[..]
            && let Some(p) = p.strip_suffix('%')
            && p.parse::<u32>().is_ok()
        {
            latency.insert(p.to_owned(), json!(duration_ms(value)?));
        } else if let Some(v) = line.strip_prefix("Requests/sec:") {
            rps = Some(v.trim().parse::<f64>()?);
        } else if line.contains(" requests in ") {
            requests = fields.first().and_then(|n| n.parse::<u64>().ok());
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            non_2xx = v.trim().parse()?;
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            errors = Some(v.trim().to_owned());
        }
    }
    let rps = rps.context("no Requests/sec")?;
    ensure!(latency.contains_key("99"), "no latency distribution");
    Ok(json!({
        "rps": rps, "latency_ms": latency, "requests": requests, "non_2xx": non_2xx,
        "socket_errors": errors,
    }))
}

/// wrk's `1.23ms`, `456.00us`, `1.02s` in milliseconds.
fn duration_ms(text: &str) -> Result<f64> {
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1e3)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60e3)
    } else {
        bail!("not a duration: {text}")
    };
    Ok(number.parse::<f64>()? * scale)
}

/// A Deployment of one wasi:http replica on `node`, Ready by an httpGet probe, and its
/// Service (port 80 to 8080).
fn web_manifest(name: &str, image: &str, node: &str, runtime_class: Option<&str>) -> String {
    let class = runtime_class.map_or(String::new(), |c| format!("runtimeClassName: {c}\n      "));
    let pull = if runtime_class.is_some() {
        "\n        imagePullPolicy: Never"
    } else {
        ""
    };
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: default}}\n\
         spec:\n  replicas: 1\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    \
         metadata: {{labels: {{app: {name}}}}}\n    spec:\n      {class}\
         terminationGracePeriodSeconds: 1\n      \
         nodeSelector: {{kubernetes.io/hostname: {node}}}\n      \
         tolerations: [{{key: kubernetes.io/arch, operator: Exists}}]\n      \
         containers:\n      - name: web\n        image: '{image}'{pull}\n        \
         ports: [{{containerPort: 8080}}]\n        \
         readinessProbe: {{httpGet: {{path: /, port: 8080}}, periodSeconds: 1}}\n\
         ---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
         spec:\n  selector: {{app: {name}}}\n  ports: [{{port: 80, targetPort: 8080}}]\n"
    )
}

/// A wasi:http pod on `node`, Ready by an httpGet probe (no Service: a loopback-mode
/// agent's pod IP is not one an EndpointSlice may list).
fn wasm_web_pod(name: &str, image: &str, node: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  \
         terminationGracePeriodSeconds: 1\n  nodeSelector: {{kubernetes.io/hostname: {node}}}\n  \
         tolerations: [{{key: kubernetes.io/arch, operator: Exists}}]\n  \
         containers:\n  - name: web\n    image: '{image}'\n    ports: [{{containerPort: 8080}}]\n    \
         readinessProbe: {{httpGet: {{path: /, port: 8080}}, periodSeconds: 1}}\n"
    )
}

// ---- 3. density ----------------------------------------------------------------------------

/// The loopback-mode agent's step first (the peer), then the CNI-mode agent's steps.
fn density(lab: &mut Lab, cluster: &Cluster, knobs: &Knobs, out: &mut Report) -> Result<()> {
    wait_gone(cluster, "bench-loweb")?;
    if knobs.loopback_step > 0 {
        let lo = cluster.loopback.clone().context("no loopback agent")?;
        density_on(
            lab,
            cluster,
            &lo,
            "loopback",
            &[knobs.loopback_step],
            knobs,
            out,
        )?;
    }
    let a = cluster.host(WASM_NODES[0])?.clone();
    density_on(lab, cluster, &a, "cni", &knobs.steps, knobs, out)
}

/// Waits (bounded) until pod `name` is gone.
fn wait_gone(cluster: &Cluster, name: &str) -> Result<()> {
    eventually(Duration::from_secs(120), &format!("{name} gone"), || {
        let out = cluster.kubectl(&["get", "pod", name, "--ignore-not-found", "-o", "name"]);
        out.ok().filter(|o| o.trim().is_empty())
    })
    .map(drop)
}

/// What the node holds for its pods, with the agent's and the kernel's costs.
#[derive(Clone, Debug, Default)]
struct Sample {
    rss_kib: u64,
    threads: u64,
    fds: u64,
    fd_kinds: BTreeMap<String, u64>,
    /// A few of the descriptors counted as "other", for a reader to see what they are.
    other_fds: std::collections::BTreeSet<String>,
    /// utime + stime + cutime + cstime: the agent's CPU and its waited-for children's (the
    /// CNI plugins it runs).
    cpu_s: f64,
    namespaces: usize,
    veths: usize,
    allocations: usize,
    /// /proc/meminfo, KiB.
    meminfo: BTreeMap<String, u64>,
}

/// The /proc/meminfo fields that grow with network namespaces and links.
const KERNEL_FIELDS: [&str; 6] = [
    "SUnreclaim",
    "Percpu",
    "SReclaimable",
    "VmallocUsed",
    "KernelStack",
    "PageTables",
];

impl Sample {
    fn take(lab: &Lab, host: &Host, pid: u32, cni: bool) -> Sample {
        let dir = Cluster::agent_dir(lab, host);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| -> u64 {
            let line = status.lines().find_map(|l| l.strip_prefix(name));
            let value = line.and_then(|v| v.split_whitespace().next()?.parse().ok());
            value.unwrap_or(0)
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let ticks: Vec<f64> = after
            .split_whitespace()
            .skip(11)
            .take(4)
            .filter_map(|v| v.parse().ok())
            .collect();
        // /proc counts CPU time in USER_HZ, 100 a second on Linux.
        let hz = 100.0;
        let mut fd_kinds = BTreeMap::new();
        let mut others = std::collections::BTreeSet::new();
        let mut fds = 0;
        let entries = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten();
        for entry in entries.flatten() {
            fds += 1;
            let target = std::fs::read_link(entry.path()).unwrap_or_default();
            let target = target.to_string_lossy();
            let kind = if target.starts_with("socket:") {
                "socket"
            } else if target.starts_with("net:[") || target.contains("/netns/") {
                "network namespace"
            } else if target.starts_with("/memfd:") {
                "memfd (memory image)"
            } else if target.ends_with(".cwasm") {
                "compiled code"
            } else if target.starts_with("anon_inode:") {
                "anon inode (epoll, eventfd, timerfd)"
            } else if target.ends_with(".log") {
                "log file"
            } else if target.contains("/volumes/") {
                "pod volume directory"
            } else if target.starts_with("pipe:") {
                "pipe"
            } else {
                if others.len() < 5 {
                    others.insert(target.into_owned());
                }
                "other"
            };
            *fd_kinds.entry(kind.to_owned()).or_insert(0) += 1;
        }
        Sample {
            rss_kib: field("VmRSS:"),
            threads: field("Threads:"),
            fds,
            fd_kinds,
            other_fds: others,
            cpu_s: ticks.iter().sum::<f64>() / hz,
            namespaces: if cni { pinned(&dir) } else { 0 },
            veths: if cni { pod_veths(host) } else { 0 },
            allocations: if cni { allocations(&dir) } else { 0 },
            meminfo: meminfo(),
        }
    }

    fn kernel(&self, field: &str) -> i64 {
        self.meminfo.get(field).copied().unwrap_or(0) as i64
    }

    fn json(&self) -> Value {
        json!({
            "rss_kib": self.rss_kib, "threads": self.threads, "fds": self.fds,
            "fd_kinds": self.fd_kinds, "other_fds": self.other_fds, "cpu_s": (self.cpu_s * 100.0).round() / 100.0,
            "namespaces": self.namespaces, "veths": self.veths, "allocations": self.allocations,
            "kernel_kib": KERNEL_FIELDS.iter().map(|f| (f.to_string(), self.kernel(f))).collect::<BTreeMap<_, _>>(),
        })
    }

    /// What grew from `base` to here, per pod of `pods`.
    fn per_pod(&self, base: &Sample, pods: usize) -> Value {
        let n = pods.max(1) as f64;
        let d = |a: f64, b: f64| ((a - b) / n * 100.0).round() / 100.0;
        let kernel: BTreeMap<String, f64> = KERNEL_FIELDS
            .iter()
            .map(|f| {
                (
                    f.to_string(),
                    d(self.kernel(f) as f64, base.kernel(f) as f64),
                )
            })
            .collect();
        let netns_kernel = kernel["SUnreclaim"] + kernel["Percpu"];
        let mut kinds = BTreeMap::new();
        for (kind, count) in &self.fd_kinds {
            let before = base.fd_kinds.get(kind).copied().unwrap_or(0);
            kinds.insert(kind.clone(), d(*count as f64, before as f64));
        }
        json!({
            "pods": pods,
            "rss_kib": d(self.rss_kib as f64, base.rss_kib as f64),
            "fds": d(self.fds as f64, base.fds as f64),
            "fd_kinds": kinds,
            "cpu_ms": d(self.cpu_s * 1000.0, base.cpu_s * 1000.0),
            "namespaces": d(self.namespaces as f64, base.namespaces as f64),
            "veths": d(self.veths as f64, base.veths as f64),
            "allocations": d(self.allocations as f64, base.allocations as f64),
            "kernel_kib": kernel,
            "unreclaimable_kernel_kib": (netns_kernel * 100.0).round() / 100.0,
        })
    }
}

fn meminfo() -> BTreeMap<String, u64> {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let kib = rest.split_whitespace().next()?.parse().ok()?;
            Some((name.to_owned(), kib))
        })
        .collect()
}

/// Steps the number of idle pods on `host` through `steps`: each step creates the pods up to
/// its total and waits until they are all Running, for at most the step's time and while
/// pods keep turning Running; the first step not reached ends the stepping. Then every
/// pod is deleted and the time until the node holds nothing is taken.
fn density_on(
    lab: &mut Lab,
    cluster: &Cluster,
    host: &Host,
    mode: &str,
    steps: &[usize],
    knobs: &Knobs,
    out: &mut Report,
) -> Result<()> {
    let pid = lab
        .pid(&agent_name(host))
        .with_context(|| format!("no agent on {}", host.name))?;
    let cni = mode == "cni";
    let selector = format!("bench=dense-{mode}");
    let base = Sample::take(lab, host, pid, cni);
    out.emit(json!({"kind": "density-base", "mode": mode, "node": host.name, "agent": base.json(), "loadavg": loadavg()}))?;
    eprintln!(
        "\ndensity on {} ({mode} mode): idle pods, half sleepers and half wasi:http servers",
        host.name
    );
    eprintln!(
        "{:>6} {:>7} {:>8} {:>9} {:>6} {:>7} {:>6} {:>6} {:>10} {:>9}",
        "step",
        "Running",
        "seconds",
        "RSS MiB",
        "fds",
        "fds/pod",
        "netns",
        "veths",
        "kernel/pod",
        "CPU/pod"
    );
    let mut created = 0;
    let mut gave_out = None;
    let mut best = 0;
    for &step in steps {
        let started = Instant::now();
        create_dense(lab, cluster, host, mode, created, step)?;
        created = step;
        let reached = wait_running(cluster, &host.name, &selector, step, knobs);
        let seconds = secs(started.elapsed());
        let (running, why) = match reached {
            Ok(n) => (n, None),
            Err((n, why)) => (n, Some(why)),
        };
        // A quiet container's log file is closed after a few seconds: the pods are sampled
        // idle, as they stay.
        std::thread::sleep(Duration::from_secs(knobs.settle));
        let now = Sample::take(lab, host, pid, cni);
        let per_pod = now.per_pod(&base, running);
        if why.is_none() {
            best = step;
        }
        eprintln!(
            "{step:>6} {running:>7} {seconds:>8.1} {:>9.1} {:>6} {:>7} {:>6} {:>6} {:>7} KiB {:>6} ms",
            now.rss_kib as f64 / 1024.0,
            now.fds,
            per_pod["fds"],
            now.namespaces,
            now.veths,
            per_pod["unreclaimable_kernel_kib"],
            per_pod["cpu_ms"]
        );
        let states = if why.is_some() {
            not_running(cluster, &host.name, &selector)
        } else {
            json!({})
        };
        out.emit(json!({
            "kind": "density", "mode": mode, "node": host.name, "step": step,
            "running": running, "seconds": seconds, "reached": why.is_none(),
            "why": why, "agent": now.json(), "per_pod": per_pod,
            "not_running": states, "alive": lab.running(&agent_name(host)),
            "mem_available_mib": meminfo().get("MemAvailable").copied().unwrap_or(0) / 1024,
            "loadavg": loadavg(),
        }))?;
        if let Some(why) = why {
            gave_out = Some(format!("at the {step}-pod step, {running} Running: {why}"));
            break;
        }
    }
    let events = warnings(cluster, &format!("dense-{mode}-"));
    let gone = Instant::now();
    // One request deleting them all (kubectl delete -l deletes one by one).
    let collection = format!("/api/v1/namespaces/default/pods?labelSelector=bench%3Ddense-{mode}");
    cluster.kubectl_within(Duration::from_secs(300), &["delete", "--raw", &collection])?;
    let left = wait_empty(lab, cluster, host, &selector, cni);
    let after = Sample::take(lab, host, pid, cni);
    let summary = json!({
        "kind": "density-summary", "mode": mode, "node": host.name, "steps": steps,
        "best": best,
        "gave_out": gave_out.clone().unwrap_or_else(|| format!("nothing up to {} pods (the last step)", steps.last().copied().unwrap_or(0))),
        "warnings": events,
        "delete_seconds": secs(gone.elapsed()), "left_after_delete": left,
        "after_delete": after.json(),
        "kernel_kib_left_after_delete": KERNEL_FIELDS.iter().map(|f| (f.to_string(), after.kernel(f) - base.kernel(f))).collect::<BTreeMap<_, _>>(),
        "loadavg": loadavg(),
    });
    eprintln!(
        "{mode}: {best} pods the last step reached; gave out: {}; all deleted in {:.0} s{}",
        summary["gave_out"].as_str().unwrap_or_default(),
        gone.elapsed().as_secs_f64(),
        if left.is_empty() {
            String::new()
        } else {
            format!(" (left: {})", left.join(", "))
        }
    );
    for w in events.as_array().into_iter().flatten().take(5) {
        eprintln!("  {}x {}: {}", w["count"], w["reason"], w["message"]);
    }
    out.emit(summary)
}

/// Creates pods `from..to` of the density workload on `host` (even: the sleep module, odd:
/// the wasi:http component, no probes), a hundred per kubectl call.
fn create_dense(
    lab: &Lab,
    cluster: &Cluster,
    host: &Host,
    mode: &str,
    from: usize,
    to: usize,
) -> Result<()> {
    let (sleep, http) = (cluster.image("sleep"), cluster.image("http-hello"));
    for chunk in (from..to).collect::<Vec<_>>().chunks(100) {
        let items: Vec<Value> = chunk
            .iter()
            .map(|i| {
                let container = match i % 2 {
                    0 => json!({"name": "sleep", "image": sleep, "args": [SLEEP_MS]}),
                    _ => json!({"name": "web", "image": http, "ports": [{"containerPort": 8080}]}),
                };
                let mut pod = pod_template(&host.name, container, None);
                pod["apiVersion"] = json!("v1");
                pod["kind"] = json!("Pod");
                pod["metadata"] = json!({
                    "name": format!("dense-{mode}-{i:05}"),
                    "labels": {"bench": format!("dense-{mode}")},
                });
                pod
            })
            .collect();
        let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
        let path = lab.dir().join("dense.json");
        std::fs::write(&path, serde_json::to_vec(&list)?)?;
        let limit = Duration::from_secs(300);
        cluster.kubectl_within(
            limit,
            &["create", "-f", &path.to_string_lossy(), "-o", "name"],
        )?;
    }
    Ok(())
}

/// Waits until `want` pods of `selector` on `node` are Running: the count, or the count
/// reached and why the wait ended (the step's time, or no pod turned Running for a while).
fn wait_running(
    cluster: &Cluster,
    node: &str,
    selector: &str,
    want: usize,
    knobs: &Knobs,
) -> Result<usize, (usize, String)> {
    let started = Instant::now();
    let (mut last, mut progress) = (0, Instant::now());
    let fields = format!("spec.nodeName={node},status.phase=Running");
    loop {
        let names = cluster.kubectl(&[
            "get",
            "pods",
            "-l",
            selector,
            "--field-selector",
            &fields,
            "-o",
            "name",
        ]);
        let running = names.map_or(last, |n| n.lines().count());
        if running > last {
            (last, progress) = (running, Instant::now());
        }
        if running >= want {
            return Ok(running);
        }
        if started.elapsed() > Duration::from_secs(knobs.step_timeout) {
            return Err((
                last,
                format!("not all Running within the step's {} s", knobs.step_timeout),
            ));
        }
        if progress.elapsed() > Duration::from_secs(knobs.stall) {
            return Err((last, format!("no pod turned Running for {} s", knobs.stall)));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The pods of `selector` on `node` that are not Running, counted by where they stand.
fn not_running(cluster: &Cluster, node: &str, selector: &str) -> Value {
    let fields = format!("spec.nodeName={node},status.phase!=Running");
    let Ok(list) =
        cluster.kubectl_json(&["get", "pods", "-l", selector, "--field-selector", &fields])
    else {
        return json!({});
    };
    let mut states: BTreeMap<String, u64> = BTreeMap::new();
    for pod in list["items"].as_array().into_iter().flatten() {
        let phase = pod["status"]["phase"].as_str().unwrap_or("?");
        let waiting = pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"].as_str();
        let state = match waiting {
            Some(reason) => format!("{phase}, {reason}"),
            None => phase.to_owned(),
        };
        *states.entry(state).or_insert(0) += 1;
    }
    json!(states)
}

/// The Warning events of the pods named `prefix...`, grouped by reason and message (the
/// words naming one pod or link blanked), the most frequent first.
fn warnings(cluster: &Cluster, prefix: &str) -> Value {
    let Ok(list) = cluster.kubectl_json(&["get", "events", "--field-selector", "type=Warning"])
    else {
        return json!([]);
    };
    let mut groups: BTreeMap<(String, String), (u64, String)> = BTreeMap::new();
    for event in list["items"].as_array().into_iter().flatten() {
        let object = event["involvedObject"]["name"].as_str().unwrap_or_default();
        if !object.starts_with(prefix) {
            continue;
        }
        let message = event["message"].as_str().unwrap_or_default();
        let reason = event["reason"].as_str().unwrap_or_default().to_owned();
        let count = event["count"].as_u64().unwrap_or(1);
        let entry = groups
            .entry((reason, blank(message)))
            .or_insert((0, message.to_owned()));
        entry.0 += count;
    }
    let mut sorted: Vec<_> = groups.into_iter().collect();
    sorted.sort_by_key(|b| std::cmp::Reverse(b.1.0));
    let items = sorted.into_iter().take(8).map(|((reason, message), (count, example))| {
        json!({"reason": reason, "message": message, "count": count, "example": example})
    });
    json!(items.collect::<Vec<_>>())
}

/// `message` with the words that name one pod or link blanked to `#`: those mostly of
/// digits (addresses, counts, pod numbers), hexadecimal ids, and `veth` names.
fn blank(message: &str) -> String {
    let mut out = String::new();
    for word in message.split_inclusive(|c: char| !c.is_ascii_alphanumeric()) {
        let core = word.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
        let tail = &word[core.len()..];
        let digits = core.chars().filter(char::is_ascii_digit).count();
        let hex = core.len() >= 8 && core.chars().all(|c| c.is_ascii_hexdigit());
        if digits > 0 && (hex || digits * 2 >= core.len() || core.starts_with("veth")) {
            out.push('#');
        } else {
            out.push_str(core);
        }
        out.push_str(tail);
    }
    out
}

/// Waits (at most 10 minutes) until no pod of `selector` is left and, in CNI mode, the node
/// holds no pod namespace, veth or allocation; returns what is left.
fn wait_empty(lab: &Lab, cluster: &Cluster, host: &Host, selector: &str, cni: bool) -> Vec<String> {
    let dir = Cluster::agent_dir(lab, host);
    let left = || -> Vec<String> {
        let pods = cluster.kubectl(&["get", "pods", "-l", selector, "-o", "name"]);
        let pods = pods.map_or(usize::MAX, |p| p.lines().count());
        let mut counts = vec![("pods", pods)];
        if cni {
            counts.push(("pod namespaces", pinned(&dir)));
            counts.push(("pod veths", pod_veths(host)));
            counts.push(("allocated addresses", allocations(&dir)));
        }
        counts
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(what, n)| format!("{n} {what}"))
            .collect()
    };
    let done = eventually(Duration::from_secs(600), "the density pods gone", || {
        left().is_empty().then_some(())
    });
    match done {
        Ok(()) => Vec::new(),
        Err(_) => left(),
    }
}
