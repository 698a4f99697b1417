//! The ConfigMaps and Secrets a pod may reference, resolved by the caller (from the API server
//! or from the documents beside a Pod manifest) into plain maps keyed by name.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};

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
        }
    }
}

#[cfg(test)]
mod tests {
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
