use super::*;
use k8s_openapi::api::core::v1::PodStatus;

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + seconds).unwrap()
}

fn pod(spec_yaml: &str) -> Pod {
    serde_yaml::from_str(&format!("metadata: {{name: p}}\nspec:\n{spec_yaml}")).unwrap()
}

fn facts(containers: Vec<ContainerFacts>) -> PodFacts {
    PodFacts {
        containers,
        start_time: Some(at(0)),
        host_ips: vec!["127.0.0.2".into()],
        pod_ips: vec!["127.0.1.7".into()],
        sandbox_ready: true,
        terminal: false,
        failure: None,
        now: at(100),
    }
}

fn base(name: &str, state: RunState) -> ContainerFacts {
    ContainerFacts {
        name: name.into(),
        state,
        last_termination: None,
        restart_count: 0,
        image: "img".into(),
        image_id: "sha256:abc".into(),
        container_id: Some(format!("wasmlet://{name}")),
        ready: true,
        started: None,
    }
}

fn running(name: &str) -> ContainerFacts {
    base(name, RunState::Running { started_at: at(10) })
}

fn unready(name: &str) -> ContainerFacts {
    ContainerFacts {
        ready: false,
        ..running(name)
    }
}

fn exited(name: &str, code: i32) -> ContainerFacts {
    base(
        name,
        RunState::Terminated(Termination {
            exit_code: code,
            started_at: Some(at(10)),
            finished_at: Some(at(20)),
            ..Default::default()
        }),
    )
}

fn back_off(name: &str, last_code: i32) -> ContainerFacts {
    ContainerFacts {
        last_termination: Some(Termination {
            exit_code: last_code,
            ..Default::default()
        }),
        restart_count: 3,
        ..base(
            name,
            RunState::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: Some("back-off 20s".into()),
            },
        )
    }
}

fn condition_of<'a>(status: &'a PodStatus, type_: &str) -> &'a PodCondition {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition"))
}

const ONE: &str = "  containers:\n  - {name: a, image: img}\n";
const TWO: &str = "  containers:\n  - {name: a, image: img}\n  - {name: b, image: img}\n";
const WITH_INIT: &str =
    "  initContainers:\n  - {name: i, image: img}\n  containers:\n  - {name: a, image: img}\n";
const WITH_SIDECAR: &str = "  initContainers:\n  - {name: s, image: img, restartPolicy: Always}\n  containers:\n  - {name: a, image: img}\n";

fn with_policy(spec: &str, policy: &str) -> String {
    format!("  restartPolicy: {policy}\n{spec}")
}

