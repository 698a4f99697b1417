//! The pod worker: one tokio task that runs one pod to its end (or until stopped), driven by
//! a level-triggered sync: every pass looks at what is known of each container and does the
//! next thing (set up volumes, start the next init container, restart or leave an exited
//! container, stop everything), then publishes the facts and sleeps until a container exits,
//! a probe reports, a timer (back-off, deadline) fires, or a stop is requested. Events are
//! recorded where the thing they tell of happens.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use wasmlet_pod::k8s_openapi::api::core::v1::{Container, Pod};
use wasmlet_pod::k8s_openapi::jiff::{SignedDuration, Timestamp};
use wasmlet_pod::plan::CREATE_CONTAINER_CONFIG_ERROR;
use wasmlet_pod::{
    BackOff, ConfigObjects, ContainerFacts, ContainerKind, ExitFacts, ImageConfig, InitRun,
    InitStep, NodeFacts, PlanContext, PodFacts, PodFailure, RestartDecision, RestartPolicy,
    RunState, Termination, active_deadline_exceeded, decide_restart, next_init_step, pod_label,
    termination_grace_period,
};
use wasmlet_runtime::log::Stream;
use wasmlet_runtime::{
    ContainerSpec, EngineKind, ExitStatus, Limits, LogConfig, Program, ProgramKind, Runtime, Stdio,
};

use crate::clock::Clock;
use crate::events::{self, EventLog, WorkerEvent};
use crate::image::{ImageRequest, ImageResolver, PullPolicy, WasmSource};
use crate::net;
use crate::paths::{self, PodDir};
use crate::probe::{ProbeKind, ProbeReport, Probing, ReportTo, Verdict};
use crate::resume::{Resume, ResumedContainer};
use crate::serving;
use crate::storage;
use crate::usage::{ContainerUsage, PodUsage};
use crate::volumes::{self, Volumes};

/// The waiting reason of a container that could not be started.
const RUN_CONTAINER_ERROR: &str = "RunContainerError";
/// The waiting reason of a container not created yet.
const CONTAINER_CREATING: &str = wasmlet_pod::status::CONTAINER_CREATING;

/// Why a pod worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pod has no `spec`.
    #[error("the pod has no spec")]
    NoSpec,
    /// Neither the pod nor the node facts give a UID.
    #[error("the pod has no metadata.uid (and NodeFacts::pod_uid is empty)")]
    NoUid,
    /// The pod directory cannot be used.
    #[error(transparent)]
    Dir(#[from] paths::Error),
}

/// Makes the raw copy of a container's stdout or stderr (e.g. the terminal with a
/// `[name] ` prefix); `None` for no copy. The CRI log file is written in any case.
pub type OutputFactory =
    Arc<dyn Fn(&str, Stream) -> Option<Box<dyn Write + Send + Sync>> + Send + Sync>;

/// How a pod worker runs.
#[derive(Clone)]
pub struct WorkerConfig {
    /// The state directory: the pod lives in `<root>/pods/<uid>` (see [`PodDir`]).
    pub root: PathBuf,
    /// Facts about this node, for the downward API. `pod_uid` is used when the pod has no
    /// `metadata.uid`.
    pub node: NodeFacts,
    /// Raw copies of container output, besides the CRI log files.
    pub output: Option<OutputFactory>,
    /// What an earlier worker of this pod left behind (empty for a new pod).
    pub resume: Resume,
    /// The pod's network namespace, where its listeners are made; `None`: the node's own
    /// network (the pod IP is an address of the node).
    pub network: Option<Arc<wasmlet_netns::NetNs>>,
    /// The node's name resolution settings (`--cluster-dns`, `--cluster-domain`,
    /// `--resolv-conf`): the pod's components resolve names as the kubelet would have its
    /// containers resolve them ([`wasmlet_pod::pod_dns`]), from inside its namespace. `None`:
    /// with the host's resolver.
    pub dns: Option<wasmlet_pod::NodeDns>,
}

