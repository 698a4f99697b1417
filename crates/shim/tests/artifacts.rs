//! Wasm OCI artifacts from a real registry (`docker-registry` on loopback), pushed with
//! `wasmlet-oci`, pulled by the real containerd 2.x (CRI through `crictl pull`, the transfer
//! service through `ctr images pull`, never imported by hand) and run by the shim from
//! containerd's content store: the CNCF artifact, wasm-to-oci, runwasi's component layer, an
//! index with a wasm platform, and malformed artifacts refused naming the image.

mod common;

use std::path::Path;

use common::cri::*;
use common::push::*;
use common::*;
use serde_json::{Value, json};
use wasmlet_fixtures as fixtures;
use wasmlet_oci::Digest;
use wasmlet_oci::format::{Format, media};
use wasmlet_testkit::{Auth, Registry};

/// `ctr -n NS ARGS...` bounded by two minutes.
fn ctr_bounded(args: &[&str]) -> std::process::Output {
    command("timeout")
        .args(["120", "ctr", "-n", NS])
        .args(args)
        .output()
        .expect("cannot run ctr")
}

/// A container config with CRI's `command` and `args` (either may be empty).
fn command_config(dir: &Path, name: &str, image: &str, command: &[&str], args: &[&str]) -> String {
    let config = json!({
        "metadata": {"name": name},
        "image": {"image": image},
        "command": command,
        "args": args,
        "log_path": format!("{name}.log"),
    });
    write_json(dir, &format!("{name}.json"), &config)
}

/// How a CRI container ended, its `crictl logs` and its CRI log file.
struct Ran {
    status: Value,
    logs: String,
    file: String,
}

/// `crictl pull IMAGE`, then a wasm pod running it with `command` and `args`, until it ends.
fn cri_run(name: &str, image: &str, command: &[&str], args: &[&str]) -> Ran {
    crictl_ok(&["pull", image]);
    pause_image();
    let dir = tempfile::tempdir().unwrap();
    let pod = pod_config(dir.path(), name);
    let config = command_config(dir.path(), name, image, command, args);
    let pod_id = crictl_ok(&["runp", "--runtime", "wasm", &pod]);
    let id = crictl_ok(&["create", &pod_id, &config, &pod]);
    crictl_ok(&["start", &id]);
    let status = wait_exited(&id);
    let out = crictl(&["logs", &id]);
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let file =
        std::fs::read_to_string(dir.path().join(format!("logs/{name}.log"))).unwrap_or_default();
    remove_pod(&pod_id, &id);
    crictl_ok(&["rmi", image]);
    Ran { status, logs, file }
}

fn assert_hello(ran: &Ran, args: &str) {
    assert_eq!(ran.status["exitCode"], 0, "{}", ran.status);
    for line in ["hello from stdout!", "hello from stderr!", args] {
        assert!(ran.logs.contains(line), "{line}: {}", ran.logs);
    }
    assert!(
        ran.file.contains(" stdout F hello from stdout!"),
        "{}",
        ran.file
    );
}

