//! One pod's task: runs the pod through a [`PodWorker`], writes its status to the API server
//! whenever it changes, and finishes its deletion.
//!
//! - A pod already `Succeeded` or `Failed` is never run again (e.g. after the agent
//!   restarts).
//! - Deletion (`deletionTimestamp` set): the containers get `deletionGracePeriodSeconds`,
//!   then the final status is written and the object deleted with grace 0 (the kubelet's
//!   last word on a pod), preconditioned on its UID.
//! - A pod removed from the API behind the agent's back is stopped at once.
//! - The agent shutting down (the update channel closed) stops the containers within their
//!   grace periods and leaves the status as it was: the node goes NotReady, and the next
//!   start of the agent runs the pod again. With `--drain-on-shutdown` the pod is reported
//!   Failed (`Terminated`) instead, as the kubelet's graceful node shutdown does.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerStatus, Node, ObjectReference, Pod, PodStatus};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::events::{Event, EventType};
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use wasmlet_pod::{NodeFacts, PodFailure, Termination, pod_status, termination_grace_period};
use wasmlet_worker::{
    PodDir, PodWorker, Resume, ResumedContainer, WorkerConfig, WorkerEvent, WorkerFacts,
};

use crate::node::heartbeat::Backoff;
use crate::pods::NodeContext;
use crate::pods::network::{Error as NetworkError, PodNetwork};
use crate::pods::objects::PodObjects;

/// How long a failed status write waits before it is tried again.
const STATUS_RETRY: Duration = Duration::from_secs(2);
/// The first wait before a pod's network is tried again (doubling up to 30 s).
const SANDBOX_RETRY: Duration = Duration::from_secs(1);

/// Runs one pod until it is deleted, removed, or the agent shuts down.
pub async fn run(
    context: Arc<NodeContext>,
    mut updates: watch::Receiver<Pod>,
    gone: CancellationToken,
) {
    let pod = updates.borrow_and_update().clone();
    let mut task = PodTask::new(context, pod);
    if task.is_terminal() || task.deleting() {
        task.idle(&mut updates, &gone).await;
        return;
    }
    let Some(worker) = task.start_worker(&mut updates, &gone).await else {
        task.idle(&mut updates, &gone).await;
        return;
    };
    task.context.running.register(&task.pod, &worker);
    let outcome = task.supervise(&worker, &mut updates, &gone).await;
    let facts = worker.wait().await;
    task.context.running.unregister(&task.uid);
    // A pod the agent leaves running for its next start keeps its network (and IPs).
    if !matches!(outcome, Outcome::ShuttingDown) || task.context.drain_on_shutdown {
        task.detach_network().await;
    }
    match outcome {
        Outcome::ShuttingDown if task.context.drain_on_shutdown => {
            task.report(&shut_down(facts)).await;
        }
        Outcome::ShuttingDown => {}
        Outcome::Gone => task.clean_up(),
        Outcome::Ended | Outcome::Deleting => {
            task.report(&facts).await;
            task.idle(&mut updates, &gone).await;
        }
    }
}

/// The facts of a pod stopped because the node shuts down (`--drain-on-shutdown`): Failed,
/// as the kubelet's graceful node shutdown reports it, so its controller replaces it.
fn shut_down(mut facts: WorkerFacts) -> WorkerFacts {
    facts.pod.failure = Some(PodFailure {
        reason: "Terminated".into(),
        message: "Pod was terminated in response to imminent node shutdown.".into(),
    });
    facts.pod.terminal = true;
    facts
}

/// How supervision of a running pod ended.
enum Outcome {
    /// Every container is done for good.
    Ended,
    /// Deletion was requested: the worker was told to stop with the grace period.
    Deleting,
    /// The object is gone from the API.
    Gone,
    /// The agent is shutting down.
    ShuttingDown,
}

struct PodTask {
    context: Arc<NodeContext>,
    pod: Pod,
    uid: String,
    api: Api<Pod>,
    /// The status last written (or read from the API at first).
    reported: Option<PodStatus>,
    /// Whether the latest status still has to be written.
    dirty: bool,
    /// The sequence number of the last worker event published.
    events_seen: u64,
    /// The pod's ConfigMaps, Secrets and tokens.
    objects: PodObjects,
}

impl PodTask {
    fn new(context: Arc<NodeContext>, pod: Pod) -> PodTask {
        let namespace = wasmlet_pod::downward::pod_namespace(&pod).to_owned();
        PodTask {
            api: Api::namespaced(context.client.clone(), &namespace),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            reported: pod.status.clone(),
            dirty: false,
            events_seen: 0,
            objects: PodObjects::new(context.client.clone(), context.watches.clone(), &namespace),
            context,
            pod,
        }
    }

