//! The containerd runtime v2 shim of wasmlet: `containerd-shim-wasmlet-v1`, runtime type
//! `io.containerd.wasmlet.v1`, serving containerd 2.x's task API (v3) through the
//! `containerd-shim` crate, so a stock kubelet runs WebAssembly pods picked by a RuntimeClass.
//!
//! Owns the containerd side only: the bundle's OCI runtime spec mapped to a
//! [`wasmlet_runtime::ContainerSpec`], the rootfs mounts, the image of a wasm artifact read
//! from containerd's content store, containerd's stdio FIFOs, the task lifecycle, signals,
//! events and stats. Running the module (engine, compile cache, limits,
//! exit status) belongs to `wasmlet-runtime`; it knows nothing of Kubernetes beyond the CRI
//! annotations containerd writes into the spec.
//!
//! # Core concepts
//! - One shim process per pod: `start` groups containers by the CRI annotation
//!   `io.kubernetes.cri.sandbox-id` (a plain `ctr run` container is its own group), so every
//!   container of a pod shares one process, one wasmtime engine and one compile cache.
//! - The module is the file `process.args[0]` names inside the container's rootfs (the
//!   FROM-scratch image with `CMD ["/hello.wasm"]`), resolved with chroot semantics (symlinks
//!   and `..` stay inside the rootfs). Native executables are refused with an error naming the
//!   file; the pod's sandbox (pause) container runs no code at all and waits for its kill.
//! - When the spec names no file of the rootfs, the container's image may be a wasm OCI
//!   artifact ([`artifact`]): the CNCF artifact (`application/wasm`), wasm-to-oci or runwasi's
//!   component layer, whose module is a layer containerd fetched but could not unpack (the
//!   rootfs is empty). The shim reads it from containerd's content store over containerd's
//!   gRPC API ([`containerd`], at the `-address` and in the `-namespace` containerd starts the
//!   shim with): the container's record, its image, through an index to its `wasip1/wasm`,
//!   `wasip2/wasm` or `wasi/wasm` entry, the manifest, the config, then the wasm layer, with
//!   every size bounded, every digest verified and every call under a deadline. The guest's
//!   argv is `process.args` when there are any (through CRI: the pod's `command` and `args`,
//!   so `argv[0]` is the command's first word), else the image config's ENTRYPOINT and CMD,
//!   else the last segment of the image's repository, as `wasmlet run` and `wasmlet node`
//!   give it. An ordinary image keeps the error that its rootfs lacks the file.
//! - The serving process is a fork of containerd's `start` ([`daemon`]): the socket listens
//!   before `start` answers, and the binary is not executed a second time.
//! - A task is a [`state::TaskState`]: created, running, exited, deleted; illegal moves are
//!   errors that reach containerd as `FailedPrecondition`.
//! - Signals ([`signal::Action`]): `SIGKILL` kills at once; `SIGTERM`, `SIGINT`, `SIGHUP`,
//!   `SIGQUIT` and the other terminating signals are a stop ([`wasmlet_runtime::Container::stop`],
//!   the rule `wasmlet run` and `wasmlet node` follow too): a command, which cannot observe
//!   them (WASI has no signals), ends within a second; a `wasi:http` server stops accepting
//!   and drains its requests in flight until the SIGKILL that ends the CRI stop timeout. The
//!   exit status is `128 + signal`, as a process ended by that signal reports.
//! - The network is the pod's ([`network`]): every socket of a container (its `wasi:http`
//!   listener, `wasi:sockets`, outgoing requests, name lookups through the pod's
//!   `resolv.conf`) is made inside the network namespace the spec names, so the pod IP the
//!   CNI plugins gave the sandbox is the container's. A `wasi:http` component is served on
//!   `0.0.0.0:8080` of the pod (or `WASMTIME_HTTP_PROXY_SOCKET_ADDR`), one instance per
//!   request, until its task is killed.
//! - The shim process joins the pod's cgroup ([`cgroup`]: the sandbox's `linux.cgroupsPath`,
//!   cgroupfs or systemd, v1 or v2), so the kubelet's accounting counts the pod.
//! - A container whose entrypoint is a native executable (a sidecar) runs through runc
//!   ([`native`]) in the pod's network namespace, with the same task API.
//! - The engine: `containerd-shim-wasmlet-v1` (runtime type `io.containerd.wasmlet.v1`) runs
//!   wasm on wasmtime; `containerd-shim-wasmlet-wasmer-v1` (`io.containerd.wasmlet-wasmer.v1`,
//!   built with the `wasmer` feature) on wasmer. A runtime type per engine, as runwasi has a
//!   shim per engine, because the RuntimeClass is what a cluster chooses a runtime by: one
//!   RuntimeClass per engine works with containerd's stock configuration, where an annotation
//!   reaches the shim only if containerd is told to pass it (`pod_annotations`). When it is,
//!   a container's `wasmlet.dev/engine` annotation still wins, as on `wasmlet node`.
//! - There is no process per wasm container: the task pid containerd sees is the shim's own, and
//!   `stats` reports the shim process's CPU time and resident memory (so for a pod of several
//!   containers each reports the pod's numbers). `exec` is refused.
#![deny(missing_docs)]

