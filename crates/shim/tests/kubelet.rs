//! The seed's end-to-end on the stock kubelet: the real kubelet joined to the test control
//! plane with the test containerd as its runtime, the RuntimeClass `wasm` shipped in
//! `deploy/shim`, and a Deployment with `runtimeClassName: wasm` whose pod logs
//! `Hello from WebAssembly!`; and wasm OCI artifacts (CNCF, wasm-to-oci) pushed to a real
//! registry, pulled by the kubelet through CRI and run under RuntimeClass `wasm`.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::push::*;
use common::*;
use wasmlet_oci::format::Format;
use wasmlet_testkit::{Auth, Registry};

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

/// The test control plane of the shim's tests (its own state folder), a Ready kubelet and
/// the RuntimeClass `wasm`; made once for the tests of this file.
fn cluster() -> &'static HashMap<String, String> {
    static ENV: OnceLock<HashMap<String, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        // The sandbox image CRI is configured with: nothing is pulled.
        common::cri::pause_image();
        let env = start_cluster();
        let runtime_class = root().join("deploy/shim/runtimeclass.yaml");
        let out = kubectl(
            &env,
            &["apply", "-f", &runtime_class.to_string_lossy()],
            None,
        );
        assert!(out.status.success(), "{}", show(&out));
        env
    })
}

fn start_cluster() -> HashMap<String, String> {
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
    let out = kubectl(env, &["apply", "-f", "-"], Some(DEPLOYMENT));
    assert!(out.status.success(), "{}", show(&out));
    let logs = wait_for_log(env, "deployment/wasm-hello", &["Hello from WebAssembly!"]);
    assert!(logs.is_ok(), "{}", logs.unwrap_err());
    let _ = kubectl(
        env,
        &["delete", "deployment", "wasm-hello", "--wait=false"],
        None,
    );
}

/// A pod of RuntimeClass `wasm` whose image the kubelet pulls (`imagePullPolicy: Always`);
/// a CNCF or wasm-to-oci artifact has no ENTRYPOINT, so the pod gives a command.
fn artifact_pod(name: &str, image: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  runtimeClassName: wasm
  hostNetwork: true
  restartPolicy: Never
  containers:
    - name: hello
      image: {image}
      imagePullPolicy: Always
      command: [hello.wasm]
      args: [from-the-kubelet]
"#
    )
}

#[test]
fn the_kubelet_pulls_wasm_artifacts_from_a_registry_and_runs_them() {
    let registry = Registry::start(Auth::Open);
    let wasm = wasmlet_fixtures::hello();
    let cncf = push_wasm(&registry, "kubelet/cncf", wasm, Format::CncfArtifact);
    let w2o = push_wasm(&registry, "kubelet/w2o", wasm, Format::WasmToOci);
    let env = cluster();
    let pods = [("artifact-cncf", &cncf), ("artifact-w2o", &w2o)];
    for (name, pushed) in pods {
        let pod = artifact_pod(name, &pushed.reference);
        let out = kubectl(env, &["apply", "-f", "-"], Some(&pod));
        assert!(out.status.success(), "{}", show(&out));
    }
    let expected = ["hello from stdout!", r#"Args are: ["from-the-kubelet"]"#];
    let results: Vec<_> = pods
        .iter()
        .map(|(name, _)| wait_for_log(env, &format!("pod/{name}"), &expected))
        .collect();
    for (name, _) in pods {
        let _ = kubectl(env, &["delete", "pod", name, "--wait=false"], None);
    }
    for result in results {
        assert!(result.is_ok(), "{}", result.unwrap_err());
    }
}

/// Polls `kubectl logs OBJECT` for two minutes until it holds every line of `expected`.
fn wait_for_log(
    env: &HashMap<String, String>,
    object: &str,
    expected: &[&str],
) -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = String::new();
    while Instant::now() < deadline {
        let out = kubectl(env, &["logs", object], None);
        let logs = String::from_utf8_lossy(&out.stdout).into_owned();
        if expected.iter().all(|line| logs.contains(line)) {
            return Ok(logs);
        }
        last = show(&out);
        std::thread::sleep(Duration::from_secs(1));
    }
    let pods = kubectl(env, &["get", "pods", "-o", "wide"], None);
    let events = kubectl(env, &["get", "events"], None);
    Err(format!(
        "no {expected:?} in the log of {object}: {last}\n{}\n{}",
        show(&pods),
        show(&events)
    ))
}

/// A pod of a wasi:http container and a native busybox sidecar (RuntimeClass `wasm`, host
/// network on loopback: the pod-network case runs in the multi-node cluster test).
fn mixed_pod(port: u16) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: mixed}}
spec:
  runtimeClassName: wasm
  hostNetwork: true
  restartPolicy: Never
  containers:
    - name: web
      image: localhost/wasmlet-test/http:v1
      imagePullPolicy: IfNotPresent
      env: [{{name: WASMTIME_HTTP_PROXY_SOCKET_ADDR, value: "127.0.0.1:{port}"}}]
    - name: sidecar
      image: localhost/wasmlet-test/busybox-sidecar:v1
      imagePullPolicy: IfNotPresent
      command: [/bin/busybox, sh, -c]
      args:
        - >-
          echo sidecar up;
          for i in $(seq 30); do
          (printf 'GET / HTTP/1.0\r\nHost: localhost\r\n\r\n'; sleep 1) | busybox nc 127.0.0.1 {port} && exit 0;
          sleep 1; done; exit 1
"#
    )
}

#[test]
fn a_wasm_container_and_a_native_sidecar_run_in_one_pod_of_the_kubelet() {
    import_wasm("k8s.io", "http", wasmlet_fixtures::http_hello()).unwrap();
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static (tests/setup)");
    let dir = tempfile::tempdir().unwrap();
    let image = "localhost/wasmlet-test/busybox-sidecar:v1";
    let files = [File("/bin/busybox", &busybox, 0o755)];
    let tar = image_tar(dir.path(), image, &files, &["/bin/busybox"], &[]).unwrap();
    import("k8s.io", &tar).unwrap();
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let env = cluster();
    let out = kubectl(env, &["apply", "-f", "-"], Some(&mixed_pod(port)));
    assert!(out.status.success(), "{}", show(&out));
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut logs = kubectl(env, &["logs", "pod/mixed", "-c", "sidecar"], None);
    while !String::from_utf8_lossy(&logs.stdout).contains("hello from wasi:http!")
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_secs(1));
        logs = kubectl(env, &["logs", "pod/mixed", "-c", "sidecar"], None);
    }
    let web = kubectl(env, &["logs", "pod/mixed", "-c", "web"], None);
    let pods = kubectl(env, &["get", "pod", "mixed", "-o", "wide"], None);
    let _ = kubectl(env, &["delete", "pod", "mixed", "--wait=false"], None);
    assert!(
        web.status.success(),
        "the wasm container's log: {}",
        show(&web)
    );
    let text = String::from_utf8_lossy(&logs.stdout);
    assert!(
        text.contains("sidecar up"),
        "{}\n{}",
        show(&logs),
        show(&pods)
    );
    assert!(
        text.contains("hello from wasi:http!"),
        "the sidecar reached the wasm container on localhost: {}\n{}",
        show(&logs),
        show(&pods)
    );
}