    fn name(&self) -> &str {
        self.pod.metadata.name.as_deref().unwrap_or_default()
    }

    fn is_terminal(&self) -> bool {
        let phase = self.pod.status.as_ref().and_then(|s| s.phase.as_deref());
        matches!(phase, Some("Succeeded" | "Failed"))
    }

    fn deleting(&self) -> bool {
        self.pod.metadata.deletion_timestamp.is_some()
    }

    /// Fetches what the pod needs, gives it its network and starts its worker. `None` when
    /// the pod is deleted or removed before it could start, or its worker cannot start.
    async fn start_worker(
        &mut self,
        updates: &mut watch::Receiver<Pod>,
        gone: &CancellationToken,
    ) -> Option<PodWorker> {
        let objects = self.objects.fetch(&self.pod).await;
        let keyring = self.objects.pull_secrets(&self.pod).await;
        let network = self.attach_network(updates, gone).await?;
        let dns = self.node_dns().await;
        let config = WorkerConfig {
            root: self.context.data_dir.clone(),
            node: NodeFacts {
                node_name: self.context.node_name.clone(),
                host_ips: vec![self.context.node_ip.to_string()],
                pod_ips: network.ips.iter().map(ToString::to_string).collect(),
                pod_uid: self.uid.clone(),
                allocatable: self.context.allocatable,
            },
            output: None,
            resume: resume_of(self.pod.status.as_ref()),
            network: network.netns.clone(),
            dns: Some(dns),
        };
        let resolver = Arc::new(self.context.images.with_keyring(keyring));
        let runtime = self.context.runtime.clone();
        match PodWorker::start(runtime, resolver, config, self.pod.clone(), objects) {
            Ok(worker) => Some(worker),
            Err(err) => {
                tracing::error!(pod = %self.name(), %err, "cannot run the pod");
                self.detach_network().await;
                None
            }
        }
    }

    /// The pod's network, tried again with back-off while it cannot be had (as the kubelet
    /// retries a sandbox): each failure is a Warning event, `NetworkNotReady` while the node
    /// has no network configuration, else `FailedCreatePodSandBox` with the plugin's error.
    /// `None` if the pod is deleted or removed meanwhile, or the agent stops.
    async fn attach_network(
        &mut self,
        updates: &mut watch::Receiver<Pod>,
        gone: &CancellationToken,
    ) -> Option<PodNetwork> {
        let mut backoff = Backoff::starting_at(SANDBOX_RETRY);
        loop {
            if self.context.network.wants_pod_cidr() {
                self.read_node().await;
            }
            match self.context.network.attach(&self.pod).await {
                Ok(network) => return Some(network),
                Err(err) => self.network_failed(&err).await,
            }
            tokio::select! {
                changed = updates.changed() => match changed {
                    Ok(()) => self.pod = updates.borrow_and_update().clone(),
                    Err(_) => return None,
                },
                () = gone.cancelled() => return None,
                () = tokio::time::sleep(backoff.delay()) => {}
            }
            if self.deleting() {
                return None;
            }
        }
    }

    /// Reads this node's object so the network learns its `spec.podCIDRs`.
    async fn read_node(&self) {
        let nodes: Api<Node> = Api::all(self.context.client.clone());
        match nodes.get(&self.context.node_name).await {
            Ok(node) => self.context.network.observe_node(&node),
            Err(err) => tracing::warn!(%err, "reading the node for its pod CIDR"),
        }
    }

    async fn network_failed(&self, err: &NetworkError) {
        tracing::warn!(pod = %self.name(), %err, "no pod network; retrying");
        let (reason, note) = match err {
            NetworkError::NotReady(_) => (
                "NetworkNotReady",
                format!(
                    "network is not ready: {}",
                    self.context
                        .network
                        .not_ready()
                        .unwrap_or_else(|| err.to_string())
                ),
            ),
            _ => (
                "FailedCreatePodSandBox",
                format!("Failed to create pod sandbox: {err}"),
            ),
        };
        let event = Event {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(note),
            action: "CreatePodSandbox".into(),
            secondary: None,
        };
        let reference = self.reference(None);
        if let Err(err) = self.context.recorder.publish(&event, &reference).await {
            tracing::warn!(pod = %self.name(), %err, %reason, "publishing an event failed");
        }
    }

