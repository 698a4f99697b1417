//! The pod worker serving `wasi:http` components (on the pod IP, on host ports, a port taken
//! twice) and probing containers (readiness, liveness, startup; probes that cannot run).
//! Tests against a listening component use real time and probe every second; the others
//! run on tokio's paused clock.

mod common;

use std::time::Duration;

use common::{
    container, events_of, free_address, has_event, node_with_pod_ip, running, start_in, start_on,
    terminated, waiting_reason,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The whole response to one `GET /` on `ip:port`.
async fn get(ip: &str, port: u16) -> String {
    let mut conn = tokio::net::TcpStream::connect((ip, port)).await.unwrap();
    let request = "GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n";
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).await.unwrap();
    response
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let pairs = pairs.iter();
    pairs.map(|(r, m)| (r.to_string(), m.to_string())).collect()
}

#[tokio::test]
async fn an_http_container_serves_on_the_pod_ip_and_its_host_port_until_stopped() {
    let (ip, port) = free_address();
    let (host_ip, host_port) = free_address();
    let pod = start_on(
        node_with_pod_ip(&ip),
        &format!(
            "  containers:\n  - name: web\n    image: http\n    \
             ports: [{{containerPort: {port}, hostIP: \"{host_ip}\", hostPort: {host_port}}}]\n"
        ),
        "",
    );
    let facts = pod.until(|f| running(f, "web")).await;
    assert!(container(&facts, "web").ready, "no readiness probe: ready");
    for (ip, port) in [(&ip, port), (&host_ip, host_port)] {
        let response = get(ip, port).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(
            response.contains("\r\nhello from wasi:http!\n"),
            "{response}"
        );
    }
    pod.worker.stop(Duration::from_secs(30));
    let done = pod.finish().await;
    let web = terminated(&done, "web");
    assert_eq!(
        (web.exit_code, web.reason.as_deref()),
        (0, Some("Completed")),
        "a stopped server ends by itself, long before its grace period"
    );
    assert_eq!(pod.status(&done).phase.as_deref(), Some("Succeeded"));
    let pulled = done.events.iter().find(|e| e.reason == "Pulled").unwrap();
    assert!(
        pulled
            .message
            .starts_with("Successfully pulled image \"http\" in 1.5s (")
    );
    let told: Vec<String> = events_of(&done, Some("web"))
        .into_iter()
        .map(|(reason, _)| reason)
        .collect();
    assert_eq!(told, ["Pulling", "Pulled", "Created", "Started", "Killing"]);
    assert!(has_event(&done, "Killing", "Stopping container web"));
}