#[test]
fn computes_phases_like_get_phase() {
    let cases: Vec<(String, Vec<ContainerFacts>, bool, &str)> = vec![
        (ONE.into(), vec![], false, phase::PENDING),
        (ONE.into(), vec![running("a")], false, phase::RUNNING),
        (ONE.into(), vec![unready("a")], false, phase::RUNNING),
        (ONE.into(), vec![exited("a", 0)], false, phase::RUNNING),
        (
            with_policy(ONE, "OnFailure"),
            vec![exited("a", 0)],
            false,
            phase::SUCCEEDED,
        ),
        (
            with_policy(ONE, "Never"),
            vec![exited("a", 0)],
            false,
            phase::SUCCEEDED,
        ),
        (ONE.into(), vec![exited("a", 1)], false, phase::RUNNING),
        (
            with_policy(ONE, "OnFailure"),
            vec![exited("a", 1)],
            false,
            phase::RUNNING,
        ),
        (
            with_policy(ONE, "Never"),
            vec![exited("a", 1)],
            false,
            phase::FAILED,
        ),
        (ONE.into(), vec![back_off("a", 1)], false, phase::RUNNING),
        (
            with_policy(ONE, "OnFailure"),
            vec![back_off("a", 1)],
            false,
            phase::RUNNING,
        ),
        (
            ONE.into(),
            vec![base(
                "a",
                RunState::Waiting {
                    reason: "CreateContainerConfigError".into(),
                    message: None,
                },
            )],
            false,
            phase::PENDING,
        ),
        (TWO.into(), vec![running("a")], false, phase::PENDING),
        (
            with_policy(TWO, "Never"),
            vec![running("a"), exited("b", 1)],
            false,
            phase::RUNNING,
        ),
        (
            with_policy(TWO, "Never"),
            vec![exited("a", 0), exited("b", 1)],
            false,
            phase::FAILED,
        ),
        (
            with_policy(TWO, "OnFailure"),
            vec![exited("a", 0), exited("b", 0)],
            false,
            phase::SUCCEEDED,
        ),
        (ONE.into(), vec![exited("a", 1)], true, phase::FAILED),
        (ONE.into(), vec![exited("a", 0)], true, phase::SUCCEEDED),
        (ONE.into(), vec![running("a")], true, phase::RUNNING),
        (WITH_INIT.into(), vec![], false, phase::PENDING),
        (WITH_INIT.into(), vec![running("i")], false, phase::PENDING),
        (
            WITH_INIT.into(),
            vec![exited("i", 1)],
            false,
            phase::PENDING,
        ),
        (
            WITH_INIT.into(),
            vec![back_off("i", 1)],
            false,
            phase::PENDING,
        ),
        (
            with_policy(WITH_INIT, "Never"),
            vec![exited("i", 1)],
            false,
            phase::FAILED,
        ),
        (
            with_policy(WITH_INIT, "Never"),
            vec![exited("i", 0)],
            false,
            phase::PENDING,
        ),
        (
            WITH_INIT.into(),
            vec![exited("i", 0), running("a")],
            false,
            phase::RUNNING,
        ),
        (
            with_policy(WITH_INIT, "Never"),
            vec![exited("i", 0), exited("a", 0)],
            false,
            phase::SUCCEEDED,
        ),
        (WITH_SIDECAR.into(), vec![], false, phase::PENDING),
        (
            WITH_SIDECAR.into(),
            vec![ContainerFacts {
                started: Some(false),
                ..running("s")
            }],
            false,
            phase::PENDING,
        ),
        (
            WITH_SIDECAR.into(),
            vec![running("s")],
            false,
            phase::PENDING,
        ),
        (
            WITH_SIDECAR.into(),
            vec![running("s"), running("a")],
            false,
            phase::RUNNING,
        ),
        (
            with_policy(WITH_SIDECAR, "Never"),
            vec![exited("s", 137), exited("a", 0)],
            false,
            phase::SUCCEEDED,
        ),
        (
            WITH_SIDECAR.into(),
            vec![back_off("s", 1), running("a")],
            false,
            phase::RUNNING,
        ),
    ];
    for (spec, containers, terminal, expected) in cases {
        let facts = PodFacts {
            terminal,
            ..facts(containers.clone())
        };
        let status = pod_status(&pod(&spec), &facts, None);
        assert_eq!(
            status.phase.as_deref(),
            Some(expected),
            "{spec}{containers:?} terminal={terminal}"
        );
    }
}

#[test]
fn node_failures_and_terminal_phases_win() {
    let failure = PodFailure {
        reason: "DeadlineExceeded".into(),
        message: "Pod was active on the node longer than the specified deadline".into(),
    };
    let facts_failed = PodFacts {
        failure: Some(failure),
        ..facts(vec![running("a")])
    };
    let status = pod_status(&pod(ONE), &facts_failed, None);
    assert_eq!(status.phase.as_deref(), Some("Failed"));
    assert_eq!(status.reason.as_deref(), Some("DeadlineExceeded"));
    assert_eq!(
        condition_of(&status, "Ready").reason.as_deref(),
        Some("PodFailed")
    );

    let previous = PodStatus {
        phase: Some("Succeeded".into()),
        ..Default::default()
    };
    let status = pod_status(&pod(ONE), &facts(vec![running("a")]), Some(&previous));
    assert_eq!(status.phase.as_deref(), Some("Succeeded"));

    let previous = PodStatus {
        phase: Some("Running".into()),
        reason: Some("Kept".into()),
        ..Default::default()
    };
    let status = pod_status(&pod(ONE), &facts(vec![running("a")]), Some(&previous));
    assert_eq!(status.reason.as_deref(), Some("Kept"));
    let status = pod_status(&pod(ONE), &facts(vec![]), Some(&previous));
    assert_eq!(status.reason, None);
}

