//! Benchmark (numbers, never a timed test): the wasmlet shim beside containerd/runwasi's
//! wasmtime shim on the same containerd, in the same run: `ctr run --rm` hello latency, tasks
//! per second (1,000 `ctr run --rm`, 4 in parallel; and runwasi's own stress test), resident memory
//! per running pod at 1 and at 100 pods, and a wasi:http component's requests/s and p99 on its
//! pod IP (a network namespace of its own, joined with `ctr run --with-ns`, `wrk` from a
//! client namespace on the other end of a veth pair) and its p50/p99 at a fixed rate (`vegeta`,
//! an open loop, at a quarter of the slower shim's peak), beside a native hyper server giving the
//! same answer on the same path (what the path itself serves). The tasks part also splits
//! each task's CPU time between ctr, containerd and the rest (the shim's processes and the
//! kernel's work for them). The latency, tasks and memory parts run
//! wasmlet's wasmer shim (`io.containerd.wasmlet-wasmer.v1`) too, a third column
//! (`wasmlet-wasmer`); wasmer serves no wasi:http.
//!
//! runwasi is not built here: the README's Benchmarks section says how to build its
//! `containerd-shim-wasmtime-v1` at a pinned release; pass its path:
//!
//! ```sh
//! WASMLET_RUNWASI_SHIM=/path/to/containerd-shim-wasmtime-v1 \
//!   cargo test --release -p wasmlet-shim --test runwasi_bench -- --ignored --nocapture
//! ```
//! Knobs: `WASMLET_BENCH_N` (runs per median, 20), `WASMLET_BENCH_TASKS` (1000),
//! `WASMLET_BENCH_PODS_MAX` (the larger pod count, 100), `WASMLET_BENCH_HTTP_SECONDS` (10),
//! `WASMLET_BENCH_HTTP_ROUNDS` (3), `WASMLET_BENCH_HTTP_RATE` (the fixed rate, req/s; a quarter
//! of the slower shim's peak by default), `WASMLET_BENCH_STRESS_ROUNDS` (3),
//! `WASMLET_RUNWASI_STRESS` (the path of runwasi's built `stress-test`; by default the
//! `stress-test` beside the shim), `WASMLET_BENCH_PARTS` (which parts to run, of
//! `latency,tasks,stress,memory,http`; all by default). Each result is a `PEERBENCH {json}`
//! line for `benches/collect.py`.
//!
//! The stress part runs runwasi's own benchmark, its `stress-test`, on each shim: the shape
//! runwasi publishes as its "Stress Test Throughput" (1,000 tasks of a hello, as many at a time
//! as the machine has cores), with its mocked containerd (one shim process serving every task
//! over the task API, no containerd in the path) and through the real containerd. The tool
//! talks to `/run/containerd/containerd.sock` in the `default` namespace; it runs in a mount
//! namespace of its own where that path leads to the benchmark's containerd.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::measure::*;
use common::*;
use serde_json::json;

/// One of the shims under test.
struct Shim {
    name: &'static str,
    /// What `ctr run --runtime` takes: a runtime type, or a shim binary's absolute path.
    runtime: String,
    /// What the shim's processes' command lines contain.
    process: &'static str,
    /// The shim's binary, for runwasi's stress test.
    binary: PathBuf,
}

/// wasmlet's shim, runwasi's, then wasmlet's wasmer shim (not in the http part).
fn shims() -> [Shim; 3] {
    let runwasi = std::env::var_os("WASMLET_RUNWASI_SHIM").map(PathBuf::from);
    let runwasi = runwasi.filter(|p| p.is_absolute() && executable(p)).expect(
        "WASMLET_RUNWASI_SHIM must be the absolute path of a built containerd-shim-wasmtime-v1 \
         (the README's Benchmarks section says how to build it)",
    );
    [
        Shim {
            name: "wasmlet",
            runtime: RUNTIME.into(),
            process: "containerd-shim-wasmlet-v1",
            binary: env!("CARGO_BIN_EXE_containerd-shim-wasmlet-v1").into(),
        },
        Shim {
            name: "runwasi",
            runtime: runwasi.to_string_lossy().into_owned(),
            process: "containerd-shim-wasmtime-v1",
            binary: runwasi.clone(),
        },
        Shim {
            name: "wasmlet-wasmer",
            runtime: "io.containerd.wasmlet-wasmer.v1".into(),
            process: "containerd-shim-wasmlet-wasmer-v1",
            binary: env!("CARGO_BIN_EXE_containerd-shim-wasmlet-wasmer-v1").into(),
        },
    ]
}

