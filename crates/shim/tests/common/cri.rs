//! CRI through `crictl` against the test containerd: the sandbox (pause) image, pod and
//! container configs, and the moves of a pod.

use std::path::Path;
use std::sync::OnceLock;

use serde_json::{Value, json};

use super::*;

/// containerd's CRI namespace.
pub const K8S: &str = "k8s.io";

/// Runs `crictl --timeout 30s ARGS...` against the test containerd.
pub fn crictl(args: &[&str]) -> std::process::Output {
    command("crictl")
        .args(["--timeout", "30s"])
        .args(args)
        .output()
        .expect("cannot run crictl")
}

/// Runs crictl and fails the test unless it succeeds; returns stdout, trimmed.
pub fn crictl_ok(args: &[&str]) -> String {
    let out = crictl(args);
    assert!(
        out.status.success(),
        "crictl {args:?} failed: {}",
        show(&out)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Imports the sandbox (pause) image CRI is configured with, once. It holds busybox so the
/// runc handler can run it too; the wasmlet shim runs no code for a sandbox.
pub fn pause_image() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let busybox = std::fs::read("/bin/busybox").expect("busybox-static (tests/setup)");
        let dir = tempfile::tempdir().unwrap();
        let name = containerd()["WASMLET_PAUSE_IMAGE"].clone();
        let files = [File("/bin/busybox", &busybox, 0o755)];
        let entry = ["/bin/busybox", "sleep", "2147483647"];
        let tar = image_tar(dir.path(), &name, &files, &entry, &[]).unwrap();
        import(K8S, &tar).unwrap();
    });
}

/// Writes `value` as `dir/name`; returns the path.
pub fn write_json(dir: &Path, name: &str, value: &Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec(value).unwrap()).unwrap();
    path.to_string_lossy().into_owned()
}

/// A host-network pod config.
pub fn pod_config(dir: &Path, name: &str) -> String {
    let pod = json!({
        "metadata": {"name": name, "namespace": "default", "uid": unique(name)},
        "log_directory": dir.join("logs").to_string_lossy(),
        "linux": {"security_context": {"namespace_options": {"network": 2}}}
    });
    write_json(dir, "pod.json", &pod)
}

/// A container config: `image` with `args` (CRI's `args`: the image's CMD is replaced) and a
/// memory limit (0 for none).
pub fn container_config(dir: &Path, name: &str, image: &str, args: &[&str], memory: u64) -> String {
    let ctr = json!({
        "metadata": {"name": name},
        "image": {"image": image},
        "args": args,
        "log_path": format!("{name}.log"),
        "linux": {"resources": {"memory_limit_in_bytes": memory}}
    });
    write_json(dir, &format!("{name}.json"), &ctr)
}

/// Polls `crictl inspect` until the container has exited; returns its status.
pub fn wait_exited(id: &str) -> Value {
    for _ in 0..300 {
        let status: Value = serde_json::from_str(&crictl_ok(&["inspect", id])).unwrap();
        if status["status"]["state"] == "CONTAINER_EXITED" {
            return status["status"].clone();
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("container {id} did not exit");
}

/// A wasm pod with one container: runp, create, start; returns (pod id, container id).
pub fn run_pod(
    dir: &Path,
    name: &str,
    image: &str,
    args: &[&str],
    memory: u64,
) -> (String, String) {
    pause_image();
    let pod = pod_config(dir, name);
    let ctr = container_config(dir, name, image, args, memory);
    let pod_id = crictl_ok(&["runp", "--runtime", "wasm", &pod]);
    let id = crictl_ok(&["create", &pod_id, &ctr, &pod]);
    crictl_ok(&["start", &id]);
    (pod_id, id)
}

/// Removes the container, then stops and removes its pod.
pub fn remove_pod(pod_id: &str, id: &str) {
    crictl_ok(&["rm", id]);
    crictl_ok(&["stopp", pod_id]);
    crictl_ok(&["rmp", pod_id]);
}
