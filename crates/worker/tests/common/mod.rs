//! What the worker's integration tests share: a resolver serving the fixture programs as
//! images (it stands for our own store-backed resolver), and a pod started from a manifest.
#![allow(dead_code)] // each test binary uses a part

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use wasmlet_pod::k8s_openapi::api::core::v1::PodStatus;
use wasmlet_pod::{ContainerFacts, ImageConfig, NodeFacts, RunState, load_manifest, pod_status};
use wasmlet_runtime::{AllocatorChoice, Runtime, RuntimeConfig};
use wasmlet_worker::{
    ImageError, ImageRequest, ImageResolver, PodWorker, PullInfo, PullPolicy, ResolveFuture,
    ResolvedImage, WasmSource, WorkerConfig, WorkerEvent, WorkerFacts,
};

/// How long a pull of a fixture says it took.
pub const PULL_TIME: Duration = Duration::from_millis(1500);

/// Serves `wasmlet_fixtures` programs as images named after them (a tag is ignored). Under
/// `Always` an image is pulled (taking [`PULL_TIME`]); otherwise it is present.
pub struct Fixtures;

impl ImageResolver for Fixtures {
    fn resolve<'a>(&'a self, request: &'a ImageRequest) -> ResolveFuture<'a> {
        Box::pin(async move {
            let name = request.image.split(':').next().unwrap_or_default();
            let bytes = match name {
                "hello" => wasmlet_fixtures::hello(),
                "exit" => wasmlet_fixtures::exit(),
                "trap" => wasmlet_fixtures::trap(),
                "spin" => wasmlet_fixtures::spin(),
                "membomb" => wasmlet_fixtures::membomb(),
                "env" => wasmlet_fixtures::env(),
                "sleep" => wasmlet_fixtures::sleep(),
                "fs" => wasmlet_fixtures::fs(),
                "http" => wasmlet_fixtures::http_hello(),
                "tcp_fetch" => wasmlet_fixtures::tcp_fetch(),
                _ => return Err(ImageError::Pull(format!("pull access denied for {name}"))),
            };
            let pulled = (request.pull_policy == PullPolicy::Always).then_some(PullInfo {
                duration: PULL_TIME,
                size: bytes.len() as u64,
            });
            Ok(ResolvedImage {
                wasm: WasmSource::Bytes(bytes.to_vec()),
                config: ImageConfig {
                    entrypoint: vec![format!("{name}.wasm")],
                    ..ImageConfig::default()
                },
                image_id: format!("fixtures/{name}@sha256:0"),
                pulled,
            })
        })
    }

    fn is_present(&self, _: &ImageRequest) -> bool {
        true
    }
}

/// A running pod and what it was started from.
pub struct Pod {
    pub worker: PodWorker,
    pub pod: wasmlet_pod::k8s_openapi::api::core::v1::Pod,
    _root: tempfile::TempDir,
}

fn runtime() -> Runtime {
    Runtime::new(RuntimeConfig {
        allocator: AllocatorChoice::OnDemand,
        ..RuntimeConfig::default()
    })
    .unwrap()
}

/// Starts the pod of a manifest (a Pod named `p` with uid `u1`, plus whatever `extra` holds).
pub fn start(spec: &str, extra: &str) -> Pod {
    let node = NodeFacts {
        node_name: "test-node".into(),
        ..NodeFacts::default()
    };
    start_on(node, spec, extra)
}

/// Starts the pod of a manifest on a node with these facts (see [`start`]).
pub fn start_on(node: NodeFacts, spec: &str, extra: &str) -> Pod {
    start_in(node, None, spec, extra)
}

/// Starts the pod of a manifest with a network namespace of its own (see [`start`]).
pub fn start_in(
    node: NodeFacts,
    network: Option<Arc<wasmlet_netns::NetNs>>,
    spec: &str,
    extra: &str,
) -> Pod {
    start_with(node, network, None, spec, extra)
}

/// Starts the pod of a manifest on a node with these DNS settings (see [`start`]).
pub fn start_with_dns(node: NodeFacts, dns: wasmlet_pod::NodeDns, spec: &str, extra: &str) -> Pod {
    start_with(node, None, Some(dns), spec, extra)
}

/// Starts the pod of a manifest whose metadata carries these annotations (a YAML flow
/// mapping's entries, e.g. `"wasmlet.dev/engine": wasmer`) (see [`start`]).
pub fn start_annotated(annotations: &str, spec: &str) -> Pod {
    let node = NodeFacts {
        node_name: "test-node".into(),
        ..NodeFacts::default()
    };
    let metadata = format!("{{name: p, uid: u1, annotations: {{{annotations}}}}}");
    start_manifest(node, None, None, &metadata, spec)
}

