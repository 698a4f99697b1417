//! Benchmark (numbers, never a timed test): `ctr run --rm` of hello with the wasmlet shim
//! against runc running a static busybox, cold and warm medians; tasks per second with 4 in
//! parallel; resident memory per running pod. Run it on the release build:
//!
//! ```sh
//! cargo test --release -p wasmlet-shim --test bench -- --ignored --nocapture
//! ```
//! Knobs: `WASMLET_BENCH_N` (runs per median, default 20), `WASMLET_BENCH_TASKS` (default
//! 1000), `WASMLET_BENCH_PODS` (default 10).

mod common;

use std::time::{Duration, Instant};

use common::*;

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// One `ctr run --rm`; panics unless it prints the expected line.
fn run_once(runtime: &str, image: &str, id: &str) -> Duration {
    let start = Instant::now();
    let out = ctr(&["run", "--rm", "--runtime", runtime, image, id]);
    let took = start.elapsed();
    assert!(out.status.success(), "{}", show(&out));
    took
}

fn samples(
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
fn throughput(runtime: &str, image: &str, tag: &str, total: usize, parallel: usize) -> f64 {
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
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Processes whose command line contains `needle` and whose working directory is under the
/// test containerd's state (so other users' processes are never counted).
fn our_processes(needle: &str) -> Vec<u32> {
    let state = state_dir();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(needle) && cwd.starts_with(&state) {
            pids.push(pid);
        }
    }
    pids
}

/// The processes whose parent is one of `parents` (a runc shim's container process).
fn children(parents: &[u32]) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if ppid.is_some_and(|p| parents.contains(&p)) {
            out.push(pid);
        }
    }
    out
}

/// Starts `pods` detached long-running containers, returns the RSS (KiB) per pod of the
/// processes matching `needles`, and removes the containers.
fn rss_per_pod(runtime: &str, image: &str, args: &[&str], pods: usize, needles: &[&str]) -> u64 {
    let ids: Vec<String> = (0..pods).map(|i| unique(&format!("rss-{i}"))).collect();
    for id in &ids {
        let mut cmd = vec!["run", "-d", "--runtime", runtime, image, id.as_str()];
        cmd.extend_from_slice(args);
        ctr_ok(&cmd);
    }
    std::thread::sleep(Duration::from_secs(2));
    let shims: Vec<u32> = needles.iter().flat_map(|n| our_processes(n)).collect();
    let total: u64 = shims
        .iter()
        .copied()
        .chain(children(&shims))
        .map(rss_kib)
        .sum();
    for id in &ids {
        let _ = ctr(&["task", "kill", "--signal", "SIGKILL", id]);
    }
    std::thread::sleep(Duration::from_millis(500));
    for id in &ids {
        let _ = ctr(&["task", "delete", id]);
        let _ = ctr(&["container", "rm", id]);
    }
    total / pods as u64
}

fn busybox_image() -> String {
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static (tests/setup)");
    let dir = tempfile::tempdir().unwrap();
    let image = "localhost/wasmlet-test/busybox-echo:v1";
    let files = [File("/bin/busybox", &busybox, 0o755)];
    let entry = ["/bin/busybox", "echo", "hello from stdout!"];
    let tar = image_tar(dir.path(), image, &files, &entry, &[]).unwrap();
    import(NS, &tar).unwrap();
    image.into()
}

fn remove_cache_entry(digest: &str) {
    for e in std::fs::read_dir("/var/cache/wasmlet/compile")
        .into_iter()
        .flatten()
        .flatten()
    {
        if e.file_name().to_string_lossy().starts_with(digest) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[test]
#[ignore = "benchmark: prints numbers; run with --ignored --nocapture on a release build"]
fn bench_ctr_run_wasmlet_vs_runc() {
    let (n, tasks, pods) = (
        knob("WASMLET_BENCH_N", 20),
        knob("WASMLET_BENCH_TASKS", 1000),
        knob("WASMLET_BENCH_PODS", 10),
    );
    let hello = wasmlet_fixtures::hello();
    let wasm = import_wasm(NS, "hello", hello).unwrap();
    let spin = import_wasm(NS, "spin", wasmlet_fixtures::spin()).unwrap();
    let busybox = busybox_image();
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(
            wasmlet_runtime::to_binary(hello).unwrap(),
        ))
    };
    let runc = "io.containerd.runc.v2";
    let cold = median(samples(
        n,
        || remove_cache_entry(&digest),
        RUNTIME,
        &wasm,
        "cold",
    ));
    let warm = median(samples(n, || (), RUNTIME, &wasm, "warm"));
    let runc_first = run_once(runc, &busybox, &unique("runc-first"));
    let runc_warm = median(samples(n, || (), runc, &busybox, "runc"));
    println!("ctr run --rm hello (median of {n}, image present):");
    println!(
        "  wasmlet shim, cold (compile cache entry removed before each run): {}",
        ms(cold)
    );
    println!(
        "  wasmlet shim, warm (compiled module from the cache):              {}",
        ms(warm)
    );
    println!(
        "  runc, busybox-static echo, first run:                             {}",
        ms(runc_first)
    );
    println!(
        "  runc, busybox-static echo, warm:                                  {}",
        ms(runc_warm)
    );
    let wasm_tps = throughput(RUNTIME, &wasm, "tput", tasks, 4);
    let runc_tps = throughput(runc, &busybox, "tput-runc", tasks, 4);
    println!(
        "{tasks} tasks, 4 in parallel: wasmlet {wasm_tps:.1} tasks/s, runc {runc_tps:.1} tasks/s"
    );
    let wasm_rss = rss_per_pod(RUNTIME, &spin, &[], pods, &["containerd-shim-wasmlet-v1"]);
    let runc_rss = rss_per_pod(
        runc,
        &busybox,
        &["/bin/busybox", "sleep", "600"],
        pods,
        &["containerd-shim-runc-v2"],
    );
    println!(
        "resident memory per running pod ({pods} pods): wasmlet shim {wasm_rss} KiB; runc shim + container process {runc_rss} KiB"
    );
    let _ = std::process::Command::new("bash")
        .arg(root().join("tests/containerd/down"))
        .arg(state_dir())
        .output();
}
