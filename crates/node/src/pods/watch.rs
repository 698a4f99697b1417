//! The pods of this node: a watch on pods with `spec.nodeName` = this node, one task per pod
//! ([`crate::pods::pod`]) fed with every version of its object.
//!
//! The watch is level-triggered: each version of a pod goes to its task, which compares what
//! runs with what is asked. After a re-list (the watch restarted, e.g. after the API server
//! was away) pods that vanished meanwhile are treated as deleted.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::Api;
use kube::runtime::events::Recorder;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, reflector};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wasmlet_pod::NodeAllocatable;
use wasmlet_runtime::Runtime;
use wasmlet_worker::{RegistryPuller, StoreResolver};

use crate::pods::network::Network;
use crate::pods::running::RunningPods;

/// What every pod task needs.
pub struct NodeContext {
    /// The node's client.
    pub client: Client,
    /// This node's name.
    pub node_name: String,
    /// This node's InternalIP.
    pub node_ip: std::net::IpAddr,
    /// Where pods' directories live.
    pub data_dir: PathBuf,
    /// The wasm runtime shared by all pods.
    pub runtime: Runtime,
    /// Images from the store and registries.
    pub images: StoreResolver<RegistryPuller>,
    /// Pod networks: addresses, namespaces, CNI.
    pub network: Arc<Network>,
    /// The defaults of unset limits.
    pub allocatable: NodeAllocatable,
    /// Events about pods, as `kubelet` of this node.
    pub recorder: Recorder,
    /// The pods whose workers run, for the kubelet API's resource metrics.
    pub running: Arc<RunningPods>,
    /// The watches of the ConfigMaps and Secrets pods use, shared between them.
    pub watches: crate::pods::watches::ObjectWatches,
    /// Whether a shutdown of the agent reports its pods Failed (`Terminated`), as the
    /// kubelet's graceful node shutdown does, instead of leaving their status as it was.
    pub drain_on_shutdown: bool,
    /// How pods resolve names (the kubelet's DNS flags).
    pub dns: crate::config::DnsSettings,
}

/// The pods known to this node, by the watch.
pub type PodStore = reflector::Store<Pod>;

/// One pod's task and the channel feeding it the pod's latest version.
struct Entry {
    updates: watch::Sender<Pod>,
    gone: CancellationToken,
    task: JoinHandle<()>,
}

/// Runs the watch until `cancel` fires, then stops every pod within its grace period (as a
/// kubelet shutting down) and returns. `store` is filled with the pods as the watch sees them.
pub async fn run(
    context: Arc<NodeContext>,
    writer: reflector::store::Writer<Pod>,
    cancel: CancellationToken,
) {
    let api: Api<Pod> = Api::all(context.client.clone());
    let selector = format!("spec.nodeName={}", context.node_name);
    let stream = watcher::watcher(api, watcher::Config::default().fields(&selector));
    let mut stream = std::pin::pin!(reflector(writer, stream.default_backoff()));
    let mut pods = Pods::default();
    loop {
        let event = tokio::select! {
            event = stream.next() => event,
            () = cancel.cancelled() => break,
        };
        match event {
            Some(Ok(event)) => {
                let first_listing = matches!(event, Event::InitDone) && !pods.collected;
                pods.on_event(&context, event);
                if first_listing {
                    pods.collect_garbage(&context).await;
                }
            }
            Some(Err(err)) => tracing::warn!(%err, "pod watch failed; retrying"),
            None => break,
        }
    }
    pods.shut_down().await;
}

/// Whether the pod has ended for good (`Succeeded` or `Failed`).
fn has_ended(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    matches!(phase, Some("Succeeded" | "Failed"))
}

#[derive(Default)]
struct Pods {
    entries: HashMap<String, Entry>,
    /// The UIDs listed since the watch (re)started, until the listing is complete.
    listing: Option<HashSet<String>>,
    /// The listed pods that have not ended: their networks are kept.
    unfinished: HashSet<String>,
    /// Whether the networks of pods gone while the agent was down have been removed.
    collected: bool,
}

impl Pods {
    fn on_event(&mut self, context: &Arc<NodeContext>, event: Event<Pod>) {
        match event {
            Event::Init => self.listing = Some(HashSet::new()),
            Event::InitApply(pod) => {
                if let (Some(listing), Some(uid)) = (&mut self.listing, &pod.metadata.uid) {
                    listing.insert(uid.clone());
                    if !has_ended(&pod) {
                        self.unfinished.insert(uid.clone());
                    }
                }
                self.apply(context, pod);
            }
            Event::InitDone => self.forget_unlisted(),
            Event::Apply(pod) => self.apply(context, pod),
            Event::Delete(pod) => {
                if let Some(uid) = &pod.metadata.uid {
                    self.remove(uid);
                }
            }
        }
    }

    /// Feeds a pod's new version to its task, starting the task for a new pod.
    fn apply(&mut self, context: &Arc<NodeContext>, pod: Pod) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        self.entries.retain(|_, entry| !entry.task.is_finished());
        if let Some(entry) = self.entries.get(&uid) {
            entry.updates.send_replace(pod);
            return;
        }
        let (updates, receiver) = watch::channel(pod);
        let gone = CancellationToken::new();
        let task = tokio::spawn(super::pod::run(context.clone(), receiver, gone.clone()));
        self.entries.insert(
            uid,
            Entry {
                updates,
                gone,
                task,
            },
        );
    }

    /// Once, after the first complete listing and before any pod that came later starts:
    /// removes the networks (namespaces, CNI attachments) of pods that are gone or ended,
    /// what a crash or `kill -9` of the agent left behind.
    async fn collect_garbage(&mut self, context: &NodeContext) {
        self.collected = true;
        let live = std::mem::take(&mut self.unfinished);
        let removed = context.network.collect_garbage(live).await;
        if removed > 0 {
            tracing::info!(removed, "removed the networks of pods that are gone");
        }
    }

    /// The pod was deleted from the API (e.g. forced): its task stops it at once.
    fn remove(&mut self, uid: &str) {
        if let Some(entry) = self.entries.remove(uid) {
            entry.gone.cancel();
        }
    }

    fn forget_unlisted(&mut self) {
        let Some(listing) = self.listing.take() else {
            return;
        };
        let vanished: Vec<String> = self
            .entries
            .keys()
            .filter(|uid| !listing.contains(*uid))
            .cloned()
            .collect();
        for uid in vanished {
            tracing::info!(%uid, "pod no longer bound to this node; stopping it");
            self.remove(&uid);
        }
    }

    /// Stops every pod with its grace period (the closed update channel tells each task the
    /// agent is shutting down) and waits for all of them.
    async fn shut_down(self) {
        let tasks: Vec<JoinHandle<()>> =
            self.entries.into_values().map(|entry| entry.task).collect();
        for task in tasks {
            let _ = task.await;
        }
    }
}
