//! What a pod reads from the API besides itself: its ConfigMaps and Secrets, followed through
//! the node's shared watches ([`crate::pods::watches`]: the Node authorizer lets a node watch the
//! objects its pods reference by name, never list them all), and the service account tokens
//! of its projected volumes, from the TokenRequest API, bound to the pod; and the credentials
//! of its `imagePullSecrets`. A change of an object reaches the pod's volumes as soon as the
//! watch sees it; a token is renewed past 80% of its lifetime, as the kubelet does.
//!
//! At the pod's start a refusal (403) is tried again a few times within about 3 s
//! ([`FORBIDDEN_RETRY`]; the watches retry with their own back-off): the Node authorizer and
//! NodeRestriction admission learn that the pod is bound to this node from the API server's
//! own watches, which can trail the node's watch by a moment, and until then refuse the node
//! its pod's objects ("no relationship found between node and this object", "token bound to
//! a pod scheduled on a different node").

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::{Client, Resource};
use wasmlet_oci::auth::Keyring;
use wasmlet_pod::{ConfigObjects, References, TokenKey};

use crate::pods::watches::{ObjectWatches, Seen, Watched};

/// How long a starting pod waits for the first answer of its objects' watches before it
/// starts with what is known (a missing object is reported by the worker as the kubelet
/// does, and arrives with the watch's next answer).
pub const START_WAIT: Duration = Duration::from_secs(5);

/// The pauses between tries of a read the API server refused (403) at a pod's start.
pub const FORBIDDEN_RETRY: [Duration; 6] = [
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(200),
    Duration::from_millis(400),
    Duration::from_millis(800),
    Duration::from_millis(1600),
];

/// A token and when it must be renewed.
struct Token {
    value: String,
    renew_at: Instant,
}

/// The objects of one pod: its holds on the node's watches and the tokens obtained so far.
pub struct PodObjects {
    client: Client,
    namespace: String,
    watches: ObjectWatches,
    config_maps: Vec<Watched<ConfigMap>>,
    secrets: Vec<Watched<Secret>>,
    tokens: BTreeMap<TokenKey, Token>,
    /// Whether the pod's objects are subscribed to (the first fetch does it).
    subscribed: bool,
}

impl PodObjects {
    /// Nothing fetched yet for a pod of `namespace`.
    pub fn new(client: Client, watches: ObjectWatches, namespace: &str) -> PodObjects {
        PodObjects {
            client,
            namespace: namespace.to_owned(),
            watches,
            config_maps: Vec::new(),
            secrets: Vec::new(),
            tokens: BTreeMap::new(),
            subscribed: false,
        }
    }

    /// Everything `pod` references that exists now. Missing objects stay missing: the
    /// worker reports them as the kubelet does, and a change brings them.
    pub async fn fetch(&mut self, pod: &Pod) -> ConfigObjects {
        let refs = References::of_pod(pod);
        let first = !self.subscribed;
        if first {
            self.subscribe(&refs).await;
        }
        let retry: &[Duration] = if first { &FORBIDDEN_RETRY } else { &[] };
        let mut objects =
            ConfigObjects::from_objects(&present(&self.config_maps), &present(&self.secrets));
        for key in &refs.tokens {
            if let Some(token) = self.token(pod, key, retry).await {
                objects.tokens.insert(key.clone(), token);
            }
        }
        objects
    }

    /// Holds the watches of the pod's objects and waits (up to [`START_WAIT`]) for their
    /// first answers.
    async fn subscribe(&mut self, refs: &References) {
        self.subscribed = true;
        let (namespace, watches) = (&self.namespace, &self.watches);
        self.config_maps = (refs.config_maps.iter())
            .map(|name| watches.config_maps.subscribe(namespace, name))
            .collect();
        self.secrets = (refs.secrets.iter())
            .map(|name| watches.secrets.subscribe(namespace, name))
            .collect();
        let settled = (self
            .config_maps
            .iter_mut()
            .map(|w| w.settled(START_WAIT).boxed()))
        .chain(
            self.secrets
                .iter_mut()
                .map(|w| w.settled(START_WAIT).boxed()),
        );
        futures::future::join_all(settled).await;
    }

    /// Waits until one of the pod's objects changed or one of its tokens is due for renewal.
    pub async fn changed(&mut self) {
        let renewal = self.tokens.values().map(|t| t.renew_at).min();
        let due = async move {
            match renewal {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        let mut waits: Vec<BoxFuture<'_, ()>> = vec![due.boxed()];
        waits.extend(self.config_maps.iter_mut().map(|w| w.changed().boxed()));
        waits.extend(self.secrets.iter_mut().map(|w| w.changed().boxed()));
        futures::future::select_all(waits).await;
    }

    /// The credentials of the pod's `imagePullSecrets` (docker config JSON secrets).
    pub async fn pull_secrets(&self, pod: &Pod) -> Keyring {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let names = pod
            .spec
            .iter()
            .flat_map(|s| s.image_pull_secrets.iter().flatten());
        let mut keyring = Keyring::default();
        for name in names.map(|r| r.name.as_str()) {
            let Some(secret) = fetch(&secrets, name).await else {
                tracing::warn!(secret = name, "image pull secret not found");
                continue;
            };
            keyring.extend(docker_keyring(&secret, name));
        }
        keyring
    }

    /// The token for `key`: the one held while fresh, else a new one.
    async fn token(&mut self, pod: &Pod, key: &TokenKey, retry: &[Duration]) -> Option<String> {
        if let Some(token) = self.tokens.get(key).filter(|t| t.renew_at > Instant::now()) {
            return Some(token.value.clone());
        }
        let Some(value) = self.request_token(pod, key, retry).await else {
            // Unreachable API server: the token held stays until it is renewed.
            return self.tokens.get(key).map(|t| t.value.clone());
        };
        let lifetime = Duration::from_secs(u64::try_from(key.expiration_seconds).unwrap_or(3600));
        let token = Token {
            value: value.clone(),
            renew_at: Instant::now() + lifetime.mul_f64(0.8),
        };
        self.tokens.insert(key.clone(), token);
        Some(value)
    }

    /// A token of the pod's service account, bound to the pod (so it dies with it).
    async fn request_token(&self, pod: &Pod, key: &TokenKey, retry: &[Duration]) -> Option<String> {
        let spec = pod.spec.as_ref();
        let account = spec
            .and_then(|s| s.service_account_name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into());
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: key.audience.clone().map(|a| vec![a]),
                expiration_seconds: Some(key.expiration_seconds),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: pod.metadata.name.clone(),
                    uid: pod.metadata.uid.clone(),
                }),
                ..TokenRequestSpec::default()
            }),
            ..TokenRequest::default()
        };
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &self.namespace);
        let params = PostParams::default();
        match retry_forbidden(retry, || {
            api.create_token_request(&account, &params, &request)
        })
        .await
        {
            Ok(answer) => answer.status.and_then(|s| s.token),
            Err(err) => {
                tracing::warn!(%account, %err, "requesting a service account token failed");
                None
            }
        }
    }
}

