//! The pods whose worker runs on this node, for the kubelet API's resource metrics: each pod
//! task registers its worker's usage handle once the worker has started and removes it when
//! the worker has ended.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use wasmlet_worker::{PodUsage, PodWorker};

/// One pod with a running worker.
#[derive(Clone, Debug)]
pub struct RunningPod {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    /// The pod's UID.
    pub uid: String,
    /// When the worker took the pod on (the pod's `status.startTime`).
    pub start_time: Option<Timestamp>,
    /// What its running containers use.
    pub usage: PodUsage,
}

/// The registry of running pods, by UID. Shared by the pod tasks (writers) and the API
/// server (reader).
#[derive(Debug, Default)]
pub struct RunningPods {
    pods: Mutex<BTreeMap<String, RunningPod>>,
}

impl RunningPods {
    /// Records the worker of `pod` (replacing an earlier one of the same UID).
    pub fn register(&self, pod: &Pod, worker: &PodWorker) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let running = RunningPod {
            namespace: wasmlet_pod::downward::pod_namespace(pod).to_owned(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: uid.clone(),
            start_time: worker.facts().borrow().pod.start_time,
            usage: worker.usage_handle(),
        };
        self.lock().insert(uid, running);
    }

    /// Forgets the pod with this UID (its worker has ended).
    pub fn unregister(&self, uid: &str) {
        self.lock().remove(uid);
    }

    /// The running pods, by UID.
    pub fn list(&self) -> Vec<RunningPod> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, RunningPod>> {
        // Nothing panics while holding the lock; a poisoned map is still consistent.
        self.pods.lock().unwrap_or_else(|e| e.into_inner())
    }
}
