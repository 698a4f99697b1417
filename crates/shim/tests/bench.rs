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

use common::measure::*;
use common::*;

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
    let (wasm_run, runc_run) = (
        throughput(RUNTIME, &wasm, "tput", tasks, 4),
        throughput(runc, &busybox, "tput-runc", tasks, 4),
    );
    assert!(
        wasm_run.failed.is_empty(),
        "wasmlet tasks failed: {:?}",
        wasm_run.failed
    );
    assert!(
        runc_run.failed.is_empty(),
        "runc tasks failed: {:?}",
        runc_run.failed
    );
    let (wasm_tps, runc_tps) = (wasm_run.per_second, runc_run.per_second);
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
