//! One watch per ConfigMap or Secret that this node's pods use, shared by all of them, as the
//! kubelet's watch-based object manager does: the Node authorizer lets a node get, list and
//! watch an object its pods reference when the list names it (`fieldSelector
//! metadata.name=NAME`). A pod subscribes to the objects it references when it starts and
//! learns each change as it is made; the watch ends when the last pod using the object lets
//! go of it.
//!
//! The alternative, each pod reading its objects again every few seconds, costs the API
//! server one GET per pod and object each period even when nothing changes (thousands per
//! minute on a dense node whose pods all mount `kube-root-ca.crt`), and shows a change only
//! at the next read.
//!
//! A watch that fails (API server away, a refusal while the Node authorizer has not yet seen
//! the pod bound here) is started again with back-off, from 50 ms (`Retry`); what it last
//! saw is kept meanwhile, so running pods never lose their volumes' content to an outage.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::runtime::WatchStreamExt;
use kube::runtime::utils::{Backoff, ResetTimerBackoff};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::AbortHandle;

/// What a watch knows of its object.
#[derive(Debug, Clone)]
pub enum Seen<K> {
    /// Nothing yet: the first list has not answered.
    Pending,
    /// The object does not exist (or was deleted).
    Missing,
    /// The object as last seen.
    Present(Arc<K>),
}

/// The watches of one kind of object, by namespace and name.
pub struct Watches<K: Resource> {
    client: Client,
    entries: Mutex<HashMap<Key, Entry<K>>>,
}

type Key = (String, String);

/// One object's watch: the task that follows it, what it saw, and how many hold it.
struct Entry<K> {
    seen: watch::Sender<Seen<K>>,
    holders: usize,
    task: AbortHandle,
}

/// A pod's hold on one watched object: what is known of it now and the changes as they
/// come. Dropping it lets go of the watch.
pub struct Watched<K: Resource> {
    key: Key,
    seen: watch::Receiver<Seen<K>>,
    owner: Arc<Watches<K>>,
}

/// The watches of ConfigMaps and of Secrets, shared by all pods of the node.
#[derive(Clone)]
pub struct ObjectWatches {
    /// ConfigMaps.
    pub config_maps: Arc<Watches<ConfigMap>>,
    /// Secrets.
    pub secrets: Arc<Watches<Secret>>,
}

impl ObjectWatches {
    /// No watches yet; they start as pods subscribe.
    pub fn new(client: Client) -> ObjectWatches {
        ObjectWatches {
            config_maps: Arc::new(Watches::new(client.clone())),
            secrets: Arc::new(Watches::new(client)),
        }
    }
}

impl<K> Watches<K>
where
    K: Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + std::fmt::Debug,
    K: Send + Sync + 'static,
    K::DynamicType: Default,
{
    /// No watches yet.
    pub fn new(client: Client) -> Watches<K> {
        Watches {
            client,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Holds the object `name` of `namespace`: the running watch if another pod holds it,
    /// else a new one.
    pub fn subscribe(self: &Arc<Self>, namespace: &str, name: &str) -> Watched<K> {
        let key = (namespace.to_owned(), name.to_owned());
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let entry = entries.entry(key.clone()).or_insert_with(|| {
            let (seen, _) = watch::channel(Seen::Pending);
            let api = Api::namespaced(self.client.clone(), namespace);
            let task = tokio::spawn(follow(api, name.to_owned(), seen.clone()));
            Entry {
                seen,
                holders: 0,
                task: task.abort_handle(),
            }
        });
        entry.holders += 1;
        Watched {
            seen: entry.seen.subscribe(),
            key,
            owner: self.clone(),
        }
    }

    /// How many objects are watched now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no object is watched.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Resource> Watches<K> {
    /// One holder of `key` let go; the watch stops with its last holder.
    fn release(&self, key: &Key) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let Some(entry) = entries.get_mut(key) else {
            return;
        };
        entry.holders = entry.holders.saturating_sub(1);
        if entry.holders == 0 {
            entry.task.abort();
            entries.remove(key);
        }
    }
}

impl<K: Resource> Watched<K> {
    /// What is known of the object now.
    pub fn seen(&self) -> Seen<K>
    where
        K: Clone,
    {
        self.seen.borrow().clone()
    }

    /// Waits for the next change of what is known (forever if the watch is gone).
    pub async fn changed(&mut self) {
        if self.seen.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Waits until the first list has answered (or `limit` passed).
    pub async fn settled(&mut self, limit: std::time::Duration) {
        let settled = self.seen.wait_for(|seen| !matches!(seen, Seen::Pending));
        let _ = tokio::time::timeout(limit, settled).await;
    }
}

impl<K: Resource> Drop for Watched<K> {
    fn drop(&mut self) {
        self.owner.release(&self.key);
    }
}

/// Follows one object by a watch of its name, publishing what it sees; failures are retried
/// with back-off and leave the last sight in place.
async fn follow<K>(api: Api<K>, name: String, seen: watch::Sender<Seen<K>>)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let retry = ResetTimerBackoff::new(Retry::default(), RETRY_RESET);
    let mut events = std::pin::pin!(watcher::watcher(api, config).backoff(retry));
    let mut listed = None;
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Init) => listed = None,
            Ok(Event::InitApply(object)) => listed = Some(object),
            Ok(Event::InitDone) => publish(&seen, listed.take()),
            Ok(Event::Apply(object)) => publish(&seen, Some(object)),
            Ok(Event::Delete(_)) => publish(&seen, None),
            Err(err) => {
                tracing::warn!(object = %name, %err, "watching an object pods use; retrying")
            }
        }
    }
}

