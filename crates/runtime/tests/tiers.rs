//! A tiered start: a program never compiled before starts on baseline code (Winch) and
//! Cranelift's code takes over for new instances and goes to the compile cache; small
//! programs and programs the baseline compiler refuses wait for Cranelift.

mod common;

use common::get;
use std::path::Path;
use std::time::Duration;

use wasmlet_runtime::{Compilers, ContainerSpec, Runtime, RuntimeConfig, Tier};

/// Long enough for Cranelift to compile a fixture on a busy 2-core machine.
const OPTIMIZE_WITHIN: Duration = Duration::from_secs(120);

fn tiered(cache: &Path) -> Runtime {
    Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.to_owned()),
        compilers: Compilers::Tiered { min_bytes: 0 },
        ..RuntimeConfig::default()
    })
    .unwrap()
}

#[tokio::test]
async fn a_tiered_start_hands_over_to_cranelift_and_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tiered(dir.path());
    let program = rt.load(wasmlet_fixtures::hello_component()).unwrap();
    assert_eq!(program.loaded_tier(), Tier::Baseline);
    assert!(!program.loaded_from_cache());
    let status = rt.run(&program, ContainerSpec::default()).await.unwrap();
    assert!(status.success(), "{status:?}");

    assert_eq!(program.wait_optimized(OPTIMIZE_WITHIN), Tier::Optimized);
    assert_eq!(program.tier(), Tier::Optimized);
    let key = program.digest().trim_start_matches("sha256:").to_owned();
    assert!(
        rt.cache().unwrap().entry(&key).exists(),
        "Cranelift's code is cached"
    );
    let status = rt.run(&program, ContainerSpec::default()).await.unwrap();
    assert!(status.success(), "on Cranelift's code: {status:?}");

    // A load while it is in use shares the optimised code; a new runtime reads the cache.
    assert_eq!(
        rt.load(wasmlet_fixtures::hello_component())
            .unwrap()
            .loaded_tier(),
        Tier::Optimized
    );
    let fresh = tiered(dir.path());
    let again = fresh.load(wasmlet_fixtures::hello_component()).unwrap();
    assert!(again.loaded_from_cache());
    assert_eq!(again.loaded_tier(), Tier::Optimized);
}

#[tokio::test]
async fn an_http_server_moves_to_cranelift_code_while_serving() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tiered(dir.path());
    let program = rt.load(wasmlet_fixtures::http_hello()).unwrap();
    assert_eq!(program.loaded_tier(), Tier::Baseline);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let container = rt
        .start_http(&program, ContainerSpec::default(), vec![listener])
        .unwrap();
    let first = get(addr).await;
    assert!(first.contains("\r\nhello from wasi:http!\n"), "{first}");
    let waiting = program.clone();
    let tier = tokio::task::spawn_blocking(move || waiting.wait_optimized(OPTIMIZE_WITHIN))
        .await
        .unwrap();
    assert_eq!(tier, Tier::Optimized);
    for _ in 0..3 {
        let response = get(addr).await;
        assert!(
            response.contains("\r\nhello from wasi:http!\n"),
            "{response}"
        );
    }
    container.stop(Duration::from_secs(5));
    assert!(container.wait().await.success());
}

#[tokio::test]
async fn small_programs_wait_for_cranelift_by_default() {
    let rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let program = rt.load(wasmlet_fixtures::hello()).unwrap();
    assert_eq!(program.loaded_tier(), Tier::Optimized);
    assert_eq!(program.wait_optimized(Duration::ZERO), Tier::Optimized);
}

/// Tail calls are a proposal the baseline compiler does not implement.
#[tokio::test]
async fn a_program_the_baseline_compiler_refuses_gets_cranelift_code() {
    let wat = r#"(module
        (func $done)
        (func $tail (return_call $done))
        (func (export "_start") (call $tail)))"#;
    for compilers in [Compilers::Baseline, Compilers::Tiered { min_bytes: 0 }] {
        let rt = Runtime::new(RuntimeConfig {
            compilers,
            ..RuntimeConfig::default()
        })
        .unwrap();
        let program = rt.load(wat.as_bytes()).unwrap();
        assert_eq!(program.loaded_tier(), Tier::Optimized, "{compilers:?}");
        let status = rt.run(&program, ContainerSpec::default()).await.unwrap();
        assert!(status.success(), "{compilers:?}: {status:?}");
    }
}
