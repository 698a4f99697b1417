//! The real CNI plugins (`bridge`, `host-local`, `portmap`; Debian's
//! containernetworking-plugins, installed by tests/setup) on real namespaces. Each test makes
//! a "node" namespace and pods' namespaces inside its own temp dir and runs the plugins from a
//! thread inside the node's namespace, so the bridge, routes and iptables rules all live
//! there: nothing is added to the machine's own network. Needs root.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use wasmlet_cni::{Attachment, Cni, Error, NetworkConfig, PortMapping};
use wasmlet_netns::NetNs;

const DIAL: Duration = Duration::from_secs(10);

/// Debian's plugins, or those named by WASMLET_CNI_BIN_DIR.
fn bin_dirs() -> Vec<PathBuf> {
    let dir = std::env::var_os("WASMLET_CNI_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/cni"));
    assert!(
        dir.join("bridge").is_file(),
        "CNI plugins not found in {} (tests/setup installs Debian's containernetworking-plugins)",
        dir.display()
    );
    vec![dir]
}

struct Net {
    dir: tempfile::TempDir,
    node: NetNs,
    config: NetworkConfig,
    cni: Cni,
}

/// A node namespace and a bridge network `subnet` (a /24 inside the test's namespaces only).
fn network(bridge: &str, subnet: &str, extra: &str) -> Net {
    let dir = tempfile::tempdir().unwrap();
    let node = NetNs::create(&dir.path().join("node")).expect("create a namespace (needs root)");
    node.set_loopback_up().unwrap();
    let ipam = dir.path().join("ipam");
    let text = format!(
        r#"{{"cniVersion":"1.0.0","name":"wasmlet-test","plugins":[
          {{"type":"bridge","bridge":"{bridge}","isGateway":true,"ipMasq":false,
            "ipam":{{"type":"host-local","ranges":[[{{"subnet":"{subnet}"}}]],"dataDir":"{}"}}}}
          {extra}]}}"#,
        ipam.display()
    );
    let config = NetworkConfig::parse(text.as_bytes(), true).unwrap();
    let mut dirs = bin_dirs();
    dirs.push(dir.path().join("bin"));
    let cni = Cni::new(dirs, dir.path().join("cache")).with_timeout(Duration::from_secs(60));
    Net {
        dir,
        node,
        config,
        cni,
    }
}

impl Net {
    fn pod(&self, name: &str) -> (NetNs, Attachment) {
        let path = self.dir.path().join(name);
        let ns = NetNs::create(&path).unwrap();
        (
            ns,
            Attachment::new(&format!("sandbox-{name}"), &path).pod("default", name),
        )
    }

    fn add(&self, attachment: &Attachment) -> IpAddr {
        let result = self
            .node
            .run(|| self.cni.add(&self.config, attachment))
            .unwrap()
            .unwrap();
        let ips = result.pod_ips();
        assert_eq!(ips.len(), 1, "{:?}", result.raw);
        ips[0]
    }

    fn del(&self, attachment: &Attachment) {
        self.node
            .run(|| self.cni.del(&self.config, attachment))
            .unwrap()
            .unwrap();
    }

    /// The addresses host-local has handed out (one file per address in its data dir).
    fn allocated(&self) -> Vec<String> {
        let dir = self.dir.path().join("ipam/wasmlet-test");
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.parse::<IpAddr>().is_ok())
            .collect()
    }

    fn plugin(&self, name: &str, body: &str) {
        let dir = self.dir.path().join("bin");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

impl Drop for Net {
    /// Unpins every namespace the test made, pass or fail, so no mount outlives it.
    fn drop(&mut self) {
        for entry in std::fs::read_dir(self.dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if wasmlet_netns::is_pinned(&entry.path()) {
                let _ = wasmlet_netns::remove(&entry.path());
            }
        }
    }
}

fn echo_once(listener: &std::net::TcpListener) {
    let (mut conn, _) = listener.accept().unwrap();
    conn.write_all(b"pong").unwrap();
}

fn expect_pong(mut stream: std::net::TcpStream) {
    let mut buf = [0u8; 4];
    stream.set_read_timeout(Some(DIAL)).unwrap();
    stream.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"pong");
}

