//! The ConfigMaps and Secrets a pod may reference, resolved by the caller (from the API server
//! or from the documents beside a Pod manifest) into plain maps keyed by name.

use std::collections::BTreeMap;

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Pod, Secret, ServiceAccountTokenProjection, Volume,
};

/// The content of one ConfigMap.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigMapContent {
    /// `data`: UTF-8 values, the only ones environment variables can read.
    pub data: BTreeMap<String, String>,
    /// `binaryData`: raw values, projected into volumes only.
    pub binary_data: BTreeMap<String, Vec<u8>>,
}

/// The content of one Secret (`stringData` already merged into `data`, as the API server does).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretContent {
    /// Decoded values.
    pub data: BTreeMap<String, Vec<u8>>,
}

/// The ConfigMaps and Secrets of the pod's namespace that are known, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigObjects {
    /// ConfigMaps by name.
    pub config_maps: BTreeMap<String, ConfigMapContent>,
    /// Secrets by name.
    pub secrets: BTreeMap<String, SecretContent>,
    /// Service account tokens obtained for the pod (TokenRequest API), by what was asked.
    pub tokens: BTreeMap<TokenKey, String>,
}

/// What a projected `serviceAccountToken` asks for: one token serves every projection with
/// the same audience and lifetime.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TokenKey {
    /// The audience; `None` for the API server's own.
    pub audience: Option<String>,
    /// The requested lifetime in seconds.
    pub expiration_seconds: i64,
}

impl From<&ConfigMap> for ConfigMapContent {
    fn from(config_map: &ConfigMap) -> Self {
        Self {
            data: config_map.data.clone().unwrap_or_default(),
            binary_data: config_map
                .binary_data
                .iter()
                .flatten()
                .map(|(key, value)| (key.clone(), value.0.clone()))
                .collect(),
        }
    }
}

impl From<&Secret> for SecretContent {
    fn from(secret: &Secret) -> Self {
        let mut data: BTreeMap<String, Vec<u8>> = secret
            .data
            .iter()
            .flatten()
            .map(|(key, value)| (key.clone(), value.0.clone()))
            .collect();
        for (key, value) in secret.string_data.iter().flatten() {
            data.insert(key.clone(), value.clone().into_bytes());
        }
        Self { data }
    }
}

impl ConfigObjects {
    /// Collects ConfigMaps and Secrets by their `metadata.name` (objects without a name are
    /// skipped: they cannot be referenced).
    pub fn from_objects(config_maps: &[ConfigMap], secrets: &[Secret]) -> Self {
        Self {
            config_maps: config_maps
                .iter()
                .filter_map(|cm| Some((cm.metadata.name.clone()?, ConfigMapContent::from(cm))))
                .collect(),
            secrets: secrets
                .iter()
                .filter_map(|s| Some((s.metadata.name.clone()?, SecretContent::from(s))))
                .collect(),
            tokens: BTreeMap::new(),
        }
    }
}

/// The names of the ConfigMaps and Secrets a pod reads (through `env`, `envFrom` and
/// volumes), which a node must fetch one by one before it runs the pod. Image pull secrets
/// are not among them: they are credentials for the node, not content for the pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct References {
    /// ConfigMap names.
    pub config_maps: BTreeSet<String>,
    /// Secret names.
    pub secrets: BTreeSet<String>,
    /// Service account tokens of projected volumes.
    pub tokens: BTreeSet<TokenKey>,
}

impl TokenKey {
    /// The key of a projection (the lifetime defaulted as the API server does).
    pub fn of(source: &ServiceAccountTokenProjection) -> TokenKey {
        TokenKey {
            audience: source.audience.clone().filter(|a| !a.is_empty()),
            expiration_seconds: source
                .expiration_seconds
                .unwrap_or(crate::volume::DEFAULT_TOKEN_EXPIRATION_SECONDS),
        }
    }
}

impl References {
    /// Every ConfigMap and Secret `pod` references, in all its containers and volumes.
    pub fn of_pod(pod: &Pod) -> References {
        let mut refs = References::default();
        let Some(spec) = &pod.spec else {
            return refs;
        };
        let init = spec.init_containers.iter().flatten();
        for container in init.chain(&spec.containers) {
            refs.add_container(container);
        }
        for volume in spec.volumes.iter().flatten() {
            refs.add_volume(volume);
        }
        refs
    }

