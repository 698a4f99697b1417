//! A real control plane for one test: `tests/cluster/up` in a state folder of its own, stopped
//! by `tests/cluster/down` when dropped. A test that cannot start it fails.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub mod workloads;

/// A running test control plane.
pub struct Cluster {
    state: PathBuf,
    _dir: tempfile::TempDir,
    env: HashMap<String, String>,
}

impl Cluster {
    /// Starts a control plane whose node certificate is for `node_name`.
    #[allow(dead_code)]
    pub fn start(node_name: &str) -> Result<Self> {
        Self::start_with(node_name, &[])
    }

    /// [`Cluster::start`] with settings of `tests/cluster/up` (e.g. `WASMLET_CLUSTER_CIDR`).
    pub fn start_with(node_name: &str, settings: &[(&str, &str)]) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("wasmlet-cluster")
            .tempdir()?;
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state)?;
        let output = Command::new("timeout")
            .args(["180", "bash"])
            .arg(root().join("tests/cluster/up"))
            .arg(&state)
            .env("WASMLET_NODE_NAME", node_name)
            .envs(settings.iter().copied())
            .output()
            .context("running tests/cluster/up")?;
        let mut cluster = Self {
            state,
            _dir: dir,
            env: HashMap::new(),
        };
        if !output.status.success() {
            bail!(
                "tests/cluster/up failed:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let env_file = String::from_utf8_lossy(&output.stdout).trim().to_string();
        cluster.env = parse_env(&std::fs::read_to_string(&env_file)?);
        Ok(cluster)
    }

    /// A variable of the env file (`KUBECONFIG`, `WASMLET_NODE_KUBECONFIG`, ...).
    pub fn var(&self, name: &str) -> String {
        self.env.get(name).cloned().unwrap_or_default()
    }

    /// Runs kubectl as the admin; fails on a non-zero exit.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        let output = Command::new("timeout")
            .arg("60")
            .arg(cache_bin().join("kubectl"))
            .args(args)
            .env("KUBECONFIG", self.var("KUBECONFIG"))
            .output()?;
        if !output.status.success() {
            bail!(
                "kubectl {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Starts kubectl as the admin in the background (`kubectl port-forward`), its stderr
    /// captured; the caller kills it.
    #[allow(dead_code)]
    pub fn kubectl_background(&self, args: &[&str]) -> Result<std::process::Child> {
        Ok(Command::new(cache_bin().join("kubectl"))
            .args(args)
            .env("KUBECONFIG", self.var("KUBECONFIG"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()?)
    }

    /// The last `lines` lines of a control-plane component's log (`kube-scheduler`,
    /// `kube-controller-manager`, ...): for the report of a test that failed waiting on it.
    #[allow(dead_code)]
    pub fn log_tail(&self, component: &str, lines: usize) -> String {
        let path = self.state.join("logs").join(format!("{component}.log"));
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let all: Vec<&str> = text.lines().collect();
                all[all.len().saturating_sub(lines)..].join("\n")
            }
            Err(err) => format!("({}: {err})", path.display()),
        }
    }

    /// Stops the API server, leaves it down for `down_for`, and starts it again with the
    /// same command line; returns once it is ready.
    #[allow(dead_code)]
    pub fn restart_apiserver(&self, down_for: Duration) -> Result<()> {
        let pid_file = self.state.join("run/kube-apiserver.pid");
        let pid = std::fs::read_to_string(&pid_file)?.trim().to_string();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))?;
        let argv: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        Command::new("kill").arg(&pid).status()?;
        let gone = Instant::now();
        while Path::new(&format!("/proc/{pid}")).exists()
            && gone.elapsed() < Duration::from_secs(30)
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(down_for);
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.state.join("logs/kube-apiserver.log"))?;
        let child = Command::new("setsid")
            .args(&argv)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        std::fs::write(&pid_file, child.id().to_string())?;
        let start = Instant::now();
        while self.kubectl(&["get", "--raw", "/readyz"]).is_err() {
            if start.elapsed() > Duration::from_secs(60) {
                bail!("the API server did not come back");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        Ok(())
    }

    /// kubectl with `-o json`, parsed.
    pub fn kubectl_json(&self, args: &[&str]) -> Result<serde_json::Value> {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        Ok(serde_json::from_str(&self.kubectl(&args)?)?)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("timeout")
            .args(["60", "bash"])
            .arg(root().join("tests/cluster/down"))
            .arg(&self.state)
            .output();
    }
}

/// Polls `check` every 500 ms until it returns Some, failing after `limit`.
pub async fn eventually<T>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return Ok(value);
        }
        if start.elapsed() > limit {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn parse_env(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("export "))
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.to_string(), value.trim_matches('"').to_string()))
        .collect()
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn cache_bin() -> PathBuf {
    let cache = std::env::var("WASMLET_CACHE").unwrap_or_else(|_| "/var/cache/wasmlet".into());
    Path::new(&cache).join("bin")
}

