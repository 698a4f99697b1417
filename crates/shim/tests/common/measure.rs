//! What the shim's benchmarks measure with: `ctr run` timings and throughput, the resident
//! memory of a runtime's processes, pods in network namespaces of their own, and `wrk`.
//! Numbers only: nothing here asserts on a time.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::{ctr, ctr_ok, show, state_dir, unique};

/// A knob of a benchmark from the environment, or its default.
pub fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The median of some samples.
pub fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// A duration in milliseconds, for the printed report.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// One `ctr run --rm`; panics unless it exits 0.
pub fn run_once(runtime: &str, image: &str, id: &str) -> Duration {
    let start = Instant::now();
    let out = ctr(&["run", "--rm", "--runtime", runtime, image, id]);
    let took = start.elapsed();
    assert!(out.status.success(), "{runtime}: {}", show(&out));
    took
}

/// `n` timed `ctr run --rm`, each after `before`.
pub fn samples(
    n: usize,
    mut before: impl FnMut(),
    runtime: &str,
    image: &str,
    tag: &str,
) -> Vec<Duration> {
    (0..n)
        .map(|i| {
            before();
            run_once(runtime, image, &unique(&format!("{tag}{i}")))
        })
        .collect()
}

/// Tasks per second of `total` `ctr run --rm` with `parallel` at a time.
pub fn throughput(runtime: &str, image: &str, tag: &str, total: usize, parallel: usize) -> f64 {
    let start = Instant::now();
    std::thread::scope(|s| {
        for worker in 0..parallel {
            s.spawn(move || {
                for i in (worker..total).step_by(parallel) {
                    run_once(runtime, image, &unique(&format!("{tag}{i}")));
                }
            });
        }
    });
    total as f64 / start.elapsed().as_secs_f64()
}

/// Resident memory (KiB) of a process.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
}

/// Processes whose command line contains `needle` and whose working directory is under the
/// test containerd's state (a shim's is its bundle), so other users' processes are never
/// counted.
pub fn our_processes(needle: &str) -> Vec<u32> {
    let state = state_dir();
    pids()
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline).contains(needle) && cwd.starts_with(&state)
        })
        .collect()
}

fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// `roots` and every process below them (a runc shim's container process, a shim's
/// container init).
pub fn with_descendants(roots: &[u32]) -> Vec<u32> {
    let all: Vec<(u32, Option<u32>)> = pids().map(|p| (p, parent(p))).collect();
    let mut tree: Vec<u32> = roots.to_vec();
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        tree.extend(
            all.iter()
                .filter(|(_, pp)| *pp == Some(p))
                .map(|(c, _)| *c)
                .filter(|c| !tree.contains(c))
                .collect::<Vec<_>>(),
        );
        i += 1;
    }
    tree
}

/// Starts `pods` detached long-running containers of `image` (with `args` as their command,
/// when given), returns the resident memory (KiB) per pod of the processes matching
/// `needles` and everything below them, and removes the containers.
pub fn rss_per_pod(
    runtime: &str,
    image: &str,
    args: &[&str],
    pods: usize,
    needles: &[&str],
) -> u64 {
    let ids: Vec<String> = (0..pods)
        .map(|i| unique(&format!("rss-{pods}-{i}")))
        .collect();
    for id in &ids {
        let mut cmd = vec!["run", "-d", "--runtime", runtime, image, id.as_str()];
        cmd.extend_from_slice(args);
        ctr_ok(&cmd);
    }
    std::thread::sleep(Duration::from_secs(2));
    let shims: Vec<u32> = needles.iter().flat_map(|n| our_processes(n)).collect();
    let total: u64 = with_descendants(&shims).into_iter().map(rss_kib).sum();
    remove(&ids);
    total / pods as u64
}

