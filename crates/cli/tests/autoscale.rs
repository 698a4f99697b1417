//! Issue 14: a HorizontalPodAutoscaler scales a wasi:http Deployment on `wasmlet node` up
//! and down, with the real metrics-server and the real HPA controller, and `kubectl top pod`
//! lists every pod of it all the time, idle ones included.
//!
//! On the lab's cluster (see `lab::cluster`: a control plane, two `wasmlet node --network
//! cni` agents, kube-proxy, a stock kubelet), metrics-server runs on the control plane's
//! host behind the aggregation layer (`lab::metrics`). A Deployment of the wasi:http hello
//! component with a small CPU request sits behind a Service, with an `autoscaling/v2` HPA on
//! CPU utilisation (1 to [`MAX_REPLICAS`], no stabilisation window). Load from `ab` on the
//! kubelet's node (bounded in requests and in time, through the Service's ClusterIP) makes
//! the HPA scale up until the new pods are Ready; once the load stops, it scales back to
//! one. All along a watcher runs `kubectl top pod` and `kubectl get hpa` as a user types
//! them: every pod Ready for [`ESTABLISHED`] (metrics-server has scraped it twice) must be
//! listed, and the HPA's target never `<unknown>`. An idle wasi:http pod that reported a
//! 0-byte working set was dropped by metrics-server, and the HPA stopped scaling.
//!
//! The deadlines are upper bounds of "eventually", never speed checks. Needs root.

mod lab;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use lab::cluster::*;
use lab::{Lab, eventually, eventually_ok, metrics};
use serde_json::Value;

/// The Deployment, its Service, its HPA and its pods' `app` label.
const APP: &str = "web";
const MAX_REPLICAS: i64 = 4;
/// The HPA's target, in percent of the pods' CPU request.
const TARGET_PERCENT: u32 = 50;
/// Each pod's CPU request: small, so that the load is far over the target.
const CPU_REQUEST: &str = "10m";
/// How long the load may run before the HPA has scaled up and the new pods are Ready.
const SCALE_UP_LIMIT: Duration = Duration::from_secs(150);
/// How long, once the load stopped, the HPA may take to scale back to one pod.
const SCALE_DOWN_LIMIT: Duration = Duration::from_secs(180);
/// How long a pod has been Ready before `kubectl top pod` must list it: metrics-server
/// lists a pod once it has two samples of its CPU, one [`metrics::RESOLUTION`] apart.
const ESTABLISHED: Duration = Duration::from_secs(40);
/// How long the one pod left is watched, idle, after the scale-down.
const IDLE_TAIL: Duration = Duration::from_secs(30);
/// The watcher's pause between rounds.
const WATCH_EVERY: Duration = Duration::from_secs(2);
/// The background process of the load.
const LOAD: &str = "load";

#[test]
fn an_hpa_scales_a_wasi_http_deployment_up_and_down() -> Result<()> {
    let started = Instant::now();
    let mut lab = Lab::new()?;
    let routing = [metrics::AGGREGATOR_ROUTING];
    let cluster = Cluster::build_with_env(&mut lab, Options::default(), &routing)?;
    eprintln!("cluster of 4 hosts ready in {:?}", started.elapsed());
    let outcome = metrics::start(&mut lab, &cluster)
        .context("starting metrics-server")
        .and_then(|()| {
            eprintln!("metrics-server Available at {:?}", started.elapsed());
            autoscale(&mut lab, &cluster, started)
        });
    eprintln!("finished in {:?}", started.elapsed());
    let outcome = outcome.map_err(|err| err.context(diagnostics(&lab, &cluster)));
    if let (Err(err), Ok(hold)) = (&outcome, std::env::var("WASMLET_LAB_HOLD")) {
        // For a person investigating: the lab stays up that many seconds.
        let dir = lab.dir().display();
        eprintln!("{err:?}\nholding the lab ({dir}) for {hold} s");
        std::thread::sleep(Duration::from_secs(hold.parse().unwrap_or(600)));
    }
    outcome
}

