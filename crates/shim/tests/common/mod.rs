//! Helpers of the shim's integration tests: the real containerd (started by
//! `tests/containerd/up`, never faked), `ctr`/`crictl`, and FROM-scratch style OCI images
//! written by the tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};
pub use wasmlet_testkit::image::{File, image_tar};

pub mod cri;
pub mod measure;
pub mod push;

/// The containerd namespace the `ctr` tests use.
pub const NS: &str = "wasmlet-test";
/// The runtime type of the shim.
pub const RUNTIME: &str = "io.containerd.wasmlet.v1";

/// The repository root.
pub fn root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// The environment of the running test containerd (started on first use). A test that
/// needs containerd and cannot start it fails here.
pub fn containerd() -> &'static HashMap<String, String> {
    static ENV: OnceLock<HashMap<String, String>> = OnceLock::new();
    ENV.get_or_init(|| start_containerd().expect("cannot start the test containerd"))
}

fn start_containerd() -> Result<HashMap<String, String>> {
    let shim = Path::new(env!("CARGO_BIN_EXE_containerd-shim-wasmlet-v1"));
    let out = Command::new("bash")
        .arg(root().join("tests/containerd/up"))
        .arg(state_dir())
        .env("WASMLET_SHIM_DIR", shim.parent().context("shim path")?)
        .output()
        .context("running tests/containerd/up")?;
    if !out.status.success() {
        bail!(
            "tests/containerd/up failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let env_file = String::from_utf8(out.stdout)?.trim().to_owned();
    parse_env(&std::fs::read_to_string(&env_file)?)
}

/// The test containerd's state folder: one for debug-built tests, one for release-built ones
/// (the benchmark), each with the shim of its own profile on its PATH.
pub fn state_dir() -> PathBuf {
    let name = if cfg!(debug_assertions) {
        "containerd"
    } else {
        "containerd-release"
    };
    root().join(".state").join(name)
}

fn parse_env(text: &str) -> Result<HashMap<String, String>> {
    let mut vars = HashMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("export ") else {
            continue;
        };
        let (k, v) = rest.split_once('=').context("env line")?;
        let v = v
            .trim_matches('"')
            .replace("$PATH", &std::env::var("PATH")?);
        vars.insert(k.to_owned(), v);
    }
    Ok(vars)
}

/// A command with the test containerd's environment.
pub fn command(program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.envs(containerd());
    cmd
}

/// Runs `ctr -n NS ARGS...`.
pub fn ctr(args: &[&str]) -> Output {
    command("ctr")
        .arg("-n")
        .arg(NS)
        .args(args)
        .output()
        .expect("cannot run ctr")
}

/// Runs `ctr -n NS ARGS...` and fails the test unless it succeeds; returns stdout.
pub fn ctr_ok(args: &[&str]) -> String {
    let out = ctr(args);
    assert!(out.status.success(), "ctr {args:?} failed: {}", show(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An output for assertion messages.
pub fn show(out: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A unique id for a test's container.
pub fn unique(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

/// Imports a wasm image `name` whose rootfs holds `/NAME.wasm` (CMD `["/NAME.wasm"]`) into
/// `namespace`; returns the image name.
pub fn import_wasm(namespace: &str, name: &str, wasm: &[u8]) -> Result<String> {
    let image = format!("localhost/wasmlet-test/{name}:v1");
    let module = format!("/{name}.wasm");
    let dir = tempfile::tempdir()?;
    let tar = image_tar(
        dir.path(),
        &image,
        &[File(&module, wasm, 0o755)],
        &[],
        &[&module],
    )?;
    import(namespace, &tar)?;
    Ok(image)
}

/// `ctr -n NAMESPACE images import TAR`.
pub fn import(namespace: &str, tar: &Path) -> Result<()> {
    let out = command("ctr")
        .args([
            "-n",
            namespace,
            "images",
            "import",
            "--platform",
            "linux/amd64",
        ])
        .arg(tar)
        .output()?;
    if !out.status.success() {
        bail!("ctr images import failed: {}", show(&out));
    }
    Ok(())
}