    /// The node's DNS settings with its resolver configuration and hosts file read now; a
    /// file that cannot be read is left out, with a `DNSConfigForming` warning on the pod.
    async fn node_dns(&self) -> wasmlet_pod::NodeDns {
        let (dns, problems) = self.context.dns.read();
        for problem in problems {
            let event = Event {
                type_: EventType::Warning,
                reason: "DNSConfigForming".into(),
                note: Some(format!("the node's resolver configuration: {problem}")),
                action: "CreatePodSandbox".into(),
                secondary: None,
            };
            let reference = self.reference(None);
            if let Err(err) = self.context.recorder.publish(&event, &reference).await {
                tracing::warn!(pod = %self.name(), %err, "publishing an event failed");
            }
        }
        dns
    }

    /// Takes the pod's network away (DEL, the namespace unpinned); failures are logged and
    /// left for the next start's clean-up.
    async fn detach_network(&self) {
        if let Err(err) = self.context.network.detach(&self.pod).await {
            tracing::warn!(pod = %self.name(), %err, "removing the pod network failed");
        }
    }

    /// Writes the status on every change of the worker's facts and follows the pod's
    /// updates, until the pod ends, is deleted or removed, or the agent shuts down.
    async fn supervise(
        &mut self,
        worker: &PodWorker,
        updates: &mut watch::Receiver<Pod>,
        gone: &CancellationToken,
    ) -> Outcome {
        let mut facts = worker.facts();
        let mut outcome = None;
        loop {
            let latest = facts.borrow_and_update().clone();
            if latest.pod.terminal {
                return outcome.unwrap_or(Outcome::Ended);
            }
            self.write_status(&latest).await;
            self.publish_events(&latest).await;
            let retry = self.dirty.then(|| tokio::time::sleep(STATUS_RETRY));
            tokio::select! {
                _ = facts.changed() => {}
                () = optional(retry) => {}
                () = self.objects.changed(), if outcome.is_none() => {
                    worker.update_objects(self.objects.fetch(&self.pod).await);
                }
                changed = updates.changed(), if outcome.is_none() => match changed {
                    Ok(()) => {
                        self.pod = updates.borrow_and_update().clone();
                        if self.deleting() {
                            worker.stop(self.deletion_grace());
                            outcome = Some(Outcome::Deleting);
                        }
                    }
                    Err(_) => {
                        worker.stop(self.grace());
                        outcome = Some(Outcome::ShuttingDown);
                    }
                },
                () = gone.cancelled(), if !matches!(outcome, Some(Outcome::Gone)) => {
                    worker.stop(Duration::ZERO);
                    outcome = Some(Outcome::Gone);
                }
            }
        }
    }

    /// The grace period of a deletion: `deletionGracePeriodSeconds`, else the pod's.
    fn deletion_grace(&self) -> Duration {
        match self.pod.metadata.deletion_grace_period_seconds {
            Some(seconds) => Duration::from_secs(u64::try_from(seconds).unwrap_or(0)),
            None => self.grace(),
        }
    }

    fn grace(&self) -> Duration {
        let grace = termination_grace_period(&self.pod, None);
        Duration::try_from(grace).unwrap_or_default()
    }

    /// Computes the status from the facts and writes it when it changed.
    async fn write_status(&mut self, facts: &WorkerFacts) {
        let status = pod_status(&self.pod, &facts.pod, self.reported.as_ref());
        if !self.dirty && self.reported.as_ref() == Some(&status) {
            return;
        }
        self.dirty = true;
        let patch = json!({"metadata": {"uid": self.uid}, "status": status});
        let params = PatchParams::default();
        match self
            .api
            .patch_status(self.name(), &params, &Patch::Merge(&patch))
            .await
        {
            Ok(_) => self.dirty = false,
            Err(err) => {
                tracing::warn!(pod = %self.name(), %err, "writing the pod status failed; retrying")
            }
        }
        self.reported = Some(status);
    }

    /// Publishes the worker's events not published yet, as Events about the pod (or one of
    /// its containers) from `kubelet` on this node.
    async fn publish_events(&mut self, facts: &WorkerFacts) {
        let fresh: Vec<&WorkerEvent> = facts
            .events
            .iter()
            .filter(|e| e.seq > self.events_seen)
            .collect();
        for event in fresh {
            self.events_seen = event.seq;
            let reference = self.reference(event.container.as_deref());
            let published = Event {
                type_: if event.warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: event.reason.clone(),
                note: Some(event.message.clone()),
                action: event.reason.clone(),
                secondary: None,
            };
            if let Err(err) = self.context.recorder.publish(&published, &reference).await {
                tracing::warn!(pod = %self.name(), %err, reason = %event.reason, "publishing an event failed");
            }
        }
    }

