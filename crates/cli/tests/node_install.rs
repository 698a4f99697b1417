//! `deploy/node/install.sh` and its systemd unit: installed into a fake root (files, modes,
//! the open-files limit sized for the pods, nothing rewritten on a second run, clear errors),
//! checked by `systemd-analyze verify`, and a node joined to the real control plane by the
//! unit's own `ExecStart` command line with a bootstrap token, its serving certificate approved
//! with `kubectl certificate approve` as the README tells an operator.

#[path = "../../node/tests/cluster/mod.rs"]
mod cluster;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use cluster::{Cluster, eventually, serving_csr};

const TOKEN: &str = "abcdef.0123456789abcdef";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/node/install.sh")
}

fn install(args: &[&str]) -> Output {
    Command::new("sh")
        .arg(script())
        .args(args)
        .env("SYSTEMCTL", "false")
        .output()
        .expect("running install.sh")
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn installs_into_a_root_once_with_limits_sized_for_its_pods() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let ca = dir.path().join("ca.crt");
    std::fs::write(
        &ca,
        "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let args = |pods: &'static str| {
        let mut a: Vec<String> = ["--apiserver", "https://10.0.0.1:6443", "--token", TOKEN]
            .map(String::from)
            .into();
        a.extend(
            [
                "--node-ip",
                "10.0.0.21",
                "--node-name",
                "wasm-7",
                "--max-pods",
                pods,
            ]
            .map(String::from),
        );
        a.extend(["--root".into(), root.display().to_string()]);
        a.extend(["--ca-file".into(), ca.display().to_string()]);
        a.extend(["--binary".into(), env!("CARGO_BIN_EXE_wasmlet").into()]);
        a
    };
    let run = |pods| {
        let a = args(pods);
        install(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let first = run("1000");
    assert!(first.status.success(), "{}", text(&first));
    assert!(text(&first).contains("wrote /etc/wasmlet/node.yaml"));
    let bin = root.join("usr/local/bin/wasmlet");
    assert_eq!(mode(&bin), 0o755);
    assert_eq!(
        std::fs::read(&bin).unwrap(),
        std::fs::read(env!("CARGO_BIN_EXE_wasmlet")).unwrap()
    );
    let kubeconfig = root.join("etc/wasmlet/bootstrap.kubeconfig");
    assert_eq!(mode(&kubeconfig), 0o600, "the token is a secret");
    let kc = std::fs::read_to_string(&kubeconfig).unwrap();
    assert!(
        kc.contains(&format!("token: {TOKEN}")) && kc.contains("server: https://10.0.0.1:6443")
    );
    let config = std::fs::read_to_string(root.join("etc/wasmlet/node.yaml")).unwrap();
    for line in [
        "node-name: wasm-7",
        "node-ip: 10.0.0.21",
        "max-pods: 1000",
        "network: cni",
    ] {
        assert!(config.contains(line), "{line} in\n{config}");
    }
    let unit_path = root.join("etc/systemd/system/wasmlet-node.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/wasmlet node --config /etc/wasmlet/node.yaml"));
    assert!(unit.contains("LimitNOFILE=65536"), "{unit}");
    assert!(unit.contains("After=network-online.target") && unit.contains("Restart=always"));

    let second = run("1000");
    assert!(second.status.success(), "{}", text(&second));
    assert!(
        !text(&second).contains("wrote"),
        "a second run rewrites nothing: {}",
        text(&second)
    );

    let many = run("20000");
    assert!(many.status.success(), "{}", text(&many));
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    assert!(
        unit.contains("LimitNOFILE=96384"),
        "4 a pod and 16384 more: {unit}"
    );
}

#[test]
fn refuses_what_would_not_join_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().display().to_string();
    let bin = env!("CARGO_BIN_EXE_wasmlet");
    let with_kubeconfig = [
        "--root",
        &root,
        "--binary",
        bin,
        "--bootstrap-kubeconfig",
        bin,
    ];
    let with_token = [
        "--root",
        &root,
        "--binary",
        bin,
        "--apiserver",
        "https://a:6443",
        "--ca-file",
        bin,
    ];
    let cases: [(&[&str], &[&str], &str); 5] = [
        (
            &with_token,
            &["--node-ip", "10.0.0.2", "--token", "x"],
            "--token must be a bootstrap token",
        ),
        (
            &with_token,
            &["--node-ip", "10.0.0.2"],
            "give --apiserver, --ca-file and --token",
        ),
        (&with_kubeconfig, &[], "--node-ip is required"),
        (
            &with_kubeconfig,
            &["--node-ip", "10.0.0.2", "--max-pods", "many"],
            "--max-pods must be a positive number",
        ),
        (
            &with_kubeconfig,
            &["--node-ip", "10.0.0.2", "--frobnicate", "1"],
            "unknown option --frobnicate",
        ),
    ];
    for (base, extra, message) in cases {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let out = install(&args);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(text(&out).contains(message), "{message}: {}", text(&out));
    }
    assert!(
        !dir.path().join("etc").exists(),
        "nothing is written before the options are checked"
    );
}

