//! `wasmlet run pod.yaml` and `wasmlet run REF`: a Pod manifest or an image on this machine.
//!
//! A pod runs through the pod worker (`wasmlet-worker`), as the kubelet runs a static pod:
//! init containers in order, then the containers together, restarted under the pod's
//! `restartPolicy` with the kubelet's back-off. Container output goes to the terminal, each
//! line prefixed with the container's name (`[hello] hello from stdout!`); the CRI logs stay
//! under `<state>/pods/<uid>/logs/` (state: `$WASMLET_STATE_DIR`, else
//! `$XDG_STATE_HOME/wasmlet`, else `~/.local/state/wasmlet`). At the end a status table is
//! printed and the exit code reflects the pod: 0 when it Succeeded, else the exit code of the
//! first failing container (init containers first), else 1.
//!
//! With `restartPolicy: Always` (the default) the pod runs until interrupted, as under a
//! kubelet: SIGINT or SIGTERM stops it with its grace period (`terminationGracePeriodSeconds`,
//! default 30 s; WASI has no signals, so a container that does not end by itself is killed
//! when the grace period is over); a second interrupt kills at once. Problems a kubelet would
//! retry forever (an image that cannot be pulled, a missing ConfigMap, a container that
//! cannot be configured) end the run with the kubelet's message and exit code 1.
//!
//! Images come from the local store, pulled when absent (or always, under
//! `imagePullPolicy: Always`); an image naming a local `.wasm`/`.wat` file (relative to the
//! manifest's directory, else to the current directory) is run from that file. The store keeps an image's
//! ENTRYPOINT and CMD as one argv, so a container's `args` are appended to it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use tokio::signal::unix::{SignalKind, signal};
use wasmlet_oci::store::{Image, Store};
use wasmlet_oci::{Digest, Reference, pull};
use wasmlet_pod::k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodStatus};
use wasmlet_pod::{ImageConfig, Manifest, NodeAllocatable, NodeFacts, load_manifest, pod_status};
use wasmlet_runtime::{ContainerSpec, Runtime, RuntimeConfig};
use wasmlet_worker::{
    ImageError, ImageRequest, PodWorker, PullFuture, PullPolicy, Puller, StoreResolver,
    WorkerConfig, WorkerFacts,
};

use crate::images::RegistryArgs;
use crate::progress::Reporter;
use crate::run::{self, RunArgs};

/// Waiting reasons a kubelet would retry forever, which end `wasmlet run`.
const FATAL_REASONS: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// Runs the Pod of a manifest to its end (or until interrupted); returns the exit code.
pub fn run_pod(path: &Path, args: &RunArgs, registry: &RegistryArgs) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut manifest = load_manifest(&text).with_context(|| path.display().to_string())?;
    let uid = ensure_uid(&mut manifest.pod, path);
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let resolver = resolver(registry)?.with_local_files(base);
    let config = WorkerConfig {
        root: state_root()?,
        node: node_facts(&uid),
        output: Some(crate::prefixed::prefixed_output()),
        resume: Default::default(),
        network: None,
        dns: None,
    };
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: run::cache_dir(args.no_cache),
        max_instances: pod_instances(&manifest.pod),
        engine: args.engine,
        ..RuntimeConfig::default()
    })?;
    tokio.block_on(supervise(runtime, Arc::new(resolver), config, manifest))
}

/// Instance slots kept beside one per container of the pod: 1000, the runtime's default (as
/// the node has), room for the instance a `wasi:http` container makes per request in flight.
const SPARE_INSTANCES: u32 = 1000;

/// The instance pool for a pod: every container (init containers and sidecars included, as
/// if all ran at once) plus [`SPARE_INSTANCES`], so no container waits on a slot.
fn pod_instances(pod: &Pod) -> u32 {
    let containers = pod.spec.as_ref().map_or(0, |spec| {
        spec.containers.len() + spec.init_containers.as_ref().map_or(0, Vec::len)
    });
    u32::try_from(containers)
        .unwrap_or(u32::MAX)
        .saturating_add(SPARE_INSTANCES)
}