    fn add_container(&mut self, container: &Container) {
        for source in container.env_from.iter().flatten() {
            self.add(source.config_map_ref.as_ref().map(|r| &r.name), None);
            self.add(None, source.secret_ref.as_ref().map(|r| &r.name));
        }
        let value_from = container.env.iter().flatten();
        for from in value_from.filter_map(|e| e.value_from.as_ref()) {
            self.add(from.config_map_key_ref.as_ref().map(|r| &r.name), None);
            self.add(None, from.secret_key_ref.as_ref().map(|r| &r.name));
        }
    }

    fn add_volume(&mut self, volume: &Volume) {
        self.add(volume.config_map.as_ref().map(|c| &c.name), None);
        let secret = volume.secret.as_ref().and_then(|s| s.secret_name.as_ref());
        self.add(None, secret);
        let sources = volume
            .projected
            .iter()
            .flat_map(|p| p.sources.iter().flatten());
        for source in sources {
            self.add(source.config_map.as_ref().map(|c| &c.name), None);
            self.add(None, source.secret.as_ref().map(|s| &s.name));
            if let Some(token) = &source.service_account_token {
                self.tokens.insert(TokenKey::of(token));
            }
        }
    }

    fn add(&mut self, config_map: Option<&String>, secret: Option<&String>) {
        if let Some(name) = config_map.filter(|n| !n.is_empty()) {
            self.config_maps.insert(name.clone());
        }
        if let Some(name) = secret.filter(|n| !n.is_empty()) {
            self.secrets.insert(name.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        ConfigMapEnvSource, ConfigMapVolumeSource, EnvFromSource, EnvVar, EnvVarSource, PodSpec,
        ProjectedVolumeSource, SecretKeySelector, SecretProjection, VolumeProjection,
    };

    #[test]
    fn finds_every_reference_of_a_pod() {
        let container = Container {
            name: "app".into(),
            env_from: Some(vec![EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource {
                    name: "settings".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            env: Some(vec![EnvVar {
                name: "TOKEN".into(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: "api".into(),
                        key: "token".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let volumes = vec![
            Volume {
                name: "cfg".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: "files".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Volume {
                name: "all".into(),
                projected: Some(ProjectedVolumeSource {
                    sources: Some(vec![VolumeProjection {
                        secret: Some(SecretProjection {
                            name: "tls".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ];
        let pod = Pod {
            spec: Some(PodSpec {
                init_containers: Some(vec![container]),
                volumes: Some(volumes),
                ..Default::default()
            }),
            ..Default::default()
        };
        let refs = References::of_pod(&pod);
        let names = |set: &BTreeSet<String>| set.iter().cloned().collect::<Vec<_>>();
        assert_eq!(names(&refs.config_maps), ["files", "settings"]);
        assert_eq!(names(&refs.secrets), ["api", "tls"]);
    }

    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn meta(name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        }
    }

    #[test]
    fn string_data_overrides_data_in_secrets() {
        let secret = Secret {
            metadata: meta("s"),
            data: Some(BTreeMap::from([
                ("a".to_string(), ByteString(b"from-data".to_vec())),
                ("b".to_string(), ByteString(b"kept".to_vec())),
            ])),
            string_data: Some(BTreeMap::from([(
                "a".to_string(),
                "from-string".to_string(),
            )])),
            ..Default::default()
        };
        let content = SecretContent::from(&secret);
        assert_eq!(content.data["a"], b"from-string");
        assert_eq!(content.data["b"], b"kept");
    }

    #[test]
    fn collects_by_name_and_skips_unnamed() {
        let named = ConfigMap {
            metadata: meta("cm"),
            data: Some(BTreeMap::from([("k".to_string(), "v".to_string())])),
            binary_data: Some(BTreeMap::from([(
                "bin".to_string(),
                ByteString(vec![0, 1]),
            )])),
            ..Default::default()
        };
        let unnamed = ConfigMap::default();
        let objects = ConfigObjects::from_objects(&[named, unnamed], &[]);
        assert_eq!(objects.config_maps.len(), 1);
        assert_eq!(objects.config_maps["cm"].data["k"], "v");
        assert_eq!(objects.config_maps["cm"].binary_data["bin"], vec![0, 1]);
    }
}