/// GETs one object a pod needs to start (a refusal tried again as [`FORBIDDEN_RETRY`] says);
/// `None` when it does not exist or cannot be read (logged).
async fn fetch<K>(api: &Api<K>, name: &str) -> Option<K>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match retry_forbidden(&FORBIDDEN_RETRY, || api.get_opt(name)).await {
        Ok(found) => found,
        Err(err) => {
            tracing::warn!(name, %err, "reading an object the pod needs failed");
            None
        }
    }
}

/// The watched objects that exist now.
fn present<K: Resource + Clone>(watched: &[Watched<K>]) -> Vec<K> {
    let seen = watched.iter().map(Watched::seen);
    let present = seen.filter_map(|seen| match seen {
        Seen::Present(object) => Some(K::clone(&object)),
        Seen::Pending | Seen::Missing => None,
    });
    present.collect()
}

/// Runs `op`, and again after each pause of `retry` while the API server refuses it (403).
pub async fn retry_forbidden<T, F, Fut>(retry: &[Duration], mut op: F) -> kube::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = kube::Result<T>>,
{
    for pause in retry {
        match op().await {
            Err(kube::Error::Api(status)) if status.code == 403 => {
                tracing::debug!(message = %status.message, ?pause, "refused; trying again");
                tokio::time::sleep(*pause).await;
            }
            other => return other,
        }
    }
    op().await
}

/// The credentials in a `kubernetes.io/dockerconfigjson` (or legacy `dockercfg`) secret.
fn docker_keyring(secret: &Secret, name: &str) -> Keyring {
    let data: BTreeMap<&str, &[u8]> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), v.0.as_slice()))
        .collect();
    let origin = format!("secret {name}");
    let parsed = match (data.get(".dockerconfigjson"), data.get(".dockercfg")) {
        (Some(json), _) => Keyring::from_docker_config_json(json, &origin),
        (None, Some(legacy)) => {
            let wrapped = format!("{{\"auths\":{}}}", String::from_utf8_lossy(legacy));
            Keyring::from_docker_config_json(wrapped.as_bytes(), &origin)
        }
        (None, None) => return Keyring::default(),
    };
    parsed.unwrap_or_else(|err| {
        tracing::warn!(secret = name, %err, "unusable image pull secret");
        Keyring::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn refusal(code: u16) -> kube::Error {
        let mut status = kube::core::Status::failure("node: no relationship found", "Forbidden");
        status.code = code;
        kube::Error::Api(status.boxed())
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_at_the_start_is_tried_again_until_the_api_server_allows_it() {
        let tries = Cell::new(0);
        let started = tokio::time::Instant::now();
        let got = retry_forbidden(&FORBIDDEN_RETRY, || {
            tries.set(tries.get() + 1);
            let n = tries.get();
            async move { if n < 3 { Err(refusal(403)) } else { Ok(n) } }
        })
        .await;
        assert_eq!(got.unwrap(), 3);
        assert_eq!(started.elapsed(), Duration::from_millis(150));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lasting_refusal_is_given_up_after_about_three_seconds() {
        let tries = Cell::new(0);
        let started = tokio::time::Instant::now();
        let got: kube::Result<()> = retry_forbidden(&FORBIDDEN_RETRY, || {
            tries.set(tries.get() + 1);
            async { Err(refusal(403)) }
        })
        .await;
        assert!(matches!(got, Err(kube::Error::Api(s)) if s.code == 403));
        assert_eq!(tries.get(), FORBIDDEN_RETRY.len() + 1);
        assert_eq!(started.elapsed(), Duration::from_millis(3150));
    }

    #[tokio::test(start_paused = true)]
    async fn other_errors_and_later_refreshes_are_not_retried() {
        for (retry, code) in [
            (&FORBIDDEN_RETRY[..], 404),
            (&FORBIDDEN_RETRY[..], 500),
            (&[][..], 403),
        ] {
            let tries = Cell::new(0);
            let got: kube::Result<()> = retry_forbidden(retry, || {
                tries.set(tries.get() + 1);
                async move { Err(refusal(code)) }
            })
            .await;
            assert!(got.is_err());
            assert_eq!(tries.get(), 1, "code {code}, {} pauses", retry.len());
        }
    }
}
