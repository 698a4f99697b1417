//! The pod worker running fixture programs: init order, restart policies and back-off, exit
//! codes, limits, volumes, deadlines and stops, and the events that tell of them. Images come
//! from a resolver serving the fixtures by name (it stands for our own store-backed resolver).

mod common;

use std::time::Duration;

use common::{PULL_TIME, container, events_of, has_event, start, terminated, waiting_reason};
use wasmlet_pod::{ConfigMapContent, ConfigObjects, RunState, TokenKey};

#[tokio::test]
async fn runs_init_containers_in_order_then_shares_an_empty_dir() {
    let pod = start(
        "  restartPolicy: Never\n  volumes: [{name: work, emptyDir: {}}]\n  initContainers:\n  \
         - {name: first, image: fs, args: [write, msg, from-init], volumeMounts: [{name: work, mountPath: /work}]}\n  \
         - {name: second, image: hello, args: [two]}\n  containers:\n  \
         - {name: main, image: fs, args: [read, msg], volumeMounts: [{name: work, mountPath: /work}]}\n  \
         - {name: side, image: hello}\n",
        "",
    );
    let facts = pod.finish().await;
    let first = terminated(&facts, "first");
    let second = terminated(&facts, "second");
    let main = terminated(&facts, "main");
    assert!(
        first.finished_at <= second.started_at,
        "{first:?} {second:?}"
    );
    assert!(second.finished_at <= main.started_at, "{second:?} {main:?}");
    assert_eq!(pod.log("main", 0), ["from-init"]);
    assert_eq!(
        pod.log("second", 0),
        [
            "hello from stdout!",
            "hello from stderr!",
            "Args are: [\"two\"]"
        ]
    );
    assert_eq!(main.exit_code, 0);
    assert_eq!(pod.status(&facts).phase.as_deref(), Some("Succeeded"));
    let ids: Vec<_> = facts
        .pod
        .containers
        .iter()
        .map(|c| c.image_id.as_str())
        .collect();
    assert_eq!(ids[0], "fixtures/fs@sha256:0");
}

#[tokio::test]
async fn never_keeps_the_exact_exit_code() {
    let pod = start(
        "  restartPolicy: Never\n  containers:\n  - {name: c, image: exit, args: [\"42\"]}\n",
        "",
    );
    let facts = pod.finish().await;
    let c = terminated(&facts, "c");
    assert_eq!((c.exit_code, c.reason.as_deref()), (42, Some("Error")));
    assert_eq!(container(&facts, "c").restart_count, 0);
    assert_eq!(pod.status(&facts).phase.as_deref(), Some("Failed"));
}

#[tokio::test]
async fn a_failed_init_container_fails_the_pod_under_never() {
    let pod = start(
        "  restartPolicy: Never\n  initContainers:\n  - {name: init, image: exit, args: [\"3\"]}\n  containers:\n  - {name: c, image: hello}\n",
        "",
    );
    let facts = pod.finish().await;
    assert_eq!(terminated(&facts, "init").exit_code, 3);
    assert_eq!(
        waiting_reason(&facts, "c").map(|w| w.0).as_deref(),
        Some("PodInitializing")
    );
    assert_eq!(pod.status(&facts).phase.as_deref(), Some("Failed"));
}

#[tokio::test]
async fn on_failure_leaves_a_success_alone() {
    let pod = start(
        "  restartPolicy: OnFailure\n  containers:\n  - {name: c, image: hello}\n",
        "",
    );
    let facts = pod.finish().await;
    assert_eq!(terminated(&facts, "c").reason.as_deref(), Some("Completed"));
    assert_eq!(container(&facts, "c").restart_count, 0);
    assert_eq!(pod.status(&facts).phase.as_deref(), Some("Succeeded"));
}