/// (type, status, reason, message) of the generated conditions, in the kubelet's order.
type ConditionRow = (
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
);

fn condition_rows(status: &PodStatus) -> Vec<(String, String, Option<String>, Option<String>)> {
    status
        .conditions
        .iter()
        .flatten()
        .map(|c| {
            (
                c.type_.clone(),
                c.status.clone(),
                c.reason.clone(),
                c.message.clone(),
            )
        })
        .collect()
}

fn expected_rows(rows: &[ConditionRow]) -> Vec<(String, String, Option<String>, Option<String>)> {
    rows.iter()
        .map(|(t, s, r, m)| {
            (
                t.to_string(),
                s.to_string(),
                r.map(String::from),
                m.map(String::from),
            )
        })
        .collect()
}

#[test]
fn generates_conditions() {
    let cases: Vec<(String, Vec<ContainerFacts>, Vec<ConditionRow>)> = vec![
        (
            ONE.into(),
            vec![running("a")],
            vec![
                ("PodReadyToStartContainers", "True", None, None),
                ("Initialized", "True", None, None),
                ("Ready", "True", None, None),
                ("ContainersReady", "True", None, None),
                ("PodScheduled", "True", None, None),
            ],
        ),
        (
            TWO.into(),
            vec![unready("a")],
            vec![
                ("PodReadyToStartContainers", "True", None, None),
                ("Initialized", "True", None, None),
                (
                    "Ready",
                    "False",
                    Some("ContainersNotReady"),
                    Some("containers with unready status: [a b]"),
                ),
                (
                    "ContainersReady",
                    "False",
                    Some("ContainersNotReady"),
                    Some("containers with unready status: [a b]"),
                ),
                ("PodScheduled", "True", None, None),
            ],
        ),
        (
            WITH_INIT.into(),
            vec![running("i")],
            vec![
                ("PodReadyToStartContainers", "True", None, None),
                (
                    "Initialized",
                    "False",
                    Some("ContainersNotInitialized"),
                    Some("containers with incomplete status: [i]"),
                ),
                (
                    "Ready",
                    "False",
                    Some("ContainersNotReady"),
                    Some("containers with unready status: [a]"),
                ),
                (
                    "ContainersReady",
                    "False",
                    Some("ContainersNotReady"),
                    Some("containers with unready status: [a]"),
                ),
                ("PodScheduled", "True", None, None),
            ],
        ),
        (
            with_policy(ONE, "Never"),
            vec![exited("a", 0)],
            vec![
                ("PodReadyToStartContainers", "True", None, None),
                ("Initialized", "True", Some("PodCompleted"), None),
                ("Ready", "False", Some("PodCompleted"), None),
                ("ContainersReady", "False", Some("PodCompleted"), None),
                ("PodScheduled", "True", None, None),
            ],
        ),
        (
            with_policy(ONE, "Never"),
            vec![exited("a", 2)],
            vec![
                ("PodReadyToStartContainers", "True", None, None),
                ("Initialized", "True", None, None),
                ("Ready", "False", Some("PodFailed"), None),
                ("ContainersReady", "False", Some("PodFailed"), None),
                ("PodScheduled", "True", None, None),
            ],
        ),
        (
            WITH_SIDECAR.into(),
            vec![
                ContainerFacts {
                    ready: false,
                    ..running("s")
                },
                running("a"),
            ],
            vec![
                ("PodReadyToStartContainers", "True", None, None),
                ("Initialized", "True", None, None),
                (
                    "Ready",
                    "False",
                    Some("ContainersNotReady"),
                    Some("containers with unready status: [s]"),
                ),
                (
                    "ContainersReady",
                    "False",
                    Some("ContainersNotReady"),
                    Some("containers with unready status: [s]"),
                ),
                ("PodScheduled", "True", None, None),
            ],
        ),
    ];
    for (spec, containers, expected) in cases {
        let status = pod_status(&pod(&spec), &facts(containers.clone()), None);
        assert_eq!(
            condition_rows(&status),
            expected_rows(&expected),
            "{spec}{containers:?}"
        );
    }
    let no_sandbox = PodFacts {
        sandbox_ready: false,
        ..facts(vec![])
    };
    let status = pod_status(&pod(ONE), &no_sandbox, None);
    assert_eq!(
        condition_of(&status, "PodReadyToStartContainers").status,
        "False"
    );
}