/// The Deployment, the first metrics, then load, scale-up, idle, scale-down, with the
/// watcher's verdict at the end.
fn autoscale(lab: &mut Lab, cluster: &Cluster, started: Instant) -> Result<()> {
    cluster.apply(lab, &web(cluster))?;
    let pods = available(cluster, APP, 1)?;
    let first = pods[0]["metadata"]["name"].as_str().context("name")?;
    first_metrics(cluster, first)?;
    eprintln!("the HPA has metrics at {:?}", started.elapsed());
    let signals = Signals::default();
    let (phases, seen) = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| watch(cluster, started, &signals, first));
        let phases = load_then_idle(lab, cluster, &pods[0], started, &signals.idle);
        signals.stop.store(true, Ordering::Relaxed);
        (phases, watcher.join())
    });
    let seen = seen.map_err(|_| anyhow::anyhow!("the watcher panicked"))?;
    eprintln!(
        "watcher: {} rounds, up to {} pods checked at once, {} once the load had stopped",
        seen.rounds, seen.most_checked, seen.most_checked_idle
    );
    phases?;
    ensure!(
        seen.violations.is_empty(),
        "{} of {} rounds broke a rule:\n{}",
        seen.violations.len(),
        seen.rounds,
        seen.violations.join("\n\n")
    );
    ensure!(
        seen.most_checked_idle > 1,
        "no round checked more than one pod once the load had stopped"
    );
    Ok(())
}

/// Waits until `kubectl top pod` lists `pod` and the HPA shows a utilisation.
fn first_metrics(cluster: &Cluster, pod: &str) -> Result<()> {
    eventually_ok(Duration::from_secs(120), "the first metrics", || {
        let top = cluster.kubectl(&["top", "pod", "-l", &format!("app={APP}")])?;
        ensure!(top_listed(&top).contains(pod), "kubectl top pod:\n{top}");
        let hpa = cluster.kubectl(&["get", "hpa", APP])?;
        ensure!(!hpa.contains("<unknown>"), "kubectl get hpa:\n{hpa}");
        Ok(())
    })
}

/// Load until the HPA has scaled up and the new pods have been Ready for [`ESTABLISHED`];
/// then idle (`idle` set) until it has scaled back to one pod, and a while longer.
fn load_then_idle(
    lab: &mut Lab,
    cluster: &Cluster,
    pod: &Value,
    started: Instant,
    idle: &AtomicBool,
) -> Result<()> {
    let url = service_url(cluster, pod)?;
    start_load(lab, cluster, &url)?;
    let up = scaled_up(lab, cluster);
    let summary = stop_load(lab);
    idle.store(true, Ordering::Relaxed);
    let replicas = up?;
    let summary = summary?;
    eprintln!(
        "load stopped at {:?} ({summary}); scaled up to {replicas}",
        started.elapsed()
    );
    eprintln!("{}", cluster.kubectl(&["get", "hpa", APP])?);
    scaled_down(cluster)?;
    eprintln!("back to one pod at {:?}", started.elapsed());
    std::thread::sleep(IDLE_TAIL);
    let hpa = hpa_replicas(cluster).context("the HPA's status")?;
    ensure!(hpa == (1, 1), "the HPA moved while idle: {hpa:?}");
    Ok(())
}

/// The Service's URL, once it answers from the kubelet's node (given a route to the
/// Service network: the lab's hosts have none, and kube-proxy rewrites the connections).
fn service_url(cluster: &Cluster, pod: &Value) -> Result<String> {
    let ip = pod_ip(pod)?;
    let listed = endpoints(cluster, APP, &BTreeSet::from([ip]))?;
    ensure!(
        listed == BTreeSet::from([ip]),
        "{APP}'s endpoints: {listed:?}"
    );
    cluster.route_services_from_native()?;
    let native = &cluster.native;
    let service = cluster.kubectl_json(&["get", "service", APP])?;
    let cluster_ip = service["spec"]["clusterIP"].as_str().context("clusterIP")?;
    let url = format!("http://{cluster_ip}/");
    eventually_ok(Duration::from_secs(30), "the ClusterIP to answer", || {
        native.run(&["curl", "-sf", "--max-time", "5", &url])
    })?;
    Ok(url)
}

