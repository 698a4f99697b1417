//! A container's runs: its image resolved and compiled (once per worker), its plan, the run
//! started (a command, or a `wasi:http` server on its ports) and ended; set-up failures shown
//! with their back-off, as the kubelet shows them.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use wasmlet_pod::k8s_openapi::api::core::v1::Pod;
use wasmlet_pod::k8s_openapi::jiff::{SignedDuration, Timestamp};
use wasmlet_pod::plan::CREATE_CONTAINER_CONFIG_ERROR;
use wasmlet_pod::{ExitFacts, ImageConfig, PlanContext, RunState, Termination};
use wasmlet_runtime::log::Stream;
use wasmlet_runtime::{
    ContainerSpec, EngineKind, ExitStatus, Limits, LogConfig, Program, ProgramKind, Runtime, Stdio,
};

use super::{CONTAINER_CREATING, Wake, Worker};
use crate::events;
use crate::image::{ImageRequest, PullPolicy, WasmSource};
use crate::net;
use crate::serving;
use crate::volumes;

/// The waiting reason of a container that could not be started.
const RUN_CONTAINER_ERROR: &str = "RunContainerError";

/// A container's exit, sent by its waiter task.
pub(super) struct Exit {
    pub(super) index: usize,
    pub(super) run: u64,
    pub(super) status: ExitStatus,
}

/// Why a container could not be started (reported as its waiting state).
pub(super) struct SetupFailure {
    pub(super) reason: String,
    pub(super) message: String,
}

pub(super) fn setup_failure(reason: &str, message: impl ToString) -> SetupFailure {
    SetupFailure {
        reason: reason.to_owned(),
        message: message.to_string(),
    }
}

impl SetupFailure {
    /// What the `Failed` event says after `Error: `: the waiting reason for an image
    /// problem, else the error's text, as the kubelet words it; nothing when the start was
    /// only given up because the pod is stopping.
    fn event_detail(&self) -> Option<&str> {
        match self.reason.as_str() {
            CONTAINER_CREATING => None,
            wasmlet_pod::status::ERR_IMAGE_PULL | "ErrImageNeverPull" | "InvalidImageName" => {
                Some(&self.reason)
            }
            _ => Some(&self.message),
        }
    }
}

/// An image ready to run.
#[derive(Clone)]
pub(super) struct Prepared {
    program: Program,
    config: ImageConfig,
    image_id: String,
}

impl Worker {
    /// Starts a container unless its last set-up failure is still in back-off; whether it
    /// is running.
    pub(super) async fn start(&mut self, index: usize, wake: &mut Wake) -> bool {
        let now = self.clock.now();
        if self.setup_backing_off(index, now, wake) {
            return false;
        }
        match self.launch(index).await {
            Ok(()) => {
                self.records[index].setup.failed = None;
                true
            }
            Err(failure) => {
                let record = &mut self.records[index];
                tracing::warn!(container = %record.spec.name, "{}: {}", failure.reason, failure.message);
                if let Some(detail) = failure.event_detail() {
                    self.events
                        .push(Some(&record.spec.name), events::failed(detail));
                }
                record.state = RunState::waiting(&failure.reason, Some(failure.message.clone()));
                let setup = &mut record.setup;
                setup.back_off = setup.back_off.after_restart(now, now);
                if let Some(until) = setup.back_off.waiting_until(now, now) {
                    wake.at(until);
                }
                // A pass soon after shows the back-off (`ImagePullBackOff` after
                // `ErrImagePull`), as the kubelet's next sync of the pod does.
                if let Ok(soon) = now.checked_add(SignedDuration::from_secs(1)) {
                    wake.at(soon);
                }
                setup.failed = Some((now, failure));
                false
            }
        }
    }

    /// Whether the container's last set-up failure is still in back-off (then it shows the
    /// back-off, told once per failure for an image pull).
    fn setup_backing_off(&mut self, index: usize, now: Timestamp, wake: &mut Wake) -> bool {
        let record = &mut self.records[index];
        let Some((at, failure)) = &record.setup.failed else {
            return false;
        };
        let Some(until) = record.setup.back_off.waiting_until(*at, now) else {
            return false;
        };
        let image = record.spec.image.as_deref().unwrap_or_default();
        record.state = backing_off(failure, image);
        wake.at(until);
        let pull = failure.reason == wasmlet_pod::status::ERR_IMAGE_PULL;
        if pull && record.setup.told != Some(*at) {
            record.setup.told = Some(*at);
            let name = Some(record.spec.name.as_str());
            self.events.push(name, events::pull_back_off(image));
            let back_off = events::failed(wasmlet_pod::status::IMAGE_PULL_BACK_OFF);
            self.events.push(name, back_off);
        }
        true
    }