/// Restarts under `policy` of a container exiting with `code`, on tokio's paused clock:
/// the back-off delays must show as CrashLoopBackOff, 10 s then 20 s.
async fn crash_loops(policy: &str, code: &str) {
    let start_at = tokio::time::Instant::now();
    let pod = start(
        &format!(
            "  restartPolicy: {policy}\n  containers:\n  - {{name: c, image: exit, args: [\"{code}\"]}}\n"
        ),
        "",
    );
    let mut facts = pod.worker.facts();
    let mut messages = Vec::new();
    loop {
        let current = facts.borrow_and_update().clone();
        if let Some((reason, message)) = waiting_reason(&current, "c")
            && reason == "CrashLoopBackOff"
            && !messages.contains(&message)
        {
            assert!(current.pod.containers[0].last_termination.is_some());
            messages.push(message);
        }
        if container(&current, "c").restart_count >= 3 {
            let told = "Back-off restarting failed container c in pod p_default(u1)";
            let back_offs = current.events.iter().filter(|e| e.message == told);
            assert!(
                back_offs
                    .clone()
                    .all(|e| e.warning && e.reason == "BackOff")
            );
            let count = back_offs.count();
            assert!((2..=3).contains(&count), "one per back-off: {count}");
            break;
        }
        facts.changed().await.unwrap();
    }
    assert_eq!(
        messages[..2],
        [
            "back-off 10s restarting failed container=c pod=p_default(u1)",
            "back-off 20s restarting failed container=c pod=p_default(u1)",
        ]
    );
    assert!(
        start_at.elapsed() >= Duration::from_secs(30),
        "{:?}",
        start_at.elapsed()
    );
    pod.worker.stop(Duration::ZERO);
    let done = pod.finish().await;
    assert!(done.pod.terminal);
    let logs = pod.worker.dir().logs("c");
    let mut kept: Vec<_> = std::fs::read_dir(logs)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    kept.sort();
    assert_eq!(
        kept,
        ["2.log", "3.log"],
        "the current and the previous run's logs"
    );
}

#[tokio::test(start_paused = true)]
async fn always_restarts_a_success_with_back_off() {
    crash_loops("Always", "0").await;
}

#[tokio::test(start_paused = true)]
async fn on_failure_restarts_a_failure_with_back_off() {
    crash_loops("OnFailure", "3").await;
}

#[tokio::test]
async fn a_memory_limit_is_oom_killed() {
    let pod = start(
        "  restartPolicy: Never\n  containers:\n  - name: c\n    image: membomb\n    resources: {limits: {memory: 16Mi}}\n",
        "",
    );
    let facts = pod.finish().await;
    let c = terminated(&facts, "c");
    assert_eq!((c.exit_code, c.reason.as_deref()), (137, Some("OOMKilled")));
}

#[tokio::test]
async fn a_trap_is_the_termination_message_and_the_last_log_line() {
    let pod = start(
        "  restartPolicy: Never\n  containers:\n  - {name: t, image: trap}\n  \
         - name: m\n    image: membomb\n    resources: {limits: {memory: 16Mi}}\n",
        "",
    );
    let facts = pod.finish().await;
    let t = terminated(&facts, "t");
    assert_eq!((t.exit_code, t.reason.as_deref()), (134, Some("Trap")));
    let message = t.message.unwrap_or_default();
    assert!(
        message.contains("wasm `unreachable` instruction executed"),
        "{message}"
    );
    let log = pod.log("t", 0).join("\n");
    assert!(
        log.starts_with("wasmlet: Trap (exit code 134): error while executing")
            && log.contains("wasm `unreachable` instruction executed"),
        "{log}"
    );
    let m = terminated(&facts, "m");
    assert_eq!(m.reason.as_deref(), Some("OOMKilled"));
    let log = pod.log("m", 0).join("\n");
    assert!(
        log.starts_with("wasmlet: OOMKilled (exit code 137): ")
            && log.ends_with("memory limit of 16777216 bytes exceeded (wanted 16842752 bytes)"),
        "{log}"
    );
}

