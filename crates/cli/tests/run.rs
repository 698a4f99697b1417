//! `wasmlet run` as a user runs it: the built binary on the shipped example and fixtures. The
//! module tests run once per engine (`--engine wasmtime`, `--engine wasmer`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn wasmlet(args: &[&str]) -> Output {
    let cache = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_wasmlet"))
        .args(args)
        .current_dir(root())
        .env("WASMLET_CACHE_DIR", cache.path())
        .output()
        .unwrap()
}

/// `wasmlet run --engine ENGINE ...`: `args` begin with `run`.
fn wasmlet_on(engine: &str, args: &[&str]) -> Output {
    let mut with = vec![args[0], "--engine", engine];
    with.extend_from_slice(&args[1..]);
    wasmlet(&with)
}

/// Makes `NAME_on_wasmtime` and `NAME_on_wasmer` tests of each `fn NAME(engine: &str)`.
macro_rules! on_every_engine {
    ($($name:ident),* $(,)?) => {
        mod on_wasmtime {
            $(#[test] fn $name() { super::$name("wasmtime") })*
        }
        mod on_wasmer {
            $(#[test] fn $name() { super::$name("wasmer") })*
        }
    };
}

on_every_engine!(
    runs_the_hello_example,
    passes_args_env_and_exit_code,
    preopens_a_directory,
    limits_end_the_guest,
);

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn runs_the_hello_example(engine: &str) {
    let out = wasmlet_on(engine, &["run", "examples/hello/hello.wat"]);
    assert_eq!(text(&out.stdout), "hello from stdout!\nArgs are: []\n");
    assert_eq!(text(&out.stderr), "hello from stderr!\n");
    assert_eq!(out.status.code(), Some(0));
}

fn passes_args_env_and_exit_code(engine: &str) {
    let hello = wasmlet_on(engine, &["run", "examples/hello/hello.wat", "--", "a", "b"]);
    assert_eq!(
        text(&hello.stdout),
        "hello from stdout!\nArgs are: [\"a\", \"b\"]\n"
    );
    let exit = wasmlet_fixtures::path("exit");
    let out = wasmlet_on(engine, &["run", exit.to_str().unwrap(), "--", "7"]);
    assert_eq!(out.status.code(), Some(7));
    let env = wasmlet_fixtures::path("env");
    let out = wasmlet_on(
        engine,
        &["run", "--env", "GREETING=hi", env.to_str().unwrap()],
    );
    assert!(
        text(&out.stdout).contains("env=GREETING=hi\n"),
        "{}",
        text(&out.stdout)
    );
}

fn preopens_a_directory(engine: &str) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.txt"), "from the host").unwrap();
    let fs = wasmlet_fixtures::path("fs");
    let mapping = format!("{}:/data:ro", dir.path().display());
    let out = wasmlet_on(
        engine,
        &[
            "run",
            "--dir",
            &mapping,
            fs.to_str().unwrap(),
            "--",
            "read",
            "in.txt",
        ],
    );
    assert_eq!(text(&out.stdout), "from the host");
    assert_eq!(out.status.code(), Some(0));
}

fn limits_end_the_guest(engine: &str) {
    let bomb = wasmlet_fixtures::path("membomb");
    let out = wasmlet_on(engine, &["run", "--memory", "8Mi", bomb.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(137));
    assert!(
        text(&out.stderr).contains("OOMKilled"),
        "{}",
        text(&out.stderr)
    );
    let spin = wasmlet_fixtures::path("spin");
    let out = wasmlet_on(
        engine,
        &["run", "--timeout", "100ms", spin.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(137));
    assert!(
        text(&out.stderr).contains("DeadlineExceeded"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn bad_input_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script.wasm");
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    let badimport = wasmlet_fixtures::path("badimport");
    let store = dir.path().join("store");
    let cases = [
        (
            vec!["run", script.to_str().unwrap()],
            "not a WebAssembly file",
        ),
        (
            vec!["run", badimport.to_str().unwrap()],
            "module imports `env.foo`",
        ),
        (
            vec![
                "run",
                "--dir",
                "/nonexistent/wasmlet",
                "examples/hello/hello.wat",
            ],
            "/nonexistent/wasmlet",
        ),
        (
            vec!["run", "missing-pod.yaml"],
            "reading missing-pod.yaml: No such file",
        ),
        (
            vec![
                "--store",
                store.to_str().unwrap(),
                "run",
                "127.0.0.1:1/hello:v1",
            ],
            "ErrImagePull: pulling 127.0.0.1:1/hello:v1",
        ),
    ];
    for (args, expected) in cases {
        let out = wasmlet(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            text(&out.stderr).contains(expected),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn serves_a_wasi_http_component_until_sigterm() {
    use std::io::{Read, Write};
    let port = wasmlet_testkit::free_port();
    let listen = format!("127.0.0.1:{port}");
    let cache = tempfile::tempdir().unwrap();
    let http = wasmlet_fixtures::path("http_hello");
    let server = Command::new(env!("CARGO_BIN_EXE_wasmlet"))
        .args(["run", "--listen", &listen, http.to_str().unwrap()])
        .env("WASMLET_CACHE_DIR", cache.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut conn = loop {
        match std::net::TcpStream::connect(&listen) {
            Ok(c) => break c,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => panic!("wasmlet run never listened on {listen}: {e}"),
        }
    };
    conn.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("hello from wasi:http!"), "{response}");
    let kill = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = server.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains(&format!("serving wasi:http on http://{listen}/")));
}

/// A guest blocked writing into a stdout nobody reads is still stopped by `--timeout`: the
/// wait for the pipe is a wait the deadline ends, not a blocked host call.
#[test]
fn a_timeout_stops_a_guest_blocked_on_a_full_stdout() {
    let cache = tempfile::tempdir().unwrap();
    let flood = wasmlet_fixtures::path("flood");
    let mut child = Command::new(env!("CARGO_BIN_EXE_wasmlet"))
        .args(["run", "--timeout", "1s", flood.to_str().unwrap()])
        .env("WASMLET_CACHE_DIR", cache.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // stdout stays open and unread; the bound below is far past the timeout, so only a run
    // the deadline cannot end reaches it.
    let bound = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > bound {
            child.kill().unwrap();
            panic!("wasmlet run --timeout 1s still ran after 120 s with its stdout full");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(137), "{stderr}");
    assert!(stderr.contains("DeadlineExceeded"), "{stderr}");
}

#[test]
fn an_engine_that_cannot_run_the_program_says_which_can() {
    let component = wasmlet_fixtures::path("hello_component");
    let out = wasmlet(&["run", "--engine", "wasmer", component.to_str().unwrap()]);
    assert_ne!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(
        err.contains("component") && err.contains("--engine wasmtime"),
        "{err}"
    );
    let out = wasmlet(&["run", "--engine", "lucet", "examples/hello/hello.wat"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("unknown engine `lucet`"), "{err}");
}
