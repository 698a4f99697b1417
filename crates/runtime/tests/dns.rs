//! A pod's name resolution against a real DNS server: dnsmasq answering for
//! `cluster.local` on a "cluster DNS" address that exists only inside a network namespace the
//! test makes. Components in that namespace, given the pod's resolver (nameserver, search
//! domains, `ndots:5`, hosts entries), resolve a short Service name through the search path,
//! a hosts alias without asking DNS, and fail cleanly on an unknown name and on a nameserver
//! that does not answer; an outgoing `wasi:http` request to a name goes the same way. The
//! host's own resolver never sees these names. Needs root (namespaces) and dnsmasq.

mod common;

use common::Captured;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio as ProcessStdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmlet_netns::NetNs;
use wasmlet_runtime::{
    ContainerSpec, DnsConfig, ExitReason, ExitStatus, Limits, Network, PodResolver, Runtime,
    RuntimeConfig, Stdio,
};

/// The cluster DNS Service's address, inside the namespace only.
const CLUSTER_DNS: &str = "10.96.0.10";
/// An address where nothing answers DNS, inside the namespace.
const SILENT_DNS: &str = "10.96.0.11";
/// The address `web.shop.svc.cluster.local` resolves to, served inside the namespace.
const WEB_IP: &str = "10.9.8.7";
/// The pod's own IP, inside the namespace.
const POD_IP: &str = "10.9.8.100";
const BOUND: Duration = Duration::from_secs(30);

/// The test's namespace and the DNS server in it; both gone when dropped.
struct Lab {
    dir: tempfile::TempDir,
    ns: Arc<NetNs>,
    dnsmasq: Child,
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.dnsmasq.kill();
        let _ = self.dnsmasq.wait();
        let _ = wasmlet_netns::remove(&self.pin());
    }
}

impl Lab {
    async fn start() -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let pin = dir.path().join("pod");
        let ns = NetNs::create(&pin).expect("a namespace (needs root)");
        ns.set_loopback_up().unwrap();
        for ip in [CLUSTER_DNS, SILENT_DNS, WEB_IP, POD_IP] {
            in_namespace(
                &pin,
                &["ip", "addr", "add", &format!("{ip}/32"), "dev", "lo"],
            );
        }
        let dnsmasq = start_dnsmasq(&pin, dir.path());
        let lab = Lab {
            dir,
            ns: Arc::new(ns),
            dnsmasq,
        };
        lab.wait_for_dns().await;
        lab
    }

    fn pin(&self) -> PathBuf {
        self.dir.path().join("pod")
    }

    /// The queries dnsmasq logged so far.
    fn queries(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dnsmasq.log")).unwrap_or_default()
    }

    async fn wait_for_dns(&self) {
        let resolver = PodResolver::new(cluster_config(), Some(self.ns.clone()));
        let started = Instant::now();
        loop {
            match resolver.lookup("web.shop.svc.cluster.local.").await {
                Ok(_) => return,
                Err(err) if started.elapsed() > BOUND => {
                    panic!(
                        "dnsmasq does not answer in the namespace: {err}\n{}",
                        self.queries()
                    )
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// A TCP server at `WEB_IP`:`port` inside the namespace that writes `text` to each of
    /// `connections` connections.
    fn serve_text(&self, port: u16, text: &'static str, connections: usize) {
        let addr = SocketAddr::new(WEB_IP.parse().unwrap(), port);
        let listener = self.ns.bind_tcp(addr).unwrap();
        std::thread::spawn(move || {
            for _ in 0..connections {
                let (mut conn, _) = listener.accept().unwrap();
                conn.set_write_timeout(Some(BOUND)).unwrap();
                let _ = conn.write_all(text.as_bytes());
            }
        });
    }

    /// An HTTP server at `WEB_IP`:`port` inside the namespace answering one request with
    /// `body`; the request's head is kept in the returned cell.
    fn serve_http(&self, port: u16, body: &'static str) -> Arc<Mutex<String>> {
        let addr = SocketAddr::new(WEB_IP.parse().unwrap(), port);
        let listener = self.ns.bind_tcp(addr).unwrap();
        let head = Arc::new(Mutex::new(String::new()));
        let seen = head.clone();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            conn.set_read_timeout(Some(BOUND)).unwrap();
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap() == 1 {
                request.push(byte[0]);
            }
            *seen.lock().unwrap() = String::from_utf8_lossy(&request).into_owned();
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(answer.as_bytes());
        });
        head
    }
}

fn in_namespace(pin: &Path, args: &[&str]) {
    let status = Command::new("nsenter")
        .arg(format!("--net={}", pin.display()))
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "nsenter {args:?} failed");
}