/// Runs the worker, reacting to fatal waiting reasons and signals, then prints the result.
async fn supervise(
    runtime: Runtime,
    resolver: Arc<StoreResolver<CliPuller>>,
    config: WorkerConfig,
    manifest: Manifest,
) -> anyhow::Result<ExitCode> {
    let pod = manifest.pod.clone();
    let objects = manifest.config_objects();
    let worker = PodWorker::start(runtime, resolver, config, manifest.pod, objects)?;
    let grace =
        Duration::try_from(wasmlet_pod::termination_grace_period(&pod, None)).unwrap_or_default();
    let mut interrupt = signal(SignalKind::interrupt()).context("installing signal handlers")?;
    let mut terminate = signal(SignalKind::terminate()).context("installing signal handlers")?;
    let mut facts = worker.facts();
    let mut fatal = false;
    let mut stops = 0;
    let mut last_back_off = Vec::new();
    loop {
        let current = facts.borrow_and_update().clone();
        if current.pod.terminal {
            break;
        }
        report_back_off(&current, &mut last_back_off);
        if !fatal && let Some(problem) = fatal_problem(&current) {
            eprintln!("error: {problem}");
            fatal = true;
            worker.stop(Duration::ZERO);
        }
        let signalled = tokio::select! {
            changed = facts.changed() => {
                if changed.is_err() {
                    break;
                }
                false
            }
            _ = interrupt.recv() => true,
            _ = terminate.recv() => true,
        };
        if signalled {
            stops += 1;
            stop_on_signal(&worker, stops, grace);
        }
    }
    let last = worker.wait().await;
    let status = pod_status(&pod, &last.pod, None);
    print_status(&pod, &status);
    let volumes = worker.dir().path().join("volumes");
    if let Err(err) = wasmlet_worker::tmpfs::unmount_under(&volumes) {
        eprintln!("warning: {err}");
    }
    let _ = std::fs::remove_dir_all(volumes);
    Ok(match fatal {
        true => ExitCode::from(1),
        false => pod_exit_code(&status),
    })
}

fn stop_on_signal(worker: &PodWorker, stops: u32, grace: Duration) {
    if stops == 1 {
        eprintln!(
            "wasmlet: stopping the pod (grace period {}s; interrupt again to kill it now)",
            grace.as_secs()
        );
        worker.stop(grace);
    } else {
        worker.stop(Duration::ZERO);
    }
}

/// A problem the kubelet would retry forever: a volume that cannot be set up, or a container
/// that cannot be pulled or configured.
fn fatal_problem(facts: &WorkerFacts) -> Option<String> {
    if let Some(error) = &facts.mount_error {
        return Some(error.clone());
    }
    facts.pod.containers.iter().find_map(|c| match &c.state {
        wasmlet_pod::RunState::Waiting { reason, message }
            if FATAL_REASONS.contains(&reason.as_str()) =>
        {
            let message = message.as_deref().unwrap_or_default();
            Some(format!("container {}: {reason}: {message}", c.name))
        }
        _ => None,
    })
}

/// Tells on stderr when a container enters a new CrashLoopBackOff wait.
fn report_back_off(facts: &WorkerFacts, seen: &mut Vec<String>) {
    for c in &facts.pod.containers {
        if let wasmlet_pod::RunState::Waiting {
            reason,
            message: Some(message),
        } = &c.state
            && reason == wasmlet_pod::restart::CRASH_LOOP_BACK_OFF
            && !seen.contains(message)
        {
            eprintln!("wasmlet: {}: {reason}: {message}", c.name);
            seen.push(message.clone());
        }
    }
}

/// Prints the pod's phase and one line per container; a stdout whose reader is gone is no
/// error of the pod's (its exit code still tells).
fn print_status(pod: &Pod, status: &PodStatus) {
    use std::fmt::Write as _;
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let phase = status.phase.as_deref().unwrap_or("Unknown");
    let mut out = match &status.reason {
        Some(reason) => format!("pod {name}: {phase} ({reason})\n"),
        None => format!("pod {name}: {phase}\n"),
    };
    let _ = writeln!(
        out,
        "{:<20} {:<11} {:<26} {:>4} {:>8}",
        "CONTAINER", "STATE", "REASON", "EXIT", "RESTARTS"
    );
    for c in statuses(status) {
        let (state, reason, exit) = describe(c);
        let _ = writeln!(
            out,
            "{:<20} {:<11} {:<26} {:>4} {:>8}",
            c.name, state, reason, exit, c.restart_count
        );
    }
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush());
}

fn statuses(status: &PodStatus) -> impl Iterator<Item = &ContainerStatus> {
    let init = status.init_container_statuses.iter().flatten();
    init.chain(status.container_statuses.iter().flatten())
}

fn describe(c: &ContainerStatus) -> (&'static str, String, String) {
    let state = c.state.clone().unwrap_or_default();
    if let Some(t) = state.terminated {
        let reason = t.reason.unwrap_or_default();
        return ("Terminated", reason, t.exit_code.to_string());
    }
    if state.running.is_some() {
        return ("Running", String::new(), "-".into());
    }
    let reason = state.waiting.and_then(|w| w.reason).unwrap_or_default();
    ("Waiting", reason, "-".into())
}