#[test]
fn evaluates_readiness_gates() {
    let spec = "  readinessGates:\n  - {conditionType: example.com/lb}\n  containers:\n  - {name: a, image: img}\n";
    let status = pod_status(&pod(spec), &facts(vec![running("a")]), None);
    let ready = condition_of(&status, "Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_deref()),
        ("False", Some("ReadinessGatesNotReady"))
    );
    assert_eq!(
        ready.message.as_deref(),
        Some("corresponding condition of pod readiness gate \"example.com/lb\" does not exist.")
    );

    let gate = |status: &str| PodCondition {
        type_: "example.com/lb".into(),
        status: status.into(),
        ..Default::default()
    };
    let previous = PodStatus {
        conditions: Some(vec![gate("False")]),
        ..Default::default()
    };
    let status = pod_status(&pod(spec), &facts(vec![running("a")]), Some(&previous));
    assert_eq!(
        condition_of(&status, "Ready").message.as_deref(),
        Some("the status of pod readiness gate \"example.com/lb\" is not \"True\", but False")
    );
    assert_eq!(condition_of(&status, "example.com/lb").status, "False");

    let previous = PodStatus {
        conditions: Some(vec![gate("True")]),
        ..Default::default()
    };
    let status = pod_status(&pod(spec), &facts(vec![running("a")]), Some(&previous));
    assert_eq!(condition_of(&status, "Ready").status, "True");
}

#[test]
fn keeps_transition_times_while_status_holds() {
    let first = pod_status(&pod(ONE), &facts(vec![running("a")]), None);
    assert_eq!(
        condition_of(&first, "Ready").last_transition_time,
        Some(Time(at(100)))
    );
    let later = PodFacts {
        now: at(200),
        ..facts(vec![running("a")])
    };
    let second = pod_status(&pod(ONE), &later, Some(&first));
    assert_eq!(
        condition_of(&second, "Ready").last_transition_time,
        Some(Time(at(100)))
    );
    let changed = PodFacts {
        now: at(300),
        ..facts(vec![unready("a")])
    };
    let third = pod_status(&pod(ONE), &changed, Some(&second));
    assert_eq!(
        condition_of(&third, "Ready").last_transition_time,
        Some(Time(at(300)))
    );
    assert_eq!(
        condition_of(&third, "PodScheduled").last_transition_time,
        Some(Time(at(100)))
    );
}

