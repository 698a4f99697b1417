//! The status the kubelet reports for a pod, computed from facts: phase (the kubelet's
//! `getPhase` rules), conditions, container and init container statuses, QoS class, start
//! time and IPs, as `k8s_openapi` types ready to patch.

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::lifecycle::PodFailure;
use crate::qos;
use crate::restart::{RestartPolicy, is_sidecar};

/// Pod phases.
pub mod phase {
    /// Accepted, but not every container has started.
    pub const PENDING: &str = "Pending";
    /// Every container has started and at least one runs (or restarts).
    pub const RUNNING: &str = "Running";
    /// Every container exited successfully and none will restart.
    pub const SUCCEEDED: &str = "Succeeded";
    /// Every container exited, at least one in failure, and none will restart.
    pub const FAILED: &str = "Failed";
}

/// Condition types and reasons the kubelet sets.
pub mod condition {
    /// The scheduler placed the pod.
    pub const POD_SCHEDULED: &str = "PodScheduled";
    /// The sandbox exists and containers may start.
    pub const POD_READY_TO_START_CONTAINERS: &str = "PodReadyToStartContainers";
    /// Every init container completed.
    pub const INITIALIZED: &str = "Initialized";
    /// Every container is ready.
    pub const CONTAINERS_READY: &str = "ContainersReady";
    /// The pod can serve.
    pub const READY: &str = "Ready";
    /// Reason: one or more containers are not ready.
    pub const CONTAINERS_NOT_READY: &str = "ContainersNotReady";
    /// Reason: one or more init containers have not completed.
    pub const CONTAINERS_NOT_INITIALIZED: &str = "ContainersNotInitialized";
    /// Reason: the pod completed.
    pub const POD_COMPLETED: &str = "PodCompleted";
    /// Reason: the pod failed.
    pub const POD_FAILED: &str = "PodFailed";
    /// Reason: a readiness gate is not satisfied.
    pub const READINESS_GATES_NOT_READY: &str = "ReadinessGatesNotReady";
}

/// Waiting reason of a container not created yet.
pub const CONTAINER_CREATING: &str = "ContainerCreating";
/// Waiting reason of a regular container while init containers run.
pub const POD_INITIALIZING: &str = "PodInitializing";

/// Waiting reason while an image cannot be pulled.
pub const ERR_IMAGE_PULL: &str = "ErrImagePull";
/// Waiting reason while waiting to retry an image pull.
pub const IMAGE_PULL_BACK_OFF: &str = "ImagePullBackOff";

/// How a container run ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Termination {
    /// Exit code.
    pub exit_code: i32,
    /// Signal that ended it, if known.
    pub signal: Option<i32>,
    /// Reason; defaults to `Completed` (exit 0) or `Error`.
    pub reason: Option<String>,
    /// Message, if any.
    pub message: Option<String>,
    /// When it started.
    pub started_at: Option<Timestamp>,
    /// When it ended.
    pub finished_at: Option<Timestamp>,
    /// The run's container ID.
    pub container_id: Option<String>,
}

/// The current state of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    /// Not running: being created, in back-off, or failed to be configured.
    Waiting {
        /// Reason, e.g. `CrashLoopBackOff`.
        reason: String,
        /// Message, if any.
        message: Option<String>,
    },
    /// Running since then.
    Running {
        /// Start time.
        started_at: Timestamp,
    },
    /// Exited.
    Terminated(Termination),
}

impl RunState {
    /// Waiting with `reason` and an optional message.
    pub fn waiting(reason: &str, message: Option<String>) -> Self {
        Self::Waiting {
            reason: reason.to_string(),
            message,
        }
    }

    /// Waiting because the container could not be configured (the kubelet's
    /// `CreateContainerConfigError`, with the error as the message).
    pub fn config_error(error: &crate::plan::PlanError) -> Self {
        Self::waiting(error.reason(), Some(error.to_string()))
    }

    /// Waiting for a restart back-off to end (`CrashLoopBackOff`), given the back-off message
    /// from [`crate::restart::RestartDecision::Wait`].
    pub fn crash_loop_back_off(message: &str) -> Self {
        Self::waiting(
            crate::restart::CRASH_LOOP_BACK_OFF,
            Some(message.to_string()),
        )
    }
}