#[tokio::test]
async fn config_maps_and_secrets_as_env_and_files() {
    let pod = start(
        "  restartPolicy: Never\n  volumes:\n  - {name: cfg, configMap: {name: app}}\n  \
         - {name: sec, secret: {secretName: creds, defaultMode: 0400}}\n  containers:\n  \
         - name: env\n    image: env\n    env:\n    - {name: GREETING, valueFrom: {configMapKeyRef: {name: app, key: greeting}}}\n    \
         - {name: TOKEN, valueFrom: {secretKeyRef: {name: creds, key: token}}}\n  \
         - {name: cfg, image: fs, args: [read, greeting], volumeMounts: [{name: cfg, mountPath: /etc/app}]}\n  \
         - {name: sec, image: fs, args: [read, token], volumeMounts: [{name: sec, mountPath: /var/run/creds}]}\n  \
         - {name: ro, image: fs, args: [write, greeting, x], volumeMounts: [{name: cfg, mountPath: /etc/app}]}\n",
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: app}\ndata: {greeting: hello-config}\n\
         ---\napiVersion: v1\nkind: Secret\nmetadata: {name: creds}\nstringData: {token: s3cret}\n",
    );
    let facts = pod.finish().await;
    let env = pod.log("env", 0);
    assert!(
        env.contains(&"env=GREETING=hello-config".to_owned()),
        "{env:?}"
    );
    assert!(env.contains(&"env=TOKEN=s3cret".to_owned()), "{env:?}");
    assert_eq!(pod.log("cfg", 0), ["hello-config"]);
    assert_eq!(pod.log("sec", 0), ["s3cret"]);
    assert_ne!(
        terminated(&facts, "ro").exit_code,
        0,
        "configMap volumes are read-only"
    );
    let token = pod.worker.dir().volume("sec").join("token");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(token).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o400);
}

#[tokio::test]
async fn sub_path_and_read_only_mounts() {
    let pod = start(
        "  restartPolicy: Never\n  volumes: [{name: data, emptyDir: {}}]\n  initContainers:\n  \
         - {name: write, image: fs, args: [write, f, in-sub], volumeMounts: [{name: data, mountPath: /d, subPath: sub}]}\n  \
         containers:\n  \
         - {name: read, image: fs, args: [read, sub/f], volumeMounts: [{name: data, mountPath: /d, readOnly: true}]}\n  \
         - {name: refused, image: fs, args: [write, g, no], volumeMounts: [{name: data, mountPath: /d, readOnly: true}]}\n",
        "",
    );
    let facts = pod.finish().await;
    assert_eq!(pod.log("read", 0), ["in-sub"]);
    assert_eq!(terminated(&facts, "read").exit_code, 0);
    assert_ne!(terminated(&facts, "refused").exit_code, 0);
    let volume = pod.worker.dir().volume("data");
    assert!(volume.join("sub/f").is_file());
    assert!(
        !volume.join("g").exists(),
        "a read-only mount refuses writes"
    );
}

#[tokio::test]
async fn the_active_deadline_stops_the_pod() {
    let pod = start(
        "  restartPolicy: Always\n  activeDeadlineSeconds: 1\n  terminationGracePeriodSeconds: 0\n  \
         containers:\n  - {name: c, image: sleep, args: [\"60000\"]}\n",
        "",
    );
    let facts = pod.finish().await;
    assert_eq!(
        facts.pod.failure.as_ref().map(|f| f.reason.as_str()),
        Some("DeadlineExceeded")
    );
    let c = terminated(&facts, "c");
    assert_eq!((c.exit_code, c.reason.as_deref()), (143, Some("Error")));
    let status = pod.status(&facts);
    assert_eq!(status.phase.as_deref(), Some("Failed"));
    assert_eq!(status.reason.as_deref(), Some("DeadlineExceeded"));
    let told = events_of(&facts, None);
    let deadline = "Pod was active on the node longer than the specified deadline";
    assert_eq!(told, [("DeadlineExceeded".to_owned(), deadline.to_owned())]);
    assert!(has_event(&facts, "Killing", "Stopping container c"));
}