/// The first delay before a failed watch is tried again.
const RETRY_FIRST: Duration = Duration::from_millis(50);
/// The longest delay between two attempts.
const RETRY_MAX: Duration = Duration::from_secs(30);
/// How long a watch must have worked before its delays start again from the first.
const RETRY_RESET: Duration = Duration::from_secs(120);

/// The delays between attempts of an object's watch: [`RETRY_FIRST`], doubling up to
/// [`RETRY_MAX`], each stretched by up to half at random so that watches failing together (an
/// API server restart) do not retry together. A pod's first list of an object is refused
/// (403) until the API server's Node authorizer has seen the pod bound to this node, which
/// this node can be quicker than by a few milliseconds; client-go's first delay (800 ms, the
/// watcher's default) made such a pod wait most of a second for its volumes.
struct Retry {
    next: Duration,
    jitter: std::collections::hash_map::RandomState,
    attempts: u64,
}

impl Default for Retry {
    fn default() -> Retry {
        Retry {
            next: RETRY_FIRST,
            jitter: std::collections::hash_map::RandomState::new(),
            attempts: 0,
        }
    }
}

impl Iterator for Retry {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        use std::hash::BuildHasher;
        let delay = self.next;
        self.next = (delay * 2).min(RETRY_MAX);
        self.attempts += 1;
        let stretch = self.jitter.hash_one(self.attempts) % 500;
        Some(delay + delay * u32::try_from(stretch).unwrap_or(0) / 1000)
    }
}

impl Backoff for Retry {
    fn reset(&mut self) {
        self.next = RETRY_FIRST;
    }
}

/// Publishes a sight when it differs from the last one (a re-list after a reconnect sends
/// the same object again; pods need not hear of it).
fn publish<K: Resource>(seen: &watch::Sender<Seen<K>>, object: Option<K>) {
    let version = |s: &Seen<K>| match s {
        Seen::Present(o) => o.meta().resource_version.clone(),
        _ => None,
    };
    let next = match object {
        Some(object) => Seen::Present(Arc::new(object)),
        None => Seen::Missing,
    };
    seen.send_if_modified(|current| {
        let same = match (&*current, &next) {
            (Seen::Missing, Seen::Missing) => true,
            (a @ Seen::Present(_), b @ Seen::Present(_)) => {
                version(a).is_some() && version(a) == version(b)
            }
            _ => false,
        };
        if !same {
            *current = next;
        }
        !same
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_map(version: &str) -> ConfigMap {
        let mut object = ConfigMap::default();
        object.metadata.resource_version = Some(version.into());
        object
    }

    #[test]
    fn retries_start_quick_and_double_with_at_most_half_more() {
        let mut retry = Retry::default();
        let mut base = RETRY_FIRST;
        for _ in 0..12 {
            let delay = retry.next().unwrap();
            assert!(
                delay >= base && delay < base + base / 2,
                "{delay:?} for {base:?}"
            );
            base = (base * 2).min(RETRY_MAX);
        }
        assert!(base == RETRY_MAX);
        retry.reset();
        assert!(retry.next().unwrap() < RETRY_FIRST * 3 / 2);
    }

    #[test]
    fn only_a_new_version_or_a_deletion_is_news() {
        let (seen, mut pod) = watch::channel(Seen::Pending);
        publish(&seen, Some(config_map("1")));
        assert!(pod.has_changed().unwrap());
        pod.mark_unchanged();
        // A re-list after a reconnect gives the same version again.
        publish(&seen, Some(config_map("1")));
        assert!(!pod.has_changed().unwrap());
        publish(&seen, Some(config_map("2")));
        assert!(pod.has_changed().unwrap());
        pod.mark_unchanged();
        publish(&seen, None);
        assert!(matches!(pod.borrow_and_update().clone(), Seen::Missing));
        publish(&seen, None);
        assert!(!pod.has_changed().unwrap());
    }

    #[tokio::test]
    async fn pods_share_one_watch_per_object_until_the_last_lets_go() {
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let watches = ObjectWatches::new(Client::try_from(config).unwrap());
        let first = watches.config_maps.subscribe("default", "kube-root-ca.crt");
        let second = watches.config_maps.subscribe("default", "kube-root-ca.crt");
        let other = watches.config_maps.subscribe("other", "kube-root-ca.crt");
        let secret = watches.secrets.subscribe("default", "kube-root-ca.crt");
        assert_eq!((watches.config_maps.len(), watches.secrets.len()), (2, 1));
        assert!(matches!(first.seen(), Seen::Pending));
        drop(first);
        assert_eq!(watches.config_maps.len(), 2);
        drop((second, other, secret));
        assert!(watches.config_maps.is_empty() && watches.secrets.is_empty());
    }
}
