//! What wasmtime runs beyond modules, and its own machinery: components (`wasi:cli/run`,
//! `wasi:http`), the descriptor budget, the compile cache, the allocators, fuel, CPU limits.
//! Included by `tests/run.rs` (Cranelift's code) and `tests/run_baseline.rs` (the baseline
//! compiler's): the behaviour is the same on both.

use super::common::get;
use super::helpers::{e, entries, run_with, runtime, spec};

use std::time::Duration;

use wasmlet_runtime::{
    AllocatorChoice, ContainerSpec, ExitReason, Limits, Preopen, ProgramKind, Runtime,
    RuntimeConfig,
};

/// Opens of a guest that never closes stop at its descriptor budget (the default without a
/// limit, else the limit), with a trap naming the budget and how to raise it; the process's
/// own open files are untouched.
#[tokio::test]
async fn a_descriptor_leak_stops_at_the_budget() {
    for (budget, shown) in [
        (Some(40), 40),
        (None, wasmlet_runtime::budget::DEFAULT_DESCRIPTORS),
    ] {
        let run = run_with(wasmlet_fixtures::fdhog(), &["fdhog"], |spec, dir| {
            spec.preopens = vec![Preopen::parse(&format!("{}:/d", dir.display()))];
            spec.limits.descriptors = budget;
        })
        .await;
        assert_eq!(run.status.reason, ExitReason::Trap, "{:?}", run.status);
        let message = &run.status.message;
        assert!(
            message.contains(&format!("holds {shown} WASI handles")),
            "{message}"
        );
        assert!(message.contains("--max-descriptors"), "{message}");
    }
}

#[tokio::test]
async fn compile_cache_hits_on_second_load() {
    let dir = tempfile::tempdir().unwrap();
    let config = RuntimeConfig {
        cache_dir: Some(dir.path().join("cache")),
        ..RuntimeConfig::default()
    };
    let rt = Runtime::new(config.clone()).unwrap();
    assert!(
        !rt.load(wasmlet_fixtures::hello())
            .unwrap()
            .loaded_from_cache()
    );
    let second = rt.load(wasmlet_fixtures::hello()).unwrap();
    assert!(second.loaded_from_cache());
    let fresh = Runtime::new(config).unwrap();
    let third = fresh.load(wasmlet_fixtures::hello_component()).unwrap();
    assert!(!third.loaded_from_cache());
    let program = fresh.load(wasmlet_fixtures::hello()).unwrap();
    assert!(
        program.loaded_from_cache(),
        "another runtime with the same engine reuses entries"
    );
    let status = fresh.run(&program, ContainerSpec::default()).await.unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn corrupt_cache_entry_is_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let config = RuntimeConfig {
        cache_dir: Some(dir.path().into()),
        ..RuntimeConfig::default()
    };
    let rt = Runtime::new(config).unwrap();
    let program = rt.load(wasmlet_fixtures::hello()).unwrap();
    let entry = rt
        .cache()
        .unwrap()
        .entry(program.digest().trim_start_matches("sha256:"));
    // No program of it in use any more, so the next load reads the cache entry.
    drop(program);
    std::fs::write(&entry, b"garbage").unwrap();
    let again = rt.load(wasmlet_fixtures::hello()).unwrap();
    assert!(!again.loaded_from_cache());
    assert!(
        rt.run(&again, ContainerSpec::default())
            .await
            .unwrap()
            .success()
    );
}

/// Only a program that imports a network (or serves one) reaches it: the others are given
/// no sockets, and the shim makes no network namespace of their own for them.
#[test]
fn only_a_program_with_network_imports_or_a_server_reaches_a_network() {
    let rt = runtime();
    let reaches = |wasm: &[u8]| rt.load(wasm).unwrap().reaches_network();
    assert!(!reaches(wasmlet_fixtures::hello()), "a preview 1 module");
    assert!(
        !reaches(wasmlet_fixtures::hello_component()),
        "a command importing no network"
    );
    assert!(
        reaches(wasmlet_fixtures::tcp_hello()),
        "a command importing wasi:sockets"
    );
    assert!(
        reaches(wasmlet_fixtures::http_hello()),
        "a wasi:http server"
    );
}