/// What is known of one container (init or regular).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerFacts {
    /// The container's name.
    pub name: String,
    /// Its state.
    pub state: RunState,
    /// How its previous run ended.
    pub last_termination: Option<Termination>,
    /// How many times it was restarted.
    pub restart_count: i32,
    /// The image reference it runs.
    pub image: String,
    /// The resolved image ID (digest).
    pub image_id: String,
    /// The current run's container ID.
    pub container_id: Option<String>,
    /// Readiness from probes (computed elsewhere; `true` when there is no readiness probe).
    pub ready: bool,
    /// Startup from probes (`None`: no startup probe, so started once running).
    pub started: Option<bool>,
}

/// What is known of the pod as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodFacts {
    /// Facts of containers and init containers, by name; absent ones are not created yet.
    pub containers: Vec<ContainerFacts>,
    /// When the node accepted the pod.
    pub start_time: Option<Timestamp>,
    /// The node's IPs.
    pub host_ips: Vec<String>,
    /// The pod's IPs.
    pub pod_ips: Vec<String>,
    /// Whether the pod's sandbox (its directories, network) is ready.
    pub sandbox_ready: bool,
    /// Whether the pod is terminal on this node (deleted, or will not run again).
    pub terminal: bool,
    /// A node-side failure (e.g. the active deadline) that makes the pod Failed.
    pub failure: Option<PodFailure>,
    /// The current time, for condition transition times.
    pub now: Timestamp,
}

/// Computes the pod status. `previous` is the status reported before (for transition times,
/// conditions not owned by the kubelet, and the rule that terminal phases are final).
pub fn pod_status(pod: &Pod, facts: &PodFacts, previous: Option<&PodStatus>) -> PodStatus {
    let spec_init: Vec<&Container> = pod
        .spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten())
        .collect();
    let spec_regular: Vec<&Container> = pod.spec.iter().flat_map(|s| s.containers.iter()).collect();
    let has_init = !spec_init.is_empty();
    let init_statuses: Vec<ContainerStatus> = spec_init
        .iter()
        .map(|c| container_status(c, facts, true, has_init))
        .collect();
    let statuses: Vec<ContainerStatus> = spec_regular
        .iter()
        .map(|c| container_status(c, facts, false, has_init))
        .collect();
    let (mut phase, reason, message) = pod_phase(pod, &init_statuses, &statuses, facts, previous);
    if let Some(previous_phase) = previous.and_then(|p| p.phase.as_deref())
        && is_terminal(previous_phase)
    {
        phase = previous_phase.to_string();
    }
    let views = StatusViews {
        init: &init_statuses,
        regular: &statuses,
    };
    let conditions = conditions(pod, &views, &phase, facts, previous);
    PodStatus {
        phase: Some(phase),
        reason,
        message,
        conditions: Some(conditions),
        init_container_statuses: has_init.then_some(init_statuses),
        container_statuses: Some(statuses),
        qos_class: Some(qos::qos_class(pod).unwrap_or(qos::BURSTABLE).to_string()),
        start_time: facts.start_time.map(Time),
        host_ip: facts.host_ips.first().cloned(),
        host_ips: non_empty(
            facts
                .host_ips
                .iter()
                .map(|ip| HostIP { ip: ip.clone() })
                .collect(),
        ),
        pod_ip: facts.pod_ips.first().cloned(),
        pod_ips: non_empty(
            facts
                .pod_ips
                .iter()
                .map(|ip| PodIP { ip: ip.clone() })
                .collect(),
        ),
        ..Default::default()
    }
}

fn non_empty<T>(items: Vec<T>) -> Option<Vec<T>> {
    (!items.is_empty()).then_some(items)
}

fn is_terminal(phase: &str) -> bool {
    phase == phase::SUCCEEDED || phase == phase::FAILED
}

