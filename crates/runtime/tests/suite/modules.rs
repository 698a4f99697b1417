//! How a WASI preview 1 module runs, on every engine: output and its CRI log, exit codes,
//! traps, the memory limit, deadlines, kills and stops, sleeping, env and args, preopened
//! directories and their sandbox, refusals of what cannot run, log rotation, tees, usage.
//! Included by `tests/run.rs` and `tests/run_baseline.rs` (wasmtime's Cranelift and
//! baseline code) and `tests/run_wasmer.rs` (wasmer): the behaviour is the same on all.

use super::common::Captured;
use super::helpers::{e, entries, run, run_with, runtime, spec};

use std::path::{Path, PathBuf};
use std::time::Duration;

use wasmlet_runtime::{
    ContainerSpec, Error, ExitReason, LogConfig, Preopen, ProgramKind, Runtime, RuntimeConfig,
    Stdio, Tier, Wasm,
};

#[tokio::test]
async fn hello_writes_cri_lines_and_completes() {
    let run = run(wasmlet_fixtures::hello(), &["hello.wasm"]).await;
    assert_eq!(
        run.log,
        vec![
            e("stdout", "F", "hello from stdout!"),
            e("stderr", "F", "hello from stderr!"),
            e("stdout", "F", "Args are: []"),
        ]
    );
    assert_eq!(run.status.code, 0);
    assert_eq!(run.status.reason, ExitReason::Completed);
    assert_eq!(run.status.message, "Module run completed");
}

/// A stored wasm (a blob of the content store, named by its digest) is read only to be
/// compiled, and checked against its digest then: a program in the compile cache starts
/// without the rest of the file, and an altered file is never compiled.
#[tokio::test]
async fn a_stored_wasm_is_read_only_to_be_compiled_and_checked_then() {
    if super::TIER == Tier::Baseline {
        return; // baseline code is never cached: every load compiles
    }
    let dir = tempfile::tempdir().unwrap();
    let cached = |cache: &str| {
        Runtime::new(RuntimeConfig {
            cache_dir: Some(dir.path().join(cache)),
            max_instances: 8,
            compilers: super::COMPILERS,
            engine: super::ENGINE,
            ..RuntimeConfig::default()
        })
        .unwrap()
    };
    let hello = wasmlet_fixtures::hello();
    let digest = Wasm::from_bytes(hello).unwrap().digest().to_owned();
    let blob = dir.path().join("blob");
    std::fs::write(&blob, hello).unwrap();
    let first = cached("cache").load_wasm(&Wasm::stored(&blob, &digest));
    assert!(!first.unwrap().loaded_from_cache(), "compiled");

    std::fs::write(&blob, &hello[..8]).unwrap(); // only the header is left
    let rt = cached("cache");
    let program = rt.load_wasm(&Wasm::stored(&blob, &digest)).unwrap();
    assert!(program.loaded_from_cache());
    let log = dir.path().join("0.log");
    let status = rt.run(&program, spec(&["hello.wasm"], &log)).await.unwrap();
    assert_eq!(status.code, 0);
    assert_eq!(entries(&log)[0], e("stdout", "F", "hello from stdout!"));

    let err = cached("empty").load_wasm(&Wasm::stored(&blob, &digest));
    let err = err.err().expect("an altered file is refused");
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&digest), "{err}");
}

#[tokio::test]
async fn hello_lists_args_after_the_program_name() {
    let run = run(wasmlet_fixtures::hello(), &["hello.wasm", "a", "b c"]).await;
    assert_eq!(
        run.stdout(),
        ["hello from stdout!", "Args are: [\"a\", \"b c\"]"]
    );
}

#[tokio::test]
async fn wat_text_loads_like_binary() {
    let rt = runtime();
    let text = rt.load(wasmlet_fixtures::hello_wat().as_bytes()).unwrap();
    let binary = rt.load(wasmlet_fixtures::hello()).unwrap();
    assert_eq!(text.digest(), binary.digest());
    assert_eq!(text.kind(), ProgramKind::Module);
}

#[tokio::test]
async fn exit_code_is_the_guests() {
    for (arg, code, reason) in [
        ("3", 3, ExitReason::Error),
        ("0", 0, ExitReason::Completed),
        ("125", 125, ExitReason::Error),
        ("200", 134, ExitReason::Trap),
    ] {
        let run = run(wasmlet_fixtures::exit(), &["exit", arg]).await;
        assert_eq!(
            (run.status.code, run.status.reason),
            (code, reason),
            "exit {arg}"
        );
    }
}

