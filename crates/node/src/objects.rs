//! What a pod reads from the API besides itself: its ConfigMaps and Secrets, fetched one by
//! one (the Node authorizer lets a node read those of its pods, never list them), and the
//! service account tokens of its projected volumes, from the TokenRequest API, bound to the
//! pod; and the credentials of its `imagePullSecrets`. Fetched when the pod starts and again
//! every [`REFRESH`] while it runs, so updates reach its volumes; a token is renewed past 80%
//! of its lifetime, as the kubelet does.
//!
//! At the pod's start a refusal (403) is tried again a few times within about 3 s
//! ([`FORBIDDEN_RETRY`]): the Node authorizer and NodeRestriction admission learn that the
//! pod is bound to this node from the API server's own watches, which can trail the node's
//! watch by a moment, and until then refuse the node its pod's objects ("no relationship
//! found between node and this object", "token bound to a pod scheduled on a different
//! node"). Without the retry such a pod waited for the next [`REFRESH`], 30 s.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, ServiceAccount};
use kube::Client;
use kube::api::{Api, PostParams};
use wasmlet_oci::auth::Keyring;
use wasmlet_pod::{ConfigMapContent, ConfigObjects, References, SecretContent, TokenKey};

/// How often a running pod's objects are read again.
pub const REFRESH: Duration = Duration::from_secs(30);

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

/// The objects of one pod, with the tokens obtained so far.
pub struct PodObjects {
    client: Client,
    namespace: String,
    tokens: BTreeMap<TokenKey, Token>,
    /// Whether a fetch has been done (the first one retries refusals).
    fetched: bool,
    /// What the last fetch gave: kept for an object whose read fails (an API server away
    /// must not empty a running pod's volumes).
    last: ConfigObjects,
}

impl PodObjects {
    /// Nothing fetched yet for a pod of `namespace`.
    pub fn new(client: Client, namespace: &str) -> PodObjects {
        PodObjects {
            client,
            namespace: namespace.to_owned(),
            tokens: BTreeMap::new(),
            fetched: false,
            last: ConfigObjects::default(),
        }
    }

    /// Everything `pod` references that exists now. Missing objects stay missing: the
    /// worker reports them as the kubelet does, and a later fetch may find them.
    pub async fn fetch(&mut self, pod: &Pod) -> ConfigObjects {
        let refs = References::of_pod(pod);
        let config_maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let retry: &[Duration] = if self.fetched { &[] } else { &FORBIDDEN_RETRY };
        self.fetched = true;
        let mut objects = ConfigObjects::default();
        for name in &refs.config_maps {
            let read = read(&config_maps, name, retry).await;
            let known = self.last.config_maps.get(name);
            if let Some(content) = read.content(known, |cm| ConfigMapContent::from(&cm)) {
                objects.config_maps.insert(name.clone(), content);
            }
        }
        for name in &refs.secrets {
            let read = read(&secrets, name, retry).await;
            let known = self.last.secrets.get(name);
            if let Some(content) = read.content(known, |s| SecretContent::from(&s)) {
                objects.secrets.insert(name.clone(), content);
            }
        }
        for key in &refs.tokens {
            if let Some(token) = self.token(pod, key, retry).await {
                objects.tokens.insert(key.clone(), token);
            }
        }
        self.last = objects.clone();
        objects
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
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match read(api, name, &FORBIDDEN_RETRY).await {
        Read::Found(object) => Some(object),
        Read::Missing | Read::Failed => None,
    }
}

/// GETs one object, a refusal tried again after each pause of `retry`.
async fn read<K>(api: &Api<K>, name: &str, retry: &[Duration]) -> Read<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match retry_forbidden(retry, || api.get_opt(name)).await {
        Ok(Some(found)) => Read::Found(found),
        Ok(None) => Read::Missing,
        Err(err) => {
            tracing::warn!(name, %err, "reading an object the pod needs failed");
            Read::Failed
        }
    }
}

/// What reading one object gave.
enum Read<K> {
    /// It exists.
    Found(K),
    /// It does not exist.
    Missing,
    /// The API server could not be asked (or refused).
    Failed,
}

impl<K> Read<K> {
    /// The content to hand the pod: the object read, nothing when it does not exist, and
    /// the `known` content when it could not be read.
    fn content<C: Clone>(self, known: Option<&C>, convert: impl FnOnce(K) -> C) -> Option<C> {
        match self {
            Read::Found(object) => Some(convert(object)),
            Read::Missing => None,
            Read::Failed => known.cloned(),
        }
    }
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