/// `ab` on the kubelet's node, at low priority, one request at a time, each on a new
/// connection (so kube-proxy spreads them over the pods): at most 300,000 requests, and
/// ending by itself half a minute after the longest [`scaled_up`] may keep it on.
fn start_load(lab: &mut Lab, cluster: &Cluster, url: &str) -> Result<()> {
    let seconds = (SCALE_UP_LIMIT + ESTABLISHED + 2 * WATCH_EVERY).as_secs() + 30;
    let mut command = cluster
        .native
        .command_within(Duration::from_secs(seconds + 30), "nice");
    command
        .args(["-n", "10", "ab", "-q", "-r", "-s", "5", "-c", "1"])
        .args(["-t", &seconds.to_string(), "-n", "300000", url]);
    lab.spawn(LOAD, command)
}

/// Stops the load with SIGINT (ab prints its summary) and returns the summary's numbers.
fn stop_load(lab: &mut Lab) -> Result<String> {
    if let Some(pid) = lab.pid(LOAD) {
        // `timeout` hands the signal on to ab.
        let _ = std::process::Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .output();
    }
    let _ = eventually(Duration::from_secs(15), "ab to stop", || {
        (!lab.running(LOAD)).then_some(())
    });
    lab.kill(LOAD)?;
    let log = std::fs::read_to_string(lab.log_path(LOAD))?;
    let field = |name: &str| {
        let line = log.lines().find(|l| l.starts_with(name));
        line.map(|l| l[name.len()..].trim().to_owned())
    };
    let complete = field("Complete requests:");
    let complete = complete.with_context(|| format!("no summary from ab:\n{log}"))?;
    ensure!(
        complete.parse::<u64>().unwrap_or(0) > 0,
        "ab completed no request:\n{log}"
    );
    let failed = field("Failed requests:").unwrap_or_default();
    let rate = field("Requests per second:").unwrap_or_default();
    Ok(format!("{complete} requests, {failed} failed, {rate}"))
}

