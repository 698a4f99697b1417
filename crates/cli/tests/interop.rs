//! Interop with tools nobody here wrote: what wasmlet pushes, oras, crane and skopeo read;
//! what oras pushes, and images umoci builds and skopeo copies, wasmlet pulls.

use std::path::Path;
use std::process::Command;

use wasmlet_testkit::{Auth, Registry, run_ok, tool};

fn wasmlet(store: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wasmlet"));
    cmd.arg("--store").arg(store).arg("--quiet");
    cmd
}

fn pulled_json(store: &Path, r: &str) -> serde_json::Value {
    run_ok(wasmlet(store).args(["pull", r]));
    serde_json::from_str(&run_ok(wasmlet(store).args(["inspect", "-o", "json", r]))).unwrap()
}

#[test]
fn oras_crane_and_skopeo_read_what_wasmlet_pushes() {
    let registry = Registry::start(Auth::Open);
    let work = tempfile::tempdir().unwrap();
    let hello = wasmlet_fixtures::path("hello");
    for (format, config_type, layer_type) in [
        (
            "cncf",
            "application/vnd.wasm.config.v0+json",
            "application/wasm",
        ),
        (
            "wasm-to-oci",
            "application/vnd.wasm.config.v1+json",
            "application/vnd.wasm.content.layer.v1+wasm",
        ),
    ] {
        let r = format!("{}/interop/{format}:v1", registry.host());
        run_ok(
            wasmlet(work.path())
                .args(["push", "--format", format])
                .arg(&hello)
                .arg(&r),
        );

        let out = work.path().join(format);
        run_ok(
            Command::new(tool("oras"))
                .args(["pull", "--plain-http", &r, "-o"])
                .arg(&out),
        );
        assert_eq!(
            std::fs::read(out.join("hello.wasm")).unwrap(),
            wasmlet_fixtures::hello(),
            "oras pull of {format}"
        );

        let manifest = run_ok(Command::new(tool("crane")).args(["manifest", "--insecure", &r]));
        let m: serde_json::Value = serde_json::from_str(&manifest).unwrap();
        assert_eq!(
            (
                m["config"]["mediaType"].as_str(),
                m["layers"][0]["mediaType"].as_str()
            ),
            (Some(config_type), Some(layer_type))
        );
        let config = run_ok(Command::new(tool("crane")).args(["config", "--insecure", &r]));
        if format == "cncf" {
            let c: serde_json::Value = serde_json::from_str(&config).unwrap();
            assert_eq!(
                (c["architecture"].as_str(), c["os"].as_str()),
                (Some("wasm"), Some("wasip1"))
            );
        } else {
            assert_eq!(config.trim(), "{}");
        }
        let raw = run_ok(Command::new("skopeo").args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{r}"),
        ]));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&raw).unwrap(),
            m,
            "skopeo and crane see one manifest"
        );
    }
}

#[test]
fn wasmlet_pulls_what_oras_pushes() {
    let registry = Registry::start(Auth::Open);
    let work = tempfile::tempdir().unwrap();
    std::fs::copy(
        wasmlet_fixtures::path("hello"),
        work.path().join("hello.wasm"),
    )
    .unwrap();
    std::fs::write(
        work.path().join("config.json"),
        r#"{"architecture":"wasm","os":"wasip1"}"#,
    )
    .unwrap();
    let with_config = format!("{}/oras/config:v1", registry.host());
    run_ok(Command::new(tool("oras")).current_dir(work.path()).args([
        "push",
        "--plain-http",
        &with_config,
        "--config",
        "config.json:application/vnd.wasm.config.v0+json",
        "hello.wasm:application/wasm",
    ]));
    let artifact = format!("{}/oras/artifact:v1", registry.host());
    run_ok(Command::new(tool("oras")).current_dir(work.path()).args([
        "push",
        "--plain-http",
        &artifact,
        "--artifact-type",
        "application/vnd.wasm.config.v0+json",
        "hello.wasm:application/wasm",
    ]));
    for r in [with_config, artifact] {
        let v = pulled_json(work.path(), &r);
        assert_eq!(
            (v["format"].as_str(), v["kind"].as_str()),
            (Some("cncf-wasm-artifact"), Some("module")),
            "{r}"
        );
    }
}

#[test]
fn wasmlet_pulls_from_scratch_images_built_by_umoci_and_copied_by_skopeo() {
    let registry = Registry::start(Auth::Open);
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let image = format!("{}:v1", layout.display());
    run_ok(
        Command::new("umoci")
            .args(["init", "--layout"])
            .arg(&layout),
    );
    run_ok(Command::new("umoci").args(["new", "--image", &image]));
    run_ok(
        Command::new("umoci")
            .args(["insert", "--image", &image])
            .arg(wasmlet_fixtures::path("hello"))
            .arg("/hello.wasm"),
    );
    run_ok(Command::new("umoci").args([
        "config",
        "--image",
        &image,
        "--config.cmd",
        "/hello.wasm",
        "--os",
        "wasip1",
        "--architecture",
        "wasm",
    ]));
    let cases = [
        ("oci-gzip", vec![]),
        ("docker-v2s2", vec!["--format", "v2s2"]),
        ("oci-plain-tar", vec!["--dest-decompress"]),
    ];
    for (name, flags) in cases {
        let r = format!("{}/scratch/{name}:v1", registry.host());
        run_ok(
            Command::new("skopeo")
                .args(["copy", "--dest-tls-verify=false"])
                .args(&flags)
                .arg(format!("oci:{image}"))
                .arg(format!("docker://{r}")),
        );
        let v = pulled_json(work.path(), &r);
        assert_eq!(v["format"].as_str(), Some("container-image"), "{name}: {v}");
        assert_eq!(v["argv"][0].as_str(), Some("/hello.wasm"), "{name}");
    }
    let exported = work.path().join("exported");
    let r = format!("{}/scratch/oci-gzip:v1", registry.host());
    run_ok(
        wasmlet(work.path())
            .args(["images", "export", &r, "-o"])
            .arg(&exported),
    );
    let inspected = run_ok(
        Command::new("skopeo")
            .args(["inspect", "--raw"])
            .arg(format!("oci:{}:v1", exported.display())),
    );
    assert!(
        inspected.contains("schemaVersion"),
        "skopeo reads wasmlet's layout: {inspected}"
    );
}