/// The edges of a module's shape: no memory at all (nothing to hand WASI), and a start
/// function that traps while the module is instantiated.
#[tokio::test]
async fn a_module_without_memory_runs_and_a_trapping_start_function_is_a_trap() {
    let empty = run(b"(module (func (export \"_start\")))", &["empty"]).await;
    let status = (empty.status.code, empty.status.reason);
    assert_eq!(
        status,
        (0, ExitReason::Completed),
        "{}",
        empty.status.message
    );
    let trapping_start = b"(module (memory (export \"memory\") 1) (func $s unreachable) \
        (start $s) (func (export \"_start\")))";
    let run = run(trapping_start, &["start"]).await;
    assert_eq!(
        run.status.reason,
        ExitReason::Trap,
        "{}",
        run.status.message
    );
    assert_eq!(run.status.code, wasmlet_runtime::TRAP_EXIT_CODE);
    assert!(
        run.status.message.contains("unreachable"),
        "{}",
        run.status.message
    );
}

#[tokio::test]
async fn trap_has_its_own_reason_and_message() {
    let run = run(wasmlet_fixtures::trap(), &["trap"]).await;
    assert_eq!(run.status.reason, ExitReason::Trap);
    assert_eq!(run.status.code, wasmlet_runtime::TRAP_EXIT_CODE);
    assert!(
        run.status.message.contains("unreachable"),
        "{}",
        run.status.message
    );
}

#[tokio::test]
async fn memory_bomb_is_oom_killed() {
    let run = run_with(wasmlet_fixtures::membomb(), &["membomb"], |spec, _| {
        spec.limits.memory_bytes = Some(16 << 20);
    })
    .await;
    assert_eq!(run.status.reason, ExitReason::OomKilled);
    assert_eq!(run.status.code, 137);
    assert!(
        run.status.message.contains("memory limit"),
        "{}",
        run.status.message
    );
}

#[tokio::test]
async fn memory_under_the_limit_is_fine() {
    let run = run_with(wasmlet_fixtures::hello(), &["hello"], |spec, _| {
        spec.limits.memory_bytes = Some(1 << 20);
    })
    .await;
    assert!(run.status.success(), "{:?}", run.status);
}

#[tokio::test]
async fn tight_loop_is_killed_at_its_deadline() {
    let run = run_with(wasmlet_fixtures::spin(), &["spin"], |spec, _| {
        spec.limits.timeout = Some(Duration::from_millis(100));
    })
    .await;
    assert_eq!(run.status.reason, ExitReason::DeadlineExceeded);
    assert_eq!(run.status.code, 137);
}

#[tokio::test]
async fn tight_loop_is_killed_on_request() {
    let rt = runtime();
    let program = rt.load(wasmlet_fixtures::spin()).unwrap();
    let container = rt.start(&program, ContainerSpec::default()).unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(container.status().is_none(), "still running");
    container.kill();
    let status = container.wait().await;
    assert_eq!((status.reason, status.code), (ExitReason::Killed, 137));
}

#[tokio::test]
async fn a_stopped_command_ends_as_on_sigterm_within_its_short_grace() {
    let rt = runtime();
    let program = rt.load(wasmlet_fixtures::sleep()).unwrap();
    let spec = || ContainerSpec {
        args: vec!["sleep".into(), "600000".into()],
        ..ContainerSpec::default()
    };
    let container = rt.start(&program, spec()).unwrap();
    container.stop(Duration::from_millis(20));
    let status = container.wait().await;
    assert_eq!((status.code, status.reason), (143, ExitReason::Error));
    assert!(
        status.message.contains("cannot observe SIGTERM"),
        "{status:?}"
    );
    // A long grace does not keep a command that cannot use it.
    let container = rt.start(&program, spec()).unwrap();
    let asked = std::time::Instant::now();
    container.stop(Duration::from_secs(30));
    assert_eq!(container.wait().await.code, 143);
    let waited = asked.elapsed();
    assert!(waited >= wasmlet_runtime::COMMAND_STOP_GRACE, "{waited:?}");
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    // No grace is a kill.
    let container = rt.start(&program, spec()).unwrap();
    container.stop(Duration::ZERO);
    let status = container.wait().await;
    assert_eq!((status.code, status.reason), (137, ExitReason::Killed));
}

#[tokio::test]
async fn guest_finishing_within_grace_keeps_its_status() {
    let rt = runtime();
    let program = rt.load(wasmlet_fixtures::sleep()).unwrap();
    let spec = ContainerSpec {
        args: vec!["sleep".into(), "200".into()],
        ..ContainerSpec::default()
    };
    let container = rt.start(&program, spec).unwrap();
    container.stop(Duration::from_secs(30));
    assert_eq!(container.wait().await.reason, ExitReason::Completed);
}

