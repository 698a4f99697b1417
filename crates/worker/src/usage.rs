//! What the running containers of a pod use, readable from outside the worker at any time
//! (for resource metrics): the worker records each run as it starts and ends, a reader asks
//! the runtime's containers for their [`Usage`] when it wants it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use wasmlet_pod::k8s_openapi::jiff::Timestamp;
use wasmlet_runtime::{Container, Usage};

/// What one running container uses now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerUsage {
    /// The container's name.
    pub name: String,
    /// When its current run started (a restart starts the counters anew).
    pub started_at: Timestamp,
    /// What the current run has used: CPU since it started, memory now.
    pub usage: Usage,
}

/// A handle on the usage of one pod's running containers: cheap to clone, readable from any
/// thread, and it stays valid (listing nothing) once the pod has ended.
#[derive(Clone, Default)]
pub struct PodUsage {
    running: Arc<Mutex<BTreeMap<usize, Run>>>,
}

/// A running container, by its index in the pod (init containers first).
struct Run {
    name: String,
    started_at: Timestamp,
    container: Arc<Container>,
}

impl PodUsage {
    /// The containers running now, init containers first, then in the pod's order.
    pub fn containers(&self) -> Vec<ContainerUsage> {
        self.lock()
            .values()
            .map(|run| ContainerUsage {
                name: run.name.clone(),
                started_at: run.started_at,
                usage: run.container.usage(),
            })
            .collect()
    }

    /// A run of container `index` started.
    pub(crate) fn started(
        &self,
        index: usize,
        name: &str,
        started_at: Timestamp,
        container: Arc<Container>,
    ) {
        let run = Run {
            name: name.to_owned(),
            started_at,
            container,
        };
        self.lock().insert(index, run);
    }

    /// The run of container `index` ended.
    pub(crate) fn ended(&self, index: usize) {
        self.lock().remove(&index);
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<usize, Run>> {
        // Nothing panics while holding the lock; a poisoned map is still consistent.
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for PodUsage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodUsage")
            .field("running", &self.lock().len())
            .finish()
    }
}