/// What the worker knows, published on every change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerFacts {
    /// The facts to compute the pod's status from
    /// ([`wasmlet_pod::pod_status`]`(&pod, &facts.pod, previous)`). `pod.terminal` is set
    /// once the worker is done: nothing runs and nothing will run again.
    pub pod: PodFacts,
    /// The latest volume set-up error (the kubelet's `FailedMount` event text, e.g.
    /// `MountVolume.SetUp failed for volume "config" : configmap "app" not found`); the
    /// worker retries with back-off while it is set.
    pub mount_error: Option<String>,
    /// The most recent events (the last [`KEPT_EVENTS`](crate::events::KEPT_EVENTS)),
    /// oldest first; emit those whose `seq` is above the last one already emitted.
    pub events: Vec<WorkerEvent>,
}

/// A handle on a running pod worker. Dropping it leaves the worker running until the pod
/// ends by itself; call [`PodWorker::stop`] to end it.
pub struct PodWorker {
    facts: watch::Receiver<WorkerFacts>,
    stop: watch::Sender<Option<Duration>>,
    objects: watch::Sender<ConfigObjects>,
    dir: PodDir,
    usage: PodUsage,
}

impl PodWorker {
    /// Starts running `pod` (with its ConfigMaps and Secrets in `objects`) as a tokio task
    /// and returns at once. Must be called within a tokio runtime.
    pub fn start(
        runtime: Runtime,
        resolver: Arc<dyn ImageResolver>,
        config: WorkerConfig,
        pod: Pod,
        objects: ConfigObjects,
    ) -> Result<PodWorker, Error> {
        if pod.spec.is_none() {
            return Err(Error::NoSpec);
        }
        let uid = wasmlet_pod::downward::pod_uid(&pod, &config.node);
        if uid.is_empty() {
            return Err(Error::NoUid);
        }
        let dir = PodDir::new(&config.root, &uid)?;
        let (stop_tx, stop_rx) = watch::channel(None);
        let (objects_tx, objects_rx) = watch::channel(objects.clone());
        let mut worker = Worker::new(
            runtime,
            resolver,
            config,
            pod,
            objects,
            dir.clone(),
            stop_rx,
        );
        worker.objects_rx = Some(objects_rx);
        let facts = worker.facts_tx.subscribe();
        let usage = worker.usage.clone();
        tokio::spawn(worker.run());
        Ok(PodWorker {
            facts,
            stop: stop_tx,
            objects: objects_tx,
            dir,
            usage,
        })
    }

    /// Hands the worker new versions of the pod's ConfigMaps, Secrets and tokens: ConfigMap,
    /// Secret and projected volumes are rewritten (atomically, as the kubelet does), a
    /// volume set-up or container configuration that failed for want of them is retried at
    /// once, and later container starts read the new values.
    pub fn update_objects(&self, objects: ConfigObjects) {
        self.objects.send_if_modified(|old| {
            let changed = *old != objects;
            *old = objects;
            changed
        });
    }

    /// The facts channel: the latest facts now, and a notification on every change.
    pub fn facts(&self) -> watch::Receiver<WorkerFacts> {
        self.facts.clone()
    }

    /// Stops the pod: no container starts or restarts any more; running ones may finish
    /// within `grace`, then are killed (WASI has no signals to deliver). Idempotent; a later
    /// call with a shorter grace shortens it.
    pub fn stop(&self, grace: Duration) {
        self.stop
            .send_modify(|g| *g = Some(g.map_or(grace, |old| old.min(grace))));
    }

    /// Waits until the worker is done and returns the final facts.
    pub async fn wait(&self) -> WorkerFacts {
        let mut facts = self.facts.clone();
        let done = facts.wait_for(|f| f.pod.terminal).await.map(|f| f.clone());
        done.unwrap_or_else(|_| facts.borrow().clone())
    }

    /// The pod's directory (volumes and logs).
    pub fn dir(&self) -> &PodDir {
        &self.dir
    }

    /// What the running containers use now (see [`PodUsage::containers`]).
    pub fn usage(&self) -> Vec<ContainerUsage> {
        self.usage.containers()
    }

    /// A handle on the running containers' usage that outlives this handle, for a metrics
    /// reader elsewhere.
    pub fn usage_handle(&self) -> PodUsage {
        self.usage.clone()
    }
}

/// A container's exit, sent by its waiter task.
struct Exit {
    index: usize,
    run: u64,
    status: ExitStatus,
}

