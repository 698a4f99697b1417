//! Guests built by real language toolchains, run by the real binary: a Go command
//! (`GOOS=wasip1`), a Python command and a Python wasi:http component (componentize-py), and a
//! JavaScript wasi:http component (jco componentize). `tests/guests/build`, run by
//! `bash tests/setup`, builds them into `$WASMLET_CACHE/guests`; a missing guest fails its test.
//!
//! The Python components are 18 MiB of wasm, which a debug build of wasmtime compiles for
//! minutes on 2 cores. The guests therefore share one compile cache that outlives the run,
//! `$WASMLET_CACHE/guests/compile` (keyed by the wasm's digest and the engine, emptied by
//! `tests/guests/build` when it rebuilds a guest): only the first run after a change compiles.

#[path = "../../node/tests/cluster/mod.rs"]
mod cluster;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cluster::{Cluster, eventually};
use wasmlet_testkit::{Auth, Registry};

/// How long a guest may take to start (a server to give its first answer). Cold compiles here
/// (2 cores, another build running): the Python wasi:http component 158 s alone, 255 s beside
/// the other guests' compiles; the JavaScript one 190 s alone, 337 s beside the others.
const FIRST_RESPONSE: Duration = Duration::from_secs(600);

fn cache() -> PathBuf {
    std::env::var_os("WASMLET_CACHE").map_or_else(|| "/var/cache/wasmlet".into(), PathBuf::from)
}

/// The built guest `name`; panics naming the fix when it is missing.
fn guest(name: &str) -> PathBuf {
    let path = cache().join("guests").join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "the guest {} is missing: run `bash tests/setup`, which builds the guests from \
         tests/guests with their pinned toolchains (tests/guests/build)",
        path.display()
    );
    path
}

/// The compile cache the guests share across runs.
fn compile_cache() -> PathBuf {
    cache().join("guests/compile")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `wasmlet run ARGS`, with the guests' compile cache, killed after `FIRST_RESPONSE`.
fn wasmlet_run(args: &[&str]) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_wasmlet"))
        .arg("run")
        .args(args)
        .env("WASMLET_CACHE_DIR", compile_cache())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let (done, output) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(child.wait_with_output()));
    match output.recv_timeout(FIRST_RESPONSE) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            panic!("wasmlet run {args:?} still running after {FIRST_RESPONSE:?}");
        }
    }
}

fn lines(out: &Output) -> Vec<String> {
    text(&out.stdout).lines().map(str::to_owned).collect()
}

#[test]
fn go_command_sees_its_args_env_and_preopened_files_and_exits_with_its_code() {
    go_command(&[]);
}

#[test]
fn go_command_runs_the_same_on_wasmer() {
    go_command(&["--engine", "wasmer"]);
}

