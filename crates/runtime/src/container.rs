//! Running one container: a store per instance, the WASI context from the spec, the
//! supervision of stop requests, deadlines and memory, and the exit status.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder, WasiView};

use crate::cpu::Throttle;
use crate::exit::{ExitReason, ExitStatus};
use crate::log::{OutputSink, SharedSink, Stream};
use crate::program::{Code, CodeUse, Pre, Program};
use crate::runtime::{Error, Result, describe};
use crate::sockets::Network;
use crate::spec::{ContainerSpec, Limits};
use crate::state::{ComponentState, Control, MemoryLimiter, ModuleState, PodHttpHooks, StopCause};
use crate::usage::{Meter, Metered, Usage};
use crate::wasmtime_engine::Wasmtime;

/// A running (or finished) container: a command running to its end, or a `wasi:http`
/// server serving until stopped. Dropping it does not stop the guest: call
/// [`Container::kill`] or [`Container::stop`].
pub struct Container {
    control: Arc<Control>,
    status: watch::Receiver<Option<ExitStatus>>,
    /// Set for a `wasi:http` server: cancelling it stops the server gracefully.
    shutdown: Option<CancellationToken>,
    meter: Arc<Meter>,
    code: Arc<Code>,
}

/// The longest a WASI command or module is given to end by itself after a stop request
/// (see [`Container::stop`]).
pub const COMMAND_STOP_GRACE: Duration = Duration::from_secs(1);

impl Container {
    /// Asks the guest to stop, as the kubelet's stop (SIGTERM, then SIGKILL after `grace`)
    /// works on a process. Must be called within a tokio runtime.
    /// - A `wasi:http` server stops accepting at once, lets the requests in flight finish and
    ///   ends with exit code 0; whatever still runs after `grace` is killed (137, `Killed`).
    /// - A command or module cannot observe SIGTERM (WASI has no signals), so it is not kept
    ///   for a grace period it cannot use: it may end by itself within
    ///   [`COMMAND_STOP_GRACE`] (or `grace`, if shorter), e.g. writing its last output, then
    ///   it ends as a process does on SIGTERM ([`TERMINATED_EXIT_CODE`](crate::TERMINATED_EXIT_CODE), 143).
    /// - A `grace` of zero is a kill (137, `Killed`).
    pub fn stop(&self, grace: Duration) {
        if grace.is_zero() {
            return self.kill();
        }
        let control = self.control.clone();
        let (wait, cause) = match &self.shutdown {
            Some(shutdown) => {
                shutdown.cancel();
                (grace, StopCause::Killed)
            }
            None => (grace.min(COMMAND_STOP_GRACE), StopCause::Terminated),
        };
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            control.stop(cause);
        });
    }

    /// Kills the guest now: a guest running wasm is interrupted at the next epoch tick, one
    /// waiting in the host (e.g. sleeping) is dropped at once.
    pub fn kill(&self) {
        if let Some(shutdown) = &self.shutdown {
            shutdown.cancel();
        }
        self.control.stop(StopCause::Killed);
    }

    /// What the container uses now (see [`Usage`]): cheap, a few atomic loads. A `wasi:http`
    /// container sums the CPU of all its requests and the memory of those in flight.
    pub fn usage(&self) -> Usage {
        let mut usage = self.meter.usage();
        if self.status.borrow().is_none() {
            usage.code_bytes = self.code.share();
        }
        usage
    }

    /// The exit status, once the container has ended.
    pub fn status(&self) -> Option<ExitStatus> {
        self.status.borrow().clone()
    }

    /// Waits for the container to end and returns its exit status.
    pub async fn wait(&self) -> ExitStatus {
        let mut rx = self.status.clone();
        match rx.wait_for(Option::is_some).await {
            Ok(status) => status.clone().unwrap_or_else(lost_status),
            Err(_) => lost_status(),
        }
    }
}

/// Runs a container's task and publishes its exit status; the container uses `program`'s
/// code until its task ends.
pub(crate) fn spawn_container(
    program: &Program,
    control: Arc<Control>,
    shutdown: Option<CancellationToken>,
    meter: Arc<Meter>,
    run: impl Future<Output = ExitStatus> + Send + 'static,
) -> Container {
    let (tx, rx) = watch::channel(None);
    let using = CodeUse::new(program.code.clone());
    tokio::spawn(async move {
        let status = run.await;
        drop(using);
        let _ = tx.send(Some(status));
    });
    Container {
        control,
        status: rx,
        shutdown,
        meter,
        code: program.code.clone(),
    }
}

