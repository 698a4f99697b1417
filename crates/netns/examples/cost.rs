//! What a pod's network namespace costs: creates N namespaces (default 200, at most 5,000),
//! each with `lo` up and one TCP listener on 127.0.0.1:8080 inside, then reports the time per
//! namespace, the descriptors this process holds for each and the kernel memory each takes,
//! then removes them all, and what polling a future inside a namespace adds per poll (the
//! two `setns` calls of `InNamespace`, which make a guest's sockets its pod's). Needs root. The memory is the kernel's: a namespace lives in slab
//! caches and per-CPU counters (`SUnreclaim` and `Percpu` of /proc/meminfo), measured before
//! and after, so other work on the machine blurs it little.
//!
//! `cargo run --release -p wasmlet-netns --example cost -- 1000`

use std::time::Instant;

use wasmlet_netns::{NetNs, remove};

const MAX: usize = 5_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args().nth(1).map_or(Ok(200), |a| a.parse())?;
    let n = n.min(MAX);
    let dir = tempfile::tempdir()?;
    let (fds0, mem0) = (open_fds()?, kernel_kib()?);
    let start = Instant::now();
    let mut listeners = Vec::with_capacity(n);
    for i in 0..n {
        let ns = NetNs::create(&dir.path().join(format!("pod-{i}")))?;
        ns.set_loopback_up()?;
        listeners.push(ns.bind_tcp(([127, 0, 0, 1], 8080).into())?);
    }
    let elapsed = start.elapsed();
    let (fds1, mem1) = (open_fds()?, kernel_kib()?);
    println!("namespaces: {n}");
    println!(
        "create + lo up + listen: {:.0} us per namespace",
        elapsed.as_secs_f64() * 1e6 / n as f64
    );
    println!(
        "descriptors held: {:.2} per namespace (the listener; the namespace needs none)",
        (fds1 - fds0) as f64 / n as f64
    );
    println!(
        "kernel memory: {:.0} KiB per namespace (SUnreclaim + Percpu {mem0} -> {mem1} KiB)",
        mem1.saturating_sub(mem0) as f64 / n as f64
    );
    drop(listeners);
    poll_cost(&dir.path().join("pod-0"))?;
    let start = Instant::now();
    for i in 0..n {
        remove(&dir.path().join(format!("pod-{i}")))?;
    }
    println!(
        "remove: {:.0} us per namespace",
        start.elapsed().as_secs_f64() * 1e6 / n as f64
    );
    Ok(())
}

/// How long a poll takes inside the namespace at `path` and outside, over 100,000 polls of a
/// future that yields each time.
fn poll_cost(path: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    const POLLS: u32 = 100_000;
    let ns = std::sync::Arc::new(NetNs::open(path)?);
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let yields = || async {
        for _ in 0..POLLS {
            tokio::task::yield_now().await;
        }
    };
    let start = Instant::now();
    runtime.block_on(yields());
    let outside = start.elapsed();
    let start = Instant::now();
    runtime.block_on(wasmlet_netns::InNamespace::new(ns, yields()))?;
    let inside = start.elapsed();
    let per = |d: std::time::Duration| d.as_secs_f64() * 1e9 / f64::from(POLLS);
    println!(
        "a poll inside a namespace: {:.0} ns, outside: {:.0} ns ({:.0} ns for entering and leaving)",
        per(inside),
        per(outside),
        per(inside) - per(outside)
    );
    Ok(())
}

fn open_fds() -> std::io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/fd")?.count())
}

fn kernel_kib() -> std::io::Result<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo")?;
    let field = |name: &str| -> u64 {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    Ok(field("SUnreclaim:") + field("Percpu:"))
}
