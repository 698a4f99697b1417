//! Prints numbers (never a test): how fast hello starts cold (compile), warm (compile cache) and
//! pooled (pre-instantiated), how soon a kill lands in a tight loop, and the memory of idle
//! instances. Each rate is measured on one thread, so it is per core.
//!
//! `cargo run --release -p wasmlet-runtime --example bench [-- IDLE_INSTANCES]`

use std::time::{Duration, Instant};

use wasmlet_runtime::{AllocatorChoice, ContainerSpec, Program, Runtime, RuntimeConfig};

const HELLO: &str = include_str!("../../../examples/hello/hello.wat");

fn main() -> anyhow::Result<()> {
    let idle: u32 = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(1000);
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    tokio.block_on(async {
        let cache = tempfile::tempdir()?;
        cold(30).await?;
        warm(cache.path(), 300).await?;
        pooled(AllocatorChoice::OnDemand, 3000).await?;
        pooled(AllocatorChoice::Pooling, 3000).await?;
        kill_latency(10).await?;
        idle_memory(idle).await
    })
}

fn hello_spec() -> ContainerSpec {
    ContainerSpec {
        args: vec!["hello.wasm".into()],
        ..ContainerSpec::default()
    }
}

fn report(name: &str, runs: u32, elapsed: Duration) {
    let per_sec = f64::from(runs) / elapsed.as_secs_f64();
    let each = elapsed.as_secs_f64() * 1e6 / f64::from(runs);
    println!("{name:<34} {per_sec:>10.0} runs/s/core  {each:>9.1} us/run  ({runs} runs)");
}

async fn run_once(rt: &Runtime, program: &Program) -> anyhow::Result<()> {
    let status = rt.run(program, hello_spec()).await?;
    anyhow::ensure!(status.success(), "hello failed: {status:?}");
    Ok(())
}

/// Compile + instantiate + run, every time.
async fn cold(runs: u32) -> anyhow::Result<()> {
    let rt = Runtime::new(RuntimeConfig::default())?;
    let start = Instant::now();
    for _ in 0..runs {
        run_once(&rt, &rt.load(HELLO.as_bytes())?).await?;
    }
    report("hello cold (compile each run)", runs, start.elapsed());
    Ok(())
}

/// Load from the compile cache + instantiate + run.
async fn warm(dir: &std::path::Path, runs: u32) -> anyhow::Result<()> {
    let config = RuntimeConfig {
        cache_dir: Some(dir.into()),
        ..RuntimeConfig::default()
    };
    let rt = Runtime::new(config)?;
    rt.load(HELLO.as_bytes())?;
    let start = Instant::now();
    for _ in 0..runs {
        let program = rt.load(HELLO.as_bytes())?;
        anyhow::ensure!(program.loaded_from_cache(), "expected a cache hit");
        run_once(&rt, &program).await?;
    }
    report("hello warm (compile cache)", runs, start.elapsed());
    Ok(())
}

/// One loaded program (InstancePre reused), instantiate + run.
async fn pooled(allocator: AllocatorChoice, runs: u32) -> anyhow::Result<()> {
    let rt = Runtime::new(RuntimeConfig {
        allocator,
        ..RuntimeConfig::default()
    })?;
    let program = rt.load(HELLO.as_bytes())?;
    let start = Instant::now();
    for _ in 0..runs {
        run_once(&rt, &program).await?;
    }
    report(
        &format!("hello loaded once, {:?} allocator", rt.allocator()),
        runs,
        start.elapsed(),
    );
    Ok(())
}

/// Time from `kill()` to the exit status of a guest spinning in a tight loop.
async fn kill_latency(samples: u32) -> anyhow::Result<()> {
    let rt = Runtime::new(RuntimeConfig::default())?;
    let program = rt.load(b"(module (func (export \"_start\") (loop $l (br $l))))")?;
    let mut worst = Duration::ZERO;
    let mut total = Duration::ZERO;
    for _ in 0..samples {
        let container = rt.start(&program, ContainerSpec::default())?;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let start = Instant::now();
        container.kill();
        container.wait().await;
        worst = worst.max(start.elapsed());
        total += start.elapsed();
    }
    let mean = total / samples;
    println!(
        "kill of a tight loop: mean {mean:?}, worst {worst:?} over {samples} kills (epoch tick 10 ms)"
    );
    Ok(())
}

/// Resident memory added by `n` instances sleeping in `poll_oneoff`.
async fn idle_memory(n: u32) -> anyhow::Result<()> {
    let config = RuntimeConfig {
        max_instances: n + 10,
        ..RuntimeConfig::default()
    };
    let rt = Runtime::new(config)?;
    let sleep = "(module
      (import \"wasi_snapshot_preview1\" \"poll_oneoff\" (func $poll (param i32 i32 i32 i32) (result i32)))
      (memory (export \"memory\") 1)
      (func (export \"_start\")
        (i32.store (i32.const 16) (i32.const 1))
        (i64.store (i32.const 24) (i64.const 600000000000))
        (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))))";
    let program = rt.load(sleep.as_bytes())?;
    run_once_idle(&rt, &program).await?;
    let before = rss_kib()?;
    let containers: Vec<_> = (0..n)
        .map(|_| rt.start(&program, ContainerSpec::default()))
        .collect::<Result<_, _>>()?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib()?;
    let alive = containers.iter().filter(|c| c.status().is_none()).count();
    let per = (after.saturating_sub(before)) as f64 / f64::from(n);
    println!(
        "idle instances: {alive} of {n} alive, RSS +{} KiB, {per:.1} KiB per instance ({:?} allocator)",
        after.saturating_sub(before),
        rt.allocator()
    );
    containers.iter().for_each(|c| c.kill());
    for c in &containers {
        c.wait().await;
    }
    Ok(())
}

async fn run_once_idle(rt: &Runtime, program: &Program) -> anyhow::Result<()> {
    let c = rt.start(program, ContainerSpec::default())?;
    tokio::time::sleep(Duration::from_millis(10)).await;
    c.kill();
    c.wait().await;
    Ok(())
}

fn rss_kib() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or_else(|| anyhow::anyhow!("no VmRSS"))?;
    Ok(line.split_whitespace().nth(1).unwrap_or("0").parse()?)
}