#[tokio::test]
async fn sleep_completes() {
    let run = run(wasmlet_fixtures::sleep(), &["sleep", "5"]).await;
    assert_eq!(run.stdout(), ["slept"]);
    assert!(run.status.success());
}

#[tokio::test]
async fn many_sleeping_instances_share_the_runtime() {
    let rt = runtime();
    let program = rt.load(wasmlet_fixtures::sleep()).unwrap();
    let containers: Vec<_> = (0..100)
        .map(|_| {
            let spec = ContainerSpec {
                args: vec!["sleep".into(), "600000".into()],
                ..ContainerSpec::default()
            };
            rt.start(&program, spec).unwrap()
        })
        .collect();
    for c in &containers {
        c.kill();
    }
    for c in &containers {
        assert_eq!(c.wait().await.reason, ExitReason::Killed);
    }
}

#[tokio::test]
async fn env_and_args_reach_the_guest() {
    let run = run_with(wasmlet_fixtures::env(), &["env.wasm", "x y"], |spec, _| {
        spec.env = vec![
            ("FOO".into(), "bar".into()),
            ("EMPTY".into(), String::new()),
        ];
    })
    .await;
    assert_eq!(
        run.stdout(),
        ["arg=env.wasm", "arg=x y", "env=FOO=bar", "env=EMPTY="]
    );
}

fn fs_spec(spec: &mut ContainerSpec, dir: &Path, read_only: bool) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(dir.join("secret"), "top secret").unwrap();
    spec.preopens = vec![Preopen {
        host: data.clone(),
        guest: "/data".into(),
        read_only,
        pinned: None,
    }];
    data
}

#[tokio::test]
async fn files_in_a_preopen_are_read_and_written() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let program = rt.load(wasmlet_fixtures::fs()).unwrap();
    let mut write = spec(
        &["fs", "write", "note.txt", "written by the guest"],
        &dir.path().join("w.log"),
    );
    let data = fs_spec(&mut write, dir.path(), false);
    let status = rt.run(&program, write).await.unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(
        std::fs::read_to_string(data.join("note.txt")).unwrap(),
        "written by the guest"
    );

    let log = dir.path().join("r.log");
    let mut read = spec(&["fs", "read", "note.txt"], &log);
    fs_spec(&mut read, dir.path(), true);
    assert!(rt.run(&program, read).await.unwrap().success());
    assert_eq!(
        entries(&log),
        vec![e("stdout", "P", "written by the guest")]
    );
}

#[tokio::test]
async fn read_only_preopen_refuses_writes() {
    let mut data = PathBuf::new();
    let run = run_with(
        wasmlet_fixtures::fs(),
        &["fs", "write", "x.txt", "nope"],
        |spec, dir| {
            data = fs_spec(spec, dir, true);
        },
    )
    .await;
    assert_eq!(run.status.reason, ExitReason::Error, "{:?}", run.status);
    assert!(!data.join("x.txt").exists());
}

#[tokio::test]
async fn guest_cannot_escape_its_preopen() {
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret");
    std::fs::write(&secret, "top secret").unwrap();
    let absolute = secret.to_str().unwrap().to_owned();
    for path in [
        "../secret",
        "../../secret",
        "..",
        absolute.as_str(),
        "link",
        "dirlink/secret",
    ] {
        let run = run_with(
            wasmlet_fixtures::fs(),
            &["fs", "read", path],
            |spec, dir| {
                let data = fs_spec(spec, dir, false);
                std::os::unix::fs::symlink(&secret, data.join("link")).unwrap();
                std::os::unix::fs::symlink(outside.path(), data.join("dirlink")).unwrap();
            },
        )
        .await;
        assert_eq!(
            run.status.reason,
            ExitReason::Error,
            "reading {path}: {:?}",
            run.status
        );
        assert!(
            run.stdout().iter().all(|l| !l.contains("top secret")),
            "reading {path} leaked"
        );
    }
    for path in ["../escaped.txt", "link", "dirlink/new.txt"] {
        let run = run_with(
            wasmlet_fixtures::fs(),
            &["fs", "write", path, "x"],
            |spec, dir| {
                let data = fs_spec(spec, dir, false);
                std::os::unix::fs::symlink(&secret, data.join("link")).unwrap();
                std::os::unix::fs::symlink(outside.path(), data.join("dirlink")).unwrap();
            },
        )
        .await;
        assert_eq!(
            run.status.reason,
            ExitReason::Error,
            "writing {path}: {:?}",
            run.status
        );
    }
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "top secret");
    assert!(!outside.path().join("new.txt").exists());
}

