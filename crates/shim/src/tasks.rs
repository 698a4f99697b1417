//! The tasks of one shim process: what each runs, its state, its exit, and the moves
//! containerd asks for. No ttrpc here: [`crate::service`] translates requests and errors.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use wasmlet_runtime::{
    CancellationToken, Container, ContainerSpec, ExitReason, ExitStatus, Program, ProgramKind,
    Runtime, TERMINATED_EXIT_CODE, TRAP_EXIT_CODE,
};

use crate::artifact::{self, Artifact};
use crate::bundle;
use crate::cgroup;
use crate::containerd::{self, Containerd};
use crate::fifo;
use crate::native::{self, Native};
use crate::network;
use crate::rootfs;
use crate::signal::{self, Action};
use crate::state::{self, TaskState};

/// The grace a terminating signal gives: until the kill that follows it. A command ends
/// within the runtime's [`wasmlet_runtime::COMMAND_STOP_GRACE`] anyway (it cannot observe the
/// signal); a `wasi:http` server drains its requests in flight until then (containerd sends
/// SIGKILL at the end of the CRI stop timeout).
const UNTIL_KILLED: Duration = Duration::from_secs(24 * 60 * 60);

/// Errors of the task moves.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No task has this id.
    #[error("task {0} not found")]
    NotFound(String),
    /// A task with this id exists.
    #[error("task {0} already exists")]
    AlreadyExists(String),
    /// A wasm container cannot have a terminal.
    #[error("a terminal (tty) is not supported for wasm containers")]
    Terminal,
    /// An illegal lifecycle move.
    #[error("task {id}: {source}")]
    State {
        /// The task.
        id: String,
        /// The move.
        source: state::Error,
    },
    /// A signal the shim cannot honour.
    #[error(transparent)]
    Signal(#[from] signal::Error),
    /// The bundle is not a wasm container.
    #[error(transparent)]
    Bundle(#[from] bundle::Error),
    /// The rootfs could not be mounted.
    #[error(transparent)]
    Rootfs(#[from] rootfs::Error),
    /// The container's image is a wasm artifact whose module cannot be run.
    #[error(transparent)]
    Artifact(#[from] artifact::Error),
    /// The rootfs holds no module and the container's image could not be read to look for
    /// one in its layers.
    #[error("{missing}; the container's image could not be read from containerd either: {source}")]
    ImageUnreadable {
        /// Why the rootfs holds no module.
        missing: bundle::Error,
        /// Why containerd could not tell.
        source: Box<containerd::Error>,
    },
    /// Loading or starting the module failed.
    #[error(transparent)]
    Runtime(#[from] wasmlet_runtime::Error),
    /// The container's network could not be set up.
    #[error(transparent)]
    Network(#[from] network::Error),
    /// The pod's cgroup could not be joined.
    #[error("joining the pod's cgroup: {0}")]
    Cgroup(#[from] cgroup::Error),
    /// A native container could not be run.
    #[error(transparent)]
    Native(#[from] native::Error),
    /// A stdio FIFO could not be opened.
    #[error("cannot open the container's {stream} {path}: {source}")]
    Stdio {
        /// `stdout` or `stderr`.
        stream: &'static str,
        /// The FIFO.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// `Result` of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a task ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit {
    /// The exit status containerd reports.
    pub status: u32,
    /// When.
    pub at: SystemTime,
    /// Whether it ended by passing its memory limit.
    pub oom: bool,
}

/// What a task runs.
enum Work {
    /// A wasm program; the spec is taken at start. A `wasi:http` component is served on
    /// `serve` (see [`network::http_address`]).
    Wasm {
        program: Program,
        spec: Option<Box<ContainerSpec>>,
        serve: Option<std::net::SocketAddr>,
        container: Option<Arc<Container>>,
    },
    /// A native container (a sidecar), run by runc.
    Native(Box<Native>),
    /// A pod's sandbox (pause) container: no code, waits for its kill. The shim process
    /// joined its cgroup, to leave when it is deleted.
    Pause {
        stop: CancellationToken,
        cgroup: Option<cgroup::Joined>,
    },
}

/// What containerd created.
pub struct NewTask {
    /// Task id (the container id).
    pub id: String,
    /// Bundle directory.
    pub bundle: PathBuf,
    /// containerd's rootfs mounts (empty when the rootfs is already in place).
    pub mounts: Vec<containerd_shim_protos::api::Mount>,
    /// The stdout FIFO (empty for none).
    pub stdout: String,
    /// The stderr FIFO (empty for none).
    pub stderr: String,
    /// Whether a terminal was asked for.
    pub terminal: bool,
}

/// One task.
struct Task {
    bundle: PathBuf,
    mounted: Option<PathBuf>,
    stdout: String,
    stderr: String,
    state: TaskState,
    work: Work,
    /// The output FIFOs, watched until their readers have taken the task's last output
    /// (taken at start).
    outputs: fifo::Outputs,
    signal: Option<u32>,
    memory_limit: u64,
    exit: watch::Sender<Option<Exit>>,
}

/// A snapshot of a task for `state`.
pub struct TaskInfo {
    /// Bundle directory.
    pub bundle: PathBuf,
    /// The stdout FIFO.
    pub stdout: String,
    /// The stderr FIFO.
    pub stderr: String,
    /// The state.
    pub state: TaskState,
    /// The exit, once exited.
    pub exit: Option<Exit>,
    /// The memory limit in bytes (0 for none).
    pub memory_limit: u64,
    /// The task's process: a native container's init, else the shim itself (a wasm guest
    /// is no process).
    pub pid: u32,
}

/// The tasks of this shim process and the runtime they share.
#[derive(Default)]
pub struct Tasks {
    tasks: Mutex<HashMap<String, Task>>,
    runtime: Mutex<Option<Runtime>>,
    /// The network namespace the pod's sandbox spec named: where the pod's containers'
    /// sockets go (they name it through the sandbox task's pid, which is this process).
    sandbox_netns: Mutex<Option<PathBuf>>,
    containerd: Option<containerd::Endpoint>,
}

/// The wasm a container runs.
struct Module {
    bytes: Vec<u8>,
    /// Where it came from, for the log.
    origin: String,
    /// The guest's argv when it is not `process.args` (a wasm artifact's).
    argv: Option<Vec<String>>,
}

/// The exit status for `status`, when the last terminating signal sent was `signal`.
pub fn exit_code(status: &ExitStatus, signal: Option<u32>) -> u32 {
    match (status.reason, signal) {
        (ExitReason::Killed, Some(sig)) => signal::exit_status(sig),
        (ExitReason::Error, Some(sig)) if status.code == TERMINATED_EXIT_CODE => {
            signal::exit_status(sig)
        }
        _ => u32::try_from(status.code).unwrap_or(TRAP_EXIT_CODE as u32),
    }
}

/// The runtime choosing the engine the container's `wasmlet.dev/engine` annotation names (when
/// containerd passes pod annotations on), else this shim's.
fn engine_runtime(runtime: Runtime, spec: &oci_spec::runtime::Spec) -> Result<Runtime> {
    let Some(name) = bundle::annotation(spec, ENGINE_ANNOTATION) else {
        return Ok(runtime);
    };
    let kind = name
        .trim()
        .parse::<wasmlet_runtime::EngineKind>()
        .map_err(|e| {
            Error::Runtime(wasmlet_runtime::Error::Unsupported(format!(
                "annotation {ENGINE_ANNOTATION}={name:?}: {e}; fix or remove it"
            )))
        })?;
    Ok(runtime.with_engine(kind)?)
}

/// The annotation that names a container's engine, as on `wasmlet node`.
const ENGINE_ANNOTATION: &str = "wasmlet.dev/engine";

/// The compile cache directory: `$WASMLET_SHIM_CACHE_DIR`, else `/var/cache/wasmlet/compile`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("WASMLET_SHIM_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/wasmlet/compile"))
}

impl Tasks {
    /// The tasks of a shim that reads wasm artifacts' images through containerd's API at
    /// `containerd`.
    pub fn new(containerd: containerd::Endpoint) -> Tasks {
        Tasks {
            containerd: Some(containerd),
            ..Tasks::default()
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Task>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with<T>(&self, id: &str, f: impl FnOnce(&mut Task) -> Result<T>) -> Result<T> {
        let mut tasks = self.lock();
        let task = tasks
            .get_mut(id)
            .ok_or_else(|| Error::NotFound(id.into()))?;
        f(task)
    }

    /// The shared runtime, made by [`Tasks::prewarm`] or on first use.
    fn runtime(&self) -> Result<Runtime> {
        let mut slot = self.runtime.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(runtime) = slot.as_ref() {
            return Ok(runtime.clone());
        }
        let config = wasmlet_runtime::RuntimeConfig {
            cache_dir: Some(cache_dir()),
            max_instances: 64,
            engine: crate::engine(),
            ..Default::default()
        };
        let runtime = Runtime::new(config)?;
        *slot = Some(runtime.clone());
        Ok(runtime)
    }

    /// Makes the shared runtime ahead of the first create, on a blocking thread: the process
    /// serving a pod is idle from its fork until containerd's first request, and the runtime
    /// (engine, instance pool, epoch thread; 0.6-0.75 ms) and the blocking thread that a
    /// create's module load then reuses are made in that time instead of on the create's path.
    /// A failure is left for the create to report.
    pub fn prewarm(self: &Arc<Self>) {
        let tasks = self.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(err) = tasks.runtime() {
                log::debug!("the runtime was not made ahead of the first task: {err}");
            }
        });
    }

    /// Whether no task is left.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Creates a task: mounts its rootfs and, for a wasm container, loads (compiles or takes
    /// from the cache) its module, so errors surface at create and start is quick.
    pub async fn create(&self, new: NewTask) -> Result<()> {
        if new.terminal {
            return Err(Error::Terminal);
        }
        if self.lock().contains_key(&new.id) {
            return Err(Error::AlreadyExists(new.id));
        }
        let spec = bundle::load(&new.bundle)?;
        let rootfs = rootfs_dir(&spec, &new.bundle);
        rootfs::mount(&new.mounts, &rootfs).await?;
        let mounted = (!new.mounts.is_empty()).then(|| rootfs.clone());
        let mut outputs = fifo::Outputs::default();
        let work = match self.prepare(&spec, &rootfs, &new, &mut outputs).await {
            Ok(work) => work,
            Err(err) => {
                if let Some(m) = &mounted {
                    rootfs::unmount(m);
                }
                return Err(err);
            }
        };
        let task = Task {
            bundle: new.bundle,
            mounted,
            stdout: new.stdout,
            stderr: new.stderr,
            state: TaskState::Created,
            work,
            outputs,
            signal: None,
            memory_limit: bundle::memory_limit(&spec).unwrap_or(0),
            exit: watch::channel(None).0,
        };
        self.lock().insert(new.id, task);
        Ok(())
    }

    async fn prepare(
        &self,
        spec: &oci_spec::runtime::Spec,
        rootfs: &Path,
        new: &NewTask,
        outputs: &mut fifo::Outputs,
    ) -> Result<Work> {
        let bundle = new.bundle.as_path();
        if bundle::is_sandbox(spec) {
            if let network::Namespace::Join(path) = network::namespace(spec) {
                *self.sandbox_netns.lock().unwrap_or_else(|e| e.into_inner()) = Some(path);
            }
            let cgroup = match bundle::cgroups_path(spec) {
                Some(path) => Some(cgroup::join(&cgroup::cgroup_of(&path)?)?),
                None => None,
            };
            return Ok(Work::Pause {
                stop: CancellationToken::new(),
                cgroup,
            });
        }
        let module = match self.module(&new.id, spec, rootfs).await {
            Err(Error::Bundle(bundle::Error::Native(path))) => {
                return self.native(new, &path, outputs).await;
            }
            module => module?,
        };
        let runtime = engine_runtime(self.runtime()?, spec)?;
        let bytes = module.bytes;
        let program = tokio::task::spawn_blocking(move || runtime.load(&bytes))
            .await
            .map_err(|e| {
                wasmlet_runtime::Error::Compile(format!("the compile task failed: {e}"))
            })??;
        log::info!(
            "loaded {} ({}, from cache: {})",
            module.origin,
            program.digest(),
            program.loaded_from_cache()
        );
        let mut container = bundle::container_spec(spec, rootfs);
        if let Some(argv) = module.argv {
            container.args = argv;
        }
        // Opened at create, as a runc shim opens them, so that the client's ends are open
        // by the time the task starts (see the fifo module for why its end waits for them).
        container.stdio.stdout_tee = open_output("stdout", &new.stdout, outputs)?;
        container.stdio.stderr_tee = open_output("stderr", &new.stderr, outputs)?;
        container.stdio.report_end = true;
        let serve = match program.kind() {
            ProgramKind::HttpComponent => Some(network::http_address(&container.env)?),
            _ => None,
        };
        // A program that cannot reach a network cannot tell which namespace it runs in: none
        // is made for it (a new one costs the kernel about 1.6 ms to make and tear down).
        if program.reaches_network() {
            let sandbox = self
                .sandbox_netns
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            container.network = Some(network::network(spec, bundle, sandbox.as_deref())?);
        }
        Ok(Work::Wasm {
            program,
            spec: Some(Box::new(container)),
            serve,
            container: None,
        })
    }

    /// A native container (its entrypoint `path` is a native executable), created by runc
    /// in the pod's namespaces.
    async fn native(&self, new: &NewTask, path: &str, outputs: &mut fifo::Outputs) -> Result<Work> {
        log::info!("{path} is native: running container {} with runc", new.id);
        let stdio = (
            fifo_stdio("stdout", &new.stdout, outputs)?,
            fifo_stdio("stderr", &new.stderr, outputs)?,
        );
        let sandbox = self
            .sandbox_netns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let (id, bundle) = (new.id.clone(), new.bundle.clone());
        let created = tokio::task::spawn_blocking(move || {
            let root = bundle.join("runc");
            Native::create(&id, &bundle, &root, sandbox.as_deref(), stdio)
        })
        .await
        .map_err(|e| native::Error::Runc {
            action: "create",
            id: new.id.clone(),
            reason: e.to_string(),
        })??;
        Ok(Work::Native(Box::new(created)))
    }

    /// The module of container `id`: the file `process.args[0]` names in its rootfs, else
    /// the wasm layer of its image when that is a wasm artifact.
    async fn module(
        &self,
        id: &str,
        spec: &oci_spec::runtime::Spec,
        rootfs: &Path,
    ) -> Result<Module> {
        let missing = match bundle::entrypoint_module(spec, rootfs) {
            Ok((guest, bytes)) => {
                return Ok(Module {
                    bytes,
                    origin: guest,
                    argv: None,
                });
            }
            Err(err) if err.is_missing_module() => err,
            Err(err) => return Err(err.into()),
        };
        match self.artifact(id).await {
            Ok(Some(artifact)) => Ok(Module {
                origin: format!(
                    "the wasm layer {} of {}",
                    artifact.layer.digest, artifact.image
                ),
                argv: Some(artifact.argv(&bundle::args(spec))),
                bytes: artifact.wasm,
            }),
            Ok(None) => Err(missing.into()),
            Err(artifact::Error::Containerd(source)) => Err(Error::ImageUnreadable {
                missing,
                source: Box::new(source),
            }),
            Err(err) => Err(err.into()),
        }
    }

    /// The wasm artifact container `id` was made from, read from containerd; `None` when
    /// the container has no image or its image is not a wasm artifact.
    async fn artifact(&self, id: &str) -> artifact::Result<Option<Artifact>> {
        let Some(endpoint) = &self.containerd else {
            return Ok(None);
        };
        let client = Containerd::connect(endpoint).await?;
        let Some(image) = client.container_image(id).await? else {
            return Ok(None);
        };
        let target = client.image_target(&image).await?;
        artifact::resolve(&client, &image, &target).await
    }

    /// Starts a created task; `on_exit` runs once it has ended and its output FIFOs were
    /// read out ([`fifo`]), with its exit.
    pub fn start(
        self: &Arc<Self>,
        id: &str,
        on_exit: impl FnOnce(Exit) + Send + 'static,
    ) -> Result<()> {
        let tasks = self.clone();
        let owned = id.to_owned();
        let (ended, outputs) = self.with(id, |task| {
            let next = task.state.start().map_err(|source| Error::State {
                id: owned.clone(),
                source,
            })?;
            let ended = start_work(task, &tasks)?;
            task.state = next;
            Ok((ended, std::mem::take(&mut task.outputs)))
        })?;
        tokio::spawn(async move {
            let status = ended.await;
            outputs.read_out(fifo::READ_OUT).await;
            if let Some(exit) = tasks.finish(&owned, &status) {
                on_exit(exit);
            }
        });
        Ok(())
    }

    /// Records the end of a task; `None` if it was already recorded or deleted.
    fn finish(&self, id: &str, status: &ExitStatus) -> Option<Exit> {
        self.with(id, |task| Ok(finish_task(task, status)))
            .ok()
            .flatten()
    }

    /// Sends `sig` to a task. A created task killed before its start exits at once; the
    /// returned exit is then for the caller to publish.
    pub fn kill(&self, id: &str, sig: u32) -> Result<Option<Exit>> {
        let action = signal::action(sig)?;
        self.with(id, |task| match (action, task.state) {
            (Action::Probe, TaskState::Exited | TaskState::Deleted) => {
                Err(Error::NotFound(format!("{id}: the task has exited")))
            }
            (Action::Probe | Action::Ignore, _) => Ok(None),
            (_, TaskState::Exited | TaskState::Deleted) => Ok(None),
            (_, TaskState::Created) => {
                task.signal = Some(sig);
                let status = ExitStatus::killed(ExitReason::Killed, "killed before start".into());
                Ok(finish_task(task, &status))
            }
            (action, TaskState::Running) => {
                task.signal = Some(sig);
                stop_work(&task.work, action == Action::Kill, sig);
                Ok(None)
            }
        })
    }

    /// Deletes a task that is not running: unmounts its rootfs and returns its exit (an
    /// unstarted task reports 137, as if killed).
    pub fn delete(&self, id: &str) -> Result<Exit> {
        let task = {
            let mut tasks = self.lock();
            let task = tasks.get(id).ok_or_else(|| Error::NotFound(id.into()))?;
            task.state.delete().map_err(|source| Error::State {
                id: id.into(),
                source,
            })?;
            tasks.remove(id).ok_or_else(|| Error::NotFound(id.into()))?
        };
        if let Work::Native(native) = &task.work
            && let Err(err) = native.delete()
        {
            log::warn!("{err}");
        }
        if let Some(m) = &task.mounted {
            rootfs::unmount(m);
        }
        if let Work::Pause {
            cgroup: Some(joined),
            ..
        } = task.work
        {
            joined.leave();
        }
        let own_namespace = task.bundle.join("netns");
        if wasmlet_netns::is_pinned(&own_namespace)
            && let Err(err) = wasmlet_netns::remove(&own_namespace)
        {
            log::warn!("cannot remove the task's network namespace: {err}");
        }
        let exit = *task.exit.borrow();
        Ok(exit.unwrap_or(Exit {
            status: signal::exit_status(libc::SIGKILL as u32),
            at: SystemTime::now(),
            oom: false,
        }))
    }

    /// A receiver of the task's exit, for `wait`.
    pub fn exit_receiver(&self, id: &str) -> Result<watch::Receiver<Option<Exit>>> {
        self.with(id, |task| Ok(task.exit.subscribe()))
    }

    /// A snapshot of the task.
    pub fn info(&self, id: &str) -> Result<TaskInfo> {
        self.with(id, |task| {
            Ok(TaskInfo {
                bundle: task.bundle.clone(),
                stdout: task.stdout.clone(),
                stderr: task.stderr.clone(),
                state: task.state,
                exit: *task.exit.borrow(),
                memory_limit: task.memory_limit,
                pid: match &task.work {
                    Work::Native(native) => native.pid(),
                    _ => std::process::id(),
                },
            })
        })
    }
}

/// The rootfs directory of a bundle: `root.path`, relative to the bundle unless absolute.
fn rootfs_dir(spec: &oci_spec::runtime::Spec, bundle: &Path) -> PathBuf {
    let root = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .unwrap_or_else(|| PathBuf::from("rootfs"));
    bundle.join(root)
}

type Ended = std::pin::Pin<Box<dyn std::future::Future<Output = ExitStatus> + Send>>;

/// Starts what the task runs and returns the future of its end.
fn start_work(task: &mut Task, tasks: &Tasks) -> Result<Ended> {
    match &mut task.work {
        Work::Native(native) => {
            let mut exited = native.exited();
            native.start()?;
            Ok(Box::pin(async move {
                let code = exited.wait_for(Option::is_some).await.ok().and_then(|c| *c);
                ExitStatus::exited(code.unwrap_or(255))
            }))
        }
        Work::Pause { stop, .. } => {
            let stop = stop.clone();
            Ok(Box::pin(async move {
                stop.cancelled().await;
                ExitStatus::killed(ExitReason::Killed, "sandbox stopped".into())
            }))
        }
        Work::Wasm {
            program,
            spec,
            serve,
            container,
        } => {
            let spec = spec.take().map(|s| *s).unwrap_or_default();
            let runtime = tasks.runtime()?;
            let started = match (*serve, &spec.network) {
                (Some(addr), Some(net)) => {
                    let listener = network::listen(net, addr)?;
                    log::info!("serving wasi:http on {addr} in the pod's network");
                    runtime.start_http(program, spec, vec![listener])?
                }
                _ => runtime.start(program, spec)?,
            };
            let started = Arc::new(started);
            *container = Some(started.clone());
            Ok(Box::pin(async move { started.wait().await }))
        }
    }
}

fn stop_work(work: &Work, now: bool, sig: u32) {
    match work {
        Work::Native(native) => {
            if let Err(err) = native.kill(sig) {
                log::warn!("{err}");
            }
        }
        Work::Pause { stop, .. } => stop.cancel(),
        Work::Wasm {
            container: Some(c), ..
        } if now => c.kill(),
        Work::Wasm {
            container: Some(c), ..
        } => c.stop(UNTIL_KILLED),
        Work::Wasm {
            container: None, ..
        } => {}
    }
}

fn finish_task(task: &mut Task, status: &ExitStatus) -> Option<Exit> {
    task.state = task.state.exit().ok()?;
    let exit = Exit {
        status: exit_code(status, task.signal),
        at: SystemTime::now(),
        oom: status.reason == ExitReason::OomKilled,
    };
    task.exit.send_replace(Some(exit));
    Some(exit)
}

/// A FIFO of containerd's opened for a native container's process to write to, watched by
/// `outputs`.
fn fifo_stdio(
    stream: &'static str,
    path: &str,
    outputs: &mut fifo::Outputs,
) -> Result<std::process::Stdio> {
    let file = open_fifo_file(stream, path, false, outputs)?;
    Ok(file.map_or_else(std::process::Stdio::null, Into::into))
}

/// Opens a FIFO containerd made for a wasm container's output, watched by `outputs`.
/// Read-write, so the open does not block when the reader is not there yet (Linux FIFO
/// semantics); the reader sees EOF once the container ends and the files are closed.
fn open_output(
    stream: &'static str,
    path: &str,
    outputs: &mut fifo::Outputs,
) -> Result<Option<Box<dyn std::io::Write + Send + Sync>>> {
    let file = open_fifo_file(stream, path, true, outputs)?;
    Ok(file.map(|f| Box::new(f) as Box<dyn std::io::Write + Send + Sync>))
}

/// Opens the FIFO at `path` for writing (and reading too when `read`), watched by
/// `outputs`; none when containerd gave no path for `stream`.
fn open_fifo_file(
    stream: &'static str,
    path: &str,
    read: bool,
    outputs: &mut fifo::Outputs,
) -> Result<Option<File>> {
    if path.is_empty() {
        return Ok(None);
    }
    let err = |source| Error::Stdio {
        stream,
        path: path.into(),
        source,
    };
    let file = File::options()
        .read(read)
        .write(true)
        .open(path)
        .map_err(err)?;
    outputs.watch(&file).map_err(err)?;
    Ok(Some(file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        let killed = ExitStatus::killed(ExitReason::Killed, String::new());
        assert_eq!(exit_code(&killed, Some(15)), 143);
        assert_eq!(exit_code(&killed, Some(9)), 137);
        assert_eq!(exit_code(&killed, None), 137);
        assert_eq!(exit_code(&ExitStatus::exited(42), Some(15)), 42);
        let oom = ExitStatus::killed(ExitReason::OomKilled, String::new());
        assert_eq!(exit_code(&oom, Some(15)), 137);
        assert_eq!(exit_code(&ExitStatus::trapped(String::new()), None), 134);
    }
}
