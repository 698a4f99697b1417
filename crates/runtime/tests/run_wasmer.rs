//! The module behaviour tests (`suite/modules.rs`) on wasmer, and what is wasmer's own: a
//! component is refused naming the engine that runs it, fuel is refused, and the compile
//! cache holds wasmer's code, checked before it is loaded.
#![cfg(feature = "wasmer")]

mod common;
#[path = "suite/helpers.rs"]
mod helpers;
#[path = "suite/modules.rs"]
mod modules;

use wasmlet_runtime::{
    ContainerSpec, EngineKind, Error, Limits, ProgramKind, Runtime, RuntimeConfig,
};

/// The engine of the suite's runtime.
const ENGINE: EngineKind = EngineKind::Wasmer;
/// The compilers of the suite's runtime (wasmtime's; wasmer has its own).
const COMPILERS: wasmlet_runtime::Compilers = wasmlet_runtime::Compilers::Optimizing;
/// The code its programs are loaded with.
const TIER: wasmlet_runtime::Tier = wasmlet_runtime::Tier::Optimized;

fn cached_runtime(dir: &std::path::Path) -> Runtime {
    Runtime::new(RuntimeConfig {
        cache_dir: Some(dir.to_owned()),
        engine: ENGINE,
        ..RuntimeConfig::default()
    })
    .unwrap()
}

#[test]
fn a_component_is_refused_naming_the_engine_that_runs_it() {
    let rt = helpers::runtime();
    for component in [
        wasmlet_fixtures::hello_component(),
        wasmlet_fixtures::http_hello(),
    ] {
        let err = rt.load(component).err().expect("refused");
        assert!(matches!(err, Error::Unsupported(_)), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("component") && text.contains("wasmtime"),
            "{text}"
        );
    }
    // The same runtime runs it on wasmtime when told to.
    let wasmtime = rt.with_engine(EngineKind::Wasmtime).unwrap();
    let program = wasmtime.load(wasmlet_fixtures::hello_component()).unwrap();
    assert_eq!(program.engine(), EngineKind::Wasmtime);
    assert_eq!(program.kind(), ProgramKind::CommandComponent);
}

#[tokio::test]
async fn fuel_is_refused() {
    let rt = helpers::runtime();
    let program = rt.load(wasmlet_fixtures::hello()).unwrap();
    assert_eq!(program.engine(), EngineKind::Wasmer);
    let spec = ContainerSpec {
        limits: Limits {
            fuel: Some(1000),
            ..Limits::default()
        },
        ..ContainerSpec::default()
    };
    let err = rt.start(&program, spec).err().expect("refused");
    assert!(err.to_string().contains("fuel"), "{err}");
}

/// The entries wasmer's code is cached in.
fn wasmer_entries(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("wasmer-"))
        .collect()
}

#[tokio::test]
async fn the_compile_cache_serves_the_second_load_and_refuses_an_altered_entry() {
    let dir = tempfile::tempdir().unwrap();
    let first = cached_runtime(dir.path())
        .load(wasmlet_fixtures::exit())
        .unwrap();
    assert!(!first.loaded_from_cache());
    let entries = wasmer_entries(dir.path());
    assert_eq!(entries.len(), 1, "{entries:?}");
    let second = cached_runtime(dir.path())
        .load(wasmlet_fixtures::exit())
        .unwrap();
    assert!(second.loaded_from_cache());
    // One byte changed in the code: the entry is not loaded, the module is compiled again
    // and runs as it should.
    let mut bytes = std::fs::read(&entries[0]).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&entries[0], &bytes).unwrap();
    let rt = cached_runtime(dir.path());
    let third = rt.load(wasmlet_fixtures::exit()).unwrap();
    assert!(
        !third.loaded_from_cache(),
        "an altered entry is never loaded"
    );
    let spec = ContainerSpec {
        args: vec!["exit".into(), "7".into()],
        ..ContainerSpec::default()
    };
    assert_eq!(rt.run(&third, spec).await.unwrap().code, 7);
    // Wasmtime's entries and wasmer's do not meet.
    let wasmtime = rt.with_engine(EngineKind::Wasmtime).unwrap();
    assert!(
        !wasmtime
            .load(wasmlet_fixtures::exit())
            .unwrap()
            .loaded_from_cache()
    );
}