/// Phase, reason and message: a node-side failure wins; otherwise the kubelet's rules, keeping
/// the previous reason and message while the phase stays the same.
fn pod_phase(
    pod: &Pod,
    init: &[ContainerStatus],
    regular: &[ContainerStatus],
    facts: &PodFacts,
    previous: Option<&PodStatus>,
) -> (String, Option<String>, Option<String>) {
    if let Some(failure) = &facts.failure {
        return (
            phase::FAILED.into(),
            Some(failure.reason.clone()),
            Some(failure.message.clone()),
        );
    }
    let phase = compute_phase(pod, init, regular, facts.terminal).to_string();
    match previous.filter(|p| p.phase.as_deref() == Some(phase.as_str())) {
        Some(previous) => (phase, previous.reason.clone(), previous.message.clone()),
        None => (phase, None, None),
    }
}

/// The status of one container from its facts, or the kubelet's default for one not created.
fn container_status(
    container: &Container,
    facts: &PodFacts,
    is_init: bool,
    has_init: bool,
) -> ContainerStatus {
    let Some(known) = facts.containers.iter().find(|f| f.name == container.name) else {
        let reason = if !is_init && has_init {
            POD_INITIALIZING
        } else {
            CONTAINER_CREATING
        };
        return ContainerStatus {
            name: container.name.clone(),
            image: container.image.clone().unwrap_or_default(),
            state: Some(waiting(reason, None)),
            started: Some(false),
            ..Default::default()
        };
    };
    let running = matches!(known.state, RunState::Running { .. });
    let ready = match (&known.state, is_init && !is_sidecar(container)) {
        (RunState::Terminated(t), true) => t.exit_code == 0,
        (RunState::Running { .. }, false) => known.ready,
        _ => false,
    };
    ContainerStatus {
        name: known.name.clone(),
        state: Some(api_state(&known.state)),
        last_state: Some(
            known
                .last_termination
                .as_ref()
                .map(terminated)
                .unwrap_or_default(),
        ),
        ready,
        started: Some(running && known.started.unwrap_or(true)),
        restart_count: known.restart_count,
        image: known.image.clone(),
        image_id: known.image_id.clone(),
        container_id: known.container_id.clone(),
        ..Default::default()
    }
}

fn waiting(reason: &str, message: Option<String>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_string()),
            message,
        }),
        ..Default::default()
    }
}

fn terminated(termination: &Termination) -> ContainerState {
    let default_reason = if termination.exit_code == 0 {
        "Completed"
    } else {
        "Error"
    };
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: termination.exit_code,
            signal: termination.signal,
            reason: Some(
                termination
                    .reason
                    .clone()
                    .unwrap_or_else(|| default_reason.to_string()),
            ),
            message: termination.message.clone(),
            started_at: termination.started_at.map(Time),
            finished_at: termination.finished_at.map(Time),
            container_id: termination.container_id.clone(),
        }),
        ..Default::default()
    }
}

fn api_state(state: &RunState) -> ContainerState {
    match state {
        RunState::Waiting { reason, message } => waiting(reason, message.clone()),
        RunState::Running { started_at } => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(Time(*started_at)),
            }),
            ..Default::default()
        },
        RunState::Terminated(termination) => terminated(termination),
    }
}

/// A container status reduced to what the phase rules look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Observed {
    Running,
    Exited(i32),
    WaitingAfterExit(i32),
    WaitingFirstRun,
}

fn observe(status: &ContainerStatus) -> Observed {
    let state = status.state.clone().unwrap_or_default();
    let last_exit = status
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .map(|t| t.exit_code);
    match (state.running, state.terminated, last_exit) {
        (Some(_), _, _) => Observed::Running,
        (None, Some(t), _) => Observed::Exited(t.exit_code),
        (None, None, Some(code)) => Observed::WaitingAfterExit(code),
        (None, None, None) => Observed::WaitingFirstRun,
    }
}

/// Counters of the kubelet's phase rules.
#[derive(Debug, Default)]
struct PhaseCounts {
    pending_initialization: usize,
    failed_initialization: usize,
    running: usize,
    waiting: usize,
    stopped: usize,
    succeeded: usize,
}

