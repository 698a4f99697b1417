//! The bundle's OCI runtime spec (`config.json`) read as a wasm container: which kind of
//! task it is, the module file in the rootfs, and the [`ContainerSpec`] (argv, env, working
//! directory, mounts as preopens, memory limit). Pure functions over the spec, plus reading
//! the module file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use wasmlet_runtime::{ContainerSpec, Limits, Preopen};

use crate::rootfs;

/// Errors of reading a bundle.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `config.json` could not be read or parsed.
    #[error("cannot read the OCI runtime spec {path}: {reason}")]
    Spec {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// `process.args` is empty: there is no module to run.
    #[error(
        "the container has no entrypoint: process.args is empty (set CMD or ENTRYPOINT to the .wasm file)"
    )]
    NoEntrypoint,
    /// The entrypoint names no file in the rootfs.
    #[error("the entrypoint {0} is not a file in the container's rootfs")]
    NoModule(String),
    /// The entrypoint is a native executable.
    #[error(
        "{0} is a native executable, not WebAssembly: the wasmlet runtime runs only .wasm modules and components (run native containers with runc)"
    )]
    Native(String),
    /// The entrypoint is neither wasm nor a native executable.
    #[error("{path} is not a WebAssembly module or component: {reason}")]
    NotWasm {
        /// The guest path.
        path: String,
        /// Why.
        reason: String,
    },
    /// Reading the module failed.
    #[error("cannot read the module {path}: {source}")]
    Read {
        /// The host path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Resolving a path in the rootfs failed.
    #[error(transparent)]
    Rootfs(#[from] rootfs::Error),
}

impl Error {
    /// Whether the spec names no module file in the rootfs (no entrypoint, or no such file):
    /// the container's image may then be a wasm artifact, whose module is a layer.
    pub fn is_missing_module(&self) -> bool {
        matches!(self, Error::NoEntrypoint | Error::NoModule(_))
    }
}

/// The CRI annotation naming the pod's sandbox.
pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
/// The CRI annotation telling a sandbox (pause) container from an application container.
pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// The `PATH` used to find a bare entrypoint name when the spec's env has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Mount destinations that make no sense to a WASI guest.
const SYSTEM_DIRS: [&str; 3] = ["/proc", "/sys", "/dev"];

/// Reads `config.json` from `bundle`.
pub fn load(bundle: &Path) -> Result<Spec, Error> {
    let path = bundle.join("config.json");
    Spec::load(&path).map_err(|e| Error::Spec {
        path,
        reason: e.to_string(),
    })
}

/// The value of the spec's annotation `key`, if it has one.
pub fn annotation<'a>(spec: &'a Spec, key: &str) -> Option<&'a str> {
    spec.annotations().as_ref()?.get(key).map(String::as_str)
}

/// The shim group of a container: its pod's sandbox id, or `id` outside Kubernetes.
pub fn group(spec: &Spec, id: &str) -> String {
    annotation(spec, SANDBOX_ID).unwrap_or(id).to_owned()
}

/// Whether this is a pod's sandbox (pause) container, which runs no code.
pub fn is_sandbox(spec: &Spec) -> bool {
    annotation(spec, CONTAINER_TYPE) == Some("sandbox")
}

/// `process.args`.
pub fn args(spec: &Spec) -> Vec<String> {
    spec.process()
        .as_ref()
        .and_then(|p| p.args().clone())
        .unwrap_or_default()
}

/// `process.env` as pairs; an entry without `=` is a variable with an empty value.
pub fn env(spec: &Spec) -> Vec<(String, String)> {
    let entries = spec.process().as_ref().and_then(|p| p.env().clone());
    entries
        .unwrap_or_default()
        .iter()
        .map(|e| match e.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (e.clone(), String::new()),
        })
        .collect()
}

/// `process.cwd`, `/` when unset.
pub fn cwd(spec: &Spec) -> String {
    spec.process()
        .as_ref()
        .map(|p| p.cwd().to_string_lossy().into_owned())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "/".into())
}

/// `linux.cgroupsPath`, when set.
pub fn cgroups_path(spec: &Spec) -> Option<String> {
    let path = spec.linux().as_ref()?.cgroups_path().as_ref()?;
    Some(path.to_string_lossy().into_owned()).filter(|p| !p.is_empty())
}

/// `linux.resources.memory.limit`, when positive.
pub fn memory_limit(spec: &Spec) -> Option<u64> {
    let limit = spec
        .linux()
        .as_ref()?
        .resources()
        .as_ref()?
        .memory()
        .as_ref()?
        .limit()?;
    u64::try_from(limit).ok().filter(|l| *l > 0)
}

/// The descriptor budget: the soft `RLIMIT_NOFILE` of `process.rlimits`, the open-files limit
/// runc would give the process, as a count of WASI handles (at most the runtime's largest
/// table, 1,000,000); `None` without one, which leaves the runtime's default.
pub fn descriptor_budget(spec: &Spec) -> Option<u32> {
    let rlimits = spec.process().as_ref()?.rlimits().as_ref()?;
    let nofile = rlimits
        .iter()
        .find(|r| r.typ() == oci_spec::runtime::PosixRlimitType::RlimitNofile)?;
    Some(u32::try_from(nofile.soft().clamp(1, 1_000_000)).unwrap_or(1_000_000))
}