/// How a server ended by itself: stopped (0) or unable to accept (1).
fn served_status(served: Result<()>) -> ExitStatus {
    match served {
        Ok(()) => ExitStatus {
            message: "stopped serving HTTP".into(),
            ..ExitStatus::exited(0)
        },
        Err(err) => ExitStatus {
            message: err.to_string(),
            ..ExitStatus::exited(1)
        },
    }
}

/// A command's output once it has ended: dropped if it was stopped, its end reported (if
/// `report_end`), the log flushed and the tees drained.
pub(crate) async fn finish_output(
    sink: &SharedSink,
    control: &Control,
    report_end: bool,
    status: &ExitStatus,
) {
    sink.discard_if_stopped(control);
    if report_end {
        report(sink, status);
    }
    if let Err(err) = sink.lock().finish() {
        tracing::warn!("cannot flush the container log: {err}");
    }
    sink.drain(control).await;
}

/// Writes why a guest that trapped or passed a limit ended, as the last line of its stderr.
fn report(sink: &SharedSink, status: &ExitStatus) {
    // An exit is the guest's own doing, a kill the caller's: each knows why.
    if matches!(
        status.reason,
        ExitReason::Completed | ExitReason::Error | ExitReason::Killed
    ) {
        return;
    }
    let mut sink = sink.lock();
    let line = format!(
        "wasmlet: {} (exit code {}): {}\n",
        status.reason, status.code, status.message
    );
    // Unterminated guest output stays on its own line.
    let result = sink
        .end_line(Stream::Stderr)
        .and_then(|()| sink.write(Stream::Stderr, line.as_bytes()));
    if let Err(err) = result {
        tracing::warn!("cannot write the container's end to its log: {err}");
    }
}

pub(crate) fn lost_status() -> ExitStatus {
    ExitStatus::trapped("the container's task ended without reporting a status".into())
}

impl Wasmtime {
    /// Starts a container of `program` as a task on the current tokio runtime and returns at
    /// once. Must be called within a tokio runtime.
    pub(crate) fn start(&self, program: &Program, spec: ContainerSpec) -> Result<Container> {
        let deadline = spec.limits.timeout.map(|t| Instant::now() + t);
        let control = Arc::new(Control::new(deadline, crate::budget::of(&spec.limits)));
        let mut builder = wasi_builder(&spec)?;
        let report_end = spec.stdio.report_end;
        let sink = SharedSink::new(OutputSink::new(spec.stdio)?);
        let network = spec.network.clone().filter(|_| program.reaches_network());
        let namespace = network.as_ref().and_then(|n| n.namespace.clone());
        if let Some(network) = network.clone() {
            network.grant(&mut builder, sink.clone());
        }
        let meter = Arc::new(Meter::default());
        let limiter = MemoryLimiter::new(spec.limits.memory_bytes, control.clone(), meter.clone());
        let run = self.instance_future(
            program,
            builder,
            &sink,
            &spec.limits,
            &control,
            (limiter, network.as_ref()),
        )?;
        let run = Metered::new(run, meter.clone());
        let task_control = control.clone();
        let task = async move {
            let status = supervise(run, &task_control).await;
            finish_output(&sink, &task_control, report_end, &status).await;
            status
        };
        let task = Network::polled(namespace, task, |err| {
            ExitStatus::trapped(format!("cannot run in the pod's network namespace: {err}"))
        });
        Ok(spawn_container(program, control, None, meter, task))
    }

    /// Starts serving `program` (a `wasi:http/incoming-handler` component) on every one of
    /// `listeners` as a container, and returns at once; a program of another kind is refused.
    /// Each request gets a fresh instance built from `spec` (`limits.timeout` bounds each
    /// request) and all instances' output goes to `spec.stdio`. The container runs until
    /// [`Container::stop`] (exit code 0, `Completed`) or [`Container::kill`] (137, `Killed`);
    /// if accepting fails it ends with exit code 1 (`Error`) and the error as its message.
    /// Must be called within a tokio runtime.
    pub(crate) fn start_http(
        &self,
        program: &Program,
        spec: ContainerSpec,
        listeners: Vec<TcpListener>,
    ) -> Result<Container> {
        // The server's set-up is the container's first CPU time: an idle server that has not
        // served yet still reports it used some (metrics-server drops a container at zero).
        let began = crate::usage::thread_cpu_time();
        let budget = crate::budget::of(&spec.limits);
        let handler = self.http_handler(program, spec)?;
        let meter = handler.meter();
        meter.add_cpu(crate::usage::thread_cpu_time().saturating_sub(began));
        let control = Arc::new(Control::new(None, budget));
        let shutdown = CancellationToken::new();
        let serve = crate::http::serve(handler.clone(), listeners, shutdown.clone());
        let task_control = control.clone();
        let run = async move {
            let status = tokio::select! {
                served = serve => served_status(served),
                () = task_control.stopped() => classify(None, &task_control),
            };
            handler.finish_log();
            status
        };
        Ok(spawn_container(
            program,
            control,
            Some(shutdown),
            meter,
            run,
        ))
    }