impl PhaseCounts {
    fn count_init(&mut self, container: &Container, status: &ContainerStatus) {
        let observed = observe(status);
        if is_sidecar(container) {
            match observed {
                Observed::Running => {
                    self.running += 1;
                    if status.started != Some(true) {
                        self.pending_initialization += 1;
                    }
                }
                Observed::WaitingFirstRun => {
                    self.pending_initialization += 1;
                    self.waiting += 1;
                }
                Observed::Exited(_) | Observed::WaitingAfterExit(_) => {}
            }
            return;
        }
        match observed {
            Observed::Running | Observed::WaitingFirstRun => self.pending_initialization += 1,
            Observed::Exited(code) | Observed::WaitingAfterExit(code) => {
                if code != 0 {
                    self.failed_initialization += 1;
                }
            }
        }
    }

    fn count_regular(&mut self, status: &ContainerStatus) {
        match observe(status) {
            Observed::Running => self.running += 1,
            Observed::Exited(code) => {
                self.stopped += 1;
                if code == 0 {
                    self.succeeded += 1;
                }
            }
            Observed::WaitingAfterExit(_) => self.stopped += 1,
            Observed::WaitingFirstRun => self.waiting += 1,
        }
    }
}

/// The kubelet's `getPhase`, over statuses that exist for every container of the spec.
fn compute_phase(
    pod: &Pod,
    init: &[ContainerStatus],
    regular: &[ContainerStatus],
    terminal: bool,
) -> &'static str {
    let policy = RestartPolicy::of_pod(pod);
    let spec_init = pod
        .spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten());
    let mut counts = PhaseCounts::default();
    for (container, status) in spec_init.zip(init) {
        counts.count_init(container, status);
    }
    for status in regular {
        counts.count_regular(status);
    }
    if counts.failed_initialization > 0 && policy == RestartPolicy::Never {
        return phase::FAILED;
    }
    let initializing = counts.pending_initialization > 0 && !any_regular_started(regular);
    if initializing || counts.waiting > 0 {
        return phase::PENDING;
    }
    if counts.running > 0 {
        return phase::RUNNING;
    }
    if counts.stopped == 0 {
        return phase::PENDING;
    }
    let all_succeeded = counts.stopped == counts.succeeded;
    match (terminal, policy) {
        (true, _) | (false, RestartPolicy::Never) | (false, RestartPolicy::OnFailure)
            if all_succeeded =>
        {
            phase::SUCCEEDED
        }
        (true, _) => phase::FAILED,
        (false, RestartPolicy::Always) => phase::RUNNING,
        (false, RestartPolicy::Never) => phase::FAILED,
        (false, RestartPolicy::OnFailure) => phase::RUNNING,
    }
}

/// Whether any regular container has ever started (running, exited, or waiting after a run).
fn any_regular_started(regular: &[ContainerStatus]) -> bool {
    regular
        .iter()
        .any(|s| observe(s) != Observed::WaitingFirstRun)
}

struct StatusViews<'a> {
    init: &'a [ContainerStatus],
    regular: &'a [ContainerStatus],
}

fn conditions(
    pod: &Pod,
    views: &StatusViews<'_>,
    phase: &str,
    facts: &PodFacts,
    previous: Option<&PodStatus>,
) -> Vec<PodCondition> {
    let previous_conditions: &[PodCondition] = previous
        .and_then(|p| p.conditions.as_deref())
        .unwrap_or(&[]);
    let mut result: Vec<PodCondition> = previous_conditions
        .iter()
        .filter(|c| !is_kubelet_condition(&c.type_))
        .cloned()
        .collect();
    let containers_ready = containers_ready_condition(pod, views, phase);
    let ready = ready_condition(pod, &containers_ready, &result);
    let generated = [
        simple(
            condition::POD_READY_TO_START_CONTAINERS,
            facts.sandbox_ready,
            None,
            None,
        ),
        initialized_condition(pod, views, phase),
        ready,
        containers_ready,
        simple(condition::POD_SCHEDULED, true, None, None),
    ];
    for mut generated in generated {
        generated.last_transition_time = Some(Time(transition_time(
            &generated,
            previous_conditions,
            facts.now,
        )));
        result.push(generated);
    }
    result
}

fn is_kubelet_condition(type_: &str) -> bool {
    [
        condition::POD_SCHEDULED,
        condition::POD_READY_TO_START_CONTAINERS,
        condition::INITIALIZED,
        condition::CONTAINERS_READY,
        condition::READY,
    ]
    .contains(&type_)
}

