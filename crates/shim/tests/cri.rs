//! Through CRI with `crictl` against the real containerd 2.x: a pod sandbox with runtime
//! handler `wasm` (host network), containers created, started, logged, stopped, removed.

mod common;

use common::cri::*;
use common::*;
use serde_json::{Value, json};
use wasmlet_fixtures as fixtures;

#[test]
fn a_wasm_pod_runs_logs_and_is_removed() {
    let image = import_wasm(K8S, "hello", fixtures::hello()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (pod_id, id) = run_pod(dir.path(), "hello", &image, &[], 0);
    let status = wait_exited(&id);
    assert_eq!(status["exitCode"], 0, "{status}");
    assert_eq!(status["reason"], "Completed", "{status}");
    let logs = crictl(&["logs", &id]);
    let out = String::from_utf8_lossy(&logs.stdout);
    let err = String::from_utf8_lossy(&logs.stderr);
    assert!(out.contains("hello from stdout!"), "{}", show(&logs));
    assert!(out.contains("Args are: []"), "{}", show(&logs));
    assert!(err.contains("hello from stderr!"), "{}", show(&logs));
    let file = std::fs::read_to_string(dir.path().join("logs/hello.log")).unwrap();
    assert!(file.contains(" stdout F hello from stdout!"), "{file}");
    remove_pod(&pod_id, &id);
}

#[test]
fn crictl_stop_ends_a_looping_module_and_stats_answer() {
    let image = import_wasm(K8S, "spin", fixtures::spin()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (pod_id, id) = run_pod(dir.path(), "spin", &image, &[], 0);
    let stats: Value = serde_json::from_str(&crictl_ok(&["stats", "-o", "json", &id])).unwrap();
    let memory = &stats["stats"][0]["memory"]["workingSetBytes"]["value"];
    assert!(
        memory
            .as_str()
            .and_then(|m| m.parse::<u64>().ok())
            .unwrap_or(0)
            > 0,
        "{stats}"
    );
    crictl_ok(&["stop", "--timeout", "5", &id]);
    let status = wait_exited(&id);
    assert_eq!(status["exitCode"], 143, "SIGTERM: {status}");
    remove_pod(&pod_id, &id);
}

#[test]
fn a_memory_bomb_is_oom_killed() {
    let image = import_wasm(K8S, "membomb", fixtures::membomb()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (pod_id, id) = run_pod(dir.path(), "membomb", &image, &[], 32 << 20);
    let status = wait_exited(&id);
    assert_eq!(status["exitCode"], 137, "{status}");
    assert_eq!(status["reason"], "OOMKilled", "{status}");
    remove_pod(&pod_id, &id);
}

#[test]
fn two_containers_of_a_pod_share_one_shim() {
    let image = import_wasm(K8S, "spin", fixtures::spin()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (pod_id, a) = run_pod(dir.path(), "spin-a", &image, &[], 0);
    let ctr = container_config(dir.path(), "spin-b", &image, &[], 0);
    let b = crictl_ok(&[
        "create",
        &pod_id,
        &ctr,
        &dir.path().join("pod.json").to_string_lossy(),
    ]);
    crictl_ok(&["start", &b]);
    let pid = |id: &str| {
        let v: Value = serde_json::from_str(&crictl_ok(&["inspect", id])).unwrap();
        v["info"]["pid"].clone()
    };
    assert_eq!(
        pid(&a),
        pid(&b),
        "both containers' tasks are in one shim process"
    );
    for id in [&a, &b] {
        crictl_ok(&["stop", "--timeout", "0", id]);
        crictl_ok(&["rm", id]);
    }
    crictl_ok(&["stopp", &pod_id]);
    crictl_ok(&["rmp", &pod_id]);
}

/// The memory hierarchy's mount point (v1 `memory`, or the v2 one).
fn memory_hierarchy() -> std::path::PathBuf {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let hierarchies = wasmlet_shim::cgroup::hierarchies(&mountinfo);
    let v1 = hierarchies
        .iter()
        .find(|h| h.mount_point.ends_with("memory"));
    let any = v1
        .or(hierarchies.last())
        .expect("a cgroup hierarchy is mounted");
    any.mount_point.clone()
}

/// A host-network pod sandbox config named `name` whose cgroup parent is `parent`, written
/// under `dir`.
fn pod_in_cgroup(dir: &std::path::Path, name: &str, parent: &str) -> String {
    let pod = json!({
        "metadata": {"name": name, "namespace": "default", "uid": unique(name)},
        "log_directory": dir.join("logs").to_string_lossy(),
        "linux": {
            "cgroup_parent": parent,
            "security_context": {"namespace_options": {"network": 2}}
        }
    });
    write_json(dir, "pod.json", &pod)
}

#[test]
fn the_shim_process_runs_in_the_pods_cgroup_and_leaves_it_with_the_pod() {
    let image = import_wasm(K8S, "busy", fixtures::busy()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    pause_image();
    let parent = format!("/wasmlet-test/pod{}", unique("cg"));
    let pod = pod_in_cgroup(dir.path(), "cg", &parent);
    let ctr = container_config(dir.path(), "busy", &image, &["/busy.wasm", "16"], 0);
    let pod_id = crictl_ok(&["runp", "--runtime", "wasm", &pod]);
    let id = crictl_ok(&["create", &pod_id, &ctr, &pod]);
    crictl_ok(&["start", &id]);
    let info: Value = serde_json::from_str(&crictl_ok(&["inspect", &id])).unwrap();
    let shim_pid = info["info"]["pid"].as_u64().expect("the task's pid");
    let cgroup = memory_hierarchy()
        .join(parent.trim_start_matches('/'))
        .join(&pod_id);
    let procs = std::fs::read_to_string(cgroup.join("cgroup.procs"))
        .unwrap_or_else(|e| panic!("the sandbox's cgroup {}: {e}", cgroup.display()));
    assert!(
        procs.lines().any(|p| p.trim() == shim_pid.to_string()),
        "the shim ({shim_pid}) is in {}: {procs}",
        cgroup.display()
    );
    let usage_file = ["memory.usage_in_bytes", "memory.current"]
        .iter()
        .map(|f| cgroup.join(f))
        .find(|f| f.exists())
        .expect("a memory usage file");
    let usage: u64 = std::fs::read_to_string(&usage_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        usage > 1 << 20,
        "the pod's memory is charged to its cgroup: {usage} bytes"
    );
    crictl_ok(&["stop", "--timeout", "0", &id]);
    remove_pod(&pod_id, &id);
    for _ in 0..100 {
        if !cgroup.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        !cgroup.exists(),
        "{} is removed with the pod",
        cgroup.display()
    );
    let _ = std::fs::remove_dir(cgroup.parent().unwrap());
    let _ = std::fs::remove_dir(memory_hierarchy().join("wasmlet-test"));
}

#[test]
fn a_wasm_container_and_a_native_sidecar_share_the_pods_network() {
    let http = import_wasm(K8S, "http", fixtures::http_hello()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    pause_image();
    let busybox = "localhost/wasmlet-test/busybox-sidecar:v1";
    let binary = std::fs::read("/bin/busybox").expect("busybox-static (tests/setup)");
    let files = [File("/bin/busybox", &binary, 0o755)];
    let tar = image_tar(dir.path(), busybox, &files, &["/bin/busybox"], &[]).unwrap();
    import(K8S, &tar).unwrap();
    // A host-network pod on loopback (the pod network case runs in the multi-node cluster
    // test): the wasm server on a free loopback port, the sidecar dialling it.
    let pod = pod_config(dir.path(), "mixed");
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let web = json!({
        "metadata": {"name": "web"},
        "image": {"image": http},
        "args": ["/http.wasm"],
        "envs": [{"key": "WASMTIME_HTTP_PROXY_SOCKET_ADDR", "value": format!("127.0.0.1:{port}")}],
        "log_path": "web.log",
    });
    let web = write_json(dir.path(), "web.json", &web);
    let request = "printf 'GET / HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n'; sleep 1";
    let script = format!(
        "for i in $(seq 20); do ({request}) | busybox nc 127.0.0.1 {port} && exit 0; sleep 0.5; done; exit 1"
    );
    let sidecar = json!({
        "metadata": {"name": "sidecar"},
        "image": {"image": busybox},
        "args": ["sh", "-c", script],
        "log_path": "sidecar.log",
    });
    let sidecar = write_json(dir.path(), "sidecar.json", &sidecar);
    let pod_id = crictl_ok(&["runp", "--runtime", "wasm", &pod]);
    let web_id = crictl_ok(&["create", &pod_id, &web, &pod]);
    crictl_ok(&["start", &web_id]);
    let side_id = crictl_ok(&["create", &pod_id, &sidecar, &pod]);
    crictl_ok(&["start", &side_id]);
    let exited = (0..900).find_map(|_| {
        let status: Value = serde_json::from_str(&crictl_ok(&["inspect", &side_id])).ok()?;
        let done = status["status"]["state"] == "CONTAINER_EXITED";
        std::thread::sleep(std::time::Duration::from_millis(100));
        done.then(|| status["status"].clone())
    });
    let logs = crictl(&["logs", &side_id]);
    let web_logs = crictl(&["logs", &web_id]);
    let status = exited.unwrap_or_else(|| {
        panic!(
            "the sidecar did not end: {}\nweb: {}",
            show(&logs),
            show(&web_logs)
        )
    });
    assert_eq!(
        status["exitCode"],
        0,
        "{status}\n{}\nweb: {}",
        show(&logs),
        show(&web_logs)
    );
    assert!(
        String::from_utf8_lossy(&logs.stdout).contains("hello from wasi:http!"),
        "the sidecar reached the wasm container on localhost: {}",
        show(&logs)
    );
    let pid = |id: &str| -> u64 {
        let v: Value = serde_json::from_str(&crictl_ok(&["inspect", id])).unwrap();
        v["info"]["pid"].as_u64().unwrap_or(0)
    };
    assert_ne!(pid(&web_id), 0);
    crictl_ok(&["stop", "--timeout", "0", &web_id]);
    crictl_ok(&["rm", &web_id]);
    crictl_ok(&["rm", &side_id]);
    crictl_ok(&["stopp", &pod_id]);
    crictl_ok(&["rmp", &pod_id]);
}

/// The mount point of the hierarchy with the `cpu` controller (v1 `cpu` or `cpu,cpuacct`,
/// else the v2 one) and whether it is v2.
fn cpu_hierarchy() -> (std::path::PathBuf, bool) {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let hierarchies = wasmlet_shim::cgroup::hierarchies(&mountinfo);
    let v1 = hierarchies.iter().find(|h| {
        let name = h
            .mount_point
            .file_name()
            .unwrap_or_default()
            .to_string_lossy();
        name.split(',').any(|c| c == "cpu")
    });
    match v1 {
        Some(h) => (h.mount_point.clone(), false),
        None => (memory_hierarchy(), true),
    }
}

/// Whether containerd's log says the shim of `pod_id` serves with `workers` worker threads.
fn shim_workers_logged(pod_id: &str, workers: usize) -> bool {
    let wanted = format!("shim for {pod_id} serving with {workers} worker threads");
    for _ in 0..50 {
        let log = std::fs::read_to_string(state_dir().join("containerd.log")).unwrap_or_default();
        if log.contains(&wanted) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    false
}

#[test]
fn a_pod_with_a_cpu_limit_gets_as_many_shim_workers_as_the_limit_allows() {
    // The kubelet puts a pod's CPU limit on the pod's cgroup; here the test does, as the
    // parent of the sandbox's cgroup, then asks containerd for the pod.
    let image = import_wasm(K8S, "sleep", fixtures::sleep()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    pause_image();
    let parent = format!("/wasmlet-test/pod{}", unique("cpu"));
    let (root, v2) = cpu_hierarchy();
    let pod_cgroup = root.join(parent.trim_start_matches('/'));
    std::fs::create_dir_all(&pod_cgroup).unwrap();
    if v2 {
        std::fs::write(pod_cgroup.join("cpu.max"), "100000 100000").unwrap();
    } else {
        std::fs::write(pod_cgroup.join("cpu.cfs_period_us"), "100000").unwrap();
        std::fs::write(pod_cgroup.join("cpu.cfs_quota_us"), "100000").unwrap();
    }
    let pod = pod_in_cgroup(dir.path(), "cpu", &parent);
    let ctr = container_config(dir.path(), "sleep", &image, &["/sleep.wasm", "600000"], 0);
    let pod_id = crictl_ok(&["runp", "--runtime", "wasm", &pod]);
    let id = crictl_ok(&["create", &pod_id, &ctr, &pod]);
    crictl_ok(&["start", &id]);
    let logged = shim_workers_logged(&pod_id, 1);
    crictl_ok(&["stop", "--timeout", "0", &id]);
    remove_pod(&pod_id, &id);
    for _ in 0..50 {
        if std::fs::remove_dir(&pod_cgroup).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = std::fs::remove_dir(root.join("wasmlet-test"));
    assert!(
        logged,
        "the shim of a pod limited to 1 CPU serves with 1 worker thread"
    );
}
