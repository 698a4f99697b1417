//! The pod worker: one tokio task that runs one pod to its end (or until stopped), driven by
//! a level-triggered sync: every pass looks at what is known of each container and does the
//! next thing (set up volumes, start the next init container, restart or leave an exited
//! container, stop everything), then publishes the facts and sleeps until a container exits,
//! a probe reports, a timer (back-off, deadline) fires, or a stop is requested. Events are
//! recorded where the thing they tell of happens.
//!
//! Each container's life is a [`record::Life`] with checked transitions (created, running,
//! exited, settled); [`runs`] starts and ends its runs, [`probes`] watches them.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use wasmlet_pod::k8s_openapi::api::core::v1::Pod;
use wasmlet_pod::k8s_openapi::jiff::{SignedDuration, Timestamp};
use wasmlet_pod::plan::CREATE_CONTAINER_CONFIG_ERROR;
use wasmlet_pod::{
    BackOff, ConfigObjects, ContainerKind, InitRun, InitStep, NodeFacts, PodFacts, PodFailure,
    RestartDecision, RestartPolicy, RunState, active_deadline_exceeded, decide_restart,
    next_init_step, pod_label, termination_grace_period,
};
use wasmlet_runtime::Runtime;
use wasmlet_runtime::log::Stream;

use crate::clock::Clock;
use crate::events::{self, EventLog, WorkerEvent};
use crate::image::ImageResolver;
use crate::net;
use crate::paths::{self, PodDir};
use crate::probe::ProbeReport;
use crate::resume::Resume;
use crate::storage;
use crate::usage::{ContainerUsage, PodUsage};
use crate::volumes::{self, Volumes};

mod probes;
mod record;
mod runs;

use record::{Record, StopCause, records};
use runs::{Exit, Prepared};

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
                .setup
                .failed
                .as_ref()
                .is_some_and(|(_, f)| f.reason == CREATE_CONTAINER_CONFIG_ERROR);
            if waiting_config {
                record.setup.failed = None;
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
            || self.regular().all(Record::settled)
    }

    fn done(&self) -> bool {
        self.ending() && self.records.iter().all(|r| r.running().is_none())
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
            let Some(container) = record.running().map(|run| run.container.clone()) else {
                continue;
            };
            if record.stopping(StopCause::Pod) == Ok(true) {
                let name = &record.spec.name;
                self.events.push(Some(name), events::killing(name, None));
            }
            container.stop(grace);
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
            if record.kind != ContainerKind::Regular
                || record.running().is_some()
                || record.settled()
            {
                continue;
            }
            match (record.started(), record.exited()) {
                (false, _) => {
                    self.start(index, wake).await;
                }
                (true, Some((exit, killed_by_probe))) => {
                    let wanted = match killed_by_probe {
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
        let Some((exit, _)) = record.exited() else {
            return false;
        };
        let name = record.spec.name.clone();
        match decide_restart(wanted, exit, &record.back_off, now, &name, &self.label) {
            RestartDecision::Stay => {
                if let Err(illegal) = record.settle() {
                    tracing::error!(pod = %self.label, container = %name, "{illegal}");
                }
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
