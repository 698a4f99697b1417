//! The pod's name resolution as the worker sets it up from the pod and the node's DNS
//! settings: a component resolves the pod's `hostAliases` and its own host name (what its
//! `/etc/hosts` would hold in a container), and the kubelet's DNS warnings become the pod's
//! events.

mod common;

use std::io::Write;
use std::net::TcpListener;

use common::{events_of, node_with_pod_ip, start_with_dns, terminated};
use wasmlet_pod::{NodeDns, ResolvConf};

/// A TCP server on `ip` that writes `text` to one connection; its port.
fn serve_once(ip: &str, text: &'static str) -> u16 {
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Ok((mut conn, _)) = listener.accept() {
            let _ = conn.write_all(text.as_bytes());
        }
    });
    port
}

fn fetch_pod(host: &str, port: u16, ip: &str) -> String {
    format!(
        "  restartPolicy: Never\n  hostAliases:\n  - ip: {ip}\n    hostnames: [db, db.internal]\n  \
         containers:\n  - name: fetch\n    image: tcp_fetch\n    env:\n    \
         - {{name: TARGET_HOST, value: {host}}}\n    - {{name: TARGET_PORT, value: \"{port}\"}}\n"
    )
}

/// A node with no cluster DNS and an empty resolver configuration.
fn bare_node_dns() -> NodeDns {
    NodeDns {
        host: Some(ResolvConf::default()),
        ..NodeDns::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_aliases_and_the_pods_own_name_resolve_without_a_nameserver() {
    let ip = "127.0.0.1";
    for host in ["db", "DB.internal", "p"] {
        let port = serve_once(ip, "hello by name\n");
        let pod = start_with_dns(
            node_with_pod_ip(ip),
            bare_node_dns(),
            &fetch_pod(host, port, ip),
            "",
        );
        let facts = pod.finish().await;
        let end = terminated(&facts, "fetch");
        let log = pod.log("fetch", 0);
        assert_eq!(end.exit_code, 0, "{host}: {log:?}");
        assert_eq!(
            log,
            [
                format!("tcp_fetch: TARGET_HOST resolved to {ip}"),
                "hello by name".to_owned()
            ],
            "{host}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_first_without_cluster_dns_warns_as_the_kubelet_does() {
    let ip = "127.0.0.1";
    let port = serve_once(ip, "x\n");
    let pod = start_with_dns(
        node_with_pod_ip(ip),
        bare_node_dns(),
        &fetch_pod("db", port, ip),
        "",
    );
    let facts = pod.finish().await;
    let events = events_of(&facts, None);
    let missing = events
        .iter()
        .find(|(reason, _)| reason == "MissingClusterDNS");
    let (_, message) = missing.unwrap_or_else(|| panic!("no MissingClusterDNS in {events:?}"));
    assert!(message.contains("--cluster-dns"), "{message}");
    assert!(message.contains("\"Default\" policy"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_hosts_entry_or_nameserver_a_name_does_not_resolve() {
    let ip = "127.0.0.1";
    let port = serve_once(ip, "x\n");
    let spec = fetch_pod("elsewhere", port, ip);
    let none = "  dnsPolicy: None\n  dnsConfig: {nameservers: [], searches: [a.example]}\n";
    let pod = start_with_dns(
        node_with_pod_ip(ip),
        bare_node_dns(),
        &format!("{spec}{none}"),
        "",
    );
    let facts = pod.finish().await;
    assert_eq!(terminated(&facts, "fetch").exit_code, 1);
    assert_eq!(
        pod.log("fetch", 0),
        ["tcp_fetch: cannot resolve elsewhere: wasi:sockets error-code 20"],
        "permanent-resolver-failure: the pod has no nameserver"
    );
    assert!(
        events_of(&facts, None)
            .iter()
            .all(|(r, _)| r != "MissingClusterDNS"),
        "dnsPolicy None asks for no cluster DNS"
    );
}
