//! Guests built by real language toolchains, through the shim as `ctr run` starts them on the
//! real containerd: the Go command (`GOOS=wasip1`: args, env, a file of its image, its exit
//! code; on the wasmtime shim and on the wasmer shim), the Python command (a componentize-py `wasi:cli` component) and the Python and
//! JavaScript `wasi:http` components, served on port 8080 of the pod's network namespace and
//! reached on the pod IP from another namespace.
//!
//! The guests come from `tests/guests/build` (run by `bash tests/setup`) in
//! `$WASMLET_CACHE/guests`; a missing guest fails its test. The shim's compile cache starts
//! with the guests' compiled code (entries are named by the wasm's digest and the engine's
//! configuration, so only a matching entry is ever used): the 18 MiB Python components are not
//! compiled again by a debug build.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::measure::PodNet;
use common::*;

fn cache() -> PathBuf {
    std::env::var_os("WASMLET_CACHE").map_or_else(|| "/var/cache/wasmlet".into(), PathBuf::from)
}

/// The built guest `name`'s bytes; panics naming the fix when it is missing.
fn guest(name: &str) -> Vec<u8> {
    let path = cache().join("guests").join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "the guest {} is missing ({e}): run `bash tests/setup`, which builds the guests \
             from tests/guests with their pinned toolchains",
            path.display()
        )
    })
}

/// Copies the guests' compiled code into the shim's compile cache (entries it lacks).
fn seed_compile_cache() {
    let to = PathBuf::from("/var/cache/wasmlet/compile");
    std::fs::create_dir_all(&to).unwrap();
    let from = cache().join("guests/compile");
    for entry in std::fs::read_dir(from).into_iter().flatten().flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().ends_with(".cwasm") && !to.join(&name).exists() {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

/// Imports an image holding `/NAME.wasm` and `extra` files.
fn import_guest(name: &str, extra: &[File]) -> String {
    seed_compile_cache();
    let wasm = guest(name);
    let image = format!("localhost/wasmlet-test/guest-{name}:v1");
    let module = format!("/{name}.wasm");
    let dir = tempfile::tempdir().unwrap();
    let mut files = vec![File(&module, &wasm, 0o755)];
    files.extend(extra.iter().map(|f| File(f.0, f.1, f.2)));
    let tar = image_tar(dir.path(), &image, &files, &[], &[&module]).unwrap();
    import(NS, &tar).unwrap();
    image
}

fn lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn go_command_sees_its_args_env_and_image_files_and_exits_with_its_code() {
    go_command(RUNTIME);
}

#[test]
fn go_command_runs_the_same_on_the_wasmer_shim() {
    go_command("io.containerd.wasmlet-wasmer.v1");
}

fn go_command(runtime: &str) {
    let image = import_guest(
        "go-cli",
        &[File("/data/in.txt", b"from the image\n", 0o644)],
    );
    let id = unique(&format!("guest-go-{}", runtime.len()));
    let out = ctr(&[
        "run",
        "--rm",
        "--runtime",
        runtime,
        "--env",
        "GREETING=hi there",
        &image,
        &id,
        "/go-cli.wasm",
        "one",
        "cat",
        "/data/in.txt",
        "exit",
        "3",
    ]);
    // The environment `ctr` gives every container (`PATH`) besides ours.
    let mut got = lines(&out.stdout);
    got.retain(|l| !l.starts_with("env: PATH="));
    assert_eq!(
        got,
        [
            r#"args: ["one" "cat" "/data/in.txt" "exit" "3"]"#,
            "env: GREETING=hi there",
            "cat /data/in.txt: from the image",
        ],
        "{}",
        show(&out)
    );
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
}

#[test]
fn python_command_prints_its_args_and_env_and_exits_with_its_code() {
    let image = import_guest("py-cli", &[]);
    let id = unique("guest-py");
    let out = ctr(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        "--env",
        "GREETING=hi",
        &image,
        &id,
        "/py-cli.wasm",
        "a",
        "b c",
        "exit",
        "5",
    ]);
    let got = lines(&out.stdout);
    assert_eq!(
        got.first().map(String::as_str),
        Some("args: ['a', 'b c', 'exit', '5']"),
        "{}",
        show(&out)
    );
    assert!(
        got.contains(&"env: GREETING=hi".to_owned()),
        "{}",
        show(&out)
    );
    assert!(
        got.last().is_some_and(|l| l.starts_with("python 3.")),
        "{}",
        show(&out)
    );
    assert_eq!(out.status.code(), Some(5), "{}", show(&out));
}

#[test]
fn python_http_component_answers_and_echoes_on_the_pod_ip() {
    serves_and_echoes("py-http", 1, "hello from python\n");
}

#[test]
fn javascript_http_component_answers_and_echoes_on_the_pod_ip() {
    serves_and_echoes("js-http", 2, "hello from javascript\n");
}

/// `curl` from the client namespace of `net`: status and body.
fn curl(net: &PodNet, path: &str, body: Option<&str>) -> (u16, String) {
    let url = format!("http://{}:8080{path}", net.pod_ip);
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        &net.client,
        "curl",
        "-s",
        "--max-time",
        "60",
    ]);
    cmd.args(["-w", "\n%{http_code}"]);
    if let Some(body) = body {
        cmd.args(["--data-binary", body]);
    }
    let out = cmd.arg(&url).output().expect("cannot run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// Serves guest `name` in pod network `n`: `GET /` answers `greeting`, `POST /echo` echoes a
/// body of many write-sized chunks, another path is 404; then the task is killed.
fn serves_and_echoes(name: &str, n: u8, greeting: &str) {
    let image = import_guest(name, &[]);
    let net = PodNet::new(200 + n);
    let id = unique(&format!("guest-{name}"));
    let with_ns = format!("network:{}", net.path());
    let module = format!("/{name}.wasm");
    let args = [
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        "--with-ns",
        &with_ns,
        &image,
        &id,
        &module,
    ];
    ctr_ok(&args);
    let served = net.wait_http(8080, Duration::from_secs(600));
    let answer = served.then(|| curl(&net, "/", None));
    let sent: String = (0..2000).map(|i| format!("line {i}\n")).collect();
    let echoed = served.then(|| curl(&net, "/echo", Some(&sent)));
    let missing = served.then(|| curl(&net, "/nowhere", None));
    let _ = ctr(&["task", "kill", "-s", "SIGKILL", &id]);
    for _ in 0..100 {
        if ctr(&["task", "delete", &id]).status.success() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = ctr(&["container", "delete", &id]);
    assert!(served, "{name} never answered on {}:8080", net.pod_ip);
    assert_eq!(answer, Some((200, greeting.to_owned())));
    let (status, echoed) = echoed.unwrap();
    assert_eq!(status, 200);
    assert!(
        echoed == sent,
        "{name} echoed {} bytes of {}",
        echoed.len(),
        sent.len()
    );
    assert_eq!(missing, Some((404, "not found\n".to_owned())));
}
