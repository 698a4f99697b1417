//! Taking over a pod an earlier worker ran (the node agent restarted, e.g. after `kill -9`):
//! its containers' restart counts and last terminations carry on, so a restart is counted
//! as one, the previous run's log stays readable (`kubectl logs --previous`), a container
//! that completed is judged by its restart policy instead of run afresh, and the pod keeps
//! its `startTime`.

use std::collections::BTreeMap;

use wasmlet_pod::Termination;
use wasmlet_pod::k8s_openapi::jiff::Timestamp;

/// What is known of a pod from before this worker.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resume {
    /// The pod's `startTime` as reported before.
    pub start_time: Option<Timestamp>,
    /// The containers (init and regular) that ran before, by name.
    pub containers: BTreeMap<String, ResumedContainer>,
}

/// One container that ran before.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResumedContainer {
    /// Its `restartCount`: the number of its last run (0 for the first).
    pub restart_count: i32,
    /// How its last run ended. A run that was going on when the earlier worker went away
    /// is over too: the kubelet reports it as exit code 137, `ContainerStatusUnknown`
    /// ([`ResumedContainer::lost`]).
    pub last: Termination,
}

/// The kubelet's reason for a container that was running and can no longer be found.
pub const CONTAINER_STATUS_UNKNOWN: &str = "ContainerStatusUnknown";

impl ResumedContainer {
    /// A run that was going on when the earlier worker went away.
    pub fn lost(restart_count: i32, started_at: Option<Timestamp>, now: Timestamp) -> Self {
        ResumedContainer {
            restart_count,
            last: Termination {
                exit_code: 137,
                signal: None,
                reason: Some(CONTAINER_STATUS_UNKNOWN.into()),
                message: Some(
                    "The container could not be located when the pod was terminated".into(),
                ),
                started_at,
                finished_at: Some(now),
                container_id: None,
            },
        }
    }
}