fn transition_time(
    condition: &PodCondition,
    previous: &[PodCondition],
    now: Timestamp,
) -> Timestamp {
    previous
        .iter()
        .find(|p| p.type_ == condition.type_ && p.status == condition.status)
        .and_then(|p| p.last_transition_time.as_ref())
        .map_or(now, |t| t.0)
}

fn simple(
    type_: &str,
    status: bool,
    reason: Option<&str>,
    message: Option<String>,
) -> PodCondition {
    PodCondition {
        type_: type_.to_string(),
        status: if status { "True" } else { "False" }.to_string(),
        reason: reason.map(str::to_string),
        message,
        ..Default::default()
    }
}

/// Go's `%s` of a string slice: `[a b]`.
fn go_list(names: &[String]) -> String {
    format!("[{}]", names.join(" "))
}

fn containers_ready_condition(pod: &Pod, views: &StatusViews<'_>, phase: &str) -> PodCondition {
    match phase {
        phase::SUCCEEDED => {
            return simple(
                condition::CONTAINERS_READY,
                false,
                Some(condition::POD_COMPLETED),
                None,
            );
        }
        phase::FAILED => {
            return simple(
                condition::CONTAINERS_READY,
                false,
                Some(condition::POD_FAILED),
                None,
            );
        }
        _ => {}
    }
    let spec_init = pod
        .spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten());
    let sidecars = spec_init
        .zip(views.init)
        .filter(|(c, _)| is_sidecar(c))
        .map(|(_, s)| s);
    let unready: Vec<String> = sidecars
        .chain(views.regular)
        .filter(|s| !s.ready)
        .map(|s| s.name.clone())
        .collect();
    if unready.is_empty() {
        return simple(condition::CONTAINERS_READY, true, None, None);
    }
    let message = format!("containers with unready status: {}", go_list(&unready));
    simple(
        condition::CONTAINERS_READY,
        false,
        Some(condition::CONTAINERS_NOT_READY),
        Some(message),
    )
}

fn ready_condition(
    pod: &Pod,
    containers_ready: &PodCondition,
    other_conditions: &[PodCondition],
) -> PodCondition {
    if containers_ready.status != "True" {
        return PodCondition {
            type_: condition::READY.to_string(),
            ..containers_ready.clone()
        };
    }
    let gates = pod
        .spec
        .iter()
        .flat_map(|s| s.readiness_gates.iter().flatten());
    let unready: Vec<String> = gates
        .filter_map(|gate| {
            match other_conditions
                .iter()
                .find(|c| c.type_ == gate.condition_type)
            {
                None => Some(format!(
                    "corresponding condition of pod readiness gate {:?} does not exist.",
                    gate.condition_type
                )),
                Some(c) if c.status != "True" => Some(format!(
                    "the status of pod readiness gate {:?} is not \"True\", but {}",
                    gate.condition_type, c.status
                )),
                Some(_) => None,
            }
        })
        .collect();
    if unready.is_empty() {
        return simple(condition::READY, true, None, None);
    }
    simple(
        condition::READY,
        false,
        Some(condition::READINESS_GATES_NOT_READY),
        Some(unready.join(", ")),
    )
}

fn initialized_condition(pod: &Pod, views: &StatusViews<'_>, phase: &str) -> PodCondition {
    if phase == phase::SUCCEEDED {
        return simple(
            condition::INITIALIZED,
            true,
            Some(condition::POD_COMPLETED),
            None,
        );
    }
    if any_regular_started(views.regular) {
        return simple(condition::INITIALIZED, true, None, None);
    }
    let spec_init = pod
        .spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten());
    let incomplete: Vec<String> = spec_init
        .zip(views.init)
        .filter(|(container, status)| {
            if is_sidecar(container) {
                status.started != Some(true)
            } else {
                !status.ready
            }
        })
        .map(|(container, _)| container.name.clone())
        .collect();
    if incomplete.is_empty() {
        return simple(condition::INITIALIZED, true, None, None);
    }
    let message = format!(
        "containers with incomplete status: {}",
        go_list(&incomplete)
    );
    simple(
        condition::INITIALIZED,
        false,
        Some(condition::CONTAINERS_NOT_INITIALIZED),
        Some(message),
    )
}

#[cfg(test)]
mod tests;