    /// Resolves, plans and starts one run of a container.
    async fn launch(&mut self, index: usize) -> Result<(), SetupFailure> {
        let prepared = self.prepare_image(index).await?;
        let record = &self.records[index];
        let context = PlanContext {
            pod: &self.pod,
            objects: &self.objects,
            node: &self.node,
        };
        let plan = context
            .plan(&record.spec, &prepared.config)
            .map_err(|e| setup_failure(e.reason(), e))?;
        let volumes = self.volumes.as_ref().ok_or_else(|| {
            setup_failure(CREATE_CONTAINER_CONFIG_ERROR, "volumes are not set up")
        })?;
        let preopens = volumes::preopens(&plan.mounts, volumes)
            .map_err(|e| setup_failure(CREATE_CONTAINER_CONFIG_ERROR, e))?;
        let count = if record.started() {
            record.restart_count + 1
        } else {
            0
        };
        let spec = ContainerSpec {
            args: plan.argv,
            env: plan.env,
            working_dir: plan.working_dir,
            preopens,
            stdio: self.stdio(&record.spec.name, count),
            limits: Limits {
                memory_bytes: plan.limits.memory_bytes,
                cpu_millis: plan.limits.cpu_millis,
                descriptors: plan.limits.descriptors,
                ..Limits::default()
            },
            network: net::network(&self.node, self.network.clone(), self.dns.clone()),
        };
        let name = record.spec.name.clone();
        self.events.push(Some(&name), events::created(&name));
        let container = self.run_container(&prepared.program, spec, index).await?;
        self.dir.prune_logs(&name, count - 1);
        self.started(index, container, count, prepared.image_id);
        Ok(())
    }

    /// Starts a command, or serves a `wasi:http` component on the container's addresses.
    async fn run_container(
        &self,
        program: &Program,
        spec: ContainerSpec,
        index: usize,
    ) -> Result<wasmlet_runtime::Container, SetupFailure> {
        let run_error = |e: &dyn std::fmt::Display| setup_failure(RUN_CONTAINER_ERROR, e);
        if program.kind() != ProgramKind::HttpComponent {
            return self.runtime.start(program, spec).map_err(|e| run_error(&e));
        }
        let container = &self.records[index].spec;
        let listeners =
            serving::listen(container, net::pod_ip(&self.node), self.network.as_deref())
                .await
                .map_err(|e| run_error(&e))?;
        self.runtime
            .start_http(program, spec, listeners)
            .map_err(|e| run_error(&e))
    }

    /// Records a started run and spawns the task that reports its exit.
    fn started(
        &mut self,
        index: usize,
        container: wasmlet_runtime::Container,
        count: i32,
        image_id: String,
    ) {
        let now = self.clock.now();
        let container = Arc::new(container);
        let record = &mut self.records[index];
        let restarted = record.started();
        if let Err(illegal) = record.start(container.clone()) {
            tracing::error!(pod = %self.label, container = %record.spec.name, "{illegal}");
            container.kill();
            return;
        }
        if restarted {
            record.last = record.terminated.take();
        }
        record.restart_count = count;
        record.state = RunState::Running { started_at: now };
        record.image_id = image_id;
        record.container_id = Some(format!(
            "wasmlet://{}/{}/{count}",
            self.uid, record.spec.name
        ));
        let name = record.spec.name.clone();
        let run = record.run;
        self.usage.started(index, &name, now, container.clone());
        self.events.push(Some(&name), events::started(&name));
        self.start_probes(index);
        let exits = self.exits_tx.clone();
        tokio::spawn(async move {
            let status = container.wait().await;
            let _ = exits.send(Exit { index, run, status });
        });
    }

    /// Records the end of a run (a report of an earlier run is ignored).
    pub(super) fn on_exit(&mut self, exit: Exit) {
        let now = self.clock.now();
        let record = &mut self.records[exit.index];
        if record.run != exit.run {
            return;
        }
        let started_at = match record.state {
            RunState::Running { started_at } => Some(started_at),
            _ => None,
        };
        let status = exit.status;
        let termination = Termination {
            exit_code: status.code,
            signal: None,
            reason: Some(status.reason.as_str().to_owned()),
            message: Some(status.message).filter(|m| !m.is_empty()),
            started_at,
            finished_at: Some(now),
            container_id: record.container_id.clone(),
        };
        let facts = ExitFacts {
            exit_code: status.code,
            finished_at: now,
        };
        if let Err(illegal) = record.end(facts) {
            tracing::error!(pod = %self.label, container = %record.spec.name, "{illegal}");
            return;
        }
        self.usage.ended(exit.index);
        record.state = RunState::Terminated(termination.clone());
        record.terminated = Some(termination);
    }