#[tokio::test]
async fn component_runs_wasi_cli_run() {
    let rt = runtime();
    let program = rt.load(wasmlet_fixtures::hello_component()).unwrap();
    assert_eq!(program.kind(), ProgramKind::CommandComponent);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("0.log");
    let status = rt.run(&program, spec(&["hello", "z"], &log)).await.unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(
        entries(&log),
        vec![
            e("stdout", "F", "hello from stdout!"),
            e("stderr", "F", "hello from stderr!"),
            e("stdout", "F", "Args are: [\"z\"]"),
        ]
    );
}

#[tokio::test]
async fn on_demand_allocator_runs_too() {
    let config = RuntimeConfig {
        allocator: AllocatorChoice::OnDemand,
        ..RuntimeConfig::default()
    };
    let rt = Runtime::new(config).unwrap();
    assert_eq!(rt.allocator(), wasmlet_runtime::Allocator::OnDemand);
    let program = rt.load(wasmlet_fixtures::hello()).unwrap();
    assert!(
        rt.run(&program, ContainerSpec::default())
            .await
            .unwrap()
            .success()
    );
}

#[tokio::test]
async fn fuel_bounds_a_loop() {
    let rt = Runtime::new(RuntimeConfig {
        fuel: true,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let program = rt.load(wasmlet_fixtures::spin()).unwrap();
    let spec = ContainerSpec {
        limits: Limits {
            fuel: Some(100_000),
            ..Limits::default()
        },
        ..ContainerSpec::default()
    };
    let status = rt.run(&program, spec).await.unwrap();
    assert_eq!(status.reason, ExitReason::Trap);
    assert!(status.message.contains("fuel"), "{}", status.message);
}

#[tokio::test]
async fn serving_a_non_http_program_is_refused() {
    let rt = runtime();
    let program = rt.load(wasmlet_fixtures::hello()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let shutdown = wasmlet_runtime::CancellationToken::new();
    let err = rt
        .serve_http(&program, ContainerSpec::default(), listener, shutdown)
        .await
        .expect_err("an error");
    assert!(
        err.to_string().contains("wasi:http/incoming-handler"),
        "{err}"
    );
}

/// `program` served by `rt.serve_http` on a loopback port: its address, what stops it, and
/// the serving task.
async fn serving(
    rt: &wasmlet_runtime::Runtime,
    program: wasmlet_runtime::Program,
) -> (
    std::net::SocketAddr,
    wasmlet_runtime::CancellationToken,
    tokio::task::JoinHandle<wasmlet_runtime::Result<()>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = wasmlet_runtime::CancellationToken::new();
    let server = {
        let (rt, shutdown) = (rt.clone(), shutdown.clone());
        tokio::spawn(async move {
            rt.serve_http(&program, ContainerSpec::default(), listener, shutdown)
                .await
        })
    };
    (addr, shutdown, server)
}

#[tokio::test]
async fn http_component_serves_requests() {
    let rt = runtime();
    let program = rt.load(wasmlet_fixtures::http_hello()).unwrap();
    assert_eq!(program.kind(), ProgramKind::HttpComponent);
    assert_eq!(
        program.loaded_tier(),
        super::TIER,
        "the code the suite runs on"
    );
    let (addr, shutdown, server) = serving(&rt, program).await;
    for _ in 0..3 {
        let response = get(addr).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(
            response.contains("\r\nhello from wasi:http!\n"),
            "{response}"
        );
    }
    shutdown.cancel();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn no_request_sees_what_an_earlier_one_wrote_in_its_memory() {
    let rt = runtime();
    assert_eq!(
        rt.allocator(),
        wasmlet_runtime::Allocator::Pooling,
        "the slots whose reset this tests"
    );
    let program = rt.load(wasmlet_fixtures::http_scribble()).unwrap();
    let (addr, shutdown, server) = serving(&rt, program).await;
    // One at a time, so each request takes the slot (and memory) the one before it freed.
    for request in 0..4 {
        let response = get(addr).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(
            response.contains("\r\nclean\n"),
            "request {request} saw an earlier request's writes: {response}"
        );
    }
    shutdown.cancel();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_trapping_request_is_answered_500_naming_the_trap_and_serving_goes_on() {
    let rt = runtime();
    let program = rt.load(wasmlet_fixtures::http_trap()).unwrap();
    let (addr, shutdown, server) = serving(&rt, program).await;
    for _ in 0..2 {
        let response = get(addr).await;
        assert!(response.starts_with("HTTP/1.1 500"), "{response}");
        assert!(response.contains("unreachable"), "{response}");
    }
    shutdown.cancel();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn an_http_container_serves_on_every_listener_until_stopped() {
    let rt = runtime();
    let program = rt.load(wasmlet_fixtures::http_hello()).unwrap();
    let mut listeners = Vec::new();
    for _ in 0..2 {
        listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let addrs: Vec<_> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let container = rt
        .start_http(&program, ContainerSpec::default(), listeners)
        .unwrap();
    for addr in &addrs {
        let response = get(*addr).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(
            response.contains("\r\nhello from wasi:http!\n"),
            "{response}"
        );
    }
    assert_eq!(container.status(), None, "still serving");
    container.stop(Duration::from_secs(60));
    let status = tokio::time::timeout(Duration::from_secs(30), container.wait())
        .await
        .expect("a stopped server ends at once");
    assert_eq!((status.code, status.reason), (0, ExitReason::Completed));
    for addr in &addrs {
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "{addr}"
        );
    }
}

#[tokio::test]
async fn a_killed_http_container_is_killed_and_a_command_cannot_serve() {
    let rt = runtime();
    let program = rt.load(wasmlet_fixtures::http_hello()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let container = rt
        .start_http(&program, ContainerSpec::default(), vec![listener])
        .unwrap();
    container.kill();
    let status = container.wait().await;
    assert_eq!((status.code, status.reason), (137, ExitReason::Killed));
    let hello = rt.load(wasmlet_fixtures::hello()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refused = rt.start_http(&hello, ContainerSpec::default(), vec![listener]);
    let err = refused.err().expect("a command is not a server");
    assert!(
        err.to_string().contains("wasi:http/incoming-handler"),
        "{err}"
    );
}

#[tokio::test]
async fn an_http_container_sums_its_requests() {
    let rt = runtime();
    let program = rt.load(wasmlet_fixtures::http_hello()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let container = rt
        .start_http(&program, ContainerSpec::default(), vec![listener])
        .unwrap();
    let fresh = container.usage();
    let code = fresh.code_bytes;
    assert!(code > 0, "an idle server holds its compiled code");
    assert!(
        fresh.cpu > Duration::ZERO,
        "its set-up used some CPU: {fresh:?}"
    );
    assert_eq!((fresh.memory_bytes, fresh.instances), (0, 0), "{fresh:?}");
    assert_eq!(container.usage().working_set_bytes(), code);
    get(addr).await;
    let first = container.usage();
    assert!(first.cpu > Duration::ZERO, "{first:?}");
    get(addr).await;
    let second = container.usage();
    assert!(second.cpu > first.cpu, "{second:?} after {first:?}");
    // No request in flight: no instance, no instance memory; the code is still held.
    let idle = wasmlet_runtime::Usage {
        cpu: second.cpu,
        code_bytes: code,
        ..Default::default()
    };
    let settled = async {
        while container.usage().instances != 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), settled)
        .await
        .unwrap();
    assert_eq!(container.usage(), idle);
    // A second server of the same program shares the code: each is charged half.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other = rt
        .start_http(&program, ContainerSpec::default(), vec![listener])
        .unwrap();
    assert_eq!(container.usage().code_bytes, code / 2);
    assert_eq!(other.usage().code_bytes, code / 2);
    other.kill();
    other.wait().await;
    assert_eq!(
        other.usage().code_bytes,
        0,
        "an ended container holds nothing"
    );
    assert_eq!(container.usage().code_bytes, code);
    container.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cpu_limit_slices_a_tight_loop() {
    let rt = runtime();
    let program = rt.load(wasmlet_fixtures::spin()).unwrap();
    let spec = ContainerSpec {
        limits: Limits {
            cpu_millis: Some(100),
            ..Limits::default()
        },
        ..ContainerSpec::default()
    };
    let container = rt.start(&program, spec).unwrap();
    let started = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let used = container.usage().cpu;
    let wall = started.elapsed();
    container.kill();
    container.wait().await;
    // 100 millicores: about a tenth of the wall time, whatever else the machine does (a
    // busy machine can only lower it). Unlimited, the loop would use all of it.
    assert!(
        used.as_secs_f64() < wall.as_secs_f64() * 0.35,
        "used {used:?} of {wall:?}"
    );
    assert!(used > Duration::ZERO, "the loop never ran");
}