/// `GET /` on `127.0.0.1:port` dialled from inside `ns`.
async fn get_inside(
    ns: std::sync::Arc<wasmlet_netns::NetNs>,
    port: u16,
) -> std::io::Result<String> {
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let mut conn = ns
            .connect_tcp(addr, Duration::from_secs(10))
            .map_err(std::io::Error::other)?;
        conn.write_all(b"GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")?;
        let mut response = String::new();
        conn.read_to_string(&mut response)?;
        Ok(response)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_pod_with_a_network_namespace_serves_inside_it_and_nowhere_else() {
    use std::sync::Arc;
    use wasmlet_netns::NetNs;
    let scratch = tempfile::tempdir().unwrap();
    let (pod_path, other_path) = (scratch.path().join("pod"), scratch.path().join("other"));
    let ns = Arc::new(NetNs::create(&pod_path).expect("create a namespace (needs root)"));
    let other = Arc::new(NetNs::create(&other_path).unwrap());
    for n in [&ns, &other] {
        n.set_loopback_up().unwrap();
    }
    // The pod IP is the namespace's own address; a hostPort is portmap's business, not bound.
    let pod = start_in(
        node_with_pod_ip("127.0.0.1"),
        Some(ns.clone()),
        "  containers:\n  - name: web\n    image: http\n    \
         ports: [{containerPort: 8080, hostPort: 8080}]\n",
        "",
    );
    pod.until(|f| running(f, "web")).await;
    let response = get_inside(ns.clone(), 8080).await.unwrap();
    assert!(
        response.contains("\r\nhello from wasi:http!\n"),
        "{response}"
    );
    let elsewhere = get_inside(other.clone(), 8080).await.unwrap_err();
    assert!(elsewhere.to_string().contains("refused"), "{elsewhere}");
    pod.worker.stop(Duration::from_secs(30));
    let done = pod.finish().await;
    assert_eq!(terminated(&done, "web").exit_code, 0);
    drop((ns, other));
    for path in [pod_path, other_path] {
        wasmlet_netns::remove(&path).unwrap();
    }
}

#[tokio::test]
async fn a_port_taken_by_another_container_cannot_be_served() {
    let (ip, port) = free_address();
    let pod = start_on(
        node_with_pod_ip(&ip),
        &format!(
            "  containers:\n  - {{name: first, image: http, ports: [{{containerPort: {port}}}]}}\n  \
             - {{name: second, image: http, ports: [{{containerPort: {port}}}]}}\n"
        ),
        "",
    );
    let facts = pod
        .until(|f| waiting_reason(f, "second").is_some_and(|(r, _)| r == "RunContainerError"))
        .await;
    let (_, message) = waiting_reason(&facts, "second").unwrap();
    let expected = format!("listen tcp {ip}:{port}: bind: address already in use (");
    assert!(message.starts_with(&expected), "{message}");
    assert!(
        message.contains("change the container's ports[].containerPort"),
        "{message}"
    );
    assert!(running(&facts, "first"));
    assert!(has_event(&facts, "Failed", &format!("Error: {message}")));
    assert!(get(&ip, port).await.starts_with("HTTP/1.1 200"));
    pod.kill().await;
}

#[tokio::test]
async fn probes_make_an_http_container_started_then_ready() {
    let (ip, port) = free_address();
    let pod = start_on(
        node_with_pod_ip(&ip),
        &format!(
            "  containers:\n  - name: web\n    image: http\n    \
             ports: [{{name: http, containerPort: {port}}}]\n    \
             startupProbe: {{tcpSocket: {{port: http}}, periodSeconds: 1}}\n    \
             readinessProbe: {{httpGet: {{port: http, path: /healthz, httpHeaders: [{{name: X-Probe, value: \"1\"}}]}}, periodSeconds: 1}}\n    \
             livenessProbe: {{httpGet: {{port: {port}}}, periodSeconds: 1}}\n"
        ),
        "",
    );
    let facts = pod.until(|f| container(f, "web").ready).await;
    assert_eq!(container(&facts, "web").started, Some(true));
    let status = pod.status(&facts);
    let ready = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready");
    assert_eq!(ready.map(|c| c.status.as_str()), Some("True"));
    let unhealthy = facts.events.iter().filter(|e| e.reason == "Unhealthy");
    assert_eq!(unhealthy.count(), 0, "{:?}", facts.events);
    pod.kill().await;
}

#[tokio::test]
async fn a_failing_readiness_probe_keeps_a_server_unready() {
    let (ip, port) = free_address();
    let (_, closed) = free_address();
    let pod = start_on(
        node_with_pod_ip(&ip),
        &format!(
            "  containers:\n  - name: web\n    image: http\n    ports: [{{containerPort: {port}}}]\n    \
             readinessProbe: {{tcpSocket: {{port: {closed}, host: \"127.0.0.1\"}}, periodSeconds: 1}}\n"
        ),
        "",
    );
    let failed =
        format!("Readiness probe failed: dial tcp 127.0.0.1:{closed}: connect: connection refused");
    let facts = pod.until(|f| has_event(f, "Unhealthy", &failed)).await;
    let web = container(&facts, "web");
    assert!(running(&facts, "web") && !web.ready, "{web:?}");
    assert_eq!(web.started, None, "no startup probe");
    assert!(get(&ip, port).await.starts_with("HTTP/1.1 200"));
    pod.kill().await;
}

#[tokio::test(start_paused = true)]
async fn a_failing_liveness_probe_restarts_the_container() {
    let (ip, closed) = free_address();
    let pod = start_on(
        node_with_pod_ip(&ip),
        &format!(
            "  containers:\n  - name: c\n    image: sleep\n    args: [\"600000\"]\n    \
             livenessProbe: {{tcpSocket: {{port: {closed}}}, periodSeconds: 1, failureThreshold: 2}}\n"
        ),
        "",
    );
    let facts = pod.until(|f| container(f, "c").restart_count >= 1).await;
    let previous = container(&facts, "c").last_termination.clone().unwrap();
    assert_eq!(
        previous.exit_code, 143,
        "stopped: it ends as a process does on SIGTERM"
    );
    let failed =
        format!("Liveness probe failed: dial tcp {ip}:{closed}: connect: connection refused");
    let told = events_of(&facts, Some("c"));
    let first_run: Vec<_> = told.iter().skip(2).take(5).cloned().collect();
    let killing = "Container c failed liveness probe, will be restarted";
    let expected = [
        ("Created", "Created container: c"),
        ("Started", "Started container c"),
        ("Unhealthy", failed.as_str()),
        ("Unhealthy", failed.as_str()),
        ("Killing", killing),
    ];
    assert_eq!(first_run, owned(&expected), "{told:?}");
    let warnings = facts.events.iter().filter(|e| e.reason == "Unhealthy");
    assert!(warnings.clone().all(|e| e.warning));
    assert_eq!(told.iter().filter(|(r, _)| r == "Started").count(), 2);
    pod.kill().await;
}

#[tokio::test(start_paused = true)]
async fn a_failing_startup_probe_kills_and_holds_back_the_other_probes() {
    let (ip, closed) = free_address();
    let pod = start_on(
        node_with_pod_ip(&ip),
        &format!(
            "  restartPolicy: Never\n  terminationGracePeriodSeconds: 5\n  containers:\n  \
             - name: c\n    image: sleep\n    args: [\"600000\"]\n    \
             startupProbe: {{tcpSocket: {{port: {closed}}}, periodSeconds: 2, failureThreshold: 3}}\n    \
             readinessProbe: {{tcpSocket: {{port: {closed}}}, periodSeconds: 1}}\n"
        ),
        "",
    );
    let running_facts = pod.until(|f| running(f, "c")).await;
    assert_eq!(container(&running_facts, "c").started, Some(false));
    let done = pod.finish().await;
    assert_eq!(terminated(&done, "c").exit_code, 143);
    assert_eq!(
        container(&done, "c").restart_count,
        0,
        "restartPolicy: Never"
    );
    let told = events_of(&done, Some("c"));
    let probes: Vec<&str> = told
        .iter()
        .filter(|(r, _)| r == "Unhealthy" || r == "Killing")
        .map(|(_, m)| m.split(':').next().unwrap_or_default())
        .collect();
    assert_eq!(
        probes,
        [
            "Startup probe failed",
            "Startup probe failed",
            "Startup probe failed",
            "Container c failed startup probe"
        ],
        "no readiness probe before the startup probe succeeds, and no restart under Never"
    );
}

#[tokio::test(start_paused = true)]
async fn exec_probes_are_told_once_and_never_make_a_container_ready() {
    let pod = start_on(
        node_with_pod_ip("127.0.0.1"),
        "  containers:\n  - name: idle\n    image: sleep\n    args: [\"600000\"]\n    \
         readinessProbe: {exec: {command: [cat, /tmp/ready]}}\n    \
         livenessProbe: {exec: {command: [cat, /tmp/alive]}}\n  \
         - name: quick\n    image: exit\n    readinessProbe: {exec: {command: [\"true\"]}}\n",
        "",
    );
    let facts = pod
        .until(|f| container(f, "quick").restart_count >= 2)
        .await;
    let idle = container(&facts, "idle");
    assert!(running(&facts, "idle") && !idle.ready, "{idle:?}");
    assert_eq!(idle.restart_count, 0, "an exec liveness probe never kills");
    let errored = |kind: &str| {
        format!(
            "{kind} probe errored: exec probes are not supported for wasm containers; use httpGet or tcpSocket"
        )
    };
    let unhealthy = |name| -> Vec<(String, String)> {
        let told = events_of(&facts, Some(name));
        told.into_iter().filter(|(r, _)| r == "Unhealthy").collect()
    };
    let liveness = errored("Liveness");
    let readiness = errored("Readiness");
    let expected = [
        ("Unhealthy", liveness.as_str()),
        ("Unhealthy", readiness.as_str()),
    ];
    assert_eq!(unhealthy("idle"), owned(&expected));
    let expected = [("Unhealthy", readiness.as_str())];
    assert_eq!(
        unhealthy("quick"),
        owned(&expected),
        "once, not once per run"
    );
    pod.kill().await;
}