/// The unit's `ExecStart`, split as systemd splits a line without quotes.
fn exec_start(unit: &str) -> Vec<String> {
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart line");
    line.split_whitespace().map(String::from).collect()
}

/// The token of the test cluster's bootstrap kubeconfig.
fn cluster_token(cluster: &Cluster) -> Result<String> {
    let kc = std::fs::read_to_string(cluster.var("WASMLET_BOOTSTRAP_KUBECONFIG"))?;
    kc.lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .map(str::to_owned)
        .context("no token in the bootstrap kubeconfig")
}

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_the_cluster_by_the_units_command_line() -> Result<()> {
    const NODE: &str = "wasm-installed";
    let cluster = Cluster::start("some-other-node")?;
    let dir = tempfile::tempdir()?;
    let d = |name: &str| dir.path().join(name).display().to_string();
    let port = free_port()?.to_string();
    let out = install(&[
        "--apiserver",
        &cluster.var("WASMLET_APISERVER"),
        "--ca-file",
        &cluster.var("WASMLET_CLUSTER_CA"),
        "--token",
        &cluster_token(&cluster)?,
        "--node-ip",
        "127.0.0.1",
        "--node-name",
        NODE,
        "--network",
        "loopback",
        "--binary",
        env!("CARGO_BIN_EXE_wasmlet"),
        "--bin-dir",
        &d("bin"),
        "--conf-dir",
        &d("etc"),
        "--data-dir",
        &d("data"),
        "--unit-dir",
        &d("systemd"),
        "--no-start",
        "--set",
        &format!("port={port}"),
        "--set",
        "eviction-hard=nodefs.available<1%",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let unit = dir.path().join("systemd/wasmlet-node.service");
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()?;
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}",
        text(&verify)
    );

    let command = exec_start(&std::fs::read_to_string(&unit)?);
    let log = std::fs::File::create(dir.path().join("agent.log"))?;
    let _agent = Agent(
        Command::new(&command[0])
            .args(&command[1..])
            .env("WASMLET_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("running the unit's ExecStart")?,
    );
    let csr = eventually(Duration::from_secs(90), "the node's serving CSR", || {
        serving_csr(&cluster, NODE)
    })
    .await
    .with_context(|| agent_log(dir.path()))?;
    cluster.kubectl(&["certificate", "approve", &csr])?;
    eventually(Duration::from_secs(60), "node Ready", || {
        let node = cluster.kubectl_json(&["get", "node", NODE]).ok()?;
        let ready = node["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        ready.then_some(())
    })
    .await
    .with_context(|| agent_log(dir.path()))?;
    assert!(
        dir.path().join("data/kubeconfig").is_file(),
        "TLS bootstrap wrote the node's kubeconfig"
    );
    cluster::kubelet_api_up(port.parse()?).await?;
    Ok(())
}

fn agent_log(dir: &Path) -> String {
    let log = std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default();
    format!("agent log:\n{log}")
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