/// dnsmasq inside the namespace on `CLUSTER_DNS`:53, authoritative for `cluster.local` with
/// one Service name, logging every query; other names get NXDOMAIN.
fn start_dnsmasq(pin: &Path, dir: &Path) -> Child {
    Command::new("nsenter")
        .arg(format!("--net={}", pin.display()))
        .args(["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null"])
        .args([
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--user=root",
        ])
        .arg(format!("--listen-address={CLUSTER_DNS}"))
        .arg(format!("--address=/web.shop.svc.cluster.local/{WEB_IP}"))
        .arg("--address=/#/")
        .arg("--log-queries")
        .arg(format!(
            "--log-facility={}",
            dir.join("dnsmasq.log").display()
        ))
        .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()))
        .stdout(ProcessStdio::null())
        .stderr(ProcessStdio::null())
        .spawn()
        .expect("dnsmasq (Debian's dnsmasq-base; tests/setup installs it)")
}

/// What the kubelet gives a pod of namespace `shop` under `ClusterFirst`, plus one hosts
/// alias (`db`).
fn cluster_config() -> DnsConfig {
    let mut config = DnsConfig {
        nameservers: vec![CLUSTER_DNS.parse().unwrap()],
        search: [
            "shop.svc.cluster.local",
            "svc.cluster.local",
            "cluster.local",
        ]
        .map(String::from)
        .to_vec(),
        hosts: vec![("db".into(), WEB_IP.parse().unwrap())],
        ..DnsConfig::default()
    };
    config.apply_options(&["ndots:5"]);
    config
}

fn network(lab: &Lab, config: DnsConfig) -> Network {
    Network {
        pod_ip: POD_IP.parse().unwrap(),
        namespace: Some(lab.ns.clone()),
        dns: Some(Arc::new(PodResolver::new(config, Some(lab.ns.clone())))),
    }
}