/// `{shim name: value}` for the report.
fn by_shim(shims: &[Shim], values: &[f64]) -> serde_json::Value {
    let pairs = shims
        .iter()
        .zip(values)
        .map(|(s, v)| (s.name.to_owned(), json!(v)));
    serde_json::Value::Object(pairs.collect())
}

/// `name value unit, ...` for the log.
fn listed(shims: &[Shim], values: &[f64], unit: &str) -> String {
    let each = shims.iter().zip(values);
    let each: Vec<String> = each
        .map(|(s, v)| format!("{} {v:.1} {unit}", s.name))
        .collect();
    each.join(", ")
}

/// The median of `f` over `items` (0 for none).
fn median_by<T>(items: &[T], f: impl Fn(&T) -> f64) -> f64 {
    let mut values: Vec<f64> = items.iter().map(f).collect();
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

fn report(metric: &str, unit: &str, values: serde_json::Value, note: String) {
    let line = json!({"metric": metric, "unit": unit, "values": values, "note": note});
    println!("PEERBENCH {line}");
}

#[test]
#[ignore = "benchmark: needs WASMLET_RUNWASI_SHIM; run with --ignored --nocapture on a release build"]
fn bench_wasmlet_vs_runwasi() {
    let shims = shims();
    let (n, tasks, pods_max) = (
        knob("WASMLET_BENCH_N", 20),
        knob("WASMLET_BENCH_TASKS", 1000),
        knob("WASMLET_BENCH_PODS_MAX", 100),
    );
    let hello = import_wasm(NS, "hello", wasmlet_fixtures::hello()).unwrap();
    let sleep = import_wasm(NS, "sleep", wasmlet_fixtures::sleep()).unwrap();
    let http = import_wasm(NS, "http_hello", wasmlet_fixtures::http_hello()).unwrap();
    let parts = std::env::var("WASMLET_BENCH_PARTS").unwrap_or_default();
    let part = |name: &str| parts.is_empty() || parts.split(',').any(|p| p.trim() == name);
    if part("latency") {
        latency(&shims, &hello, n);
    }
    if part("tasks") {
        tasks_per_second(&shims, &hello, tasks);
    }
    if part("stress") {
        let hello = import_wasm("default", "hello", wasmlet_fixtures::hello()).unwrap();
        for mode in [StressMode::Mock, StressMode::Containerd] {
            stress(&shims, &hello, tasks, mode);
        }
    }
    if part("memory") {
        for pods in [1, pods_max] {
            memory(&shims, &sleep, pods);
        }
    }
    if part("http") {
        serve(&shims[..2], &http);
    }
    let _ = std::process::Command::new("bash")
        .arg(root().join("tests/containerd/down"))
        .arg(state_dir())
        .output();
}

/// Warm `ctr run --rm` medians, the shims taking turns run by run.
fn latency(shims: &[Shim], image: &str, n: usize) {
    let mut runs: Vec<Vec<Duration>> = vec![Vec::new(); shims.len()];
    for (i, shim) in shims.iter().enumerate() {
        run_once(&shim.runtime, image, &unique(&format!("first-{i}")));
    }
    for round in 0..n {
        for (i, shim) in shims.iter().enumerate() {
            let id = unique(&format!("lat-{i}-{round}"));
            runs[i].push(run_once(&shim.runtime, image, &id));
        }
    }
    let medians: Vec<f64> = runs
        .into_iter()
        .map(|r| median(r).as_secs_f64() * 1000.0)
        .collect();
    let each = listed(shims, &medians, "ms");
    println!("ctr run --rm hello, warm, median of {n}: {each}");
    report(
        "ctr-run-warm",
        "ms",
        by_shim(shims, &medians),
        format!("median of {n} runs each, the shims taking turns, after one run each"),
    );
}

/// Tasks per second, 4 `ctr run --rm` at a time, and where each task's CPU time went.
fn tasks_per_second(shims: &[Shim], image: &str, tasks: usize) {
    let runs: Vec<(Throughput, TaskCpu)> = shims
        .iter()
        .map(|s| throughput_cpu(&s.runtime, image, &format!("tps-{}", s.name), tasks, 4))
        .collect();
    // A failed task of the peer is its result, counted out of its rate and told; one of
    // wasmlet's shims is a defect.
    for (shim, (run, _)) in shims.iter().zip(&runs) {
        let peer = shim.name == "runwasi";
        assert!(
            peer || run.failed.is_empty(),
            "{}: {:?}",
            shim.name,
            run.failed
        );
    }
    let failures: Vec<String> = shims
        .iter()
        .zip(&runs)
        .filter(|(_, (run, _))| !run.failed.is_empty())
        .map(|(s, (run, _))| {
            let first = &run.failed[0];
            format!(
                "{}: {} of {tasks} tasks failed (first: {first})",
                s.name,
                run.failed.len()
            )
        })
        .collect();
    let tps: Vec<f64> = runs.iter().map(|(t, _)| t.per_second).collect();
    let rest: Vec<f64> = runs.iter().map(|(_, c)| c.rest_ms).collect();
    let each = listed(shims, &tps, "tasks/s");
    println!("{tasks} tasks, 4 in parallel: {each}");
    let failed = match failures.is_empty() {
        true => String::new(),
        false => format!(
            "; failed tasks are counted out of the rate: {}",
            failures.join("; ")
        ),
    };
    report(
        "ctr-tasks",
        "tasks/s",
        by_shim(shims, &tps),
        format!("{tasks} tasks of hello each, 4 in parallel{failed}"),
    );
    // What ctr and containerd spend per task is the same whatever the shim; a shim that cost
    // nothing would still be bounded by it.
    let (ctr_ms, containerd_ms) = runs.iter().fold((f64::MAX, f64::MAX), |(a, b), (_, c)| {
        (a.min(c.ctr_ms), b.min(c.containerd_ms))
    });
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let bound = cores * 1000.0 / (ctr_ms + containerd_ms);
    let spent: Vec<String> = shims
        .iter()
        .zip(&runs)
        .map(|(s, (_, c))| {
            format!(
                "{} ctr {:.1} + containerd {:.1} + shim {:.1} ms",
                s.name, c.ctr_ms, c.containerd_ms, c.rest_ms
            )
        })
        .collect();
    println!("CPU per task: {}", spent.join("; "));
    report(
        "ctr-task-cpu",
        "ms",
        by_shim(shims, &rest),
        format!(
            "CPU time per task of the tasks/s run outside ctr and containerd (the shim's \
             processes and the kernel's work for them: the machine's busy time less ctr's and \
             containerd's); per task: {}. ctr and containerd alone cost {:.1} ms of CPU per \
             task, so on {cores} cores no shim can pass {bound:.1} tasks/s",
            spent.join("; "),
            ctr_ms + containerd_ms
        ),
    );
}

/// Latency at a fixed offered load both shims carry: a quarter of the slower one's wrk median
/// (or `WASMLET_BENCH_HTTP_RATE`), vegeta runs taking turns, the native server among them. An
/// open loop: at wrk's saturation a latency is mostly the queue of 16 connections, and a faster
/// server's queue is no shorter. A quarter, as vegeta spends about as much CPU on a request as
/// a shim on the cores they share: at half the peak those are near full and the p99 is their
/// queue again (the native server's own p99 went from 0.6-0.8 ms at 2,000 requests/s to 2.6
/// ms at 8,000). The native server's latency at the same rate is the path's own (client, veth,
/// kernel), which no server goes below.
fn at_fixed_rate(
    shims: &[Shim],
    nets: &[PodNet],
    native: &PodNet,
    rps: &[f64],
    (seconds, rounds): (u64, usize),
) {
    let slower = rps.iter().copied().fold(f64::MAX, f64::min);
    let rate = match knob("WASMLET_BENCH_HTTP_RATE", 0) {
        0 => ((slower / 4.0 / 500.0).floor() as u32 * 500).max(500),
        fixed => fixed as u32,
    };
    let targets: Vec<&PodNet> = nets.iter().chain([native]).collect();
    let mut runs: Vec<Vec<FixedRate>> = vec![Vec::new(); targets.len()];
    for _ in 0..rounds {
        for (i, net) in targets.iter().enumerate() {
            runs[i].push(net.fixed_rate(8080, rate, seconds));
        }
    }
    let p50: Vec<f64> = runs.iter().map(|r| median_by(r, |f| f.p50_ms)).collect();
    let p99: Vec<f64> = runs.iter().map(|r| median_by(r, |f| f.p99_ms)).collect();
    let success: Vec<f64> = runs.iter().map(|r| median_by(r, |f| f.success)).collect();
    let names = shims.iter().map(|s| s.name).chain(["native"]);
    let each: Vec<String> = names
        .zip(p50.iter().zip(&p99).zip(&success))
        .map(|(name, ((p50, p99), ok))| {
            format!(
                "{name} p50 {p50:.3} ms, p99 {p99:.3} ms, {:.1} % answered",
                ok * 100.0
            )
        })
        .collect();
    println!("wasi:http hello at {rate} req/s: {}", each.join("; "));
    let note = format!(
        "vegeta attack -rate={rate}/s -duration={seconds}s from the client namespace (a quarter \
         of the slower shim's wrk median), median of {rounds} runs taking turns: {}. The native \
         server's is the path's own latency at that rate",
        each.join("; ")
    );
    report("http-p99-fixed", "ms", by_shim(shims, &p99), note);
}

/// How runwasi's stress test reaches the shim.
#[derive(Clone, Copy)]
enum StressMode {
    /// Its mocked containerd: the tool starts one shim and calls its task API itself.
    Mock,
    /// The benchmark's containerd, which the tool asks for containers and tasks.
    Containerd,
}

impl StressMode {
    fn name(self) -> &'static str {
        match self {
            StressMode::Mock => "mock",
            StressMode::Containerd => "containerd",
        }
    }

    /// The tool's flags for this mode.
    fn flags(self) -> &'static [&'static str] {
        match self {
            StressMode::Mock => &[],
            StressMode::Containerd => &["--containerd"],
        }
    }
}

