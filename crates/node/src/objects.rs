//! What a pod reads from the API besides itself: its ConfigMaps and Secrets, fetched one by
//! one (the Node authorizer lets a node read those of its pods, never list them), and the
//! service account tokens of its projected volumes, from the TokenRequest API, bound to the
//! pod. Fetched when the pod starts and again every [`REFRESH`] while it runs, so updates
//! reach its volumes; a token is renewed past 80% of its lifetime, as the kubelet does.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, ServiceAccount};
use kube::Client;
use kube::api::{Api, PostParams};
use wasmlet_pod::{ConfigObjects, References, TokenKey};

/// How often a running pod's objects are read again.
pub const REFRESH: Duration = Duration::from_secs(30);

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
}

impl PodObjects {
    /// Nothing fetched yet for a pod of `namespace`.
    pub fn new(client: Client, namespace: &str) -> PodObjects {
        PodObjects {
            client,
            namespace: namespace.to_owned(),
            tokens: BTreeMap::new(),
        }
    }

    /// Everything `pod` references that exists now. Missing objects stay missing: the
    /// worker reports them as the kubelet does, and a later fetch may find them.
    pub async fn fetch(&mut self, pod: &Pod) -> ConfigObjects {
        let refs = References::of_pod(pod);
        let config_maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let mut found_maps = Vec::new();
        for name in &refs.config_maps {
            found_maps.extend(fetch(&config_maps, name).await);
        }
        let mut found_secrets = Vec::new();
        for name in &refs.secrets {
            found_secrets.extend(fetch(&secrets, name).await);
        }
        let mut objects = ConfigObjects::from_objects(&found_maps, &found_secrets);
        for key in &refs.tokens {
            if let Some(token) = self.token(pod, key).await {
                objects.tokens.insert(key.clone(), token);
            }
        }
        objects
    }

    /// The token for `key`: the one held while fresh, else a new one.
    async fn token(&mut self, pod: &Pod, key: &TokenKey) -> Option<String> {
        if let Some(token) = self.tokens.get(key).filter(|t| t.renew_at > Instant::now()) {
            return Some(token.value.clone());
        }
        let value = self.request_token(pod, key).await?;
        let lifetime = Duration::from_secs(u64::try_from(key.expiration_seconds).unwrap_or(3600));
        let token = Token {
            value: value.clone(),
            renew_at: Instant::now() + lifetime.mul_f64(0.8),
        };
        self.tokens.insert(key.clone(), token);
        Some(value)
    }

    /// A token of the pod's service account, bound to the pod (so it dies with it).
    async fn request_token(&self, pod: &Pod, key: &TokenKey) -> Option<String> {
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
        match api
            .create_token_request(&account, &PostParams::default(), &request)
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

/// GETs one object; `None` when it does not exist or cannot be read (logged).
pub async fn fetch<K>(api: &Api<K>, name: &str) -> Option<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.get_opt(name).await {
        Ok(found) => found,
        Err(err) => {
            tracing::warn!(name, %err, "reading an object the pod needs failed");
            None
        }
    }
}
