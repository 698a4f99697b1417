//! Registering the Node and keeping it alive: the Lease in `kube-node-lease` renewed every 10 s
//! (40 s duration) and the node status reported on change and at least every 5 minutes, the
//! kubelet's defaults. API errors are retried with back-off, never fatal.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, NodeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use crate::config::NodeConfig;
use crate::node::machine::{self, SystemInfo};
use crate::node::status;
use crate::pods::network::Network;

/// Errors registering the node.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or could not be reached.
    #[error("kubernetes API: {0}")]
    Api(#[from] kube::Error),
    /// The machine could not be read.
    #[error(transparent)]
    Machine(#[from] machine::Error),
    /// The object could not be encoded as a patch.
    #[error("encoding a patch: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The result type of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The namespace of node leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// The lease's duration (the kubelet's `nodeLeaseDurationSeconds`).
pub const LEASE_DURATION_SECONDS: i32 = 40;
/// How often the lease is renewed (a quarter of its duration, as the kubelet does).
pub const LEASE_RENEW_INTERVAL: Duration = Duration::from_secs(10);
/// How often the status is computed (`nodeStatusUpdateFrequency`).
pub const STATUS_UPDATE_FREQUENCY: Duration = Duration::from_secs(10);
/// The longest time between two status reports (`nodeStatusReportFrequency`).
pub const STATUS_REPORT_FREQUENCY: Duration = Duration::from_secs(300);

const FIELD_MANAGER: &str = "wasmlet";

/// The Node annotation that says how this node's pods are networked (see
/// [`Network::status`]).
pub const POD_NETWORK_ANNOTATION: &str = "wasmlet.dev/pod-network";

/// Creates the Node, or updates an existing one's labels and status; returns it.
///
/// Taints are only set at creation: the NodeRestriction admission plugin forbids a node to
/// change its own taints afterwards, as for the kubelet's `--register-with-taints`.
pub async fn register(client: &Client, config: &NodeConfig) -> Result<Node> {
    let nodes: Api<Node> = Api::all(client.clone());
    let readings = machine::read(&config.data_dir)?;
    let wanted = status::node(config, &readings, &machine::system_info(), Timestamp::now());
    match nodes.create(&PostParams::default(), &wanted).await {
        Ok(node) => {
            // Status is ignored on create; report it now.
            let status = wanted.status.clone().unwrap_or_default();
            patch_status(&nodes, &config.node_name, &status).await?;
            Ok(node)
        }
        Err(kube::Error::Api(response)) if response.code == 409 => {
            let labels = serde_json::json!({ "metadata": { "labels": config.labels } });
            let node = nodes
                .patch(
                    &config.node_name,
                    &PatchParams::default(),
                    &Patch::Merge(&labels),
                )
                .await?;
            let status = wanted.status.clone().unwrap_or_default();
            patch_status(&nodes, &config.node_name, &status).await?;
            Ok(node)
        }
        Err(err) => Err(err.into()),
    }
}

/// Registers the node, retrying with back-off until it succeeds or `cancel` fires.
pub async fn register_until_done(
    client: &Client,
    config: &NodeConfig,
    cancel: &CancellationToken,
) -> Option<Node> {
    let mut backoff = Backoff::default();
    loop {
        match register(client, config).await {
            Ok(node) => return Some(node),
            Err(err) => tracing::warn!(%err, "registering node; retrying"),
        }
        tokio::select! {
            () = cancel.cancelled() => return None,
            () = tokio::time::sleep(backoff.delay()) => {}
        }
    }
}

async fn patch_status(nodes: &Api<Node>, name: &str, status: &NodeStatus) -> Result<Node> {
    let patch = serde_json::json!({ "status": status });
    Ok(nodes
        .patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await?)
}

/// The node's Lease as this agent holds it, renewed at `now`.
pub fn lease(node: &Node, now: Timestamp) -> Lease {
    let name = node.metadata.name.clone().unwrap_or_default();
    let owner = node.metadata.uid.clone().map(|uid| OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: name.clone(),
        uid,
        ..Default::default()
    });
    Lease {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(LEASE_NAMESPACE.into()),
            owner_references: owner.map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(name),
            lease_duration_seconds: Some(LEASE_DURATION_SECONDS),
            renew_time: Some(MicroTime(now)),
            ..Default::default()
        }),
    }
}

