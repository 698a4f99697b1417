//! The seed's end-to-end on the stock kubelet: the real kubelet joined to the test control
//! plane with the test containerd as its runtime, the RuntimeClass `wasm` shipped in
//! `deploy/shim`, and a Deployment with `runtimeClassName: wasm` whose pod logs
//! `Hello from WebAssembly!`.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// The program of the seed's Deployment: prints `Hello from WebAssembly!`.
const SEED_HELLO: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "Hello from WebAssembly!\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 24))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

fn bash(script: &str, args: &[&str]) -> String {
    let out = command("bash")
        .arg(root().join(script))
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{script} failed: {}", show(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The test control plane of the shim's tests (its own state folder) and a Ready kubelet.
fn cluster() -> HashMap<String, String> {
    let state = root().join(".state/shim-e2e/cluster");
    let env_file = bash("tests/cluster/up", &[&state.to_string_lossy()]);
    bash("tests/containerd/kubelet", &[&env_file]);
    let mut env = HashMap::new();
    for line in std::fs::read_to_string(&env_file).unwrap().lines() {
        if let Some((k, v)) = line.strip_prefix("export ").and_then(|l| l.split_once('=')) {
            env.insert(k.to_owned(), v.trim_matches('"').to_owned());
        }
    }
    env
}

fn kubectl(
    env: &HashMap<String, String>,
    args: &[&str],
    stdin: Option<&str>,
) -> std::process::Output {
    let mut cmd = Command::new("kubectl");
    cmd.env("KUBECONFIG", &env["KUBECONFIG"]).args(args);
    let Some(input) = stdin else {
        return cmd.output().unwrap();
    };
    use std::io::Write;
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: wasm-hello}
spec:
  replicas: 1
  selector: {matchLabels: {app: wasm-hello}}
  template:
    metadata: {labels: {app: wasm-hello}}
    spec:
      runtimeClassName: wasm
      hostNetwork: true
      containers:
        - name: hello
          image: localhost/wasmlet-test/seed-hello:v1
          imagePullPolicy: IfNotPresent
"#;

#[test]
fn a_deployment_with_runtime_class_wasm_logs_hello_from_webassembly() {
    let wasm = wat::parse_str(SEED_HELLO).unwrap();
    import_wasm("k8s.io", "seed-hello", &wasm).unwrap();
    let env = cluster();
    let runtime_class = root().join("deploy/shim/runtimeclass.yaml");
    let out = kubectl(
        &env,
        &["apply", "-f", &runtime_class.to_string_lossy()],
        None,
    );
    assert!(out.status.success(), "{}", show(&out));
    let out = kubectl(&env, &["apply", "-f", "-"], Some(DEPLOYMENT));
    assert!(out.status.success(), "{}", show(&out));
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = String::new();
    while Instant::now() < deadline {
        let out = kubectl(&env, &["logs", "deployment/wasm-hello"], None);
        last = show(&out);
        if String::from_utf8_lossy(&out.stdout).contains("Hello from WebAssembly!") {
            let _ = kubectl(
                &env,
                &["delete", "deployment", "wasm-hello", "--wait=false"],
                None,
            );
            return;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let pods = kubectl(&env, &["get", "pods", "-o", "wide"], None);
    panic!(
        "no `Hello from WebAssembly!` in the pod's log: {last}\n{}",
        show(&pods)
    );
}