    fn instance_future(
        &self,
        program: &Program,
        mut builder: WasiCtxBuilder,
        sink: &SharedSink,
        limits: &Limits,
        control: &Arc<Control>,
        (limiter, network): (MemoryLimiter, Option<&Network>),
    ) -> Result<std::pin::Pin<Box<dyn Future<Output = wasmtime::Result<i32>> + Send>>> {
        builder
            .stdout(sink.stream(Stream::Stdout))
            .stderr(sink.stream(Stream::Stderr));
        let current = self.linked(program)?.current();
        let engine = current.engine();
        match &*current {
            Pre::Module(pre) => {
                let mut state = ModuleState { wasi: builder.build_p1(), limiter };
                crate::budget::apply(state.wasi.ctx().table, crate::budget::of(limits));
                let mut store = self.new_store(engine, state, limits, control)?;
                store.limiter(|s| &mut s.limiter);
                Ok(Box::pin(run_module(pre.clone(), store)))
            }
            Pre::Command(pre) => {
                let mut state = self.component_state(builder, limiter, network);
                crate::budget::apply(&mut state.table, crate::budget::of(limits));
                let mut store = self.new_store(engine, state, limits, control)?;
                store.limiter(|s| &mut s.limiter);
                Ok(Box::pin(run_command(pre.clone(), store)))
            }
            Pre::Http(_) => Err(Error::NoEntryPoint(
                "this is a wasi:http component: serve it (Runtime::start_http or Runtime::serve_http, `wasmlet run --listen`) instead of running it".into(),
            )),
        }
    }

    /// A component's store data; with a `network`, its name lookups and outgoing
    /// `wasi:http` requests are the pod's (its resolver, its namespace).
    pub(crate) fn component_state(
        &self,
        mut builder: WasiCtxBuilder,
        limiter: MemoryLimiter,
        network: Option<&Network>,
    ) -> ComponentState {
        let namespace = network.and_then(|n| n.namespace.clone());
        let resolver = network.and_then(|n| n.dns.clone());
        ComponentState {
            wasi: builder.build(),
            table: wasmtime::component::ResourceTable::new(),
            http: wasmtime_wasi_http::WasiHttpCtx::new(),
            hooks: PodHttpHooks {
                namespace,
                resolver: resolver.clone(),
            },
            names: crate::lookup::NameLookup {
                allowed: network.is_some(),
                resolver,
            },
            limiter,
        }
    }

    /// A store of `engine` (its program's: Cranelift's or the baseline's) whose epoch callback yields to tokio every tick and interrupts the guest once
    /// it must stop; with fuel set when the runtime meters fuel.
    pub(crate) fn new_store<T: 'static>(
        &self,
        engine: &wasmtime::Engine,
        data: T,
        limits: &Limits,
        control: &Arc<Control>,
    ) -> Result<Store<T>> {
        let mut store = Store::new(engine, data);
        store.set_epoch_deadline(1);
        let control = control.clone();
        let tick = self.inner.config.epoch_tick;
        let mut throttle = limits
            .cpu_millis
            .map(|millis| Throttle::new(millis, tick, std::time::Instant::now()));
        store.epoch_deadline_callback(move |_| {
            if control.must_stop() {
                return Ok(UpdateDeadline::Interrupt);
            }
            let parked = throttle
                .as_mut()
                .and_then(|t| t.on_tick(std::time::Instant::now()));
            Ok(match parked {
                Some(until) => {
                    let until = tokio::time::Instant::from_std(until);
                    UpdateDeadline::YieldCustom(1, Box::pin(tokio::time::sleep_until(until)))
                }
                None => UpdateDeadline::Yield(1),
            })
        });
        self.set_fuel(&mut store, limits.fuel)?;
        Ok(store)
    }

    fn set_fuel<T>(&self, store: &mut Store<T>, fuel: Option<u64>) -> Result<()> {
        if !self.inner.config.fuel {
            return match fuel {
                Some(_) => Err(Error::Instantiate(
                    "a fuel limit was given but the runtime does not meter fuel (set RuntimeConfig::fuel)".into(),
                )),
                None => Ok(()),
            };
        }
        store
            .set_fuel(fuel.unwrap_or(u64::MAX))
            .map_err(|e| Error::Instantiate(describe(&e)))
    }
}