/// Renews the Lease every 10 s until `cancel` fires; failed renewals retry with back-off.
pub async fn run_lease(client: Client, node: Node, cancel: CancellationToken) {
    let leases: Api<Lease> = Api::namespaced(client, LEASE_NAMESPACE);
    let mut backoff = Backoff::default();
    loop {
        let wait = match renew(&leases, &node).await {
            Ok(()) => {
                backoff = Backoff::default();
                LEASE_RENEW_INTERVAL
            }
            Err(err) => {
                tracing::warn!(%err, "renewing node lease");
                backoff.delay().min(LEASE_RENEW_INTERVAL)
            }
        };
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

async fn renew(leases: &Api<Lease>, node: &Node) -> Result<()> {
    let lease = lease(node, Timestamp::now());
    let name = lease.metadata.name.clone().unwrap_or_default();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    leases.patch(&name, &params, &Patch::Apply(&lease)).await?;
    Ok(())
}

/// Reports the node status every 10 s when it changed, and at least every 5 minutes; on
/// `cancel`, reports the node NotReady once before returning.
pub async fn run_status(
    client: Client,
    config: NodeConfig,
    network: Arc<Network>,
    cancel: CancellationToken,
) {
    let nodes: Api<Node> = Api::all(client);
    let info = machine::system_info();
    let mut reporter = Reporter {
        last: None,
        network,
        described: None,
    };
    loop {
        reporter.tick(&nodes, &config, &info, false).await;
        tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep(STATUS_UPDATE_FREQUENCY) => {}
        }
    }
    let stop = reporter.tick(&nodes, &config, &info, true);
    if tokio::time::timeout(Duration::from_secs(5), stop)
        .await
        .is_err()
    {
        tracing::warn!("could not report the node NotReady within 5 s");
    }
}

struct Reporter {
    last: Option<(NodeStatus, tokio::time::Instant)>,
    /// Whether pods can get a network (the Ready condition says so when not), and the
    /// node's pod CIDRs learnt from each report's answer.
    network: Arc<Network>,
    /// The pod network as last annotated on the Node.
    described: Option<String>,
}

impl Reporter {
    async fn tick(
        &mut self,
        nodes: &Api<Node>,
        config: &NodeConfig,
        info: &SystemInfo,
        stopping: bool,
    ) {
        let readings = match machine::read(&config.data_dir) {
            Ok(readings) => readings,
            Err(err) => return tracing::warn!(%err, "reading the machine"),
        };
        let previous = self.previous_conditions();
        let mut status = status::node_status(config, &readings, info, &previous, Timestamp::now());
        let network = self.network.status();
        let not_ready = match stopping {
            true => Some("kubelet is shutting down".to_string()),
            false => network.not_ready,
        };
        if let Some(message) = not_ready {
            let conditions = status.conditions.get_or_insert_with(Vec::new);
            status::not_ready(conditions, &message, Timestamp::now());
            keep_not_ready_since(conditions, &previous);
        }
        self.annotate(nodes, &config.node_name, network.description)
            .await;
        if !self.due(&status) {
            return;
        }
        match patch_status(nodes, &config.node_name, &status).await {
            Ok(node) => {
                self.network.observe_node(&node);
                self.last = Some((status, tokio::time::Instant::now()));
            }
            Err(err) => tracing::warn!(%err, "reporting node status"),
        }
    }

    /// Writes the pod network's description on the Node when it changed.
    async fn annotate(&mut self, nodes: &Api<Node>, name: &str, described: String) {
        if self.described.as_ref() == Some(&described) {
            return;
        }
        let patch = serde_json::json!({
            "metadata": { "annotations": { POD_NETWORK_ANNOTATION: described } }
        });
        match nodes
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => self.described = Some(described),
            Err(err) => tracing::warn!(%err, "annotating the node's pod network"),
        }
    }

    fn previous_conditions(&self) -> Vec<k8s_openapi::api::core::v1::NodeCondition> {
        self.last
            .as_ref()
            .and_then(|(status, _)| status.conditions.clone())
            .unwrap_or_default()
    }

    fn due(&self, status: &NodeStatus) -> bool {
        match &self.last {
            None => true,
            Some((last, at)) => {
                status::changed(last, status) || at.elapsed() >= STATUS_REPORT_FREQUENCY
            }
        }
    }
}

/// A node that was already NotReady keeps the time it became so.
fn keep_not_ready_since(
    conditions: &mut [k8s_openapi::api::core::v1::NodeCondition],
    previous: &[k8s_openapi::api::core::v1::NodeCondition],
) {
    let before = previous
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "False");
    if let (Some(before), Some(now)) = (before, conditions.iter_mut().find(|c| c.type_ == "Ready"))
    {
        now.last_transition_time = before.last_transition_time.clone();
    }
}

/// Exponential back-off: 200 ms doubling to 30 s.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next: Duration::from_millis(200),
        }
    }
}

impl Backoff {
    /// A back-off whose first delay is `first`, doubling up to 30 s.
    pub fn starting_at(first: Duration) -> Self {
        Self { next: first }
    }

    /// The delay before the next try; each call doubles the following one, up to 30 s.
    pub fn delay(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(Duration::from_secs(30));
        now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap() {
        let mut backoff = Backoff::default();
        let delays: Vec<_> = (0..10).map(|_| backoff.delay().as_millis()).collect();
        assert_eq!(&delays[..4], [200, 400, 800, 1600]);
        assert_eq!(delays[9], 30_000);
    }

    #[test]
    fn lease_is_owned_by_the_node() {
        let node = Node {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                uid: Some("u1".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let now = Timestamp::from_second(100).unwrap();
        let lease = lease(&node, now);
        assert_eq!(lease.metadata.namespace.as_deref(), Some("kube-node-lease"));
        let owner = &lease.metadata.owner_references.unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("Node", "u1"));
        let spec = lease.spec.unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("n1"));
        assert_eq!(spec.lease_duration_seconds, Some(40));
        assert_eq!(spec.renew_time, Some(MicroTime(now)));
    }
}