#[tokio::test(start_paused = true)]
async fn events_tell_pulls_creations_and_starts_in_order() {
    let pod = start(
        "  restartPolicy: Never
  containers:
  - {name: a, image: hello}
  \
         - {name: b, image: hello}
  - {name: c, image: \"exit:v1\"}
  \
         - {name: d, image: exit, imagePullPolicy: Never}
",
        "",
    );
    let facts = pod.finish().await;
    let seqs: Vec<u64> = facts.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert!(
        facts.events.iter().all(|e| !e.warning),
        "{:?}",
        facts.events
    );
    let pulled = format!(
        "Successfully pulled image \"hello\" in {}s ({}s including waiting). Image size: {} bytes.",
        PULL_TIME.as_secs_f32(),
        PULL_TIME.as_secs_f32(),
        wasmlet_fixtures::hello().len()
    );
    let present = |image: &str| format!("Container image \"{image}\" already present on machine");
    let cases = [
        (
            "a",
            vec![
                ("Pulling", "Pulling image \"hello\"".to_owned()),
                ("Pulled", pulled),
            ],
        ),
        ("b", vec![("Pulled", present("hello"))]),
        ("c", vec![("Pulled", present("exit:v1"))]),
        ("d", vec![("Pulled", present("exit"))]),
    ];
    for (name, pulls) in cases {
        let mut expected: Vec<(String, String)> =
            pulls.into_iter().map(|(r, m)| (r.to_owned(), m)).collect();
        expected.push(("Created".into(), format!("Created container: {name}")));
        expected.push(("Started".into(), format!("Started container {name}")));
        assert_eq!(events_of(&facts, Some(name)), expected, "{name}");
    }
}

#[tokio::test]
async fn a_stopped_command_is_not_kept_for_a_grace_period_it_cannot_use() {
    let pod = start(
        "  containers:\n  - {name: long, image: sleep, args: [\"60000\"]}\n  - {name: short, image: sleep, args: [\"300\"]}\n",
        "",
    );
    pod.until(|f| {
        f.pod
            .containers
            .iter()
            .all(|c| matches!(c.state, RunState::Running { .. }))
    })
    .await;
    let asked = std::time::Instant::now();
    pod.worker.stop(Duration::from_secs(30));
    let facts = pod.finish().await;
    let waited = asked.elapsed();
    assert!(
        waited >= wasmlet_runtime::COMMAND_STOP_GRACE && waited < Duration::from_secs(10),
        "a WASI command cannot observe SIGTERM: it ends within a second, not 30: {waited:?}"
    );
    let long = terminated(&facts, "long");
    assert_eq!(
        (long.exit_code, long.reason.as_deref()),
        (143, Some("Error")),
        "as a process ends on SIGTERM"
    );
    let short = terminated(&facts, "short");
    assert_eq!(short.exit_code, 0, "finished by itself meanwhile");
    assert_eq!(pod.log("short", 0), ["slept"]);
    assert!(facts.pod.terminal);
    assert!(has_event(&facts, "Killing", "Stopping container long"));
    assert!(has_event(&facts, "Killing", "Stopping container short"));
}

#[tokio::test]
async fn an_unknown_image_is_err_image_pull() {
    let pod = start("  containers:\n  - {name: c, image: nowhere}\n", "");
    let facts = pod
        .until(|f| waiting_reason(f, "c").is_some_and(|w| w.0 == "ErrImagePull"))
        .await;
    let (_, message) = waiting_reason(&facts, "c").unwrap();
    assert_eq!(message, "pull access denied for nowhere");
    let told = events_of(&facts, Some("c"));
    let expected = [
        ("Pulling", "Pulling image \"nowhere\""),
        (
            "Failed",
            "Failed to pull image \"nowhere\": pull access denied for nowhere",
        ),
        ("Failed", "Error: ErrImagePull"),
    ];
    assert_eq!(
        told[..3],
        expected.map(|(r, m)| (r.to_owned(), m.to_owned()))
    );
    assert!(facts.events[1].warning && facts.events[2].warning);
    let back_off = "Back-off pulling image \"nowhere\"";
    let facts = pod.until(|f| has_event(f, "BackOff", back_off)).await;
    assert!(has_event(&facts, "Failed", "Error: ImagePullBackOff"));
    pod.worker.stop(Duration::ZERO);
    assert!(pod.finish().await.pod.terminal);
}

#[tokio::test]
async fn a_missing_config_map_is_a_mount_error() {
    let pod = start(
        "  volumes: [{name: cfg, configMap: {name: absent}}]\n  containers:\n  - {name: c, image: hello, volumeMounts: [{name: cfg, mountPath: /c}]}\n",
        "",
    );
    let facts = pod.until(|f| f.mount_error.is_some()).await;
    let error = "MountVolume.SetUp failed for volume \"cfg\" : configmap \"absent\" not found";
    assert_eq!(facts.mount_error.as_deref(), Some(error));
    let told = events_of(&facts, None);
    assert_eq!(told[0], ("FailedMount".to_owned(), error.to_owned()));
    assert_eq!(
        waiting_reason(&facts, "c").map(|w| w.0).as_deref(),
        Some("ContainerCreating")
    );
    pod.worker.stop(Duration::ZERO);
    pod.finish().await;
}

#[tokio::test]
async fn objects_that_arrive_late_reach_volumes_and_tokens() {
    let pod = start(
        "  restartPolicy: Never\n  volumes:\n  - {name: cfg, configMap: {name: app}}\n  \
         - {name: sa, projected: {sources: [{serviceAccountToken: {path: token}}]}}\n  \
         containers:\n  - {name: c, image: fs, args: [read, greeting], volumeMounts: [{name: cfg, mountPath: /c}]}\n",
        "",
    );
    pod.until(|f| f.mount_error.is_some()).await;
    // The ConfigMap and the token arrive: the volumes are set up at once, the container runs.
    let mut objects = ConfigObjects::default();
    let content = ConfigMapContent {
        data: [("greeting".to_owned(), "first".to_owned())].into(),
        ..ConfigMapContent::default()
    };
    objects.config_maps.insert("app".into(), content.clone());
    let key = TokenKey {
        audience: None,
        expiration_seconds: 3600,
    };
    objects.tokens.insert(key.clone(), "jwt-1".into());
    pod.worker.update_objects(objects.clone());
    pod.finish().await;
    assert_eq!(pod.log("c", 0), ["first"]);
    let token = pod.worker.dir().volume("sa").join("token");
    assert_eq!(std::fs::read_to_string(&token).unwrap(), "jwt-1");
}

#[tokio::test]
async fn a_running_pod_sees_config_map_updates_in_its_volume() {
    let pod = start(
        "  volumes: [{name: cfg, configMap: {name: app}}]\n  \
         containers:\n  - {name: c, image: sleep, args: ['600000'], volumeMounts: [{name: cfg, mountPath: /c}]}\n",
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: app}\ndata: {greeting: first}\n",
    );
    pod.until(|f| matches!(f.pod.containers[0].state, RunState::Running { .. }))
        .await;
    let file = pod.worker.dir().volume("cfg").join("greeting");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "first");
    let mut objects = ConfigObjects::default();
    let content = ConfigMapContent {
        data: [("greeting".to_owned(), "second".to_owned())].into(),
        ..ConfigMapContent::default()
    };
    objects.config_maps.insert("app".into(), content);
    pod.worker.update_objects(objects);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&file).unwrap() != "second" {
        assert!(
            std::time::Instant::now() < deadline,
            "the volume was not updated"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pod.kill().await;
}

#[tokio::test(start_paused = true)]
async fn an_empty_dir_past_its_size_limit_evicts_the_pod() {
    let big = "x".repeat(4096);
    let pod = start(
        &format!(
            "  restartPolicy: Never\n  volumes: [{{name: scratch, emptyDir: {{sizeLimit: 1Ki}}}}]\n  \
             containers:\n  \
             - {{name: writer, image: fs, args: [write, big, '{big}'], volumeMounts: [{{name: scratch, mountPath: /s}}]}}\n  \
             - {{name: sleeper, image: sleep, args: ['600000']}}\n"
        ),
        "",
    );
    let facts = pod.finish().await;
    let failure = facts.pod.failure.clone().expect("the pod was not evicted");
    assert_eq!(failure.reason, "Evicted");
    assert_eq!(
        failure.message,
        "Usage of EmptyDir volume \"scratch\" exceeds the limit \"1Ki\". "
    );
    let status = pod.status(&facts);
    assert_eq!(status.phase.as_deref(), Some("Failed"));
    assert_eq!(status.reason.as_deref(), Some("Evicted"));
    assert!(
        has_event(
            &facts,
            "Evicted",
            "Usage of EmptyDir volume \"scratch\" exceeds the limit \"1Ki\". "
        ),
        "{:?}",
        facts.events
    );
}

#[tokio::test]
async fn a_memory_backed_empty_dir_is_a_tmpfs_of_its_size_limit() {
    // A small file first (an init container), then four writers of 20 KiB each on a 64 KiB
    // tmpfs: the last to write finds no space.
    let chunk = "x".repeat(20 * 1024);
    let mount = "volumeMounts: [{name: ram, mountPath: /r}]";
    let writers: String = (1..=4)
        .map(|i| {
            format!("  - {{name: big{i}, image: fs, args: [write, big{i}, '{chunk}'], {mount}}}\n")
        })
        .collect();
    let pod = start(
        &format!(
            "  restartPolicy: Never\n  volumes: [{{name: ram, emptyDir: {{medium: Memory, sizeLimit: 64Ki}}}}]\n  \
             initContainers:\n  \
             - {{name: small, image: fs, args: [write, small, hello], {mount}}}\n  \
             containers:\n{writers}  \
             - {{name: sleeper, image: sleep, args: ['600000']}}\n"
        ),
        "",
    );
    let names = ["small", "big1", "big2", "big3", "big4"];
    let done = |f: &wasmlet_worker::WorkerFacts| {
        (names.iter()).all(|c| matches!(container(f, c).state, RunState::Terminated(_)))
    };
    let facts = pod.until(done).await;
    let volume = pod.worker.dir().volume("ram");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = (mounts.lines())
        .find(|l| l.split(' ').nth(4) == volume.to_str())
        .unwrap_or_else(|| panic!("no mount at {}:\n{mounts}", volume.display()));
    assert!(
        line.contains(" - tmpfs ") && line.contains("size=64k"),
        "{line}"
    );
    assert_eq!(terminated(&facts, "small").exit_code, 0);
    assert_eq!(
        std::fs::read_to_string(volume.join("small")).unwrap(),
        "hello"
    );
    // A write past the size limit fails for lack of space (WASI errno 51, ENOSPC).
    let codes: Vec<i32> = (1..=4)
        .map(|i| terminated(&facts, &format!("big{i}")).exit_code)
        .collect();
    assert!(codes.iter().all(|c| [0, 51].contains(c)), "{codes:?}");
    assert!(codes.contains(&51), "every 20 KiB write fit: {codes:?}");
    let written: u64 = (1..=4)
        .filter_map(|i| std::fs::metadata(volume.join(format!("big{i}"))).ok())
        .map(|m| m.len())
        .sum();
    assert!(written <= 64 * 1024, "{written} bytes on a 64 KiB tmpfs");

    pod.kill().await;
    pod.worker.dir().remove().unwrap();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let dir = pod.worker.dir().path().to_str().unwrap().to_owned();
    assert!(
        !mounts.contains(&dir),
        "a mount under {dir} was left:\n{mounts}"
    );
}