/// The guest path of the module: `args[0]` if it has a `/` (relative to the working
/// directory), else the first `PATH` directory holding it, else the working directory.
pub fn module_guest_path(spec: &Spec, rootfs: &Path) -> Result<String, Error> {
    let args = args(spec);
    let entry = args.first().ok_or(Error::NoEntrypoint)?;
    let cwd = cwd(spec);
    if entry.contains('/') {
        return Ok(absolute(&cwd, entry));
    }
    let env: HashMap<_, _> = env(spec).into_iter().collect();
    let path = env.get("PATH").map_or(DEFAULT_PATH, String::as_str);
    for dir in path.split(':').filter(|d| d.starts_with('/')) {
        let guest = absolute(dir, entry);
        if rootfs::resolve(rootfs, &guest)?.is_file() {
            return Ok(guest);
        }
    }
    Ok(absolute(&cwd, entry))
}

fn absolute(dir: &str, path: &str) -> String {
    if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("{}/{path}", dir.trim_end_matches('/'))
    }
}

/// The directories the guest sees: the rootfs as `/` (read-only when `root.readonly`), and
/// every bind mount of a directory at its destination (read-only with the `ro` option).
/// Mounts on `/proc`, `/sys`, `/dev` and mounts of files are left out.
pub fn preopens(spec: &Spec, rootfs: &Path) -> Vec<Preopen> {
    let root_ro = spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false);
    let mut out = vec![Preopen {
        host: rootfs.to_path_buf(),
        guest: "/".into(),
        read_only: root_ro,
        pinned: None,
    }];
    for m in spec.mounts().iter().flatten() {
        let options = m.options().clone().unwrap_or_default();
        let bind = m.typ().as_deref() == Some("bind")
            || options.iter().any(|o| o == "bind" || o == "rbind");
        let dest = m.destination().to_string_lossy().into_owned();
        let system = SYSTEM_DIRS
            .iter()
            .any(|d| dest == *d || dest.starts_with(&format!("{d}/")));
        let Some(source) = m.source().as_ref().filter(|s| s.is_dir()) else {
            continue;
        };
        if bind && !system {
            out.push(Preopen {
                host: source.clone(),
                guest: dest,
                read_only: options.iter().any(|o| o == "ro"),
                pinned: None,
            });
        }
    }
    out
}

/// The container to run, without its stdio (the caller opens containerd's FIFOs).
pub fn container_spec(spec: &Spec, rootfs: &Path) -> ContainerSpec {
    ContainerSpec {
        args: args(spec),
        env: env(spec),
        working_dir: Some(cwd(spec)),
        preopens: preopens(spec, rootfs),
        limits: Limits {
            memory_bytes: memory_limit(spec),
            descriptors: descriptor_budget(spec),
            ..Limits::default()
        },
        ..ContainerSpec::default()
    }
}

/// The module `process.args[0]` names in `rootfs`: its guest path and bytes.
pub fn entrypoint_module(spec: &Spec, rootfs: &Path) -> Result<(String, Vec<u8>), Error> {
    let guest = module_guest_path(spec, rootfs)?;
    let bytes = read_module(rootfs, &guest)?;
    Ok((guest, bytes))
}

/// Reads the module `guest` from `rootfs`, refusing native executables and anything else
/// that is not a WebAssembly binary, with an error naming the file.
pub fn read_module(rootfs: &Path, guest: &str) -> Result<Vec<u8>, Error> {
    let host = rootfs::resolve(rootfs, guest)?;
    if !host.is_file() {
        return Err(Error::NoModule(guest.into()));
    }
    let bytes = std::fs::read(&host).map_err(|source| Error::Read { path: host, source })?;
    check_wasm(guest, &bytes)?;
    Ok(bytes)
}

