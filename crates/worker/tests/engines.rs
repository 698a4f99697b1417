//! The engine a pod runs on: the node's, or the one its `wasmlet.dev/engine` annotation
//! names; an unknown engine, or one this build lacks, is the container's
//! `CreateContainerConfigError` naming the annotation and the fix.

mod common;

use common::{container, start, start_annotated, terminated, waiting_reason};
use wasmlet_runtime::EngineKind;

const HELLO: &str = "  restartPolicy: Never\n  containers:\n  - {name: c, image: hello}\n";

#[tokio::test]
async fn an_unknown_engine_is_a_config_error_naming_the_annotation() {
    let pod = start_annotated("\"wasmlet.dev/engine\": lucet", HELLO);
    let facts = pod
        .until(|f| waiting_reason(f, "c").is_some_and(|w| w.0 == "CreateContainerConfigError"))
        .await;
    let (_, message) = waiting_reason(&facts, "c").unwrap();
    assert!(
        message.contains("wasmlet.dev/engine=\"lucet\"")
            && message.contains("`wasmtime` or `wasmer`")
            && message.contains("fix or remove it"),
        "{message}"
    );
    pod.kill().await;
}

#[tokio::test]
async fn the_annotation_chooses_the_engine() {
    for kind in EngineKind::ALL {
        let annotation = format!("\"wasmlet.dev/engine\": {kind}");
        let pod = start_annotated(&annotation, HELLO);
        if kind.version().is_none() {
            let facts = pod
                .until(|f| {
                    waiting_reason(f, "c").is_some_and(|w| w.0 == "CreateContainerConfigError")
                })
                .await;
            let (_, message) = waiting_reason(&facts, "c").unwrap();
            assert!(message.contains("built without"), "{message}");
            pod.kill().await;
            continue;
        }
        let facts = pod.finish().await;
        assert_eq!(terminated(&facts, "c").exit_code, 0, "{kind}");
        let log = pod.log("c", 0);
        assert!(
            log.iter().any(|l| l == "hello from stdout!"),
            "{kind}: {log:?}"
        );
    }
}

#[tokio::test]
async fn without_the_annotation_the_nodes_engine_runs_the_pod() {
    let pod = start(HELLO, "");
    let facts = pod.finish().await;
    assert_eq!(container(&facts, "c").restart_count, 0);
    assert_eq!(terminated(&facts, "c").exit_code, 0);
}
