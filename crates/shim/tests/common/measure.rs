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

/// One `ctr run --rm` whose failure is a result, not a panic: the error, once what the
/// task left behind (its task, its container) is removed.
pub fn try_run_once(runtime: &str, image: &str, id: &str) -> Result<(), String> {
    let out = ctr(&["run", "--rm", "--runtime", runtime, image, id]);
    if out.status.success() {
        return Ok(());
    }
    let _ = ctr(&["task", "rm", "-f", id]);
    let _ = ctr(&["containers", "rm", id]);
    Err(format!(
        "{id}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

/// What a run of many `ctr run --rm` gave.
pub struct Throughput {
    /// Tasks that succeeded, per second of the whole run.
    pub per_second: f64,
    /// The errors of the tasks that failed.
    pub failed: Vec<String>,
}

/// Tasks per second of `total` `ctr run --rm` with `parallel` at a time; a failed task is
/// counted out of the rate and its error kept.
pub fn throughput(
    runtime: &str,
    image: &str,
    tag: &str,
    total: usize,
    parallel: usize,
) -> Throughput {
    let start = Instant::now();
    let failed: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..parallel)
            .map(|worker| {
                s.spawn(move || {
                    (worker..total)
                        .step_by(parallel)
                        .filter_map(|i| {
                            try_run_once(runtime, image, &unique(&format!("{tag}{i}"))).err()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a throughput worker panicked"))
            .collect()
    });
    let succeeded = total - failed.len();
    Throughput {
        per_second: succeeded as f64 / start.elapsed().as_secs_f64(),
        failed,
    }
}

/// Where the CPU time of a stretch of `ctr run --rm` tasks went, in milliseconds per task:
/// `ctr` itself (this process's waited-for children), containerd, and everything else the
/// machine did meanwhile (the shim's processes and the kernel's work for them).
#[derive(Debug, Clone, Copy)]
pub struct TaskCpu {
    /// `ctr`'s CPU per task.
    pub ctr_ms: f64,
    /// containerd's CPU per task.
    pub containerd_ms: f64,
    /// The rest of the machine's busy time per task: the shim's share.
    pub rest_ms: f64,
}

/// CPU counters at one instant: this process's children, containerd, the whole machine.
struct CpuMark {
    children: Duration,
    containerd: Duration,
    busy: Duration,
}

impl CpuMark {
    fn now() -> CpuMark {
        let pid = std::fs::read_to_string(state_dir().join("containerd.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
            .expect("the test containerd's pid file");
        CpuMark {
            children: children_cpu(),
            containerd: process_cpu(pid),
            busy: machine_busy(),
        }
    }

    fn per_task(&self, start: &CpuMark, tasks: usize) -> TaskCpu {
        let per = |end: Duration, begin: Duration| {
            end.saturating_sub(begin).as_secs_f64() * 1000.0 / tasks as f64
        };
        let ctr_ms = per(self.children, start.children);
        let containerd_ms = per(self.containerd, start.containerd);
        TaskCpu {
            ctr_ms,
            containerd_ms,
            rest_ms: (per(self.busy, start.busy) - ctr_ms - containerd_ms).max(0.0),
        }
    }
}

fn clock_ticks(ticks: u64) -> Duration {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(ticks * 1_000_000 / hz)
}

/// User + system CPU time of a process (`/proc/PID/stat`).
fn process_cpu(pid: u32) -> Duration {
    let fields = stat_fields(pid);
    // utime and stime, fields 14 and 15 of the whole line: 11 and 12 after the command.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    clock_ticks(ticks(11) + ticks(12))
}

/// User + system CPU time of this process's waited-for children.
fn children_cpu() -> Duration {
    // SAFETY: getrusage writes into the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The machine's busy CPU time over all cores (`/proc/stat`: all but idle and iowait).
fn machine_busy() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let busy =
        cpu.iter().take(8).sum::<u64>() - cpu.get(3).unwrap_or(&0) - cpu.get(4).unwrap_or(&0);
    clock_ticks(busy)
}

/// [`throughput`], and where the CPU time went per task.
pub fn throughput_cpu(
    runtime: &str,
    image: &str,
    tag: &str,
    total: usize,
    parallel: usize,
) -> (Throughput, TaskCpu) {
    let start = CpuMark::now();
    let run = throughput(runtime, image, tag, total, parallel);
    (run, CpuMark::now().per_task(&start, total))
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

/// The fields of `/proc/PID/stat` after the command (whose name may hold spaces): the state
/// first, then the parent's pid, ...; none when the process is gone.
fn stat_fields(pid: u32) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_command = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    after_command
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

fn parent(pid: u32) -> Option<u32> {
    stat_fields(pid).get(1)?.parse().ok()
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

    /// `vegeta attack` from the client at a fixed `rate` (requests/s) for `seconds`: an open
    /// loop, each request sent at its time whether or not the earlier ones were answered, so
    /// a latency is a request's own (not a queue's, as at wrk's saturation).
    pub fn fixed_rate(&self, port: u16, rate: u32, seconds: u64) -> FixedRate {
        let script = format!(
            "echo 'GET http://{}:{port}/' | vegeta attack -rate={rate}/s -duration={seconds}s \
             -timeout=5s | vegeta report -type=json",
            self.pod_ip
        );
        let out = Command::new("ip")
            .args(["netns", "exec", &self.client, "sh", "-c", &script])
            .output()
            .expect("cannot run ip netns exec");
        assert!(
            out.status.success(),
            "vegeta (benches/run installs it): {}",
            show(&out)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("unexpected vegeta report ({e}): {}", show(&out)));
        let ms = |p: &str| report["latencies"][p].as_f64().unwrap_or(f64::NAN) / 1e6;
        FixedRate {
            p50_ms: ms("50th"),
            p99_ms: ms("99th"),
            success: report["success"].as_f64().unwrap_or(0.0),
        }
    }
}

/// What one fixed-rate run reported.
#[derive(Debug, Clone, Copy)]
pub struct FixedRate {
    /// The median latency, in milliseconds.
    pub p50_ms: f64,
    /// The 99th percentile latency, in milliseconds.
    pub p99_ms: f64,
    /// The share of requests answered with a success status.
    pub success: f64,
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

/// A native HTTP/1.1 server (hyper on tokio, no wasm) answering every request with status 200
/// and the wasi:http hello's body, inside a pod's network namespace, with `TCP_NODELAY` as the
/// shims set it: what this machine serves on that path at most, beside which the shims'
/// requests/s are read. Stops when dropped.
pub struct NativeHello {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NativeHello {
    /// Listens on `addr` inside the namespace at `ns_path`, served by `workers` threads.
    pub fn start(ns_path: &str, addr: std::net::SocketAddr, workers: usize) -> NativeHello {
        let ns = wasmlet_netns::NetNs::open(Path::new(ns_path)).expect("the pod's namespace");
        let listener = ns
            .bind_tcp(addr)
            .expect("a listener in the pod's namespace");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .enable_all()
                .build()
                .expect("a tokio runtime");
            rt.block_on(serve_hello(listener, stopped));
        });
        NativeHello {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for NativeHello {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve_hello(
    listener: std::net::TcpListener,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut stopped => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|_req| async {
                let body =
                    http_body_util::Full::new(bytes::Bytes::from_static(b"hello from wasi:http!"));
                Ok::<_, std::convert::Infallible>(hyper::Response::new(body))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}
