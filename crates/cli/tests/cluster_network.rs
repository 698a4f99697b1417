//! `wasmlet node --network cni` as a member of a cluster of several machines, each a network
//! namespace the test creates (see `lab` and `lab::cluster`): a control plane (etcd, kube-apiserver,
//! kube-controller-manager allocating each node a pod CIDR, kube-scheduler) and the registry
//! holding the wasm images; two `wasmlet node` agents whose pods the real bridge, host-local
//! and portmap plugins attach; a stock kubelet on containerd and runc for native client pods;
//! the real kube-proxy (iptables) on every node; routes between the nodes' pod CIDRs written
//! host-gw style; CoreDNS on the control plane's address serving `cluster.local` from the API
//! server. Everything is checked with kubectl as a user types it.
//!
//! Needs root, as the agent and the kubelet do.

mod lab;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use lab::cluster::*;
use lab::{Lab, eventually, eventually_ok};

const HELLO_HTTP: &str = "hello from wasi:http!";
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