#[tokio::test]
async fn missing_preopen_is_an_error() {
    let rt = runtime();
    let program = rt.load(wasmlet_fixtures::hello()).unwrap();
    let spec = ContainerSpec {
        preopens: vec![Preopen::parse("/nonexistent/wasmlet-dir:/d")],
        ..ContainerSpec::default()
    };
    let err = rt.start(&program, spec).err().expect("an error");
    assert!(matches!(err, Error::Preopen { .. }), "{err}");
    assert!(
        err.to_string().contains("/nonexistent/wasmlet-dir"),
        "{err}"
    );
}

#[tokio::test]
async fn unsupported_import_is_named() {
    let err = runtime()
        .load(wasmlet_fixtures::badimport())
        .err()
        .expect("an error");
    assert!(
        err.to_string()
            .contains("module imports `env.foo`, which wasmlet does not provide"),
        "{err}"
    );
}

#[tokio::test]
async fn non_wasm_is_refused() {
    let err = runtime()
        .load(b"#!/bin/sh\necho hi\n")
        .err()
        .expect("an error");
    assert!(matches!(err, Error::NotWasm(_)), "{err}");
    assert!(err.to_string().contains("not a WebAssembly file"), "{err}");
}

#[tokio::test]
async fn log_rotates_at_its_size_limit() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("0.log");
    let rt = runtime();
    let program = rt.load(wasmlet_fixtures::env()).unwrap();
    let mut spec = spec(&["env"], &log);
    spec.env = (0..40)
        .map(|i| (format!("VAR{i}"), "value".repeat(4)))
        .collect();
    spec.stdio.log = Some(LogConfig {
        max_size: 400,
        max_files: 3,
        ..LogConfig::new(&log)
    });
    assert!(rt.run(&program, spec).await.unwrap().success());
    let rotated = wasmlet_runtime::log::rotated;
    assert!(rotated(&log, 1).exists() && rotated(&log, 2).exists());
    assert!(!rotated(&log, 3).exists(), "keeps 3 files in all");
    assert!(std::fs::metadata(&log).unwrap().len() <= 400);
    let last = entries(&log).pop().unwrap();
    assert_eq!(last, e("stdout", "F", "env=VAR39=valuevaluevaluevalue"));
}

#[tokio::test]
async fn stdio_tees_raw_output() {
    let (out, err) = (Captured::default(), Captured::default());
    let rt = runtime();
    let program = rt.load(wasmlet_fixtures::hello()).unwrap();
    let stdio = Stdio {
        log: None,
        stdout_tee: Some(Box::new(out.clone())),
        stderr_tee: Some(Box::new(err.clone())),
        report_end: false,
    };
    let spec = ContainerSpec {
        args: vec!["hello".into()],
        stdio,
        ..ContainerSpec::default()
    };
    assert!(rt.run(&program, spec).await.unwrap().success());
    assert_eq!(
        String::from_utf8(out.0.lock().unwrap().clone()).unwrap(),
        "hello from stdout!\nArgs are: []\n"
    );
    assert_eq!(
        String::from_utf8(err.0.lock().unwrap().clone()).unwrap(),
        "hello from stderr!\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_reports_its_cpu_and_memory() {
    let rt = runtime();
    let program = rt.load(wasmlet_fixtures::busy()).unwrap();
    let spec = ContainerSpec {
        args: vec!["busy".into(), "4".into()],
        ..ContainerSpec::default()
    };
    let container = rt.start(&program, spec).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let usage = container.usage();
    assert_eq!(usage.instances, 1, "{usage:?}");
    // One page to start with, then 4 MiB more.
    assert_eq!(usage.memory_bytes, (1 + 4 * 16) * 65536, "{usage:?}");
    assert!(usage.cpu > Duration::ZERO, "{usage:?}");
    assert!(usage.cpu < Duration::from_millis(500), "{usage:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(container.usage().cpu > usage.cpu, "the CPU time grows");
    container.kill();
    container.wait().await;
    let after = container.usage();
    assert_eq!(
        (after.memory_bytes, after.instances, after.code_bytes),
        (0, 0, 0),
        "{after:?}"
    );
    assert!(after.cpu >= usage.cpu, "{after:?}");
    assert!(
        usage.code_bytes > 0,
        "a running command holds its code: {usage:?}"
    );
}

#[tokio::test]
async fn a_sleeping_command_uses_next_to_no_cpu() {
    let rt = runtime();
    let program = rt.load(wasmlet_fixtures::sleep()).unwrap();
    let spec = ContainerSpec {
        args: vec!["sleep".into(), "600000".into()],
        ..ContainerSpec::default()
    };
    let container = rt.start(&program, spec).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let usage = container.usage();
    assert_eq!(
        (usage.memory_bytes, usage.instances),
        (65536, 1),
        "{usage:?}"
    );
    assert!(usage.cpu < Duration::from_millis(100), "{usage:?}");
    container.kill();
}