#[test]
fn pods_get_addresses_reach_each_other_and_give_them_back() {
    let net = network("wl-a", "10.88.7.0/24", "");
    let (a, att_a) = net.pod("a");
    let (b, att_b) = net.pod("b");
    let ip_a = net.add(&att_a);
    let ip_b = net.add(&att_b);
    assert_ne!(ip_a, ip_b);
    assert_eq!(net.allocated().len(), 2);
    let listener = a.bind_tcp(SocketAddr::new(ip_a, 8080)).unwrap();
    // From the node, and from the other pod, over the bridge.
    let from_node = net
        .node
        .connect_tcp(SocketAddr::new(ip_a, 8080), DIAL)
        .unwrap();
    echo_once(&listener);
    expect_pong(from_node);
    let from_b = b.connect_tcp(SocketAddr::new(ip_a, 8080), DIAL).unwrap();
    echo_once(&listener);
    expect_pong(from_b);
    drop(listener);
    net.del(&att_a);
    net.del(&att_b);
    assert!(net.allocated().is_empty());
    assert!(
        a.bind_tcp(SocketAddr::new(ip_a, 8080)).is_err(),
        "eth0 is gone"
    );
    // DEL is idempotent.
    net.del(&att_a);
}

#[test]
fn host_ports_reach_the_pod_through_portmap() {
    let portmap = r#",{"type":"portmap","capabilities":{"portMappings":true}}"#;
    let net = network("wl-p", "10.88.8.0/24", portmap);
    let (pod, att) = net.pod("web");
    let att = att.ports(vec![PortMapping {
        host_port: 18080,
        container_port: 8080,
        protocol: "tcp".into(),
        host_ip: String::new(),
    }]);
    let ip = net.add(&att);
    let listener = pod.bind_tcp(SocketAddr::new(ip, 8080)).unwrap();
    // A client on another machine dials the node's address; here the node's address on the
    // bridge network (the gateway), from a second pod.
    let (client, att_client) = net.pod("client");
    net.add(&att_client);
    let gateway: IpAddr = "10.88.8.1".parse().unwrap();
    let stream = client
        .connect_tcp(SocketAddr::new(gateway, 18080), DIAL)
        .unwrap();
    echo_once(&listener);
    expect_pong(stream);
    net.del(&att);
    net.del(&att_client);
    assert!(net.allocated().is_empty());
}

#[test]
fn a_failing_plugin_undoes_the_ones_before_it_and_names_its_error() {
    let net = network("wl-f", "10.88.9.0/24", r#",{"type":"refuse"}"#);
    net.plugin(
        "refuse",
        r#"cat >/dev/null; [ "$CNI_COMMAND" = DEL ] && exit 0; echo '{"code":11,"msg":"policy says no"}'; exit 1"#,
    );
    let (_pod, att) = net.pod("p");
    let err = net
        .node
        .run(|| net.cni.add(&net.config, &att))
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, Error::Plugin { .. }), "{err}");
    assert!(err.to_string().contains("policy says no"), "{err}");
    assert!(
        net.allocated().is_empty(),
        "the bridge's address was given back"
    );
    assert!(net.cni.attachments().unwrap().is_empty());
}

#[test]
fn a_restart_finds_and_undoes_attachments_with_the_configuration_they_were_made_with() {
    let net = network("wl-r", "10.88.10.0/24", "");
    let (_pod, att) = net.pod("p");
    net.add(&att);
    // A new process (a new Cni) after a kill -9, with the network's file gone meanwhile.
    let cni = Cni::new(bin_dirs(), net.dir.path().join("cache"));
    let found = cni.attachments().unwrap();
    assert_eq!(found.len(), 1);
    let (config, attachment) = &found[0];
    assert_eq!((config.name.as_str(), attachment), ("wasmlet-test", &att));
    net.node
        .run(|| cni.del(config, attachment))
        .unwrap()
        .unwrap();
    assert!(net.allocated().is_empty());
    assert!(cni.attachments().unwrap().is_empty());
}

#[test]
fn a_missing_plugin_is_named_with_the_directories_searched() {
    let net = network("wl-m", "10.88.11.0/24", r#",{"type":"flannel"}"#);
    let (_pod, att) = net.pod("p");
    let err = net
        .node
        .run(|| net.cni.add(&net.config, &att))
        .unwrap()
        .unwrap_err()
        .to_string();
    assert!(err.contains("failed to find plugin \"flannel\""), "{err}");
    assert!(net.allocated().is_empty());
}