/// Kills and removes containers.
pub fn remove(ids: &[String]) {
    for id in ids {
        let _ = ctr(&["task", "kill", "--signal", "SIGKILL", id]);
    }
    std::thread::sleep(Duration::from_millis(500));
    for id in ids {
        let _ = ctr(&["task", "delete", "--force", id]);
        let _ = ctr(&["container", "rm", id]);
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("cannot run ip");
    assert!(out.status.success(), "ip {args:?}: {}", show(&out));
}

/// A pod's network as a CNI bridge would give it, without the host: the pod's namespace
/// (`/var/run/netns/<name>`) and a client's, joined by a veth pair, `10.231.<n>.2` in the
/// pod and `.1` in the client. Removed on drop.
pub struct PodNet {
    /// The pod's namespace name.
    pub pod: String,
    /// The client's namespace name.
    pub client: String,
    /// The pod's IP.
    pub pod_ip: String,
}

impl PodNet {
    /// Makes the two namespaces for pod number `n` (0..=255).
    pub fn new(n: u8) -> PodNet {
        let (pod, client) = (
            unique(&format!("wlb-pod{n}")),
            unique(&format!("wlb-cli{n}")),
        );
        for ns in [&pod, &client] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        ip(&[
            "-n", &client, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns",
            &pod,
        ]);
        let (pod_ip, client_ip) = (format!("10.231.{n}.2"), format!("10.231.{n}.1"));
        for (ns, addr) in [(&pod, &pod_ip), (&client, &client_ip)] {
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", ns, "link", "set", "eth0", "up"]);
        }
        PodNet {
            pod,
            client,
            pod_ip,
        }
    }

    /// The pod namespace's path, for `ctr run --with-ns network:PATH`.
    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.pod)
    }

    /// Waits (at most `limit`) until `http://POD_IP:port/` answers 200 from the client.
    pub fn wait_http(&self, port: u16, limit: Duration) -> bool {
        let url = format!("http://{}:{port}/", self.pod_ip);
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let out = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &self.client,
                    "curl",
                    "-sf",
                    "-o",
                    "/dev/null",
                ])
                .args(["--max-time", "1", &url])
                .output()
                .expect("cannot run curl");
            if out.status.success() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// `wrk` from the client against the pod's port: requests/s and p99 (ms).
    pub fn wrk(&self, port: u16, seconds: u64, connections: u32) -> Wrk {
        let url = format!("http://{}:{port}/", self.pod_ip);
        let out = Command::new("ip")
            .args(["netns", "exec", &self.client, "wrk", "--latency", "-t2"])
            .arg(format!("-c{connections}"))
            .arg(format!("-d{seconds}s"))
            .args(["--timeout", "5s", &url])
            .output()
            .expect("cannot run wrk (Debian's wrk: benches/run installs it)");
        assert!(out.status.success(), "wrk: {}", show(&out));
        Wrk::parse(&String::from_utf8_lossy(&out.stdout))
            .unwrap_or_else(|| panic!("unexpected wrk output: {}", show(&out)))
    }
}

impl Drop for PodNet {
    fn drop(&mut self) {
        for ns in [&self.pod, &self.client] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// What one `wrk --latency` run reported.
#[derive(Debug, Clone, Copy)]
pub struct Wrk {
    /// Requests per second.
    pub rps: f64,
    /// The 99th percentile latency, in milliseconds.
    pub p99_ms: f64,
    /// Non-2xx/3xx responses, socket errors and timeouts.
    pub errors: u64,
}

impl Wrk {
    fn parse(text: &str) -> Option<Wrk> {
        let rps = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("Requests/sec:"))?
            .trim()
            .parse()
            .ok()?;
        let p99 = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("99%"))?
            .trim();
        let errors = text
            .lines()
            .filter(|l| l.contains("Non-2xx") || l.contains("Socket errors"))
            .flat_map(|l| {
                l.split([':', ','])
                    .filter_map(|w| w.split_whitespace().last())
            })
            .filter_map(|w| w.parse::<u64>().ok())
            .sum();
        Some(Wrk {
            rps,
            p99_ms: duration_ms(p99)?,
            errors,
        })
    }
}

/// A wrk duration (`812.00us`, `4.82ms`, `1.20s`) in milliseconds.
fn duration_ms(text: &str) -> Option<f64> {
    let (num, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    Some(num.parse::<f64>().ok()? * scale)
}

/// Whether `path` is an executable file.
pub fn executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