/// Why a container could not be started (reported as its waiting state).
struct SetupFailure {
    reason: String,
    message: String,
}

fn setup_failure(reason: &str, message: impl ToString) -> SetupFailure {
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
struct Prepared {
    program: Program,
    config: ImageConfig,
    image_id: String,
}

/// Everything known of one container (init or regular).
struct Record {
    spec: Container,
    kind: ContainerKind,
    state: RunState,
    /// The termination before the current run.
    last: Option<Termination>,
    /// The latest termination.
    terminated: Option<Termination>,
    restart_count: i32,
    started: bool,
    running: Option<Arc<wasmlet_runtime::Container>>,
    run: u64,
    exit: Option<ExitFacts>,
    back_off: BackOff,
    settled: bool,
    setup_failed_at: Option<(Timestamp, SetupFailure)>,
    setup_back_off: BackOff,
    image_id: String,
    container_id: Option<String>,
    /// The current run's probes (none for init containers).
    probing: Option<Probing>,
    /// The current run is being stopped (its `Killing` event is out).
    killing: bool,
    /// The current run was killed for failing a liveness or startup probe.
    killed_by_probe: bool,
    /// Probes that cannot run were reported (once per container).
    probe_errors_told: bool,
    /// The exit whose CrashLoopBackOff was reported.
    back_off_told: Option<Timestamp>,
    /// The set-up failure whose back-off was reported.
    setup_back_off_told: Option<Timestamp>,
}

impl Record {
    fn new(spec: Container, kind: ContainerKind, waiting: &str) -> Record {
        Record {
            spec,
            kind,
            state: RunState::waiting(waiting, None),
            last: None,
            terminated: None,
            restart_count: 0,
            started: false,
            running: None,
            run: 0,
            exit: None,
            back_off: BackOff::default(),
            settled: false,
            setup_failed_at: None,
            setup_back_off: BackOff::default(),
            image_id: String::new(),
            container_id: None,
            probing: None,
            killing: false,
            killed_by_probe: false,
            probe_errors_told: false,
            back_off_told: None,
            setup_back_off_told: None,
        }
    }

    /// Carries on from a run of an earlier worker: it has ended, and the next run is
    /// restart number `restart_count + 1`.
    fn resume(&mut self, resumed: &ResumedContainer, now: Timestamp) {
        let last = resumed.last.clone();
        self.started = true;
        self.restart_count = resumed.restart_count;
        self.exit = Some(ExitFacts {
            exit_code: last.exit_code,
            finished_at: last.finished_at.unwrap_or(now),
        });
        self.container_id = last.container_id.clone();
        self.state = RunState::Terminated(last.clone());
        self.terminated = Some(last);
    }

    fn init_run(&self) -> InitRun {
        let starting = self.probing.as_ref().and_then(Probing::started) == Some(false);
        match (&self.running, &self.exit) {
            (Some(_), _) if starting => InitRun::Starting,
            (Some(_), _) => InitRun::Running,
            (None, Some(exit)) => InitRun::Exited(exit.exit_code),
            (None, None) => InitRun::NotStarted,
        }
    }

    fn facts(&self) -> ContainerFacts {
        let last_termination = match self.state {
            RunState::Waiting { .. } => self.terminated.clone().or_else(|| self.last.clone()),
            _ => self.last.clone(),
        };
        ContainerFacts {
            name: self.spec.name.clone(),
            state: self.state.clone(),
            last_termination,
            restart_count: self.restart_count,
            image: self.spec.image.clone().unwrap_or_default(),
            image_id: self.image_id.clone(),
            container_id: self.container_id.clone(),
            ready: self.running.is_some() && self.probing.as_ref().is_none_or(Probing::ready),
            started: self.probing.as_ref().and_then(Probing::started),
        }
    }
}

/// The earliest time the worker must wake up at.
#[derive(Default)]
struct Wake(Option<Timestamp>);

impl Wake {
    fn at(&mut self, at: Timestamp) {
        self.0 = Some(self.0.map_or(at, |t| t.min(at)));
    }
}

struct Worker {
    runtime: Runtime,
    resolver: Arc<dyn ImageResolver>,
    output: Option<OutputFactory>,
    pod: Pod,
    objects: ConfigObjects,
    node: NodeFacts,
    network: Option<Arc<wasmlet_netns::NetNs>>,
    /// The pod's resolver, shared by its containers (see [`WorkerConfig::dns`]).
    dns: Option<Arc<wasmlet_runtime::PodResolver>>,
    dir: PodDir,
    uid: String,
    clock: Clock,
    label: String,
    policy: RestartPolicy,
    records: Vec<Record>,
    volumes: Option<Volumes>,
    mount_error: Option<String>,
    mount_failed_at: Option<Timestamp>,
    mount_back_off: BackOff,
    images: HashMap<String, Prepared>,
    exits_tx: mpsc::UnboundedSender<Exit>,
    exits_rx: mpsc::UnboundedReceiver<Exit>,
    probes_tx: mpsc::UnboundedSender<ProbeReport>,
    probes_rx: mpsc::UnboundedReceiver<ProbeReport>,
    events: EventLog,
    stop_rx: watch::Receiver<Option<Duration>>,
    stop_open: bool,
    /// Whether an emptyDir has a `sizeLimit`, and when to measure next.
    storage_limited: bool,
    storage_check_at: Option<Timestamp>,
    objects_rx: Option<watch::Receiver<ConfigObjects>>,
    stop_grace: Option<Duration>,
    stop_sent: Option<Duration>,
    failure: Option<PodFailure>,
    init_failed: bool,
    start_time: Timestamp,
    facts_tx: watch::Sender<WorkerFacts>,
    /// The running containers, for [`PodWorker::usage`].
    usage: PodUsage,
}

impl Worker {
    fn new(
        runtime: Runtime,
        resolver: Arc<dyn ImageResolver>,
        config: WorkerConfig,
        pod: Pod,
        objects: ConfigObjects,
        dir: PodDir,
        stop_rx: watch::Receiver<Option<Duration>>,
    ) -> Worker {
        let mut node = config.node;
        let uid = wasmlet_pod::downward::pod_uid(&pod, &node);
        node.pod_uid = uid.clone();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let namespace = wasmlet_pod::downward::pod_namespace(&pod).to_owned();
        let clock = Clock::new();
        let mut records = records(&pod);
        for record in &mut records {
            if let Some(resumed) = config.resume.containers.get(&record.spec.name) {
                record.resume(resumed, clock.now());
            }
        }
        let (exits_tx, exits_rx) = mpsc::unbounded_channel();
        let (probes_tx, probes_rx) = mpsc::unbounded_channel();
        let storage_limited = !storage::limited_empty_dirs(&pod).is_empty();
        let mut events = EventLog::default();
        let dns = config.dns.as_ref().map(|settings| {
            let (resolver, warnings) =
                net::pod_resolver(&pod, &node, settings, config.network.clone());
            for warning in &warnings {
                events.push(None, events::dns_warning(warning));
            }
            Arc::new(resolver)
        });
        let worker = Worker {
            runtime,
            resolver,
            output: config.output,
            network: config.network,
            dns,
            label: pod_label(&name, &namespace, &uid),
            policy: RestartPolicy::of_pod(&pod),
            pod,
            objects,
            node,
            dir,
            uid,
            clock,
            records,
            volumes: None,
            mount_error: None,
            mount_failed_at: None,
            mount_back_off: BackOff::default(),
            images: HashMap::new(),
            exits_tx,
            exits_rx,
            probes_tx,
            probes_rx,
            events,
            stop_rx,
            stop_open: true,
            storage_limited,
            storage_check_at: None,
            objects_rx: None,
            stop_grace: None,
            stop_sent: None,
            failure: None,
            init_failed: false,
            start_time: config.resume.start_time.unwrap_or_else(|| clock.now()),
            facts_tx: watch::channel(placeholder_facts(clock.now())).0,
            usage: PodUsage::default(),
        };
        let facts = worker.facts(false);
        worker.facts_tx.send_replace(facts);
        worker
    }

    async fn run(mut self) {
        loop {
            let wake = self.sync().await;
            let done = self.done();
            self.publish(done);
            if done {
                return;
            }
            let sleep = wake.0.map(|t| self.clock.instant(t));
            tokio::select! {
                Some(exit) = self.exits_rx.recv() => self.on_exit(exit),
                Some(report) = self.probes_rx.recv() => self.on_probe(report),
                () = sleep_until(sleep) => {}
                changed = self.stop_rx.changed(), if self.stop_open => match changed {
                    Ok(()) => self.stop_grace = *self.stop_rx.borrow_and_update(),
                    Err(_) => self.stop_open = false,
                },
                objects = next_objects(&mut self.objects_rx) => self.on_objects(objects),
            }
            self.drain_reports();
        }
    }

    /// Takes every exit and probe report already queued, so that one pass (and one publish of
    /// the facts, which is as large as the pod) answers them all: a pod of N containers ending
    /// together costs N reports and a few passes, not N passes of N containers.
    fn drain_reports(&mut self) {
        loop {
            if let Ok(exit) = self.exits_rx.try_recv() {
                self.on_exit(exit);
            } else if let Ok(report) = self.probes_rx.try_recv() {
                self.on_probe(report);
            } else {
                return;
            }
        }
    }

    /// New ConfigMaps, Secrets or tokens: rewrites the file volumes, and retries at once what
    /// failed for want of them.
    fn on_objects(&mut self, objects: Option<ConfigObjects>) {
        let Some(objects) = objects else {
            self.objects_rx = None;
            return;
        };
        self.objects = objects;
        self.mount_failed_at = None;
        for record in &mut self.records {
            let waiting_config = record
                .setup_failed_at
                .as_ref()
                .is_some_and(|(_, f)| f.reason == CREATE_CONTAINER_CONFIG_ERROR);
            if waiting_config {
                record.setup_failed_at = None;
            }
        }
        if self.volumes.is_none() {
            return;
        }
        match volumes::set_up(&self.pod, &self.objects, &self.node, &self.dir) {
            Ok(volumes) => self.volumes = Some(volumes),
            Err(err) => tracing::warn!(pod = %self.label, "updating volumes: {err}"),
        }
    }

    /// One level-triggered pass; returns when to wake up at the latest.
    async fn sync(&mut self) -> Wake {
        let mut wake = Wake::default();
        self.check_deadline(&mut wake);
        self.check_storage(&mut wake);
        if !self.ending() && self.ensure_volumes(&mut wake) && self.sync_init(&mut wake).await {
            self.sync_regular(&mut wake).await;
        }
        if self.ending() {
            self.stop_running();
        }
        wake
    }

    /// Whether the pod is winding down: stopped, past its deadline, failed in init, or every
    /// regular container has ended for good.
    fn ending(&self) -> bool {
        self.stop_grace.is_some()
            || self.failure.is_some()
            || self.init_failed
            || self.regular().all(|r| r.settled)
    }

    fn done(&self) -> bool {
        self.ending() && self.records.iter().all(|r| r.running.is_none())
    }

    fn regular(&self) -> impl Iterator<Item = &Record> {
        self.records
            .iter()
            .filter(|r| r.kind == ContainerKind::Regular)
    }

    /// Evicts the pod when an emptyDir outgrew its `sizeLimit`; checks again later.
    fn check_storage(&mut self, wake: &mut Wake) {
        if self.failure.is_some() || self.volumes.is_none() || !self.storage_limited {
            return;
        }
        let now = self.clock.now();
        if let Some(at) = self.storage_check_at.filter(|at| now < *at) {
            wake.at(at);
            return;
        }
        self.failure = storage::over_limit(&self.pod, &self.dir);
        self.stop_grace = self
            .stop_grace
            .or(self.failure.as_ref().map(|_| Duration::ZERO));
        if let Some(failure) = &self.failure {
            self.events.push(None, events::evicted(&failure.message));
            return;
        }
        let every = SignedDuration::try_from(storage::CHECK_EVERY).unwrap_or_default();
        if let Ok(next) = now.checked_add(every) {
            self.storage_check_at = Some(next);
            wake.at(next);
        }
    }

    fn check_deadline(&mut self, wake: &mut Wake) {
        if self.failure.is_some() {
            return;
        }
        let now = self.clock.now();
        self.failure = active_deadline_exceeded(&self.pod, Some(self.start_time), now);
        if let Some(failure) = &self.failure {
            self.events
                .push(None, events::deadline_exceeded(&failure.message));
        }
        let seconds = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.active_deadline_seconds);
        if let Some(seconds) = seconds.filter(|_| self.failure.is_none()) {
            let at = self
                .start_time
                .checked_add(SignedDuration::from_secs(seconds));
            if let Ok(at) = at {
                wake.at(at);
            }
        }
    }

    /// Stops every running container with the requested grace (else the pod's).
    fn stop_running(&mut self) {
        let pod_grace = termination_grace_period(&self.pod, None);
        let grace = self
            .stop_grace
            .unwrap_or_else(|| Duration::try_from(pod_grace).unwrap_or_default());
        if self.stop_sent.is_some_and(|sent| sent <= grace) {
            return;
        }
        self.stop_sent = Some(grace);
        for record in self.records.iter_mut() {
            let Some(running) = &record.running else {
                continue;
            };
            if !record.killing {
                record.killing = true;
                let name = &record.spec.name;
                self.events.push(Some(name), events::killing(name, None));
            }
            running.stop(grace);
        }
    }

    /// Sets up the volumes once (retrying with back-off); whether they are ready.
    fn ensure_volumes(&mut self, wake: &mut Wake) -> bool {
        if self.volumes.is_some() {
            return true;
        }
        let now = self.clock.now();
        if let Some(failed_at) = self.mount_failed_at
            && let Some(until) = self.mount_back_off.waiting_until(failed_at, now)
        {
            wake.at(until);
            return false;
        }
        match volumes::set_up(&self.pod, &self.objects, &self.node, &self.dir) {
            Ok(volumes) => {
                self.volumes = Some(volumes);
                self.mount_error = None;
                true
            }
            Err(err) => {
                tracing::warn!(pod = %self.label, "{err}");
                self.events
                    .push(None, events::failed_mount(&err.to_string()));
                self.mount_error = Some(err.to_string());
                self.mount_back_off = self.mount_back_off.after_restart(now, now);
                self.mount_failed_at = Some(now);
                if let Some(until) = self.mount_back_off.waiting_until(now, now) {
                    wake.at(until);
                }
                false
            }
        }
    }

    /// Runs init containers in order; whether they are all done.
    async fn sync_init(&mut self, wake: &mut Wake) -> bool {
        loop {
            let step = next_init_step(&self.pod, |name| {
                self.records
                    .iter()
                    .find(|r| r.kind != ContainerKind::Regular && r.spec.name == name)
                    .map_or(InitRun::NotStarted, Record::init_run)
            });
            let progressed = match step {
                InitStep::Start(index) => self.start(index, wake).await,
                InitStep::Retry(index) => self.restart(index, true, wake).await,
                InitStep::WaitFor(_) => false,
                InitStep::PodFailed(_) => {
                    self.init_failed = true;
                    false
                }
                InitStep::Done => return true,
            };
            if !progressed {
                return false;
            }
        }
    }

    /// Starts regular containers that never ran, and restarts (or leaves) exited ones.
    async fn sync_regular(&mut self, wake: &mut Wake) {
        for index in 0..self.records.len() {
            let record = &self.records[index];
            if record.kind != ContainerKind::Regular || record.running.is_some() || record.settled {
                continue;
            }
            match (record.started, record.exit) {
                (false, _) => {
                    self.start(index, wake).await;
                }
                (true, Some(exit)) => {
                    let wanted = match record.killed_by_probe {
                        true => self.policy != RestartPolicy::Never,
                        false => self.policy.restarts_container(exit.exit_code),
                    };
                    self.restart(index, wanted, wake).await;
                }
                (true, None) => {}
            }
        }
    }

    /// Decides about an exited container; whether it was started again.
    async fn restart(&mut self, index: usize, wanted: bool, wake: &mut Wake) -> bool {
        let now = self.clock.now();
        let record = &mut self.records[index];
        let Some(exit) = record.exit else {
            return false;
        };
        let name = record.spec.name.clone();
        match decide_restart(wanted, exit, &record.back_off, now, &name, &self.label) {
            RestartDecision::Stay => {
                record.settled = true;
                false
            }
            RestartDecision::Wait { until, message } => {
                record.state = RunState::crash_loop_back_off(&message);
                if record.back_off_told != Some(exit.finished_at) {
                    record.back_off_told = Some(exit.finished_at);
                    let event = events::crash_loop_back_off(&name, &self.label);
                    self.events.push(Some(&name), event);
                }
                wake.at(until);
                false
            }
            RestartDecision::RestartNow { back_off } => {
                record.back_off = back_off;
                self.start(index, wake).await
            }
        }
    }

    /// Starts a container unless its last set-up failure is still in back-off; whether it
    /// is running.
    async fn start(&mut self, index: usize, wake: &mut Wake) -> bool {
        let now = self.clock.now();
        if self.setup_backing_off(index, now, wake) {
            return false;
        }
        match self.launch(index).await {
            Ok(()) => {
                self.records[index].setup_failed_at = None;
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
                record.setup_back_off = record.setup_back_off.after_restart(now, now);
                if let Some(until) = record.setup_back_off.waiting_until(now, now) {
                    wake.at(until);
                }
                // A pass soon after shows the back-off (`ImagePullBackOff` after
                // `ErrImagePull`), as the kubelet's next sync of the pod does.
                if let Ok(soon) = now.checked_add(SignedDuration::from_secs(1)) {
                    wake.at(soon);
                }
                record.setup_failed_at = Some((now, failure));
                false
            }
        }
    }

    /// Whether the container's last set-up failure is still in back-off (then it shows the
    /// back-off, told once per failure for an image pull).
    fn setup_backing_off(&mut self, index: usize, now: Timestamp, wake: &mut Wake) -> bool {
        let record = &mut self.records[index];
        let Some((at, failure)) = &record.setup_failed_at else {
            return false;
        };
        let Some(until) = record.setup_back_off.waiting_until(*at, now) else {
            return false;
        };
        let image = record.spec.image.as_deref().unwrap_or_default();
        record.state = backing_off(failure, image);
        wake.at(until);
        let pull = failure.reason == wasmlet_pod::status::ERR_IMAGE_PULL;
        if pull && record.setup_back_off_told != Some(*at) {
            record.setup_back_off_told = Some(*at);
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
        let count = if record.started {
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
        let record = &mut self.records[index];
        if record.started {
            record.last = record.terminated.take();
        }
        record.started = true;
        record.restart_count = count;
        record.run += 1;
        record.exit = None;
        record.state = RunState::Running { started_at: now };
        record.image_id = image_id;
        record.container_id = Some(format!(
            "wasmlet://{}/{}/{count}",
            self.uid, record.spec.name
        ));
        record.killing = false;
        record.killed_by_probe = false;
        let container = Arc::new(container);
        record.running = Some(container.clone());
        let name = record.spec.name.clone();
        self.usage.started(index, &name, now, container.clone());
        self.events.push(Some(&name), events::started(&name));
        self.start_probes(index);
        let exits = self.exits_tx.clone();
        let run = self.records[index].run;
        tokio::spawn(async move {
            let status = container.wait().await;
            let _ = exits.send(Exit { index, run, status });
        });
    }

    /// Starts probing a new run (not of init containers); probes that cannot run are told
    /// once per container.
    fn start_probes(&mut self, index: usize) {
        let record = &mut self.records[index];
        if record.kind == ContainerKind::Init {
            return;
        }
        let report_to = ReportTo {
            reports: self.probes_tx.clone(),
            index,
            run: record.run,
        };
        let probing = Probing::start(&record.spec, net::pod_ip(&self.node), report_to);
        if !record.probe_errors_told {
            record.probe_errors_told = true;
            for (kind, error) in probing.errors() {
                let event = events::probe_errored(kind.name(), error);
                self.events.push(Some(&record.spec.name), event);
            }
        }
        record.probing = Some(probing);
    }

    /// Counts a probe's result: an `Unhealthy` event for a failure, and a kill when a
    /// liveness or startup probe has failed enough.
    fn on_probe(&mut self, report: ProbeReport) {
        let record = &mut self.records[report.index];
        let Some(probing) = record.probing.as_mut().filter(|_| record.run == report.run) else {
            return;
        };
        if !probing.expects(report.kind) {
            return;
        }
        if let Err(output) = &report.outcome {
            let event = events::probe_failed(report.kind.name(), output);
            self.events.push(Some(&record.spec.name), event);
        }
        if probing.observe(report.kind, report.outcome.is_ok()) == Verdict::Kill {
            self.kill_for_probe(report.index, report.kind);
        }
    }

    /// Stops a run that failed its liveness or startup probe; it is restarted unless the
    /// pod's `restartPolicy` is `Never`.
    fn kill_for_probe(&mut self, index: usize, kind: ProbeKind) {
        let restarts = self.policy != RestartPolicy::Never
            || self.records[index].kind == ContainerKind::Sidecar;
        let record = &mut self.records[index];
        let probe_grace = record.probing.as_ref().and_then(|p| p.grace(kind));
        let grace = termination_grace_period(&self.pod, probe_grace);
        let Some(running) = &record.running else {
            return;
        };
        let name = &record.spec.name;
        let mut message = format!(
            "Container {name} failed {} probe",
            kind.name().to_lowercase()
        );
        if restarts {
            message.push_str(", will be restarted");
        }
        self.events
            .push(Some(name), events::killing(name, Some(message)));
        record.killing = true;
        record.killed_by_probe = true;
        running.stop(Duration::try_from(grace).unwrap_or_default());
    }

    fn on_exit(&mut self, exit: Exit) {
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
        record.running = None;
        record.probing = None;
        self.usage.ended(exit.index);
        record.exit = Some(ExitFacts {
            exit_code: status.code,
            finished_at: now,
        });
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

    fn facts(&self, terminal: bool) -> WorkerFacts {
        WorkerFacts {
            pod: PodFacts {
                containers: self.records.iter().map(Record::facts).collect(),
                start_time: Some(self.start_time),
                host_ips: self.node.host_ips.clone(),
                pod_ips: self.node.pod_ips.clone(),
                sandbox_ready: self.volumes.is_some(),
                terminal,
                failure: self.failure.clone(),
                now: self.clock.now(),
            },
            mount_error: self.mount_error.clone(),
            events: self.events.recent(),
        }
    }

    /// Publishes the facts if anything but the time changed.
    fn publish(&self, terminal: bool) {
        let mut facts = self.facts(terminal);
        self.facts_tx.send_if_modified(|old| {
            let now = facts.pod.now;
            facts.pod.now = old.pod.now;
            if *old == facts {
                return false;
            }
            facts.pod.now = now;
            *old = facts.clone();
            true
        });
    }
}

/// The records of a pod's containers: init containers first, in order, then regular ones.
fn records(pod: &Pod) -> Vec<Record> {
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    let init = spec.init_containers.iter().flatten();
    let waiting = if spec.init_containers.as_ref().is_some_and(|i| !i.is_empty()) {
        wasmlet_pod::status::POD_INITIALIZING
    } else {
        wasmlet_pod::status::CONTAINER_CREATING
    };
    let init = init.map(|c| {
        let kind = match wasmlet_pod::restart::is_sidecar(c) {
            true => ContainerKind::Sidecar,
            false => ContainerKind::Init,
        };
        Record::new(c.clone(), kind, waiting)
    });
    let regular = spec
        .containers
        .iter()
        .map(|c| Record::new(c.clone(), ContainerKind::Regular, waiting));
    init.chain(regular).collect()
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

/// The next version of the objects; `None` once the handle is gone; pending without a channel.
async fn next_objects(rx: &mut Option<watch::Receiver<ConfigObjects>>) -> Option<ConfigObjects> {
    let Some(receiver) = rx else {
        return std::future::pending().await;
    };
    match receiver.changed().await {
        Ok(()) => Some(receiver.borrow_and_update().clone()),
        Err(_) => None,
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn placeholder_facts(now: Timestamp) -> WorkerFacts {
    WorkerFacts {
        pod: PodFacts {
            containers: Vec::new(),
            start_time: None,
            host_ips: Vec::new(),
            pod_ips: Vec::new(),
            sandbox_ready: false,
            terminal: false,
            failure: None,
            now,
        },
        mount_error: None,
        events: Vec::new(),
    }
}