/// 0 when the pod Succeeded; else the first failing container's exit code; else 1.
fn pod_exit_code(status: &PodStatus) -> ExitCode {
    if status.phase.as_deref() == Some(wasmlet_pod::status::phase::SUCCEEDED) {
        return ExitCode::SUCCESS;
    }
    let failed = statuses(status).find_map(|c| {
        let terminated = c.state.as_ref()?.terminated.as_ref()?;
        (terminated.exit_code != 0).then_some(terminated.exit_code)
    });
    match failed {
        Some(code) => run::exit_code(code),
        None => ExitCode::from(1),
    }
}

/// Gives the pod a UID when the manifest has none (the kubelet derives one for static pods).
fn ensure_uid(pod: &mut Pod, path: &Path) -> String {
    if let Some(uid) = pod.metadata.uid.clone().filter(|u| !u.is_empty()) {
        return uid;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let seed = format!("{}/{nanos}/{}", path.display(), std::process::id());
    let hex = Digest::of(seed.as_bytes()).hex().to_owned();
    let uid = format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    );
    pod.metadata.uid = Some(uid.clone());
    uid
}

/// `$WASMLET_STATE_DIR`, else `$XDG_STATE_HOME/wasmlet`, else `~/.local/state/wasmlet`.
fn state_root() -> anyhow::Result<PathBuf> {
    let env = |k| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("WASMLET_STATE_DIR")
        .or_else(|| env("XDG_STATE_HOME").map(|d| d.join("wasmlet")))
        .or_else(|| env("HOME").map(|d| d.join(".local/state/wasmlet")))
        .ok_or_else(|| anyhow!("no state directory: set WASMLET_STATE_DIR or HOME"))
}

/// This machine as a node: its host name, loopback addresses, CPUs and memory.
fn node_facts(uid: &str) -> NodeFacts {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    NodeFacts {
        node_name: host,
        host_ips: vec!["127.0.0.1".into()],
        pod_ips: vec!["127.0.0.1".into()],
        pod_uid: uid.to_owned(),
        allocatable: NodeAllocatable {
            cpu_millis: i64::try_from(cpus).unwrap_or(1) * 1000,
            memory_bytes: total_memory().unwrap_or_default(),
            ephemeral_storage_bytes: 0,
        },
    }
}

fn total_memory() -> Option<i64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The local store, pulled into with the registry flags (progress on stderr).
fn resolver(registry: &RegistryArgs) -> anyhow::Result<StoreResolver<CliPuller>> {
    let puller = CliPuller {
        registry: registry.clone(),
    };
    Ok(StoreResolver::new(registry.store()?, puller))
}

/// Pulls with the registry flags of the command line, progress on stderr.
struct CliPuller {
    registry: RegistryArgs,
}

impl CliPuller {
    async fn pull_into(&self, store: &Store, reference: &Reference) -> Result<Image, ImageError> {
        let pull_error = |e: String| ImageError::Pull(format!("pulling {reference}: {e}"));
        let client = self
            .registry
            .client(reference)
            .map_err(|e| pull_error(format!("{e:#}")))?;
        let progress = Reporter::for_stderr(self.registry.quiet);
        pull::pull(&client, store, reference, &progress)
            .await
            .map_err(|e| pull_error(e.to_string()))
    }
}

impl Puller for CliPuller {
    fn pull<'a>(&'a self, store: &'a Store, reference: &'a Reference) -> PullFuture<'a> {
        Box::pin(self.pull_into(store, reference))
    }
}

/// Runs an image from the local store (pulled when absent) with its argv, env and working
/// directory, `-- args` appended, `--env` on top of the image's env.
pub fn run_image(image: &str, args: &RunArgs, registry: &RegistryArgs) -> anyhow::Result<ExitCode> {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let resolver = resolver(registry)?.with_local_files(PathBuf::new());
    let request = ImageRequest {
        image: image.to_owned(),
        pull_policy: PullPolicy::IfNotPresent,
    };
    let resolved = tokio
        .block_on(resolver.resolve_image(&request))
        .map_err(|e| anyhow!("{}: {e}", e.reason()))?;
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: run::cache_dir(args.no_cache),
        max_instances: 8,
        engine: args.engine,
        ..RuntimeConfig::default()
    })?;
    let program = resolved.wasm.load(&runtime)?;
    let status = tokio.block_on(runtime.run(&program, image_spec(resolved.config, args)))?;
    run::report(&status);
    run::finish_optimizing(&runtime, &program);
    Ok(run::exit_code(status.code))
}

fn image_spec(config: ImageConfig, args: &RunArgs) -> ContainerSpec {
    let mut argv = config.entrypoint;
    argv.extend(config.cmd);
    argv.extend(args.args.iter().cloned());
    let mut env = config.env;
    for (name, value) in &args.env {
        wasmlet_pod::env::set_env(&mut env, name.clone(), value.clone());
    }
    run::terminal_spec(argv, env, config.working_dir, args)
}
