//! `wasi:sockets` for components, against the host's real sockets: a component listens on its
//! pod IP and answers a TCP client; binds anywhere else are refused, with the reason and the
//! fix in the container's log; without a network a component gets no sockets.

mod common;

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use wasmlet_runtime::{
    ContainerSpec, ExitReason, LogConfig, Network, Runtime, RuntimeConfig, Stdio,
};

/// The pod IP of these tests: a loopback address of its own (Linux routes all of 127/8 to lo).
const POD_IP: &str = "127.77.0.1";

fn spec(log: &Path, listen_ip: &str, port: u16, network: Option<Network>) -> ContainerSpec {
    ContainerSpec {
        args: vec!["tcp_hello.wasm".into()],
        env: vec![
            ("LISTEN_IP".into(), listen_ip.into()),
            ("LISTEN_PORT".into(), port.to_string()),
        ],
        stdio: Stdio {
            log: Some(LogConfig::new(log)),
            ..Stdio::default()
        },
        network,
        ..ContainerSpec::default()
    }
}

fn pod_network() -> Option<Network> {
    Some(Network::on_host(POD_IP.parse().unwrap()))
}

/// A port nothing listens on now, on the pod IP.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind((POD_IP, 0)).unwrap();
    listener.local_addr().unwrap().port()
}

/// The text of the CRI log's lines.
fn log_text(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .filter_map(|l| l.splitn(4, ' ').nth(3))
        .collect();
    lines.join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_listens_on_its_pod_ip_and_answers_each_connection() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("0.log");
    let rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let program = rt.load(wasmlet_fixtures::tcp_hello()).unwrap();
    let port = free_port();
    let container = rt
        .start(&program, spec(&log, POD_IP, port, pod_network()))
        .unwrap();
    let addr = SocketAddr::new(POD_IP.parse::<IpAddr>().unwrap(), port);
    for _ in 0..3 {
        let text = tokio::task::spawn_blocking(move || common::greeting(addr))
            .await
            .unwrap();
        assert_eq!(text, "hello from wasi:sockets!\n");
    }
    assert_eq!(container.status(), None, "still serving");
    container.kill();
    let status = container.wait().await;
    assert_eq!((status.code, status.reason), (137, ExitReason::Killed));
    assert!(
        log_text(&log).contains("tcp_hello: listening"),
        "{}",
        log_text(&log)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binds_off_the_pod_ip_are_refused_with_the_fix_in_the_log() {
    let rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let program = rt.load(wasmlet_fixtures::tcp_hello()).unwrap();
    let port = free_port();
    let cases = [
        (
            "0.0.0.0",
            format!(
                "wasmlet: refused to bind 0.0.0.0:{port}: the unspecified address would listen \
                 on every pod's address on this node; bind the pod IP {POD_IP} instead"
            ),
        ),
        (
            "127.77.0.2",
            format!(
                "wasmlet: refused to bind 127.77.0.2:{port}: it is not this pod's IP; a pod \
                 listens only on its own IP, {POD_IP}"
            ),
        ),
    ];
    for (listen_ip, refusal) in cases {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("0.log");
        let spec = spec(&log, listen_ip, port, pod_network());
        let status = rt.run(&program, spec).await.unwrap();
        assert_eq!((status.code, status.reason), (1, ExitReason::Error));
        let text = log_text(&log);
        assert!(text.contains(&refusal), "{listen_ip}: {text}");
        assert!(text.contains("fieldPath: status.podIP"), "{text}");
        assert!(
            text.contains(
                "tcp_hello: cannot bind LISTEN_IP:LISTEN_PORT: wasi:sockets error-code 1"
            ),
            "access-denied: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_network_a_component_has_no_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("0.log");
    let rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let program = rt.load(wasmlet_fixtures::tcp_hello()).unwrap();
    let status = rt
        .run(&program, spec(&log, POD_IP, free_port(), None))
        .await
        .unwrap();
    assert_eq!(status.code, 1);
    let text = log_text(&log);
    assert!(
        text.contains("tcp_hello: cannot create a TCP socket: wasi:sockets error-code 1"),
        "access-denied: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_pod_namespace_the_components_sockets_are_made_there() {
    let dir = tempfile::tempdir().unwrap();
    let pin = dir.path().join("pod");
    let ns = wasmlet_netns::NetNs::create(&pin).expect("a namespace (needs root)");
    ns.set_loopback_up().unwrap();
    let ns = std::sync::Arc::new(ns);
    let log = dir.path().join("0.log");
    let rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let program = rt.load(wasmlet_fixtures::tcp_hello()).unwrap();
    // An address only the pod's namespace has a listener on: lo routes all of 127/8 there.
    let ip = "127.88.0.1";
    let port = 7070;
    let network = Network {
        pod_ip: ip.parse().unwrap(),
        namespace: Some(ns.clone()),
        dns: None,
    };
    let container = rt
        .start(&program, spec(&log, ip, port, Some(network)))
        .unwrap();
    let addr = SocketAddr::new(ip.parse::<IpAddr>().unwrap(), port);
    let inside = ns.clone();
    let text = tokio::task::spawn_blocking(move || common::greeting_inside(&inside, addr))
        .await
        .unwrap();
    assert_eq!(text, "hello from wasi:sockets!\n");
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err(),
        "the component's listener must not be on the host's network"
    );
    container.kill();
    container.wait().await;
    drop(ns);
    wasmlet_netns::remove(&pin).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_its_own_namespace_a_pod_may_listen_on_every_address() {
    let dir = tempfile::tempdir().unwrap();
    let pin = dir.path().join("pod");
    let ns = wasmlet_netns::NetNs::create(&pin).expect("a namespace (needs root)");
    ns.set_loopback_up().unwrap();
    let ns = std::sync::Arc::new(ns);
    let log = dir.path().join("0.log");
    let rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let program = rt.load(wasmlet_fixtures::tcp_hello()).unwrap();
    let network = Network {
        pod_ip: "10.1.0.5".parse().unwrap(),
        namespace: Some(ns.clone()),
        dns: None,
    };
    let container = rt
        .start(&program, spec(&log, "0.0.0.0", 7071, Some(network)))
        .unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], 7071));
    let inside = ns.clone();
    let text = tokio::task::spawn_blocking(move || common::greeting_inside(&inside, addr))
        .await
        .unwrap();
    container.kill();
    container.wait().await;
    assert_eq!(text, "hello from wasi:sockets!\n", "{}", log_text(&log));
    let _ = wasmlet_netns::remove(&pin);
}