/// runwasi's built `stress-test`.
fn stress_tool(runwasi: &Shim) -> PathBuf {
    let beside = runwasi.binary.with_file_name("stress-test");
    let tool = std::env::var_os("WASMLET_RUNWASI_STRESS").map_or(beside, PathBuf::from);
    assert!(
        tool.is_absolute() && executable(&tool),
        "the stress part needs runwasi's stress-test at {} (WASMLET_RUNWASI_STRESS, or beside \
         WASMLET_RUNWASI_SHIM; the README's Benchmarks section says how to build it), or \
         WASMLET_BENCH_PARTS without `stress`",
        tool.display()
    );
    tool
}

/// runwasi's stress test on each shim, `rounds` runs each taking turns: the median tasks/s.
fn stress(shims: &[Shim], image: &str, tasks: usize, mode: StressMode) {
    let tool = stress_tool(&shims[1]);
    let rounds = knob("WASMLET_BENCH_STRESS_ROUNDS", 3);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut runs: Vec<Vec<f64>> = vec![Vec::new(); shims.len()];
    let mut failures = Vec::new();
    for _ in 0..rounds {
        for (i, shim) in shims.iter().enumerate() {
            match stress_once(&tool, shim, image, tasks, cores, mode) {
                Ok(tps) => runs[i].push(tps),
                Err(e) if shim.name == "runwasi" => failures.push(e),
                Err(e) => panic!("{}: runwasi's stress test failed: {e}", shim.name),
            }
        }
    }
    let tps: Vec<f64> = runs.iter().map(|r| median_by(r, |tps| *tps)).collect();
    let name = mode.name();
    let flags: String = mode.flags().iter().map(|f| format!(" {f}")).collect();
    let each = listed(shims, &tps, "tasks/s");
    println!("runwasi's stress test, {name}, {tasks} tasks, {cores} at a time: {each}");
    let failed = match failures.is_empty() {
        true => String::new(),
        false => format!(
            "; {} of runwasi's runs failed, out of its median (first: {})",
            failures.len(),
            failures[0]
        ),
    };
    report(
        &format!("stress-{name}"),
        "tasks/s",
        by_shim(shims, &tps),
        format!(
            "runwasi's stress-test --count {tasks} --parallel {cores}{flags} on each shim, \
             median of {rounds} runs taking turns{failed}"
        ),
    );
}

