//! The node installer script (`deploy/shim/install.sh`) against a fake host root: it copies
//! the shim, registers the runtime handler in containerd's config, restarts containerd only
//! when something changed.

use std::path::Path;
use std::process::Command;

fn install(host: &Path) -> std::process::Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/shim/install.sh");
    Command::new("sh")
        .arg(script)
        .env("HOST_ROOT", host)
        .env("SHIM", env!("CARGO_BIN_EXE_containerd-shim-wasmlet-v1"))
        .env(
            "WASMER_SHIM",
            env!("CARGO_BIN_EXE_containerd-shim-wasmlet-wasmer-v1"),
        )
        .env(
            "CONTAINERD_RESTART",
            format!("echo x >> {}/restarts", host.display()),
        )
        .env_remove("NODE_NAME")
        .output()
        .unwrap()
}

#[test]
fn installs_once_and_restarts_only_on_change() {
    let host = tempfile::tempdir().unwrap();
    let config = host.path().join("etc/containerd/config.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(&config, "version = 3\n").unwrap();
    for _ in 0..2 {
        let out = install(host.path());
        assert!(out.status.success(), "{out:?}");
    }
    let text = std::fs::read_to_string(&config).unwrap();
    assert_eq!(text.matches("runtimes.wasm]").count(), 1, "{text}");
    assert!(text.contains(r#"[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.wasm]"#));
    assert!(text.contains(r#"runtime_type = "io.containerd.wasmlet.v1""#));
    assert_eq!(text.matches("runtimes.wasmer]").count(), 1, "{text}");
    assert!(text.contains(r#"runtime_type = "io.containerd.wasmlet-wasmer.v1""#));
    for shim in [
        "containerd-shim-wasmlet-v1",
        "containerd-shim-wasmlet-wasmer-v1",
    ] {
        assert!(
            host.path().join("usr/local/bin").join(shim).is_file(),
            "{shim}"
        );
    }
    let restarts = std::fs::read_to_string(host.path().join("restarts")).unwrap();
    assert_eq!(
        restarts.lines().count(),
        1,
        "restarted only when something changed"
    );
}