/// The WASI context of a container: argv, env, working directory, preopens.
pub(crate) fn wasi_builder(spec: &ContainerSpec) -> Result<WasiCtxBuilder> {
    check_preopens(spec)?;
    wasi_builder_checked(spec)
}

/// Refuses a spec whose preopened host paths are not directories (see [`crate::spec::Preopen::check`]).
pub(crate) fn check_preopens(spec: &ContainerSpec) -> Result<()> {
    spec.preopens.iter().try_for_each(|preopen| preopen.check())
}

/// [`wasi_builder`] for a spec whose preopens were checked already (a wasi:http server's,
/// once for all its requests): a directory gone since still fails, by the open's error.
pub(crate) fn wasi_builder_checked(spec: &ContainerSpec) -> Result<WasiCtxBuilder> {
    let mut builder = WasiCtxBuilder::new();
    builder.args(&spec.args).envs(&spec.env);
    if let Some(cwd) = &spec.working_dir {
        builder.initial_cwd(cwd);
    }
    for preopen in &spec.preopens {
        let perms = if preopen.read_only {
            FsPerms::ReadOnly
        } else {
            FsPerms::ReadWrite
        };
        builder
            .preopened_dir(&preopen.host, &preopen.guest, perms)
            .map_err(|e| preopen.error(describe(&e)))?;
    }
    Ok(builder)
}

async fn run_module(
    pre: wasmtime::InstancePre<ModuleState>,
    mut store: Store<ModuleState>,
) -> wasmtime::Result<i32> {
    let instance = pre.instantiate_async(&mut store).await?;
    let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
    start.call_async(&mut store, ()).await?;
    Ok(0)
}

async fn run_command(
    pre: wasmtime_wasi::p2::bindings::CommandPre<ComponentState>,
    mut store: Store<ComponentState>,
) -> wasmtime::Result<i32> {
    let command = pre.instantiate_async(&mut store).await?;
    let result = command.wasi_cli_run().call_run(&mut store).await?;
    Ok(if result.is_ok() { 0 } else { 1 })
}

/// Drives the guest until it ends, is stopped, or passes its deadline.
async fn supervise(
    run: impl Future<Output = wasmtime::Result<i32>>,
    control: &Control,
) -> ExitStatus {
    let deadline = async {
        match control.deadline {
            Some(at) => tokio::time::sleep_until(at.into()).await,
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        outcome = run => Some(outcome),
        () = control.stopped() => None,
        () = deadline => {
            control.stop(StopCause::Deadline);
            None
        }
    };
    classify(outcome, control)
}

fn classify(outcome: Option<wasmtime::Result<i32>>, control: &Control) -> ExitStatus {
    if let Some(Ok(code)) = outcome {
        return ExitStatus::exited(code);
    }
    if let Some(cause) = control.cause() {
        let refusal = match outcome {
            Some(Err(err)) => Some(describe(&err)),
            _ => None,
        };
        return stopped_status(cause, refusal);
    }
    match outcome {
        Some(Err(err)) => match err.downcast_ref::<I32Exit>() {
            Some(exit) => ExitStatus::exited(exit.0),
            None => ExitStatus::trapped(crate::budget::describe_trap(&err, control.descriptors)),
        },
        _ => lost_status(),
    }
}

/// The status of a guest the host stopped for `cause`; `refusal` is why the memory limit
/// refused it, for `OutOfMemory`.
pub(crate) fn stopped_status(cause: StopCause, refusal: Option<String>) -> ExitStatus {
    let message = match (cause, refusal) {
        (StopCause::OutOfMemory, Some(refusal)) => refusal,
        (StopCause::OutOfMemory, _) => "memory limit exceeded".into(),
        (StopCause::Deadline, _) => "the container ran past its timeout and was killed".into(),
        (StopCause::Killed, _) => "the container was killed by a stop request".into(),
        (StopCause::Terminated, _) => {
            return ExitStatus::terminated(
                "stopped: a WASI program cannot observe SIGTERM, so it ended as a process \
                 does on SIGTERM"
                    .into(),
            );
        }
    };
    ExitStatus::killed(cause.reason(), message)
}