/// One run of runwasi's stress test on `shim`: its tasks per second, or why it failed.
fn stress_once(
    tool: &Path,
    shim: &Shim,
    image: &str,
    tasks: usize,
    cores: usize,
    mode: StressMode,
) -> Result<f64, String> {
    // The tool dials containerd at a fixed path: in a mount namespace of its own that path
    // leads to the benchmark's containerd.
    let socket = &containerd()["CONTAINERD_ADDRESS"];
    let link = "mkdir -p /run/containerd && mount -t tmpfs wasmlet-bench /run/containerd && \
                ln -s \"$0\" /run/containerd/containerd.sock && exec \"$@\"";
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let json_out = dir.path().join("stress.json");
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--propagation", "private", "sh", "-c", link])
        .arg(socket)
        .arg(tool)
        .arg(&shim.binary)
        .args(mode.flags());
    let (tasks, cores) = (tasks.to_string(), cores.to_string());
    let out = command
        .args(["--count", &tasks, "--parallel", &cores, "--timeout", "120s"])
        .args(["--image", image, "--json-output"])
        .arg(&json_out)
        // The program, as the image's CMD names it (the tool reads an ENTRYPOINT alone).
        .arg("/hello.wasm")
        .env("RUST_LIB_BACKTRACE", "0")
        .current_dir(dir.path())
        .output()
        .map_err(|e| format!("cannot run unshare: {e}"))?;
    let text = std::fs::read_to_string(&json_out).unwrap_or_default();
    let value: Option<f64> = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v[0]["value"].as_f64());
    match (out.status.success(), value) {
        (true, Some(tps)) => Ok(tps),
        _ => {
            let said = show(&out);
            let tail: String = said.chars().rev().take(600).collect();
            Err(tail.chars().rev().collect())
        }
    }
}

