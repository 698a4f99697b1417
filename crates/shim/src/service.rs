//! The containerd side: the `Shim` (start/delete actions, grouping by pod) and the task
//! service (the ttrpc Task API v3), with the one mapping of errors to ttrpc status codes.

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use containerd_shim::asynchronous::{ExitSignal, Shim, publisher::RemotePublisher, spawn};
use containerd_shim::{Config, Flags, StartOpts};
use containerd_shim_protos::api::{self, Empty};
use containerd_shim_protos::events::task::{TaskCreate, TaskDelete, TaskExit, TaskOOM, TaskStart};
use containerd_shim_protos::protobuf::MessageDyn;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::shim_async::Task;
use containerd_shim_protos::topics;
use containerd_shim_protos::ttrpc::{self, Code, r#async::TtrpcContext};

use crate::tasks::{self, Exit, NewTask, Tasks};
use crate::{artifact, bundle, containerd, daemon, rootfs, stats};

/// Errors answered to containerd.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A task move failed.
    #[error(transparent)]
    Task(#[from] tasks::Error),
    /// Statistics could not be read.
    #[error(transparent)]
    Stats(#[from] stats::Error),
    /// `exec` was asked for.
    #[error(
        "exec is not supported for wasm containers: a WebAssembly module is not a process one can enter"
    )]
    Exec,
    /// An exec id was given where only the task itself exists.
    #[error("exec process {0} not found: wasm containers have no exec processes")]
    NoExec(String),
    /// Encoding an answer failed.
    #[error("cannot encode the answer: {0}")]
    Encode(String),
}

impl Error {
    /// The ttrpc status code containerd turns into its error kind.
    pub fn code(&self) -> Code {
        use wasmlet_runtime::Error as R;
        match self {
            Error::Task(tasks::Error::NotFound(_)) | Error::NoExec(_) => Code::NOT_FOUND,
            Error::Task(tasks::Error::AlreadyExists(_)) => Code::ALREADY_EXISTS,
            Error::Task(tasks::Error::State { .. }) => Code::FAILED_PRECONDITION,
            Error::Task(tasks::Error::Terminal | tasks::Error::Signal(_)) => Code::INVALID_ARGUMENT,
            Error::Task(tasks::Error::Bundle(bundle::Error::Read { .. })) => Code::INTERNAL,
            Error::Task(tasks::Error::Bundle(_)) => Code::INVALID_ARGUMENT,
            Error::Task(tasks::Error::Runtime(
                R::NotWasm(_)
                | R::Compile(_)
                | R::UnsupportedImport { .. }
                | R::NoEntryPoint(_)
                | R::Link(_)
                | R::Preopen { .. },
            )) => Code::INVALID_ARGUMENT,
            Error::Task(tasks::Error::Artifact(err)) => artifact_code(err),
            Error::Task(tasks::Error::ImageUnreadable { .. }) => Code::UNAVAILABLE,
            Error::Exec => Code::UNIMPLEMENTED,
            _ => Code::INTERNAL,
        }
    }
}

/// A wasm artifact's problem: the image's fault is an invalid argument, a corrupt store is
/// data loss, containerd failing is unavailable.
fn artifact_code(err: &artifact::Error) -> Code {
    match err {
        artifact::Error::Containerd(_) => Code::UNAVAILABLE,
        artifact::Error::Corrupt { .. } => Code::DATA_LOSS,
        _ => Code::INVALID_ARGUMENT,
    }
}

impl From<Error> for ttrpc::Error {
    fn from(err: Error) -> ttrpc::Error {
        log::warn!("{err}");
        ttrpc::Error::RpcStatus(ttrpc::get_status(err.code(), err.to_string()))
    }
}

type TtrpcResult<T> = ttrpc::Result<T>;

fn task_err(err: tasks::Error) -> ttrpc::Error {
    Error::Task(err).into()
}

/// The shim process: containerd's `start` and `delete` actions, then the serving process.
pub struct WasmShim {
    exit: Arc<ExitSignal>,
    namespace: String,
    containerd: containerd::Endpoint,
}

#[async_trait]
impl Shim for WasmShim {
    type T = TaskService;