    /// The pod, or one of its containers (`fieldPath`), as an event's subject.
    fn reference(&self, container: Option<&str>) -> ObjectReference {
        let field_path = container.map(|name| {
            let spec = self.pod.spec.as_ref();
            let init = spec.and_then(|s| s.init_containers.as_ref());
            match init.is_some_and(|i| i.iter().any(|c| c.name == name)) {
                true => format!("spec.initContainers{{{name}}}"),
                false => format!("spec.containers{{{name}}}"),
            }
        });
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: self.pod.metadata.name.clone(),
            namespace: Some(wasmlet_pod::downward::pod_namespace(&self.pod).to_owned()),
            uid: Some(self.uid.clone()),
            resource_version: self.pod.metadata.resource_version.clone(),
            field_path,
        }
    }

    /// Writes the final status, retrying until it is written or the pod is gone.
    async fn report(&mut self, facts: &WorkerFacts) {
        self.publish_events(facts).await;
        for _ in 0..30 {
            self.write_status(facts).await;
            if !self.dirty {
                return;
            }
            tokio::time::sleep(STATUS_RETRY).await;
        }
    }

    /// After the pod ran: waits for its deletion (deleting the object with grace 0 when
    /// asked) or removal, then removes its directory.
    async fn idle(&mut self, updates: &mut watch::Receiver<Pod>, gone: &CancellationToken) {
        loop {
            if self.deleting() && self.finish_deletion().await {
                break;
            }
            tokio::select! {
                changed = updates.changed() => match changed {
                    Ok(()) => self.pod = updates.borrow_and_update().clone(),
                    Err(_) => return,
                },
                () = gone.cancelled() => break,
                () = tokio::time::sleep(STATUS_RETRY), if self.deleting() => {}
            }
        }
        self.clean_up();
    }

    /// Deletes the object with grace 0 (the containers have stopped); whether it is gone.
    async fn finish_deletion(&self) -> bool {
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self.api.delete(self.name(), &params).await {
            Ok(_) => true,
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => true,
            Err(err) => {
                tracing::warn!(pod = %self.name(), %err, "deleting the pod failed; retrying");
                false
            }
        }
    }

    /// Removes the pod's directory (volumes and logs) once the pod is gone.
    fn clean_up(&self) {
        let Ok(dir) = PodDir::new(&self.context.data_dir, &self.uid) else {
            return;
        };
        if let Err(err) = dir.remove() {
            let path = dir.path().display();
            tracing::warn!(dir = %path, %err, "removing the pod directory failed");
        }
    }
}

/// What the status reported before tells of the pod's containers (the agent restarted
/// while the pod ran): restart counts and last terminations carry on.
fn resume_of(status: Option<&PodStatus>) -> Resume {
    let Some(status) = status else {
        return Resume::default();
    };
    let now = Timestamp::now();
    let statuses = status.init_container_statuses.iter().flatten();
    let containers = statuses
        .chain(status.container_statuses.iter().flatten())
        .filter_map(|c| Some((c.name.clone(), resumed(c, now)?)))
        .collect();
    Resume {
        start_time: status.start_time.as_ref().map(|t| t.0),
        containers,
    }
}

/// One container's earlier runs: its last termination, or a lost run if it was running.
fn resumed(status: &ContainerStatus, now: Timestamp) -> Option<ResumedContainer> {
    let state = status.state.as_ref();
    if let Some(running) = state.and_then(|s| s.running.as_ref()) {
        let started = running.started_at.as_ref().map(|t| t.0);
        return Some(ResumedContainer::lost(status.restart_count, started, now));
    }
    let terminated = state
        .and_then(|s| s.terminated.as_ref())
        .or_else(|| status.last_state.as_ref()?.terminated.as_ref())?;
    Some(ResumedContainer {
        restart_count: status.restart_count,
        last: Termination {
            exit_code: terminated.exit_code,
            signal: terminated.signal,
            reason: terminated.reason.clone(),
            message: terminated.message.clone(),
            started_at: terminated.started_at.as_ref().map(|t| t.0),
            finished_at: terminated.finished_at.as_ref().map(|t| t.0),
            container_id: terminated.container_id.clone(),
        },
    })
}

async fn optional(sleep: Option<tokio::time::Sleep>) {
    match sleep {
        Some(sleep) => sleep.await,
        None => std::future::pending().await,
    }
}