/// The Go command's behaviour under `wasmlet run ENGINE...`.
fn go_command(engine: &[&str]) {
    let go = guest("go-cli");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.txt"), "from the host\n").unwrap();
    let data = format!("{}:/data", dir.path().display());
    let run = |args: &[&str]| wasmlet_run(&[engine, args].concat());
    let out = run(&[
        "--env",
        "GREETING=hi there",
        "--dir",
        &data,
        go.to_str().unwrap(),
        "--",
        "one",
        "cat",
        "/data/in.txt",
        "write",
        "/data/out.txt",
        "from go",
        "exit",
        "3",
    ]);
    assert_eq!(
        lines(&out),
        [
            r#"args: ["one" "cat" "/data/in.txt" "write" "/data/out.txt" "from go" "exit" "3"]"#,
            "env: GREETING=hi there",
            "cat /data/in.txt: from the host",
            "wrote /data/out.txt",
        ],
        "{}",
        text(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let written = std::fs::read_to_string(dir.path().join("out.txt")).unwrap();
    assert_eq!(written, "from go\n");

    // Read-only, and nothing outside the preopened directory.
    let data_ro = format!("{}:/data:ro", dir.path().display());
    let go = go.to_str().unwrap();
    for (args, refused) in [
        (vec!["write", "/data/new.txt", "x"], "/data/new.txt"),
        (vec!["cat", "/etc/hostname"], "/etc/hostname"),
        (
            vec!["cat", "/data/../../etc/hostname"],
            "/data/../../etc/hostname",
        ),
    ] {
        let out = run(&[&["--dir", &data_ro, go, "--"][..], &args].concat());
        assert_eq!(
            out.status.code(),
            Some(1),
            "{args:?}: {}",
            text(&out.stdout)
        );
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(&format!("go-cli: open {refused}")),
            "{args:?}: {stderr}"
        );
    }
    assert!(!dir.path().join("new.txt").exists());

    // No `exit`: 0.
    let out = run(&[go, "--", "plain"]);
    assert_eq!(lines(&out), [r#"args: ["plain"]"#]);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn python_command_prints_its_args_and_env_and_exits_with_its_code() {
    let py = guest("py-cli");
    let py = py.to_str().unwrap();
    let out = wasmlet_run(&[
        "--env",
        "GREETING=hi",
        "--env",
        "EMPTY=",
        py,
        "--",
        "a",
        "b c",
        "exit",
        "5",
    ]);
    let got = lines(&out);
    assert_eq!(got.len(), 4, "{got:?} {}", text(&out.stderr));
    assert_eq!(
        got[..3],
        [
            "args: ['a', 'b c', 'exit', '5']",
            "env: EMPTY=",
            "env: GREETING=hi",
        ],
        "{}",
        text(&out.stderr)
    );
    assert!(got[3].starts_with("python 3."), "{got:?}");
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));

    let out = wasmlet_run(&[py]);
    assert_eq!(lines(&out)[0], "args: []", "{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn python_http_component_answers_and_echoes() {
    serves_and_echoes("py-http", "hello from python\n");
}

#[test]
fn javascript_http_component_answers_and_echoes() {
    serves_and_echoes("js-http", "hello from javascript\n");
}

/// A `wasmlet run --listen` server; killed if the test fails before it is stopped.
struct Server(Option<Child>);

impl Server {
    fn start(wasm: &Path, listen: &str) -> Server {
        let child = Command::new(env!("CARGO_BIN_EXE_wasmlet"))
            .args(["run", "--listen", listen])
            .arg(wasm)
            .env("WASMLET_CACHE_DIR", compile_cache())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Server(Some(child))
    }

    /// SIGTERM, then the exit status and stderr.
    fn stop(mut self) -> (Option<i32>, String) {
        let child = self.0.take().unwrap();
        let kill = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        let out = child.wait_with_output().unwrap();
        (out.status.code(), text(&out.stderr))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `GET /` answers `greeting`, `POST /echo` a body of many write-sized chunks, another path 404.
fn serves_and_echoes(name: &str, greeting: &str) {
    let wasm = guest(name);
    let listen = format!("127.0.0.1:{}", wasmlet_testkit::free_port());
    let url = format!("http://{listen}");
    let server = Server::start(&wasm, &listen);
    let started = Instant::now();
    let (status, body) = first_response(&format!("{url}/"), FIRST_RESPONSE);
    eprintln!("{name}: first response after {:.1?}", started.elapsed());
    assert_eq!((status, body.as_str()), (200, greeting));

    let sent: String = (0..2000).map(|i| format!("line {i}\n")).collect();
    let (status, echoed) =
        curl(&format!("{url}/echo"), Some(&sent), Duration::from_secs(60)).expect("POST /echo");
    assert_eq!(status, 200);
    assert!(
        echoed == sent,
        "{name} echoed {} bytes of {}",
        echoed.len(),
        sent.len()
    );
    let (status, body) =
        curl(&format!("{url}/nowhere"), None, Duration::from_secs(60)).expect("GET /nowhere");
    assert_eq!((status, body.as_str()), (404, "not found\n"));

    let (code, stderr) = server.stop();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!("serving wasi:http on {url}/")),
        "{stderr}"
    );
}

/// The first answer of `url`, retried while nothing listens, within `limit`.
fn first_response(url: &str, limit: Duration) -> (u16, String) {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match curl(url, None, left.max(Duration::from_secs(1))) {
            Ok(answer) => return answer,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => panic!("no answer from {url} within {limit:?}: {e}"),
        }
    }
}

/// curl `url` (a POST of `body` when given): the status and the body.
fn curl(url: &str, body: Option<&str>, limit: Duration) -> Result<(u16, String)> {
    let mut command = Command::new("curl");
    command
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "--max-time"])
        .arg(limit.as_secs().max(1).to_string())
        .arg(url);
    if body.is_some() {
        command.args(["-H", "content-type: text/plain", "--data-binary", "@-"]);
    }
    let mut child = command
        .stdin(if body.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running curl")?;
    if let Some(body) = body {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(body.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("curl {url}: {}", text(&out.stderr));
    }
    let all = text(&out.stdout);
    let (body, status) = all.rsplit_once('\n').context("no status from curl")?;
    Ok((status.parse()?, body.to_owned()))
}

/// `wasmlet node` on loopback networking; killed when dropped.
struct Node(Child);

impl Node {
    fn start(cluster: &Cluster, name: &str, data: &Path) -> Result<Node> {
        let log = std::fs::File::create(data.with_extension("log"))?;
        let child = Command::new(env!("CARGO_BIN_EXE_wasmlet"))
            .args(["node", "--node-name", name, "--node-ip", "127.0.0.1"])
            .args(["--network", "loopback", "--port"])
            .arg(wasmlet_testkit::free_port().to_string())
            .arg("--data-dir")
            .arg(data)
            .arg("--kubeconfig")
            .arg(cluster.var("WASMLET_NODE_KUBECONFIG"))
            .args(["--eviction-hard", "nodefs.available<1%"])
            .env("WASMLET_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting wasmlet node")?;
        Ok(Node(child))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `wasmlet push` of `wasm` to `registry` as `path`; the image reference.
fn push(registry: &str, store: &Path, wasm: &Path, path: &str) -> Result<String> {
    let image = format!("{registry}/{path}");
    let out = Command::new(env!("CARGO_BIN_EXE_wasmlet"))
        .args(["push", "--quiet"])
        .arg(wasm)
        .arg(&image)
        .env("WASMLET_STORE", store)
        .output()?;
    if !out.status.success() {
        bail!("wasmlet push {image}: {}", text(&out.stderr));
    }
    Ok(image)
}

/// The node's compile cache starts as a copy of the guests' (same engine, same keys), so the
/// pods do not compile the Python component a second time.
fn seed_compile_cache(data: &Path) -> Result<()> {
    let to = data.join("cache");
    std::fs::create_dir_all(&to)?;
    for entry in std::fs::read_dir(compile_cache()).into_iter().flatten() {
        let entry = entry?;
        if entry.file_name().to_string_lossy().ends_with(".cwasm") {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

fn go_pod(image: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: go-input, namespace: default}}\n\
         data: {{in.txt: \"from a ConfigMap\\n\"}}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {{name: go-cli, namespace: default}}\nspec:\n  \
         restartPolicy: Never\n  tolerations: [{{operator: Exists}}]\n  containers:\n  \
         - name: main\n    image: '{image}'\n    \
         args: [cat, /config/in.txt, write, /scratch/out.txt, from go, cat, /scratch/out.txt, exit, '3']\n    \
         env: [{{name: GREETING, value: hi}}]\n    \
         volumeMounts: [{{name: config, mountPath: /config}}, {{name: scratch, mountPath: /scratch}}]\n  \
         volumes: [{{name: config, configMap: {{name: go-input}}}}, {{name: scratch, emptyDir: {{}}}}]\n"
    )
}

fn http_pod(name: &str, image: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  \
         tolerations: [{{operator: Exists}}]\n  terminationGracePeriodSeconds: 2\n  containers:\n  \
         - name: web\n    image: '{image}'\n    ports: [{{containerPort: 8080}}]\n    \
         readinessProbe: {{httpGet: {{path: /, port: 8080}}, periodSeconds: 1}}\n"
    )
}

fn apply(cluster: &Cluster, dir: &Path, manifest: &str) -> Result<()> {
    let path = dir.join("manifest.yaml");
    std::fs::write(&path, manifest)?;
    cluster.kubectl(&["apply", "-f", path.to_str().context("path")?])?;
    Ok(())
}

fn pod(cluster: &Cluster, name: &str) -> Option<serde_json::Value> {
    cluster.kubectl_json(&["get", "pod", name]).ok()
}

/// `error` with the log of the agent whose data directory is `data`.
fn with_agent_log(error: anyhow::Error, data: &Path) -> anyhow::Error {
    let log = std::fs::read_to_string(data.with_extension("log")).unwrap_or_default();
    error.context(format!("agent log:\n{log}"))
}

fn is_ready(pod: &serde_json::Value) -> bool {
    let conditions = pod["status"]["conditions"].as_array();
    conditions.is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_and_python_guests_run_as_pods_on_wasmlet_node() -> Result<()> {
    const NODE: &str = "wasm-guests";
    let (go, py) = (guest("go-cli"), guest("py-http"));
    let cluster = Cluster::start(NODE)?;
    let registry = Registry::start(Auth::Open);
    let dir = tempfile::tempdir()?;
    let store = dir.path().join("store");
    let go_image = push(&registry.host(), &store, &go, "guests/go-cli:v1")?;
    let py_image = push(&registry.host(), &store, &py, "guests/py-http:v1")?;
    let data = dir.path().join("node");
    seed_compile_cache(&data)?;
    let _node = Node::start(&cluster, NODE, &data)?;
    let csr = eventually(Duration::from_secs(60), "the serving CSR", || {
        cluster::serving_csr(&cluster, NODE)
    })
    .await?;
    cluster.kubectl(&["certificate", "approve", &csr])?;

    apply(&cluster, dir.path(), &go_pod(&go_image))?;
    apply(&cluster, dir.path(), &http_pod("py-http", &py_image))?;
    // FIRST_RESPONSE: on a cold cache the node compiles the Go guest beside the Python one.
    let done = eventually(FIRST_RESPONSE, "go-cli Failed", || {
        pod(&cluster, "go-cli").filter(|p| p["status"]["phase"] == "Failed")
    })
    .await
    .map_err(|e| with_agent_log(e, &data))?;
    let state = &done["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(state["exitCode"], 3, "{done:#}");
    let logs = cluster.kubectl(&["logs", "go-cli"])?;
    for line in [
        "env: GREETING=hi",
        "cat /config/in.txt: from a ConfigMap",
        "wrote /scratch/out.txt",
        "cat /scratch/out.txt: from go",
    ] {
        assert!(
            logs.lines().any(|l| l == line),
            "{line:?} missing from:\n{logs}"
        );
    }

    let started = Instant::now();
    let web = eventually(FIRST_RESPONSE, "py-http Ready", || {
        pod(&cluster, "py-http").filter(is_ready)
    })
    .await
    .map_err(|e| with_agent_log(e, &data))?;
    eprintln!("py-http pod Ready after {:.1?}", started.elapsed());
    let ip = web["status"]["podIP"].as_str().context("no pod IP")?;
    let url = format!("http://{ip}:8080");
    let limit = Duration::from_secs(60);
    assert_eq!(
        curl(&format!("{url}/"), None, limit)?,
        (200, "hello from python\n".into())
    );
    let echoed = curl(&format!("{url}/echo"), Some("through the pod IP"), limit)?;
    assert_eq!(echoed, (200, "through the pod IP".into()));
    Ok(())
}