/// Checks `bytes` (the file `guest`) is a WebAssembly binary.
pub fn check_wasm(guest: &str, bytes: &[u8]) -> Result<(), Error> {
    if bytes.starts_with(b"\x7fELF") || bytes.starts_with(b"#!") {
        return Err(Error::Native(guest.into()));
    }
    wasmlet_oci::wasm::WasmKind::detect(bytes)
        .map(|_| ())
        .map_err(|e| Error::NotWasm {
            path: guest.into(),
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> Spec {
        serde_json::from_value(json).unwrap()
    }

    fn base() -> serde_json::Value {
        serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {
                "args": ["/hello.wasm", "a"],
                "env": ["PATH=/usr/bin:/bin", "A=1", "EMPTY"],
                "cwd": "/work",
                "user": {"uid": 0, "gid": 0}
            },
            "root": {"path": "rootfs", "readonly": true},
            "mounts": [],
            "annotations": {
                "io.kubernetes.cri.sandbox-id": "sb1",
                "io.kubernetes.cri.container-type": "container"
            },
            "linux": {"resources": {"memory": {"limit": 67108864}}}
        })
    }

    #[test]
    fn maps_process_and_limits() {
        let s = spec(base());
        let rootfs = Path::new("/r");
        let c = container_spec(&s, rootfs);
        assert_eq!(c.args, ["/hello.wasm", "a"]);
        assert_eq!(
            c.env,
            [
                ("PATH".to_owned(), "/usr/bin:/bin".to_owned()),
                ("A".into(), "1".into()),
                ("EMPTY".into(), String::new())
            ]
        );
        assert_eq!(c.working_dir.as_deref(), Some("/work"));
        assert_eq!(c.limits.memory_bytes, Some(64 << 20));
        assert_eq!(c.limits.descriptors, None);
        assert_eq!(
            c.preopens,
            [Preopen {
                host: "/r".into(),
                guest: "/".into(),
                read_only: true,
                pinned: None,
            }]
        );
        assert_eq!(group(&s, "c1"), "sb1");
        assert!(!is_sandbox(&s));
    }

    #[test]
    fn the_soft_open_files_limit_is_the_descriptor_budget() {
        let with = |rlimits: serde_json::Value| {
            let mut j = base();
            j["process"]["rlimits"] = rlimits;
            descriptor_budget(&spec(j))
        };
        let nofile = |soft: u64| {
            serde_json::json!([
                {"type": "RLIMIT_NPROC", "hard": 5, "soft": 5},
                {"type": "RLIMIT_NOFILE", "hard": 1048576, "soft": soft}
            ])
        };
        assert_eq!(with(nofile(1024)), Some(1024));
        assert_eq!(with(nofile(0)), Some(1));
        assert_eq!(with(nofile(u64::MAX)), Some(1_000_000));
        assert_eq!(with(serde_json::json!([])), None);
    }

    #[test]
    fn no_limit_no_annotations() {
        let mut j = base();
        j["linux"] = serde_json::json!({"resources": {"memory": {"limit": -1}}});
        j["annotations"] = serde_json::json!({});
        let s = spec(j);
        assert_eq!(memory_limit(&s), None);
        assert_eq!(group(&s, "c1"), "c1");
        let mut j = base();
        j["annotations"]["io.kubernetes.cri.container-type"] = "sandbox".into();
        assert!(is_sandbox(&spec(j)));
    }

    #[test]
    fn bind_mounts_become_preopens() {
        let data = tempfile::tempdir().unwrap();
        let file = data.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let d = data.path().to_str().unwrap();
        let mut j = base();
        j["mounts"] = serde_json::json!([
            {"destination": "/data", "type": "bind", "source": d, "options": ["rbind", "ro"]},
            {"destination": "/rw", "source": d, "options": ["rbind", "rw"]},
            {"destination": "/etc/hosts", "type": "bind", "source": file, "options": ["rbind"]},
            {"destination": "/dev/shm", "type": "bind", "source": d, "options": ["rbind"]},
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}
        ]);
        let p = preopens(&spec(j), Path::new("/r"));
        let got: Vec<_> = p.iter().map(|p| (p.guest.as_str(), p.read_only)).collect();
        assert_eq!(got, [("/", true), ("/data", true), ("/rw", false)]);
    }

    #[test]
    fn finds_the_module() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("bin")).unwrap();
        std::fs::write(r.join("bin/tool.wasm"), b"\0asm\x01\0\0\0").unwrap();
        let mut j = base();
        assert_eq!(
            module_guest_path(&spec(j.clone()), r).unwrap(),
            "/hello.wasm"
        );
        j["process"]["args"] = serde_json::json!(["tool.wasm"]);
        assert_eq!(
            module_guest_path(&spec(j.clone()), r).unwrap(),
            "/bin/tool.wasm"
        );
        j["process"]["args"] = serde_json::json!(["sub/m.wasm"]);
        assert_eq!(
            module_guest_path(&spec(j.clone()), r).unwrap(),
            "/work/sub/m.wasm"
        );
        j["process"]["args"] = serde_json::json!([]);
        assert!(matches!(
            module_guest_path(&spec(j), r),
            Err(Error::NoEntrypoint)
        ));
        assert!(read_module(r, "/bin/tool.wasm").is_ok());
        assert!(matches!(read_module(r, "/nope"), Err(Error::NoModule(_))));
    }

    #[test]
    fn refuses_native_executables() {
        let err = check_wasm("/bin/busybox", b"\x7fELF\x02\x01\x01\0").unwrap_err();
        assert_eq!(
            err.to_string().split(':').next(),
            Some("/bin/busybox is a native executable, not WebAssembly")
        );
        assert!(matches!(
            check_wasm("/x", b"#!/bin/sh\n"),
            Err(Error::Native(_))
        ));
        assert!(matches!(
            check_wasm("/x", b"hello world"),
            Err(Error::NotWasm { .. })
        ));
        assert!(check_wasm("/x", b"\0asm\x01\0\0\0").is_ok());
    }
}
