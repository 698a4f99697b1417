//! The serving process of a pod's shim, made by forking containerd's `start` action.
//!
//! containerd executes the shim binary for `start`, which must leave a process serving the
//! task API on a socket and print that socket's address. The `containerd-shim` crate's
//! `spawn` executes the binary a second time for that process and waits until it listens.
//! Here `start` binds the socket itself and forks: the child serves it, with no second
//! execution, dynamic load and CPU feature probing of the binary (1.4 ms of CPU per task on
//! the reference machine), and `start` answers as soon as the socket listens (containerd's
//! connection waits in its backlog until the child accepts it). The fork is taken only while
//! the process has one thread, as a fork of a multi-threaded process is unsafe; otherwise,
//! and if the fork fails, `start` falls back to the crate's `spawn`.
//!
//! The child is what the crate's serving process is: its stdio on `/dev/null`, logging to the
//! bundle's `log` FIFO, events published to containerd's ttrpc address, the task service on
//! the socket until the shim's last task is gone, then the socket removed.

use std::io;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;

use containerd_shim::asynchronous::{Shim, publisher::RemotePublisher};
use containerd_shim::{Config, Flags, StartOpts};
use containerd_shim_protos::shim::oci::Options;
use containerd_shim_protos::shim_async::{Task, create_task};
use containerd_shim_protos::ttrpc::r#async::{Server, transport::Listener};

use crate::service::WasmShim;

/// Errors of starting the serving process.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket could not be made.
    #[error("cannot listen on the shim socket {path}: {source}")]
    Listen {
        /// The socket's path.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// The child could not be put in the shim cgroup containerd asked for.
    #[error("cannot confine the shim process: {0}")]
    Confine(String),
}

/// The socket `start` found for the shim.
pub enum Bound {
    /// A new socket, listening: a process must serve it.
    New(UnixListener),
    /// The socket of a shim of the same group, already serving (another container of the
    /// pod): nothing to start.
    Serving,
}

/// The path of the unix socket `address` (`unix:///run/containerd/s/HASH`) names.
pub fn socket_path(address: &str) -> &str {
    address.strip_prefix("unix://").unwrap_or(address)
}

/// Binds the socket of `address`; a socket already there is reused if a shim serves it and
/// replaced if it is stale.
pub fn bind(address: &str) -> Result<Bound, Error> {
    let path = socket_path(address);
    let err = |source| Error::Listen {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = Path::new(path).parent() {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    match UnixListener::bind(path) {
        Ok(listener) => Ok(Bound::New(listener)),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            if UnixStream::connect(path).is_ok() {
                return Ok(Bound::Serving);
            }
            std::fs::remove_file(path).map_err(err)?;
            UnixListener::bind(path).map(Bound::New).map_err(err)
        }
        Err(e) => Err(err(e)),
    }
}

/// Whether the calling process has exactly one thread (`/proc/self/stat`'s 20th field).
pub fn single_threaded() -> bool {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return false;
    };
    // The command name (field 2) is parenthesised and may hold spaces: count after it.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    after.split_whitespace().nth(17) == Some("1")
}

/// Forks the serving process of `listener`. Returns the child's pid in the parent, or `None`
/// when the process cannot fork safely (more than one thread) or the fork failed; the child
/// never returns. `cgroups_path` is the `linux.cgroupsPath` of the bundle `start` runs in (the sandbox's, for
/// a pod), which sizes the child's runtime ([`workers`]).
pub fn fork_server(
    opts: &StartOpts,
    listener: UnixListener,
    cgroups_path: Option<&str>,
) -> Result<Option<u32>, Error> {
    if !single_threaded() {
        return Ok(None);
    }
    // SAFETY: the process has one thread (checked above), so the child is a full copy.
    match unsafe { libc::fork() } {
        -1 => Ok(None),
        0 => child(opts, listener, cgroups_path),
        pid => {
            drop(listener);
            let pid = pid as u32;
            confine(opts, pid)?;
            Ok(Some(pid))
        }
    }
}

/// Puts the child in the shim cgroup containerd's runtime options name and raises its OOM
/// score, as the crate's `spawn` does; kills it if that fails.
fn confine(opts: &StartOpts, pid: u32) -> Result<(), Error> {
    let confined = opts.extension::<Options>().and_then(|options| {
        let cgroup = options.map(|o| o.shim_cgroup).unwrap_or_default();
        containerd_shim::cgroup::set_cgroup_and_oom_score(pid, &cgroup)
    });
    confined.map_err(|e| {
        // SAFETY: kill(2) of the child just forked.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        Error::Confine(e.to_string())
    })
}

/// The child: stdio off containerd's pipes (containerd reads `start`'s output until every
/// copy of it is closed), then the server on a thread of its own with a runtime of its own
/// (this thread is inside `start`'s runtime), then exit.
fn child(opts: &StartOpts, listener: UnixListener, cgroups_path: Option<&str>) -> ! {
    to_dev_null();
    let code = std::thread::scope(|s| {
        let served = s.spawn(|| {
            let workers = workers(cgroups_path);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(serve(opts, listener, workers))
        });
        match served.join() {
            Ok(Ok(())) => 0,
            Ok(Err(err)) => {
                log::error!("the shim stopped: {err}");
                1
            }
            Err(_) => 1,
        }
    });
    std::process::exit(code)
}