#[test]
fn cri_pulls_a_cncf_artifact_and_runs_it_with_the_pods_command() {
    let registry = Registry::start(Auth::Open);
    let pushed = push_wasm(
        &registry,
        "demo/cncf",
        fixtures::hello(),
        Format::CncfArtifact,
    );
    let ran = cri_run("cncf", &pushed.reference, &["hello.wasm"], &["a", "b"]);
    assert_hello(&ran, r#"Args are: ["a", "b"]"#);
}

#[test]
fn cri_pulls_a_wasm_to_oci_image_and_runs_it() {
    let registry = Registry::start(Auth::Open);
    let pushed = push_wasm(&registry, "demo/w2o", fixtures::hello(), Format::WasmToOci);
    let ran = cri_run("w2o", &pushed.reference, &["hello"], &["1"]);
    assert_hello(&ran, r#"Args are: ["1"]"#);
}

#[test]
fn cri_pulls_a_component_layer_image_and_runs_its_entrypoint() {
    let registry = Registry::start(Auth::Open);
    let pushed = push_component_image(&registry, "demo/component");
    // No command: CRI takes the image config's ENTRYPOINT and CMD.
    let ran = cri_run("component", &pushed.reference, &[], &[]);
    assert_hello(&ran, r#"Args are: ["x"]"#);
}

#[test]
fn an_index_with_a_wasip1_platform_is_pulled_by_ctr_and_its_manifest_by_cri() {
    let registry = Registry::start(Auth::Open);
    let pushed = push_wasm(
        &registry,
        "demo/indexed",
        fixtures::hello(),
        Format::CncfArtifact,
    );
    let index = push_index(&registry, "demo/indexed", &pushed, "wasip1");
    // The transfer service unpacks for wasip1/wasm only with it in unpack_config.
    let out = ctr_bounded(&[
        "images",
        "pull",
        "--plain-http",
        "--platform",
        "wasip1/wasm",
        &index,
    ]);
    assert!(out.status.success(), "{}", show(&out));
    let listed = ctr_ok(&["images", "ls", &format!("name=={index}")]);
    assert!(listed.contains("wasip1/wasm"), "{listed}");
    ctr_ok(&["images", "rm", &index]);
    // containerd 2.4's CRI resolves every image for the host's platform alone.
    let out = crictl(&["pull", &index]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no match for platform in manifest"),
        "CRI pulled a wasm-only index; update the README: {}",
        show(&out)
    );
    // The wasm manifest named by digest is what a pod's image can say instead.
    let ran = cri_run("indexed", &pushed.by_digest(), &["hello.wasm"], &[]);
    assert_hello(&ran, "Args are: []");
}

#[test]
fn ctr_runs_a_component_behind_a_wasip2_index() {
    let registry = Registry::start(Auth::Open);
    let pushed = push_component_image(&registry, "demo/component-index");
    let index = push_index(&registry, "demo/component-index", &pushed, "wasip2");
    let platform = ["--platform", "wasip2/wasm"];
    let pull = [
        &["images", "pull", "--plain-http"][..],
        &platform,
        &[&index],
    ]
    .concat();
    let out = ctr_bounded(&pull);
    assert!(out.status.success(), "{}", show(&out));
    let id = unique("component-index");
    let run = [
        &["run", "--rm", "--runtime", RUNTIME][..],
        &platform,
        &[&index, &id],
    ]
    .concat();
    let out = ctr_bounded(&run);
    assert!(out.status.success(), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("hello from stdout!"), "{}", show(&out));
    assert!(stdout.contains(r#"Args are: ["x"]"#), "{}", show(&out));
    ctr_ok(&["images", "rm", &index]);
}

/// `wasm` with a custom section of `size` bytes appended (still a valid module).
fn with_custom_section(wasm: &[u8], size: usize) -> Vec<u8> {
    fn leb128(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            out.push(if n == 0 { byte } else { byte | 0x80 });
            if n == 0 {
                break;
            }
        }
    }
    let mut payload = vec![1, b'x'];
    payload.resize(size, 0xab);
    let mut out = wasm.to_vec();
    out.push(0);
    leb128(payload.len(), &mut out);
    out.extend_from_slice(&payload);
    out
}

#[test]
fn a_module_larger_than_a_grpc_message_is_read_whole() {
    let registry = Registry::start(Auth::Open);
    // 6 MiB: containerd streams the blob in 1 MiB messages, tonic takes at most 4 MiB at once.
    let wasm = with_custom_section(fixtures::hello(), 6 << 20);
    let pushed = push_wasm(&registry, "demo/large", &wasm, Format::CncfArtifact);
    let ran = cri_run("large", &pushed.reference, &["large.wasm"], &[]);
    assert_hello(&ran, "Args are: []");
}

/// Starts (which creates the task) a CRI container of `image`; returns the error.
fn cri_start_error(name: &str, image: &str) -> String {
    crictl_ok(&["pull", image]);
    pause_image();
    let dir = tempfile::tempdir().unwrap();
    let pod = pod_config(dir.path(), name);
    let config = command_config(dir.path(), name, image, &["hello.wasm"], &[]);
    let pod_id = crictl_ok(&["runp", "--runtime", "wasm", &pod]);
    let id = crictl_ok(&["create", &pod_id, &config, &pod]);
    let out = crictl(&["start", &id]);
    assert!(!out.status.success(), "{}", show(&out));
    crictl_ok(&["rm", &id]);
    crictl_ok(&["stopp", &pod_id]);
    crictl_ok(&["rmp", &pod_id]);
    crictl_ok(&["rmi", image]);
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn malformed_artifacts_fail_at_create_naming_the_image_and_the_fix() {
    let registry = Registry::start(Auth::Open);
    let config = || {
        let c = json!({"architecture": "wasm", "os": "wasip1"});
        (media::WASM_CONFIG_V0, c)
    };
    let text = b"hello, I am not WebAssembly";
    let not_wasm = push_image(
        &registry,
        "bad/not-wasm",
        config(),
        (media::WASM_LAYER, text),
    );
    let err = cri_start_error("not-wasm", &not_wasm.reference);
    let expected = format!(
        "image {}: the wasm layer {} (application/wasm) is not WebAssembly",
        not_wasm.reference,
        Digest::of(text)
    );
    assert!(err.contains(&expected), "{err}");
    assert!(err.contains("`wasmlet push FILE.wasm REF`"), "{err}");
    let no_wasm = push_image(&registry, "bad/no-wasm", config(), ("text/plain", text));
    let err = cri_start_error("no-wasm", &no_wasm.reference);
    let expected = format!("image {}: image holds no WebAssembly", no_wasm.reference);
    assert!(err.contains(&expected), "{err}");
    assert!(err.contains("push a .wasm with `wasmlet push`"), "{err}");
}

#[test]
fn an_ordinary_image_without_its_module_keeps_the_rootfs_error() {
    let image = import_wasm(NS, "rootfs-only", fixtures::hello()).unwrap();
    let id = unique("rootfs-only");
    let out = ctr(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        &image,
        &id,
        "/nope.wasm",
    ]);
    assert!(!out.status.success(), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the entrypoint /nope.wasm is not a file in the container's rootfs"),
        "{err}"
    );
    let _ = ctr(&["containers", "rm", &id]);
}
