//! `wasmlet push / pull / inspect / images` as a user types them, against a real registry.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use wasmlet_testkit::{Auth, Registry};

fn wasmlet(store: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wasmlet"));
    cmd.arg("--store")
        .arg(store)
        .env_remove("WASMLET_PASSWORD")
        .env("HOME", store);
    cmd
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(out: Output) -> String {
    assert!(
        !out.status.success(),
        "succeeded unexpectedly: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn push_pull_inspect_list_export_import_prune() {
    let registry = Registry::start(Auth::Open);
    let store = tempfile::tempdir().unwrap();
    let hello = wasmlet_fixtures::path("hello");
    let r = format!("{}/demo/hello:v1", registry.host());
    let out = wasmlet(store.path())
        .args([
            "push",
            "--format",
            "wasm-to-oci",
            "-a",
            "org.opencontainers.image.version=1.0",
        ])
        .arg(&hello)
        .arg(&r)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(ok(out).contains(&format!("pushed {r}@sha256:")));
    assert!(
        stderr.contains("transferring sha256:") && stderr.contains("done sha256:"),
        "plain progress lines off a terminal: {stderr}"
    );

    let out = ok(wasmlet(store.path()).args(["pull", &r]).output().unwrap());
    assert!(
        out.contains("wasm-to-oci") && out.contains("module"),
        "{out}"
    );

    let json = ok(wasmlet(store.path())
        .args(["inspect", "-o", "json", &r])
        .output()
        .unwrap());
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        (v["format"].as_str(), v["kind"].as_str()),
        (Some("wasm-to-oci"), Some("module"))
    );
    let text = ok(wasmlet(store.path())
        .args(["inspect", &r])
        .output()
        .unwrap());
    assert!(text.contains("Source:      local store"), "{text}");

    let list = ok(wasmlet(store.path()).arg("images").output().unwrap());
    assert!(list.lines().any(|l| l.starts_with(&r)), "{list}");

    let layout = store.path().join("export.tar");
    ok(wasmlet(store.path())
        .args(["images", "export", &r, "-o"])
        .arg(&layout)
        .output()
        .unwrap());
    ok(wasmlet(store.path())
        .args(["images", "rm", &r])
        .output()
        .unwrap());
    let pruned = ok(wasmlet(store.path())
        .args(["images", "prune"])
        .output()
        .unwrap());
    assert!(!pruned.starts_with("removed 0 "), "{pruned}");
    assert!(!ok(wasmlet(store.path()).arg("images").output().unwrap()).contains(&r));
    let imported = ok(wasmlet(store.path())
        .args(["images", "import"])
        .arg(&layout)
        .output()
        .unwrap());
    assert!(imported.contains(&format!("imported {r}")), "{imported}");
}

#[test]
fn inspect_reads_a_registry_without_storing() {
    let registry = Registry::start(Auth::Open);
    let store = tempfile::tempdir().unwrap();
    let r = format!("{}/demo/component:v1", registry.host());
    ok(wasmlet(store.path())
        .arg("push")
        .arg(wasmlet_fixtures::path("hello_component"))
        .arg(&r)
        .output()
        .unwrap());
    let text = ok(wasmlet(store.path())
        .args(["inspect", &r])
        .output()
        .unwrap());
    assert!(
        text.contains("cncf-wasm-artifact")
            && text.contains("component (wasip2)")
            && text.contains("Source:      registry"),
        "{text}"
    );
    let list = ok(wasmlet(store.path())
        .args(["images", "-o", "json"])
        .output()
        .unwrap());
    assert_eq!(list.trim(), "[]");
}

#[test]
fn credentials_from_stdin_and_from_docker_config() {
    let registry = Registry::start(Auth::Htpasswd {
        user: "alice".into(),
        password: "s3cret".into(),
    });
    let store = tempfile::tempdir().unwrap();
    let r = format!("{}/private/hello:v1", registry.host());
    let mut child = wasmlet(store.path())
        .args(["push", "-u", "alice", "--password-stdin"])
        .arg(wasmlet_fixtures::path("hello"))
        .arg(&r)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    ok(child.wait_with_output().unwrap());

    let err = fails(wasmlet(store.path()).args(["pull", &r]).output().unwrap());
    assert!(
        err.contains("401") && err.contains(&registry.host()) && err.contains("private/hello:v1"),
        "{err}"
    );

    let docker = store.path().join(".docker");
    std::fs::create_dir_all(&docker).unwrap();
    let auth = format!(
        r#"{{"auths":{{"{}":{{"auth":"YWxpY2U6czNjcmV0"}}}}}}"#,
        registry.host()
    );
    std::fs::write(docker.join("config.json"), auth).unwrap();
    ok(wasmlet(store.path()).args(["pull", &r]).output().unwrap());
}

#[test]
fn bad_inputs_get_clear_errors() {
    let store = tempfile::tempdir().unwrap();
    let not_wasm = store.path().join("script.wasm");
    std::fs::write(&not_wasm, "#!/bin/sh\necho hi\n").unwrap();
    let registry = Registry::start(Auth::Open);
    let r = format!("{}/demo/x:v1", registry.host());
    let err = fails(
        wasmlet(store.path())
            .arg("push")
            .arg(&not_wasm)
            .arg(&r)
            .output()
            .unwrap(),
    );
    assert!(
        err.contains("script.wasm: not a WebAssembly binary"),
        "{err}"
    );

    let port = wasmlet_testkit::free_port();
    let err = fails(
        wasmlet(store.path())
            .args(["pull", &format!("127.0.0.1:{port}/demo/x:v1")])
            .output()
            .unwrap(),
    );
    assert!(
        err.contains(&format!("cannot reach registry 127.0.0.1:{port}")),
        "{err}"
    );

    let err = fails(
        wasmlet(store.path())
            .args(["pull", "Not A Reference"])
            .output()
            .unwrap(),
    );
    assert!(err.contains("image reference `Not A Reference`"), "{err}");

    let err = fails(
        wasmlet(store.path())
            .args(["push", "-a", "novalue"])
            .arg(wasmlet_fixtures::path("hello"))
            .arg(&r)
            .output()
            .unwrap(),
    );
    assert!(
        err.contains("annotation `novalue` is not key=value"),
        "{err}"
    );
}