fn start_with(
    node: NodeFacts,
    network: Option<Arc<wasmlet_netns::NetNs>>,
    dns: Option<wasmlet_pod::NodeDns>,
    spec: &str,
    extra: &str,
) -> Pod {
    let spec = format!("{spec}{extra}");
    start_manifest(node, network, dns, "{name: p, uid: u1}", &spec)
}

fn start_manifest(
    node: NodeFacts,
    network: Option<Arc<wasmlet_netns::NetNs>>,
    dns: Option<wasmlet_pod::NodeDns>,
    metadata: &str,
    spec: &str,
) -> Pod {
    let text = format!("apiVersion: v1\nkind: Pod\nmetadata: {metadata}\nspec:\n{spec}");
    let manifest = load_manifest(&text).unwrap();
    let root = tempfile::tempdir().unwrap();
    let config = WorkerConfig {
        root: root.path().into(),
        node,
        output: None,
        resume: Default::default(),
        network,
        dns,
    };
    let objects = manifest.config_objects();
    let pod = manifest.pod.clone();
    let worker =
        PodWorker::start(runtime(), Arc::new(Fixtures), config, manifest.pod, objects).unwrap();
    Pod {
        worker,
        pod,
        _root: root,
    }
}

impl Drop for Pod {
    /// Memory-backed volumes are mounts: undone before the temporary root is removed.
    fn drop(&mut self) {
        let _ = wasmlet_worker::tmpfs::unmount_under(self.worker.dir().path());
    }
}

impl Pod {
    pub async fn finish(&self) -> WorkerFacts {
        tokio::time::timeout(Duration::from_secs(60), self.worker.wait())
            .await
            .expect("the pod did not finish within a minute")
    }

    pub fn status(&self, facts: &WorkerFacts) -> PodStatus {
        pod_status(&self.pod, &facts.pod, None)
    }

    /// The text of a container's log lines (CRI prefix removed).
    pub fn log(&self, container: &str, run: i32) -> Vec<String> {
        log_lines(&self.worker.dir().log(container, run))
    }

    /// Waits until the facts satisfy `done`.
    pub async fn until(&self, done: impl FnMut(&WorkerFacts) -> bool) -> WorkerFacts {
        let mut facts = self.worker.facts();
        let found = tokio::time::timeout(Duration::from_secs(60), facts.wait_for(done)).await;
        found.expect("timed out waiting for facts").unwrap().clone()
    }

    /// Stops the pod at once and waits for its end.
    pub async fn kill(&self) -> WorkerFacts {
        self.worker.stop(Duration::ZERO);
        self.finish().await
    }
}

pub fn log_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| l.splitn(4, ' ').nth(3).unwrap_or_default().to_owned())
        .collect()
}

pub fn container<'a>(facts: &'a WorkerFacts, name: &str) -> &'a ContainerFacts {
    facts
        .pod
        .containers
        .iter()
        .find(|c| c.name == name)
        .unwrap()
}

pub fn running(facts: &WorkerFacts, name: &str) -> bool {
    matches!(container(facts, name).state, RunState::Running { .. })
}

pub fn terminated(facts: &WorkerFacts, name: &str) -> wasmlet_pod::Termination {
    match &container(facts, name).state {
        RunState::Terminated(t) => t.clone(),
        other => panic!("{name} is not terminated: {other:?}"),
    }
}

pub fn waiting_reason(facts: &WorkerFacts, name: &str) -> Option<(String, String)> {
    match &container(facts, name).state {
        RunState::Waiting { reason, message } => {
            Some((reason.clone(), message.clone().unwrap_or_default()))
        }
        _ => None,
    }
}

/// The events about `container` (`None`: about the pod), as `(reason, message)`.
pub fn events_of(facts: &WorkerFacts, container: Option<&str>) -> Vec<(String, String)> {
    let about = |e: &&WorkerEvent| e.container.as_deref() == container;
    let events = facts.events.iter().filter(about);
    events
        .map(|e| (e.reason.clone(), e.message.clone()))
        .collect()
}

/// Whether an event with this reason and message is among the facts' events.
pub fn has_event(facts: &WorkerFacts, reason: &str, message: &str) -> bool {
    facts
        .events
        .iter()
        .any(|e| e.reason == reason && e.message == message)
}

/// A loopback address of its own (`127.<pid>.<n>.1`, free from other tests and other runs)
/// and a port free on it.
pub fn free_address() -> (String, u16) {
    static NEXT: AtomicU8 = AtomicU8::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let ip = format!("127.{}.{n}.1", std::process::id() % 250 + 1);
    let listener = std::net::TcpListener::bind((ip.as_str(), 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    (ip, port)
}

/// A node whose pod IP is `ip`.
pub fn node_with_pod_ip(ip: &str) -> NodeFacts {
    NodeFacts {
        node_name: "test-node".into(),
        pod_ips: vec![ip.to_owned()],
        host_ips: vec![ip.to_owned()],
        ..NodeFacts::default()
    }
}