#[test]
fn fills_container_statuses() {
    let status = pod_status(&pod(WITH_INIT), &facts(vec![]), None);
    let init = &status.init_container_statuses.as_ref().unwrap()[0];
    let regular = &status.container_statuses.as_ref().unwrap()[0];
    let reason = |s: &ContainerStatus| {
        s.state
            .as_ref()
            .and_then(|st| st.waiting.as_ref())
            .and_then(|w| w.reason.clone())
    };
    assert_eq!(reason(init).as_deref(), Some("ContainerCreating"));
    assert_eq!(reason(regular).as_deref(), Some("PodInitializing"));
    assert_eq!(
        (init.image.as_str(), init.ready, init.started),
        ("img", false, Some(false))
    );
    assert_eq!(
        pod_status(&pod(ONE), &facts(vec![]), None).init_container_statuses,
        None
    );

    let status = pod_status(
        &pod(WITH_INIT),
        &facts(vec![exited("i", 0), back_off("a", 137)]),
        None,
    );
    let init = &status.init_container_statuses.as_ref().unwrap()[0];
    assert!(init.ready);
    let terminated = init
        .state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .unwrap();
    assert_eq!(
        (terminated.exit_code, terminated.reason.as_deref()),
        (0, Some("Completed"))
    );
    assert_eq!(terminated.finished_at, Some(Time(at(20))));
    let regular = &status.container_statuses.as_ref().unwrap()[0];
    assert_eq!(
        (regular.restart_count, regular.ready, regular.started),
        (3, false, Some(false))
    );
    let last = regular
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .unwrap();
    assert_eq!(
        (last.exit_code, last.reason.as_deref()),
        (137, Some("Error"))
    );
    assert_eq!(regular.image_id, "sha256:abc");
    assert_eq!(regular.container_id.as_deref(), Some("wasmlet://a"));

    let status = pod_status(
        &pod(ONE),
        &facts(vec![ContainerFacts {
            started: Some(false),
            ..running("a")
        }]),
        None,
    );
    let regular = &status.container_statuses.as_ref().unwrap()[0];
    assert_eq!(regular.started, Some(false));
    assert!(
        regular
            .state
            .as_ref()
            .and_then(|s| s.running.as_ref())
            .is_some()
    );
}

#[test]
fn reports_pod_level_fields() {
    let spec =
        "  containers:\n  - {name: a, image: img, resources: {limits: {cpu: '1', memory: 1Gi}}}\n";
    let status = pod_status(&pod(spec), &facts(vec![running("a")]), None);
    assert_eq!(status.qos_class.as_deref(), Some("Guaranteed"));
    assert_eq!(status.start_time, Some(Time(at(0))));
    assert_eq!(status.host_ip.as_deref(), Some("127.0.0.2"));
    assert_eq!(status.pod_ip.as_deref(), Some("127.0.1.7"));
    assert_eq!(
        status.pod_ips,
        Some(vec![PodIP {
            ip: "127.0.1.7".into()
        }])
    );
    assert_eq!(
        status.host_ips,
        Some(vec![HostIP {
            ip: "127.0.0.2".into()
        }])
    );
    let bare = PodFacts {
        host_ips: vec![],
        pod_ips: vec![],
        start_time: None,
        ..facts(vec![])
    };
    let status = pod_status(&pod(ONE), &bare, None);
    assert_eq!(
        (status.pod_ip, status.pod_ips, status.start_time),
        (None, None, None)
    );
    assert_eq!(status.qos_class.as_deref(), Some("BestEffort"));
}

#[test]
fn builds_waiting_states() {
    let error = crate::plan::PlanError::Env(crate::env::EnvError::ConfigMapNotFound("x".into()));
    assert_eq!(
        RunState::config_error(&error),
        RunState::Waiting {
            reason: "CreateContainerConfigError".into(),
            message: Some("configmap \"x\" not found".into())
        }
    );
    let state =
        RunState::crash_loop_back_off("back-off 10s restarting failed container=a pod=p_ns(u)");
    let status = pod_status(&pod(ONE), &facts(vec![base("a", state)]), None);
    let waiting = status.container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .waiting
        .unwrap();
    assert_eq!(waiting.reason.as_deref(), Some("CrashLoopBackOff"));
    assert_eq!(
        waiting.message.as_deref(),
        Some("back-off 10s restarting failed container=a pod=p_ns(u)")
    );
}