#[allow(dead_code)]
/// A node config on 127.0.0.1 for the tests. Shared build machines run with little free
/// disk: DiskPressure is reported only below 1%.
pub fn node_config(name: &str, data: &Path) -> Result<wasmlet_node::config::NodeConfig> {
    let mut config = wasmlet_node::config::NodeConfig::new(name, "127.0.0.1".parse()?, data.into());
    config.eviction_hard = wasmlet_node::config::EvictionHard::parse("nodefs.available<1%")?;
    Ok(config)
}

/// The name of the pending serving-certificate CSR of node `node`, if any.
#[allow(dead_code)]
pub fn serving_csr(cluster: &Cluster, node: &str) -> Option<String> {
    let list = cluster.kubectl_json(&["get", "csr"]).ok()?;
    let items = list["items"].as_array()?;
    let csr = items.iter().find(|csr| {
        csr["spec"]["signerName"] == "kubernetes.io/kubelet-serving"
            && csr["spec"]["username"] == format!("system:node:{node}")
            && csr["status"]["certificate"].is_null()
    })?;
    csr["metadata"]["name"].as_str().map(str::to_string)
}

/// Runs the agent in this process as node `name` (the node kubeconfig the control plane made
/// for it), serving its kubelet API on `port`, and approves its serving certificate as an
/// admin would (so `kubectl logs` reaches it). Cancel the token to stop it.
#[allow(dead_code)]
pub async fn start_agent(
    cluster: &Cluster,
    name: &str,
    data: &Path,
    port: u16,
) -> Result<(
    tokio::task::JoinHandle<()>,
    tokio_util::sync::CancellationToken,
)> {
    let mut config = node_config(name, data)?;
    config.port = port;
    start_agent_with(cluster, config).await
}

/// [`start_agent`] with a configuration of the caller's.
#[allow(dead_code)]
pub async fn start_agent_with(
    cluster: &Cluster,
    config: wasmlet_node::config::NodeConfig,
) -> Result<(
    tokio::task::JoinHandle<()>,
    tokio_util::sync::CancellationToken,
)> {
    let (name, port) = (config.node_name.clone(), config.port);
    let credentials = wasmlet_node::agent::Credentials {
        kubeconfig: Some(cluster.var("WASMLET_NODE_KUBECONFIG").into()),
        ..Default::default()
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    let stop = cancel.clone();
    let agent = tokio::spawn(async move {
        if let Err(err) = wasmlet_node::agent::run(config, credentials, stop).await {
            panic!("the agent failed: {err}");
        }
    });
    let csr = eventually(Duration::from_secs(30), "the serving CSR", || {
        serving_csr(cluster, &name)
    })
    .await?;
    cluster.kubectl(&["certificate", "approve", &csr])?;
    kubelet_api_up(port).await?;
    Ok((agent, cancel))
}

/// Waits until the agent's kubelet API on 127.0.0.1:`port` accepts connections (it starts
/// once the approved serving certificate is issued), so `kubectl logs` can reach it.
#[allow(dead_code)]
pub async fn kubelet_api_up(port: u16) -> Result<()> {
    eventually(Duration::from_secs(30), "the kubelet API to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    })
    .await
    .map(drop)
}