/// Runs `tcp_fetch` in the lab's namespace with the pod's resolver `config`.
async fn tcp_fetch(
    lab: &Lab,
    config: DnsConfig,
    host: &str,
    port: u16,
) -> (ExitStatus, String, String) {
    let (stdout, stderr) = (Captured::default(), Captured::default());
    let rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let program = rt.load(wasmlet_fixtures::tcp_fetch()).unwrap();
    let spec = ContainerSpec {
        args: vec!["tcp_fetch.wasm".into()],
        env: vec![
            ("TARGET_HOST".into(), host.into()),
            ("TARGET_PORT".into(), port.to_string()),
        ],
        stdio: Stdio {
            stdout_tee: Some(Box::new(stdout.clone())),
            stderr_tee: Some(Box::new(stderr.clone())),
            ..Stdio::default()
        },
        limits: Limits {
            timeout: Some(BOUND),
            ..Limits::default()
        },
        network: Some(network(lab, config)),
        ..ContainerSpec::default()
    };
    let status = rt.run(&program, spec).await.unwrap();
    (status, stdout.text(), stderr.text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_service_name_resolves_through_the_search_path_inside_the_pod() {
    let lab = Lab::start().await;
    lab.serve_text(7100, "hello from web\n", 1);
    let (status, stdout, stderr) = tcp_fetch(&lab, cluster_config(), "web", 7100).await;
    assert_eq!(
        (status.code, status.reason),
        (0, ExitReason::Completed),
        "{stderr}"
    );
    assert_eq!(
        stderr,
        format!("tcp_fetch: TARGET_HOST resolved to {WEB_IP}\n")
    );
    assert_eq!(stdout, "hello from web\n");
    let queries = lab.queries();
    assert!(
        queries.contains("query[A] web.shop.svc.cluster.local from 10."),
        "the first search domain was asked, from inside the namespace:\n{queries}"
    );
    assert!(
        !queries.contains("query[A] web from"),
        "ndots:5 tries the search path first and stops at the answer:\n{queries}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_entries_answer_before_dns_and_unknown_names_fail_cleanly() {
    let lab = Lab::start().await;
    lab.serve_text(7101, "hello from db\n", 1);
    let (status, stdout, stderr) = tcp_fetch(&lab, cluster_config(), "db", 7101).await;
    assert_eq!(
        (status.code, status.reason),
        (0, ExitReason::Completed),
        "{stderr}"
    );
    assert_eq!(stdout, "hello from db\n");
    assert!(
        !lab.queries().contains(" db"),
        "a hosts entry needs no query:\n{}",
        lab.queries()
    );

    let (status, _, stderr) = tcp_fetch(&lab, cluster_config(), "nothere", 7101).await;
    assert_eq!((status.code, status.reason), (1, ExitReason::Error));
    assert_eq!(
        stderr, "tcp_fetch: cannot resolve nothere: wasi:sockets error-code 18\n",
        "name-unresolvable"
    );
    let queries = lab.queries();
    for name in [
        "nothere.shop.svc.cluster.local",
        "nothere.svc.cluster.local",
        "nothere.cluster.local",
    ] {
        assert!(
            queries.contains(&format!("query[A] {name} ")),
            "{name}:\n{queries}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nameserver_that_does_not_answer_is_a_temporary_failure() {
    let lab = Lab::start().await;
    let mut config = cluster_config();
    config.nameservers = vec![SILENT_DNS.parse().unwrap()];
    config.apply_options(&["timeout:1", "attempts:1"]);
    let started = Instant::now();
    let (status, _, stderr) = tcp_fetch(&lab, config, "web", 7102).await;
    assert_eq!((status.code, status.reason), (1, ExitReason::Error));
    assert_eq!(
        stderr, "tcp_fetch: cannot resolve web: wasi:sockets error-code 19\n",
        "temporary-resolver-failure"
    );
    assert!(
        started.elapsed() < BOUND,
        "the resolver's timeout bounds the wait"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pod_resolver_answers_names_of_any_case_and_absolute_names() {
    let lab = Lab::start().await;
    let inside = PodResolver::new(cluster_config(), Some(lab.ns.clone()));
    let ip: IpAddr = WEB_IP.parse().unwrap();
    assert_eq!(inside.lookup("web").await, Ok(vec![ip]));
    assert_eq!(
        inside.lookup("WEB.shop.svc.cluster.local.").await,
        Ok(vec![ip])
    );
    assert_eq!(
        inside.lookup("web.shop").await,
        Ok(vec![ip]),
        "web.shop + svc.cluster.local"
    );
    // Hosts entries need no server, nor a namespace.
    let on_host = PodResolver::new(cluster_config(), None);
    assert_eq!(on_host.lookup("db").await, Ok(vec![ip]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outgoing_request_to_a_service_name_leaves_from_the_pod() {
    let lab = Lab::start().await;
    let head = lab.serve_http(7103, "hello over wasi:http\n");
    let rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let program = rt.load(wasmlet_fixtures::http_fetch()).unwrap();
    let listen = SocketAddr::new(POD_IP.parse().unwrap(), 8080);
    let listener = lab.ns.bind_tcp(listen).unwrap();
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let spec = ContainerSpec {
        env: vec![("FETCH_URL".into(), "http://web:7103/hello?x=1".into())],
        limits: Limits {
            timeout: Some(BOUND),
            ..Limits::default()
        },
        network: Some(network(&lab, cluster_config())),
        ..ContainerSpec::default()
    };
    let container = rt.start_http(&program, spec, vec![listener]).unwrap();
    let ns = lab.ns.clone();
    let answer = tokio::task::spawn_blocking(move || {
        let mut conn = ns.connect_tcp(listen, BOUND).unwrap();
        conn.set_read_timeout(Some(BOUND)).unwrap();
        conn.write_all(b"GET / HTTP/1.1\r\nHost: pod\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).unwrap();
        answer
    })
    .await
    .unwrap();
    container.stop(Duration::from_secs(5));
    let _ = tokio::time::timeout(BOUND, container.wait()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("hello over wasi:http"), "{answer}");
    let head = head.lock().unwrap().clone();
    assert!(head.starts_with("GET /hello?x=1 HTTP/1.1\r\n"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("\r\nhost: web:7103\r\n"),
        "the Host header keeps the name: {head}"
    );
}
