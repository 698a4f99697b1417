//! What a pod's running containers use, read through the worker's handle while it runs.

mod common;

use std::time::Duration;

use common::start;
use wasmlet_pod::RunState;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_lists_the_running_containers() {
    let pod = start(
        "  restartPolicy: Never\n  containers:\n  \
         - {name: sleeper, image: sleep, args: [\"600000\"]}\n  \
         - {name: quick, image: hello}\n",
        "",
    );
    let handle = pod.worker.usage_handle();
    pod.until(|f| {
        let state = |name: &str| {
            f.pod
                .containers
                .iter()
                .find(|c| c.name == name)
                .map(|c| &c.state)
        };
        matches!(state("sleeper"), Some(RunState::Running { .. }))
            && matches!(state("quick"), Some(RunState::Terminated(_)))
    })
    .await;
    let running = pod.worker.usage();
    assert_eq!(running.len(), 1, "{running:?}");
    let sleeper = &running[0];
    assert_eq!(sleeper.name, "sleeper");
    assert_eq!(sleeper.usage.memory_bytes, 65536, "one page: {sleeper:?}");
    assert!(sleeper.usage.cpu > Duration::ZERO, "{sleeper:?}");
    let names: Vec<String> = handle.containers().into_iter().map(|c| c.name).collect();
    assert_eq!(names, ["sleeper"], "the handle sees the same");

    pod.kill().await;
    assert!(
        handle.containers().is_empty(),
        "nothing runs after the stop"
    );
}