/// The worker threads of the runtime: one per core, or for a pod with a CPU limit the CPUs
/// the limit allows, rounded up and at most the cores (as Go sizes GOMAXPROCS to its
/// cgroup's limit). The limit is the one the kubelet puts on the pod's cgroup, the parent of
/// the sandbox's `cgroups_path`, or on that cgroup itself: more workers than the pod may run
/// at once only wait for the CPU bandwidth they share and lengthen its tail.
fn workers(cgroups_path: Option<&str>) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let limit = || {
        let cgroup = crate::cgroup::cgroup_of(cgroups_path?).ok()?;
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        let hierarchies = crate::cgroup::hierarchies(&mountinfo);
        [Some(cgroup.as_path()), cgroup.parent()]
            .into_iter()
            .flatten()
            .filter_map(|c| crate::cgroup::cpu_limit(&hierarchies, c))
            .min()
    };
    limit().map_or(cores, |cpus| cpus.min(cores))
}

/// Points stdin, stdout and stderr at `/dev/null`.
fn to_dev_null() {
    // SAFETY: open(2) and dup2(2) on descriptors this process owns.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
            if null > 2 {
                libc::close(null);
            }
        }
    }
}

/// The flags the crate's serving process would have been executed with.
fn flags(opts: &StartOpts) -> Flags {
    Flags {
        debug: opts.debug,
        namespace: opts.namespace.clone(),
        id: opts.id.clone(),
        address: opts.address.clone(),
        ..Flags::default()
    }
}

/// Serves the task API on `listener` until the shim's last task is gone.
async fn serve(opts: &StartOpts, listener: UnixListener, workers: usize) -> Result<(), String> {
    // `start` was made the subreaper of its descendants, which a fork does not inherit.
    let _ = crate::native::become_subreaper();
    let mut config = Config::default();
    // Logging is best effort, as the crate's (a missing FIFO must not stop the pod).
    let _ = containerd_shim::logger::init(
        opts.debug,
        &config.default_log_level,
        &opts.namespace,
        &opts.id,
    );
    let address = listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(Path::to_path_buf));
    let ttrpc = match opts.ttrpc_address.as_str() {
        "" => std::env::var("TTRPC_ADDRESS").unwrap_or_default(),
        known => known.to_owned(),
    };
    let publisher = RemotePublisher::new(&ttrpc)
        .await
        .map_err(|e| format!("cannot reach containerd's ttrpc address {ttrpc}: {e}"))?;
    let mut shim = WasmShim::new(
        crate::runtime_type(crate::engine()),
        &flags(opts),
        &mut config,
    )
    .await;
    let task: Box<dyn Task + Send + Sync> = Box::new(shim.create_task_service(publisher).await);
    let listener = Listener::try_from(listener).map_err(|e| e.to_string())?;
    let mut server = Server::new()
        .add_listener(listener)
        .register_service(task_services(Arc::from(task)));
    server.start().await.map_err(|e| e.to_string())?;
    log::info!(
        "shim for {} serving with {workers} worker threads, forked from start",
        opts.id
    );
    shim.wait().await;
    let _ = server.shutdown().await;
    if let Some(path) = address {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// The task service under the names of both task APIs: `containerd.task.v3.Task`, what
/// containerd 2.x speaks to a shim that answers `start` with version 3, and
/// `containerd.task.v2.Task`, the same messages under the name containerd 1.x and clients of
/// the version 2 API (runwasi's stress test among them) call.
fn task_services(
    task: Arc<dyn Task + Send + Sync>,
) -> std::collections::HashMap<String, containerd_shim_protos::ttrpc::r#async::Service> {
    let mut services = create_task(task.clone());
    let v3 = create_task(task).into_values();
    services.extend(v3.map(|service| (TASK_V2.to_owned(), service)));
    services
}

/// The version 2 task API's service name.
const TASK_V2: &str = "containerd.task.v2.Task";

#[cfg(test)]
mod tests {
    use super::*;

    /// Held by the test that forks and the test that needs a closed socket to be stale: a
    /// child forked while the socket listens holds a copy of it, and a connect to the path
    /// succeeds until the child exits.
    static FORK: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn a_socket_address_names_its_path() {
        assert_eq!(
            socket_path("unix:///run/containerd/s/ab"),
            "/run/containerd/s/ab"
        );
        assert_eq!(socket_path("/run/x"), "/run/x");
    }

    #[test]
    fn a_test_process_has_threads_and_its_fork_has_one() {
        let _fork = FORK.lock().unwrap_or_else(|e| e.into_inner());
        // The test harness runs tests on threads of its own: never one thread here.
        assert!(!single_threaded());
        // SAFETY: the child only reads a /proc file and exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let code = if single_threaded() { 0 } else { 1 };
            // SAFETY: leaves the child without running the harness's exit handlers.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for the child just forked.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status), "the child did not exit: {status}");
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "the fork saw more than one thread"
        );
    }

    #[test]
    fn a_served_socket_is_reused_and_a_stale_one_replaced() {
        let _fork = FORK.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s/sock");
        let address = format!("unix://{}", path.display());
        let Bound::New(first) = bind(&address).unwrap() else {
            panic!("a new socket was expected");
        };
        assert!(matches!(bind(&address).unwrap(), Bound::Serving));
        drop(first);
        // Closed but still on disk: stale, so bound anew.
        assert!(matches!(bind(&address).unwrap(), Bound::New(_)));
    }

    #[test]
    fn the_task_service_answers_under_both_api_names() {
        struct Unimplemented;
        impl Task for Unimplemented {}
        let services = task_services(Arc::new(Unimplemented));
        let mut names: Vec<&String> = services.keys().collect();
        names.sort();
        assert_eq!(
            names,
            ["containerd.task.v2.Task", "containerd.task.v3.Task"]
        );
        for service in services.values() {
            for method in ["Create", "Start", "Wait", "Delete", "Shutdown"] {
                assert!(service.methods.contains_key(method), "{method}");
            }
        }
    }
}