/// Waits, under load, until the HPA wants and has more than one replica and all of them
/// are Ready; then keeps the load on for [`ESTABLISHED`] (and two of the watcher's rounds,
/// which time the pods from when they see them Ready), so that the new pods are established
/// when the idle part begins. Returns the replicas.
fn scaled_up(lab: &mut Lab, cluster: &Cluster) -> Result<i64> {
    let mut ab_ended = false;
    let replicas = eventually(SCALE_UP_LIMIT, "the HPA to scale web up under load", || {
        if !lab.running(LOAD) {
            ab_ended = true;
            return Some(0);
        }
        let (current, desired) = hpa_replicas(cluster)?;
        let ready = ready_replicas(cluster)?;
        (current > 1 && desired > 1 && ready == current).then_some(ready)
    })?;
    if ab_ended {
        bail!("the load ended early:\n{}", lab.log_tail(LOAD, 20));
    }
    ensure!(replicas <= MAX_REPLICAS, "{replicas} replicas");
    let scaled = Instant::now();
    while scaled.elapsed() < ESTABLISHED + 2 * WATCH_EVERY {
        ensure!(
            lab.running(LOAD),
            "the load ended early:\n{}",
            lab.log_tail(LOAD, 20)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(replicas)
}

/// Waits, idle, until the HPA wants and has one replica and only one pod is left.
fn scaled_down(cluster: &Cluster) -> Result<()> {
    eventually(SCALE_DOWN_LIMIT, "the HPA to scale web back to 1", || {
        let hpa = hpa_replicas(cluster)?;
        let ready = ready_replicas(cluster)?;
        let live = live_pods(cluster).ok()?;
        (hpa == (1, 1) && ready == 1 && live.len() == 1).then_some(())
    })
}

/// The HPA's current and desired replicas.
fn hpa_replicas(cluster: &Cluster) -> Option<(i64, i64)> {
    let hpa = cluster.kubectl_json(&["get", "hpa", APP]).ok()?;
    let status = &hpa["status"];
    Some((
        status["currentReplicas"].as_i64()?,
        status["desiredReplicas"].as_i64()?,
    ))
}

/// The Deployment's replicas, when every one of them is up to date and Ready.
fn ready_replicas(cluster: &Cluster) -> Option<i64> {
    let deployment = cluster.kubectl_json(&["get", "deployment", APP]).ok()?;
    let wanted = deployment["spec"]["replicas"].as_i64()?;
    let status = &deployment["status"];
    let all = ["replicas", "updatedReplicas", "readyReplicas"]
        .iter()
        .all(|field| status[field].as_i64() == Some(wanted));
    all.then_some(wanted)
}

// ---- the watcher -------------------------------------------------------------------------

/// What the test's phases tell the watcher.
#[derive(Default)]
struct Signals {
    /// The load has stopped.
    idle: AtomicBool,
    /// The phases are over.
    stop: AtomicBool,
}

/// What the watcher saw.
#[derive(Default)]
struct Seen {
    rounds: usize,
    /// The most pods that one round required `kubectl top pod` to list.
    most_checked: usize,
    /// The same, once the load had stopped.
    most_checked_idle: usize,
    /// The rounds that broke a rule, with what kubectl showed.
    violations: Vec<String>,
}

/// Rounds of [`round`] every [`WATCH_EVERY`] until told to stop; `first` is the pod whose
/// metrics were already seen, established from the start.
fn watch(cluster: &Cluster, started: Instant, signals: &Signals, first: &str) -> Seen {
    let mut seen = Seen::default();
    let mut ready_since = BTreeMap::new();
    let established = Instant::now().checked_sub(ESTABLISHED);
    ready_since.insert(first.to_owned(), established.unwrap_or_else(Instant::now));
    while !signals.stop.load(Ordering::Relaxed) {
        let idle = signals.idle.load(Ordering::Relaxed);
        if let Some(broken) = round(cluster, &mut ready_since, &mut seen, idle) {
            let at = started.elapsed().as_secs();
            seen.violations.push(format!("at {at} s: {broken}"));
        }
        std::thread::sleep(WATCH_EVERY);
    }
    seen
}

/// One look: the pods Ready (and not being deleted) before and after `kubectl top pod` and
/// `kubectl get hpa`; every pod Ready for [`ESTABLISHED`] in both must be in `kubectl top
/// pod`, and the HPA's TARGETS must not be `<unknown>`. `idle`: the load has stopped.
/// Returns what broke, if anything.
fn round(
    cluster: &Cluster,
    ready_since: &mut BTreeMap<String, Instant>,
    seen: &mut Seen,
    idle: bool,
) -> Option<String> {
    let before = live_pods(cluster).ok()?;
    let now = Instant::now();
    ready_since.retain(|name, _| before.contains(name));
    for name in &before {
        ready_since.entry(name.clone()).or_insert(now);
    }
    let selector = format!("app={APP}");
    let top = cluster.kubectl_output(&["top", "pod", "-l", &selector]);
    let hpa = cluster.kubectl(&["get", "hpa", APP]);
    let after = live_pods(cluster).ok()?;
    let must: BTreeSet<&String> = ready_since
        .iter()
        .filter(|(name, since)| now.duration_since(**since) >= ESTABLISHED && after.contains(*name))
        .map(|(name, _)| name)
        .collect();
    seen.rounds += 1;
    seen.most_checked = seen.most_checked.max(must.len());
    if idle {
        seen.most_checked_idle = seen.most_checked_idle.max(must.len());
    }
    let top = match top {
        Ok(output) if output.status.success() => {
            String::from_utf8_lossy(&output.stdout).into_owned()
        }
        Ok(output) => format!(
            "({}) {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ),
        Err(e) => format!("{e:#}"),
    };
    let hpa = hpa.unwrap_or_else(|e| format!("{e:#}"));
    if seen.rounds % 5 == 1 {
        eprintln!("{}{}", indent(&top), indent(&hpa));
    }
    let listed = top_listed(&top);
    let missing: Vec<&&String> = must
        .iter()
        .filter(|name| !listed.contains(name.as_str()))
        .collect();
    let mut broken = Vec::new();
    if !missing.is_empty() {
        broken.push(format!(
            "kubectl top pod lacks {missing:?}, Ready for over {ESTABLISHED:?}:\n{top}"
        ));
    }
    if hpa.contains("<unknown>") {
        broken.push(format!("kubectl get hpa shows <unknown>:\n{hpa}"));
    }
    (!broken.is_empty()).then(|| broken.join("\n"))
}

/// The Deployment's pods that are Running and Ready and not being deleted.
fn live_pods(cluster: &Cluster) -> Result<BTreeSet<String>> {
    let list = cluster.kubectl_json(&["get", "pods", "-l", &format!("app={APP}")])?;
    let items = list["items"].as_array().context("items")?;
    let live = items.iter().filter(|pod| {
        pod["metadata"]["deletionTimestamp"].is_null()
            && pod["status"]["phase"] == "Running"
            && condition(pod, "Ready") == Some("True")
    });
    let names = live.filter_map(|pod| pod["metadata"]["name"].as_str());
    Ok(names.map(str::to_owned).collect())
}

/// The pod names `kubectl top pod` printed (the first column, after the header).
fn top_listed(top: &str) -> BTreeSet<&str> {
    let rows = top
        .lines()
        .skip_while(|line| !line.starts_with("NAME"))
        .skip(1);
    rows.filter_map(|line| line.split_whitespace().next())
        .collect()
}

fn indent(text: &str) -> String {
    text.lines().map(|line| format!("    {line}\n")).collect()
}

/// What helps to read a failure: the HPA described, the metrics, the load, the cluster.
fn diagnostics(lab: &Lab, cluster: &Cluster) -> String {
    let kubectl = |args: &[&str]| {
        let shown = cluster.kubectl(args).unwrap_or_else(|e| format!("{e:#}"));
        format!("$ kubectl {}\n{shown}", args.join(" "))
    };
    let selector = format!("app={APP}");
    [
        kubectl(&["describe", "hpa", APP]),
        kubectl(&["get", "hpa", APP]),
        kubectl(&["top", "pod", "-l", &selector]),
        kubectl(&["top", "node"]),
        kubectl(&[
            "get",
            "nodes",
            "-o",
            "custom-columns=NODE:.metadata.name,TAINTS:.spec.taints[*].key",
        ]),
        metrics::diagnose(lab, cluster),
        lab.log_tail(LOAD, 20),
        cluster.diagnostics(lab),
    ]
    .join("\n")
}

// ---- manifests ---------------------------------------------------------------------------

/// What lets a pod onto a wasm node: the taints tolerated, the arch selected.
const WASM_PLACEMENT: &str = "nodeSelector: {kubernetes.io/arch: wasm32-wasi}\n      \
     tolerations:\n      - {key: kubernetes.io/arch, value: wasm32-wasi, effect: NoSchedule}\n      \
     - {key: kubernetes.io/arch, value: wasm32-wasi, effect: NoExecute}";

/// The wasi:http hello Deployment (one replica, [`CPU_REQUEST`], ready by an httpGet probe),
/// its Service, and its HPA: CPU at [`TARGET_PERCENT`], 1 to [`MAX_REPLICAS`] pods, no
/// stabilisation window either way, up by any step every 15 s, down by one pod every 15 s
/// (so that idle pods stay a while, scraped idle, on the way down).
fn web(cluster: &Cluster) -> String {
    let image = cluster.image("http-hello");
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {APP}, namespace: default}}\n\
         spec:\n  replicas: 1\n  selector: {{matchLabels: {{app: {APP}}}}}\n  template:\n    \
         metadata: {{labels: {{app: {APP}}}}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      \
         {WASM_PLACEMENT}\n      \
         containers:\n      - name: web\n        image: '{image}'\n        \
         ports: [{{containerPort: 8080}}]\n        \
         resources: {{requests: {{cpu: {CPU_REQUEST}}}}}\n        \
         readinessProbe: {{httpGet: {{path: /, port: 8080}}, periodSeconds: 5}}\n\
         ---\napiVersion: v1\nkind: Service\nmetadata: {{name: {APP}, namespace: default}}\n\
         spec:\n  selector: {{app: {APP}}}\n  ports: [{{port: 80, targetPort: 8080}}]\n\
         ---\napiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\n\
         metadata: {{name: {APP}, namespace: default}}\nspec:\n  \
         scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: {APP}}}\n  \
         minReplicas: 1\n  maxReplicas: {MAX_REPLICAS}\n  metrics:\n  - type: Resource\n    \
         resource: {{name: cpu, target: {{type: Utilization, averageUtilization: {TARGET_PERCENT}}}}}\n  \
         behavior:\n    \
         scaleUp:\n      stabilizationWindowSeconds: 0\n      \
         policies: [{{type: Pods, value: {MAX_REPLICAS}, periodSeconds: 15}}]\n    \
         scaleDown:\n      stabilizationWindowSeconds: 0\n      \
         policies: [{{type: Pods, value: 1, periodSeconds: 15}}]\n"
    )
}