    async fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        WasmShim {
            exit: Arc::new(ExitSignal::default()),
            namespace: args.namespace.clone(),
            containerd: containerd::Endpoint::new(&args.address, &args.namespace),
        }
    }

    /// Starts (or reuses) the shim of the container's pod: containers are grouped by their
    /// sandbox id, so a pod costs one shim process. The working directory is the bundle.
    ///
    /// The serving process is a fork of this one ([`daemon`]) when that is safe, else a new
    /// execution of the binary (the `containerd-shim` crate's `spawn`).
    async fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        let spec = bundle::load(Path::new(".")).ok();
        let grouping = spec
            .as_ref()
            .map_or_else(|| opts.id.clone(), |spec| bundle::group(spec, &opts.id));
        let address = opts.socket_address(&grouping);
        let failed = |e: daemon::Error| containerd_shim::Error::Other(e.to_string());
        match daemon::bind(&address).map_err(failed)? {
            daemon::Bound::Serving => {
                // As the crate records a shim it found serving: the bundle's `address` file.
                let _ = std::fs::write("address", &address);
                return Ok(address);
            }
            daemon::Bound::New(listener) => {
                let cgroups_path = spec.as_ref().and_then(bundle::cgroups_path);
                if daemon::fork_server(&opts, listener, cgroups_path.as_deref())
                    .map_err(failed)?
                    .is_some()
                {
                    return Ok(address);
                }
            }
        }
        // The crate's serving process binds the socket itself: leave it none to find.
        let _ = std::fs::remove_file(daemon::socket_path(&address));
        spawn(opts, &grouping, Vec::new()).await
    }

    /// Cleans up after a shim that died: unmounts the bundle's rootfs.
    async fn delete_shim(&mut self) -> containerd_shim::Result<api::DeleteResponse> {
        Ok(delete_dead_shim())
    }

    async fn wait(&mut self) {
        self.exit.wait().await;
    }

    async fn create_task_service(&self, publisher: RemotePublisher) -> TaskService {
        let tasks = Arc::new(Tasks::new(self.containerd.clone()));
        tasks.prewarm();
        TaskService {
            tasks,
            events: Arc::new(Events {
                publisher,
                namespace: self.namespace.clone(),
            }),
            exit: self.exit.clone(),
        }
    }
}

/// containerd's `delete` action, run in the bundle after its shim is gone: unmounts the
/// bundle's rootfs and answers that the task was killed.
pub fn delete_dead_shim() -> api::DeleteResponse {
    rootfs::unmount(Path::new("rootfs"));
    api::DeleteResponse {
        exit_status: 128 + libc::SIGKILL as u32,
        exited_at: Some(timestamp(SystemTime::now())).into(),
        ..Default::default()
    }
}

/// Publishes task events to containerd.
struct Events {
    publisher: RemotePublisher,
    namespace: String,
}

impl Events {
    async fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
        let ctx = ttrpc::context::Context::default();
        if let Err(err) = self
            .publisher
            .publish(ctx, topic, &self.namespace, event)
            .await
        {
            log::warn!("cannot publish {topic}: {err}");
        }
    }

    async fn exited(&self, id: &str, exit: Exit) {
        if exit.oom {
            let oom = TaskOOM {
                container_id: id.into(),
                ..Default::default()
            };
            self.publish(topics::TASK_OOM_EVENT_TOPIC, Box::new(oom))
                .await;
        }
        let event = TaskExit {
            container_id: id.into(),
            id: id.into(),
            pid: std::process::id(),
            exit_status: exit.status,
            exited_at: Some(timestamp(exit.at)).into(),
            ..Default::default()
        };
        self.publish(topics::TASK_EXIT_EVENT_TOPIC, Box::new(event))
            .await;
    }
}

/// The ttrpc task service of one shim process.
#[derive(Clone)]
pub struct TaskService {
    tasks: Arc<Tasks>,
    events: Arc<Events>,
    exit: Arc<ExitSignal>,
}

fn timestamp(at: SystemTime) -> Timestamp {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(since.subsec_nanos()).unwrap_or(0),
        ..Default::default()
    }
}