    /// The image of a container, resolved and compiled once per worker (a later start of the
    /// same image finds it present).
    async fn prepare_image(&mut self, index: usize) -> Result<Prepared, SetupFailure> {
        let spec = &self.records[index].spec;
        let (name, image) = (spec.name.clone(), spec.image.clone().unwrap_or_default());
        if let Some(prepared) = self.images.get(&image) {
            let event = events::pulled(&image, None, Duration::ZERO);
            self.events.push(Some(&name), event);
            return Ok(prepared.clone());
        }
        let request = ImageRequest {
            image: image.clone(),
            pull_policy: PullPolicy::of_container(spec),
        };
        let runtime = pod_runtime(&self.runtime, &self.pod)?;
        let resolved = self.resolve(&name, &request).await?;
        let program = load(&runtime, resolved.wasm).await?;
        let prepared = Prepared {
            program,
            config: resolved.config,
            image_id: resolved.image_id,
        };
        self.images.insert(image, prepared.clone());
        Ok(prepared)
    }

    /// Resolves an image (unless the pod stops meanwhile), with the `Pulling` and `Pulled`
    /// events, or the failure's.
    async fn resolve(
        &mut self,
        name: &str,
        request: &ImageRequest,
    ) -> Result<crate::ResolvedImage, SetupFailure> {
        let image = request.image.as_str();
        let pulls = match request.pull_policy {
            PullPolicy::Always => true,
            PullPolicy::IfNotPresent => !self.resolver.is_present(request),
            PullPolicy::Never => false,
        };
        if pulls {
            self.events.push(Some(name), events::pulling(image));
        }
        let began = Instant::now();
        let mut stop = self.stop_rx.clone();
        let resolved = tokio::select! {
            resolved = self.resolver.resolve(request) => resolved,
            _ = stop.wait_for(Option::is_some) => {
                return Err(setup_failure(CONTAINER_CREATING, "the pod is stopping"));
            }
        };
        match resolved {
            Ok(resolved) => {
                let event = events::pulled(image, resolved.pulled.as_ref(), began.elapsed());
                self.events.push(Some(name), event);
                Ok(resolved)
            }
            Err(err) => {
                self.events
                    .push(Some(name), events::image_failed(image, &err));
                Err(setup_failure(err.reason(), err))
            }
        }
    }

    fn stdio(&self, name: &str, count: i32) -> Stdio {
        let tee = |stream| self.output.as_ref().and_then(|make| make(name, stream));
        Stdio {
            log: Some(LogConfig::new(self.dir.log(name, count))),
            stdout_tee: tee(Stream::Stdout),
            stderr_tee: tee(Stream::Stderr),
            report_end: true,
        }
    }
}

/// The waiting state while a set-up failure is in back-off (`ImagePullBackOff` after
/// `ErrImagePull`, as the kubelet shows it; other reasons stay as they were).
fn backing_off(failure: &SetupFailure, image: &str) -> RunState {
    if failure.reason == wasmlet_pod::status::ERR_IMAGE_PULL {
        let message = format!("Back-off pulling image \"{image}\"");
        return RunState::waiting(wasmlet_pod::status::IMAGE_PULL_BACK_OFF, Some(message));
    }
    RunState::waiting(&failure.reason, Some(failure.message.clone()))
}

/// The runtime choosing the engine the pod's `wasmlet.dev/engine` annotation names, if it
/// names one; the node's otherwise. An unknown engine, or one this build lacks, is the
/// container's `CreateContainerConfigError`.
fn pod_runtime(runtime: &Runtime, pod: &Pod) -> Result<Runtime, SetupFailure> {
    let Some(name) = wasmlet_pod::pod_engine(pod) else {
        return Ok(runtime.clone());
    };
    let annotation = wasmlet_pod::ENGINE_ANNOTATION;
    let failure = |problem: &dyn std::fmt::Display| {
        let message = format!("pod annotation {annotation}={name:?}: {problem}; fix or remove it");
        setup_failure(CREATE_CONTAINER_CONFIG_ERROR, message)
    };
    let kind = name.parse::<EngineKind>().map_err(|e| failure(&e))?;
    runtime.with_engine(kind).map_err(|e| failure(&e))
}

/// Compiles (or loads from the cache) a program off the async threads.
async fn load(runtime: &Runtime, wasm: WasmSource) -> Result<Program, SetupFailure> {
    let runtime = runtime.clone();
    let loaded = tokio::task::spawn_blocking(move || wasm.load(&runtime)).await;
    match loaded {
        Ok(Ok(program)) => Ok(program),
        Ok(Err(err)) => Err(setup_failure("CreateContainerError", err)),
        Err(err) => Err(setup_failure("CreateContainerError", err)),
    }
}