/// Resident memory per running pod: `pods` sleeping containers (one shim each, as `ctr`
/// makes them), the shims' processes and everything below them.
fn memory(shims: &[Shim], image: &str, pods: usize) {
    let kib: Vec<f64> = shims
        .iter()
        .map(|s| {
            rss_per_pod(
                &s.runtime,
                image,
                &["/sleep.wasm", "600000"],
                pods,
                &[s.process],
            ) as f64
        })
        .collect();
    let each = listed(shims, &kib, "KiB");
    println!("resident memory per running pod ({pods} pods): {each}");
    report(
        &format!("rss-{pods}"),
        "KiB",
        by_shim(shims, &kib),
        format!("{pods} sleeping containers each: the shim processes and every process below them"),
    );
}

/// The wasi:http hello on its pod IP, `wrk` from the client namespace, rounds alternating.
fn serve(shims: &[Shim], image: &str) {
    let (seconds, rounds) = (
        knob("WASMLET_BENCH_HTTP_SECONDS", 10) as u64,
        knob("WASMLET_BENCH_HTTP_ROUNDS", 3),
    );
    let nets: Vec<PodNet> = (0..shims.len() as u8).map(PodNet::new).collect();
    let ids: Vec<String> = shims
        .iter()
        .map(|s| unique(&format!("http-{}", s.name)))
        .collect();
    for ((shim, net), id) in shims.iter().zip(&nets).zip(&ids) {
        let ns = format!("network:{}", net.path());
        ctr_ok(&[
            "run",
            "-d",
            "--runtime",
            &shim.runtime,
            "--with-ns",
            &ns,
            image,
            id,
        ]);
        assert!(
            net.wait_http(8080, Duration::from_secs(30)),
            "{}'s wasi:http container never answered on {}:8080",
            shim.name,
            net.pod_ip
        );
    }
    // The ceiling: the same answer from native code in a namespace of its own.
    let native_net = PodNet::new(shims.len() as u8);
    let native_addr = format!("{}:8080", native_net.pod_ip).parse().unwrap();
    let native = NativeHello::start(&native_net.path(), native_addr, 2);
    assert!(
        native_net.wait_http(8080, Duration::from_secs(10)),
        "the native server never answered"
    );
    let mut runs: Vec<Vec<Wrk>> = vec![Vec::new(); shims.len()];
    let mut native_runs = Vec::new();
    for _ in 0..rounds {
        for (i, net) in nets.iter().enumerate() {
            runs[i].push(net.wrk(8080, seconds, 16));
        }
        native_runs.push(native_net.wrk(8080, seconds, 16));
    }
    let rps: Vec<f64> = runs.iter().map(|r| median_by(r, |w| w.rps)).collect();
    at_fixed_rate(shims, &nets, &native_net, &rps, (seconds, rounds));
    drop(native);
    remove(&ids);
    let p99: Vec<f64> = runs.iter().map(|r| median_by(r, |w| w.p99_ms)).collect();
    let (native_rps, native_p99) = (
        median_by(&native_runs, |w| w.rps),
        median_by(&native_runs, |w| w.p99_ms),
    );
    let errors: Vec<u64> = runs
        .iter()
        .map(|r| r.iter().map(|w| w.errors).sum())
        .collect();
    let rounds_text = runs
        .iter()
        .zip(shims)
        .map(|(r, s)| {
            let each: Vec<String> = r.iter().map(|w| format!("{:.0}", w.rps)).collect();
            format!("{} {}", s.name, each.join(" / "))
        })
        .collect::<Vec<_>>()
        .join("; ");
    println!(
        "wasi:http hello on the pod IP: wasmlet {:.0} req/s p99 {:.2} ms, runwasi {:.0} req/s p99 {:.2} ms, native {native_rps:.0} req/s p99 {native_p99:.2} ms",
        rps[0], p99[0], rps[1], p99[1]
    );
    let note = format!(
        "wrk -t2 -c16 -d{seconds}s from a client namespace over a veth pair, median of {rounds} \
         rounds alternating (req/s per round: {rounds_text}); errors: wasmlet {}, runwasi {}. \
         The ceiling, in the same rounds: a native hyper server (no wasm, 2 threads) giving the \
         same answer on the same path serves {native_rps:.0} req/s, p99 {native_p99:.2} ms; \
         wasmlet serves {:.2} of it, runwasi {:.2}",
        errors[0],
        errors[1],
        rps[0] / native_rps,
        rps[1] / native_rps
    );
    report(
        "http-rps",
        "req/s",
        json!({"wasmlet": rps[0], "runwasi": rps[1]}),
        note.clone(),
    );
    report(
        "http-p99",
        "ms",
        json!({"wasmlet": p99[0], "runwasi": p99[1]}),
        note,
    );
}