fn no_exec(exec_id: &str) -> TtrpcResult<()> {
    if exec_id.is_empty() {
        Ok(())
    } else {
        Err(Error::NoExec(exec_id.into()).into())
    }
}

#[async_trait]
impl Task for TaskService {
    async fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        let new = NewTask {
            id: req.id.clone(),
            bundle: req.bundle.clone().into(),
            mounts: req.rootfs.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        self.tasks.create(new).await.map_err(task_err)?;
        let pid = self.tasks.info(&req.id).map_err(task_err)?.pid;
        let event = TaskCreate {
            container_id: req.id,
            bundle: req.bundle,
            rootfs: req.rootfs,
            pid,
            ..Default::default()
        };
        self.events
            .publish(topics::TASK_CREATE_EVENT_TOPIC, Box::new(event))
            .await;
        Ok(api::CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    async fn start(
        &self,
        _ctx: &TtrpcContext,
        req: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        no_exec(&req.exec_id)?;
        let events = self.events.clone();
        let id = req.id.clone();
        let on_exit = move |exit| {
            tokio::spawn(async move { events.exited(&id, exit).await });
        };
        self.tasks.start(&req.id, on_exit).map_err(task_err)?;
        let pid = self.tasks.info(&req.id).map_err(task_err)?.pid;
        let event = TaskStart {
            container_id: req.id,
            pid,
            ..Default::default()
        };
        self.events
            .publish(topics::TASK_START_EVENT_TOPIC, Box::new(event))
            .await;
        Ok(api::StartResponse {
            pid,
            ..Default::default()
        })
    }

    async fn state(
        &self,
        _ctx: &TtrpcContext,
        req: api::StateRequest,
    ) -> TtrpcResult<api::StateResponse> {
        no_exec(&req.exec_id)?;
        let info = self.tasks.info(&req.id).map_err(task_err)?;
        Ok(api::StateResponse {
            id: req.id,
            bundle: info.bundle.to_string_lossy().into_owned(),
            pid: info.pid,
            status: info.state.status().into(),
            stdout: info.stdout,
            stderr: info.stderr,
            exit_status: info.exit.map_or(0, |e| e.status),
            exited_at: info.exit.map(|e| timestamp(e.at)).into(),
            ..Default::default()
        })
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<Empty> {
        no_exec(&req.exec_id)?;
        if let Some(exit) = self.tasks.kill(&req.id, req.signal).map_err(task_err)? {
            self.events.exited(&req.id, exit).await;
        }
        Ok(Empty::new())
    }

    async fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        no_exec(&req.exec_id)?;
        let exit = self.tasks.delete(&req.id).map_err(task_err)?;
        let event = TaskDelete {
            container_id: req.id.clone(),
            id: req.id,
            pid: std::process::id(),
            exit_status: exit.status,
            exited_at: Some(timestamp(exit.at)).into(),
            ..Default::default()
        };
        self.events
            .publish(topics::TASK_DELETE_EVENT_TOPIC, Box::new(event))
            .await;
        Ok(api::DeleteResponse {
            pid: std::process::id(),
            exit_status: exit.status,
            exited_at: Some(timestamp(exit.at)).into(),
            ..Default::default()
        })
    }

    async fn wait(
        &self,
        _ctx: &TtrpcContext,
        req: api::WaitRequest,
    ) -> TtrpcResult<api::WaitResponse> {
        no_exec(&req.exec_id)?;
        let mut rx = self.tasks.exit_receiver(&req.id).map_err(task_err)?;
        let exit = match rx.wait_for(Option::is_some).await {
            Ok(exit) => *exit,
            Err(_) => None,
        };
        let exit = exit.ok_or_else(|| task_err(tasks::Error::NotFound(req.id.clone())))?;
        Ok(api::WaitResponse {
            exit_status: exit.status,
            exited_at: Some(timestamp(exit.at)).into(),
            ..Default::default()
        })
    }

    async fn pids(
        &self,
        _ctx: &TtrpcContext,
        req: api::PidsRequest,
    ) -> TtrpcResult<api::PidsResponse> {
        let info = self.tasks.info(&req.id).map_err(task_err)?;
        let mut processes = Vec::new();
        if info.state == crate::state::TaskState::Running {
            processes.push(api::ProcessInfo {
                pid: info.pid,
                ..Default::default()
            });
        }
        Ok(api::PidsResponse {
            processes,
            ..Default::default()
        })
    }

    async fn stats(
        &self,
        _ctx: &TtrpcContext,
        req: api::StatsRequest,
    ) -> TtrpcResult<api::StatsResponse> {
        let info = self.tasks.info(&req.id).map_err(task_err)?;
        let usage = stats::of_process(info.pid).map_err(Error::from)?;
        let metrics = stats::metrics(usage, info.memory_limit);
        let any = containerd_shim::util::convert_to_any(Box::new(metrics))
            .map_err(|e| Error::Encode(e.to_string()))?;
        Ok(api::StatsResponse {
            stats: Some(any).into(),
            ..Default::default()
        })
    }

    async fn exec(&self, _ctx: &TtrpcContext, _req: api::ExecProcessRequest) -> TtrpcResult<Empty> {
        Err(Error::Exec.into())
    }

    async fn close_io(&self, _ctx: &TtrpcContext, _req: api::CloseIORequest) -> TtrpcResult<Empty> {
        // A wasm container gets no stdin, so there is nothing to close.
        Ok(Empty::new())
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        })
    }