pub mod artifact;
pub mod bundle;
pub mod cgroup;
pub mod containerd;
pub mod daemon;
pub mod fifo;
pub mod native;
pub mod network;
pub mod rootfs;
pub mod service;
pub mod signal;
pub mod state;
pub mod stats;
pub mod tasks;

/// The runtime type containerd knows this shim by.
pub const RUNTIME_TYPE: &str = "io.containerd.wasmlet.v1";

/// The runtime type of the shim that runs wasm on wasmer.
pub const WASMER_RUNTIME_TYPE: &str = "io.containerd.wasmlet-wasmer.v1";

/// The engine this shim process runs wasm on (set once by [`run`]).
static ENGINE: std::sync::OnceLock<wasmlet_runtime::EngineKind> = std::sync::OnceLock::new();

/// The runtime type containerd knows the shim running wasm on `engine` by.
pub fn runtime_type(engine: wasmlet_runtime::EngineKind) -> &'static str {
    match engine {
        wasmlet_runtime::EngineKind::Wasmtime => RUNTIME_TYPE,
        wasmlet_runtime::EngineKind::Wasmer => WASMER_RUNTIME_TYPE,
    }
}

/// The engine this shim process runs wasm on: wasmtime unless [`run`] was told otherwise.
pub fn engine() -> wasmlet_runtime::EngineKind {
    ENGINE.get().copied().unwrap_or_default()
}

/// The shim's process, running wasm on `engine`. containerd's `delete` (a process per task,
/// ended within milliseconds) needs no runtime at all; `start` runs [`run`] on the calling
/// thread alone, sparing the start and stop of a worker thread per core (a third of a
/// millisecond of CPU per process here), and the process serving the pod is its fork, with a
/// runtime of its own ([`daemon`]); a shim executed without an action (the fallback) runs on
/// one worker per core.
pub fn main(engine: wasmlet_runtime::EngineKind) {
    if std::env::args_os().last().is_some_and(|a| a == "delete") {
        std::process::exit(delete());
    }
    let mut builder = if is_short_action(std::env::args_os()) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = builder.enable_all().build().unwrap_or_else(|err| {
        eprintln!("containerd-shim-wasmlet: cannot start a tokio runtime: {err}");
        std::process::exit(1)
    });
    runtime.block_on(run(engine));
}

/// containerd's `delete` action without a tokio runtime: its whole contract is the
/// [`service::delete_dead_shim`] answer, encoded, on stdout.
fn delete() -> i32 {
    use containerd_shim_protos::protobuf::Message;
    use std::io::Write;
    let written = service::delete_dead_shim()
        .write_to_bytes()
        .map_err(|e| e.to_string())
        .and_then(|bytes| {
            let mut out = std::io::stdout().lock();
            out.write_all(&bytes)
                .and_then(|()| out.flush())
                .map_err(|e| e.to_string())
        });
    match written {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("containerd-shim-wasmlet: delete: {err}");
            1
        }
    }
}

/// Whether the command line is containerd's `start` or `delete`: the action is its last
/// argument (the shim itself is started with flags alone).
fn is_short_action(args: impl Iterator<Item = std::ffi::OsString>) -> bool {
    args.last()
        .is_some_and(|action| action == "start" || action == "delete")
}

/// The shim's entry point, running wasm on `engine`: containerd's `start`, `delete` and
/// serve actions.
pub async fn run(engine: wasmlet_runtime::EngineKind) {
    let _ = ENGINE.set(engine);
    let config = containerd_shim::Config {
        // Containers run as tokio tasks: there are no child processes to reap.
        no_reaper: true,
        ..Default::default()
    };
    containerd_shim::asynchronous::run::<service::WasmShim>(runtime_type(engine), Some(config))
        .await;
}

#[cfg(test)]
mod tests {
    use super::is_short_action;

    fn args(list: &[&str]) -> impl Iterator<Item = std::ffi::OsString> {
        list.iter()
            .map(std::ffi::OsString::from)
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn start_and_delete_are_short_actions_and_the_shim_itself_is_not() {
        let flags = [
            "shim",
            "-namespace",
            "k8s.io",
            "-id",
            "delete",
            "-address",
            "/c.sock",
        ];
        let with = |action: &str| {
            let mut all = flags.to_vec();
            all.push(action);
            is_short_action(args(&all))
        };
        assert!(with("start"));
        assert!(with("delete"));
        // The shim itself: flags alone, whatever the id is called.
        assert!(!is_short_action(args(&flags)));
        assert!(!with("-debug"));
    }
}