    /// Ends the shim once its last task is deleted (containerd asks after every delete).
    async fn shutdown(&self, _ctx: &TtrpcContext, req: api::ShutdownRequest) -> TtrpcResult<Empty> {
        if req.now || self.tasks.is_empty() {
            self.exit.signal();
        }
        Ok(Empty::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unreachable() -> artifact::Error {
        artifact::Error::Containerd(containerd::Error::Connect {
            address: "/run/containerd/containerd.sock".into(),
            reason: "x".into(),
        })
    }

    #[test]
    fn error_codes() {
        let cases = [
            (
                Error::Task(tasks::Error::NotFound("x".into())),
                Code::NOT_FOUND,
            ),
            (Error::NoExec("e".into()), Code::NOT_FOUND),
            (
                Error::Task(tasks::Error::AlreadyExists("x".into())),
                Code::ALREADY_EXISTS,
            ),
            (
                Error::Task(tasks::Error::State {
                    id: "x".into(),
                    source: crate::state::TaskState::Running.delete().unwrap_err(),
                }),
                Code::FAILED_PRECONDITION,
            ),
            (Error::Task(tasks::Error::Terminal), Code::INVALID_ARGUMENT),
            (
                Error::Task(tasks::Error::Bundle(bundle::Error::Native(
                    "/bin/sh".into(),
                ))),
                Code::INVALID_ARGUMENT,
            ),
            (Error::Exec, Code::UNIMPLEMENTED),
            (Error::Encode("x".into()), Code::INTERNAL),
            (
                Error::Task(tasks::Error::Artifact(artifact::Error::NotWasm {
                    image: "i".into(),
                    digest: wasmlet_oci::Digest::of(b""),
                    media_type: "application/wasm".into(),
                    reason: "x".into(),
                })),
                Code::INVALID_ARGUMENT,
            ),
            (
                Error::Task(tasks::Error::Artifact(artifact::Error::Corrupt {
                    image: "i".into(),
                    what: "wasm layer",
                    digest: wasmlet_oci::Digest::of(b""),
                    found: "x".into(),
                })),
                Code::DATA_LOSS,
            ),
            (
                Error::Task(tasks::Error::Artifact(unreachable())),
                Code::UNAVAILABLE,
            ),
            (
                Error::Task(tasks::Error::ImageUnreadable {
                    missing: bundle::Error::NoEntrypoint,
                    source: Box::new(containerd::Error::Namespace("x".into())),
                }),
                Code::UNAVAILABLE,
            ),
        ];
        for (err, code) in cases {
            assert_eq!(err.code(), code, "{err}");
        }
        let status = match ttrpc::Error::from(Error::Exec) {
            ttrpc::Error::RpcStatus(s) => s,
            other => panic!("{other:?}"),
        };
        assert!(
            status
                .message
                .starts_with("exec is not supported for wasm containers")
        );
    }
}
