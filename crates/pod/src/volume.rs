//! Volumes to materialise: what each pod volume should hold (files to write, an empty
//! directory, a host directory), described as plain data; the caller does the I/O.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMapProjection, DownwardAPIVolumeFile, KeyToPath, Pod, SecretProjection,
    ServiceAccountTokenProjection, Volume, VolumeProjection,
};

use crate::downward::{self, DownwardError, NodeFacts};
use crate::keys;
use crate::objects::ConfigObjects;
use crate::quantity::{ParsedQuantity, QuantityError};

/// The file mode used when neither the item nor the volume gives one.
pub const DEFAULT_FILE_MODE: u32 = 0o644;
/// The lifetime of a projected service account token when the pod does not say.
pub const DEFAULT_TOKEN_EXPIRATION_SECONDS: i64 = 3600;

/// Why a volume cannot be materialised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VolumeError {
    /// A required ConfigMap is absent.
    #[error("configmap {0:?} not found")]
    ConfigMapNotFound(String),
    /// A required Secret is absent.
    #[error("secret {0:?} not found")]
    SecretNotFound(String),
    /// An item names a key the ConfigMap does not have.
    #[error("configmap references non-existent config key: {0}")]
    ConfigMapKeyNotFound(String),
    /// An item names a key the Secret does not have.
    #[error("references non-existent secret key: {0}")]
    SecretKeyNotFound(String),
    /// A downward API item could not be resolved.
    #[error("volume {volume:?}: {source}")]
    Downward {
        /// The volume.
        volume: String,
        /// Why.
        source: DownwardError,
    },
    /// A downwardAPI item has neither `fieldRef` nor `resourceFieldRef`.
    #[error("volume {volume:?}: item {path:?} has neither fieldRef nor resourceFieldRef")]
    EmptyDownwardItem {
        /// The volume.
        volume: String,
        /// The item's path.
        path: String,
    },
    /// A file path is absolute, empty, climbs out of the volume or takes a name the volume
    /// writer keeps for itself.
    #[error("volume {volume:?}: invalid path {path:?}: {reason}")]
    InvalidPath {
        /// The volume.
        volume: String,
        /// The offending path.
        path: String,
        /// Which rule it breaks ([`crate::keys::path_problem`]).
        reason: &'static str,
    },
    /// A ConfigMap or Secret projected whole has a key the API server would refuse, so it
    /// cannot become a file name.
    #[error("volume {volume:?}: {object} has an invalid key {key:?}: {reason}; rename the key")]
    InvalidKey {
        /// The volume.
        volume: String,
        /// The object, e.g. `configmap "app"`.
        object: String,
        /// The offending key.
        key: String,
        /// Which rule it breaks ([`crate::keys::key_problem`]).
        reason: &'static str,
    },
    /// A file mode is outside 0..=0o777.
    #[error("volume {volume:?}: invalid mode {mode}: must be between 0 and 0777 (octal)")]
    InvalidMode {
        /// The volume.
        volume: String,
        /// The offending mode.
        mode: i32,
    },
    /// A field holds a value wasmlet does not know.
    #[error("volume {volume:?}: unsupported {field} {value:?}")]
    UnsupportedValue {
        /// The volume.
        volume: String,
        /// The field, e.g. `hostPath.type`.
        field: &'static str,
        /// The value.
        value: String,
    },
    /// `emptyDir.sizeLimit` is malformed.
    #[error("volume {volume:?}: sizeLimit: {source}")]
    SizeLimit {
        /// The volume.
        volume: String,
        /// Why.
        source: QuantityError,
    },
    /// The volume's source is one wasmlet does not provide.
    #[error("volume {volume:?}: unsupported volume source {kind}")]
    UnsupportedSource {
        /// The volume.
        volume: String,
        /// The source's field name, e.g. `persistentVolumeClaim`.
        kind: String,
    },
}

/// Result type of this module.
pub type Result<T, E = VolumeError> = std::result::Result<T, E>;

/// One file of a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileToWrite {
    /// Path relative to the volume root (`/`-separated, no `..`).
    pub path: String,
    /// Content.
    pub bytes: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
}

/// A service account token the caller must obtain (TokenRequest) and write at `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// Path relative to the volume root.
    pub path: String,
    /// Intended audience; `None` means the API server's.
    pub audience: Option<String>,
    /// Requested lifetime in seconds.
    pub expiration_seconds: i64,
    /// Permission bits of the file.
    pub mode: u32,
}

/// Where an emptyDir lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmptyDirMedium {
    /// The node's default storage.
    Disk,
    /// Memory (tmpfs).
    Memory,
}

/// The check (or creation) a hostPath volume asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostPathType {
    /// No check.
    Unchecked,
    /// Create an empty directory if nothing exists.
    DirectoryOrCreate,
    /// A directory must exist.
    Directory,
    /// Create an empty file if nothing exists.
    FileOrCreate,
    /// A file must exist.
    File,
    /// A UNIX socket must exist.
    Socket,
    /// A character device must exist.
    CharDevice,
    /// A block device must exist.
    BlockDevice,
}

/// What one volume holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeContent {
    /// A fresh, empty directory for the pod's lifetime.
    EmptyDir {
        /// Where it lives.
        medium: EmptyDirMedium,
        /// Its size limit in bytes, if any.
        size_limit_bytes: Option<u64>,
    },
    /// A directory (or file) of the host.
    HostPath {
        /// The host path.
        path: String,
        /// What to check or create.
        kind: HostPathType,
    },
    /// A directory holding exactly these files (configMap, secret, downwardAPI, projected).
    Files {
        /// Files to write.
        files: Vec<FileToWrite>,
        /// Tokens the caller must request and write.
        tokens: Vec<TokenRequest>,
    },
}

/// One volume of the pod and what it should hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumePlan {
    /// The volume's name.
    pub name: String,
    /// Its content.
    pub content: VolumeContent,
}

/// Plans every volume of the pod, in order.
pub fn plan_volumes(
    pod: &Pod,
    objects: &ConfigObjects,
    node: &NodeFacts,
) -> Result<Vec<VolumePlan>> {
    let volumes = pod.spec.iter().flat_map(|s| s.volumes.iter().flatten());
    volumes
        .map(|v| plan_volume(pod, v, objects, node))
        .collect()
}

/// Plans one volume of the pod.
pub fn plan_volume(
    pod: &Pod,
    volume: &Volume,
    objects: &ConfigObjects,
    node: &NodeFacts,
) -> Result<VolumePlan> {
    let builder = FilesBuilder::new(&volume.name);
    let content = if let Some(source) = &volume.empty_dir {
        empty_dir(
            &volume.name,
            source.medium.as_deref(),
            source.size_limit.as_ref().map(|q| q.0.as_str()),
        )?
    } else if let Some(source) = &volume.host_path {
        VolumeContent::HostPath {
            path: source.path.clone(),
            kind: host_path_type(&volume.name, source.type_.as_deref())?,
        }
    } else if let Some(source) = &volume.config_map {
        let mode = builder.default_mode(source.default_mode)?;
        let projection = ConfigMapProjection {
            name: source.name.clone(),
            items: source.items.clone(),
            optional: source.optional,
        };
        builder
            .with_config_map(&projection, objects, mode)?
            .finish()
    } else if let Some(source) = &volume.secret {
        let mode = builder.default_mode(source.default_mode)?;
        let name = source.secret_name.clone().unwrap_or_default();
        let projection = SecretProjection {
            name,
            items: source.items.clone(),
            optional: source.optional,
        };
        builder.with_secret(&projection, objects, mode)?.finish()
    } else if let Some(source) = &volume.downward_api {
        let mode = builder.default_mode(source.default_mode)?;
        builder
            .with_downward(pod, node, source.items.iter().flatten(), mode)?
            .finish()
    } else if let Some(source) = &volume.projected {
        let mode = builder.default_mode(source.default_mode)?;
        let mut builder = builder;
        for projection in source.sources.iter().flatten() {
            builder = builder.with_projection(pod, node, objects, projection, mode)?;
        }
        builder.finish()
    } else {
        return Err(VolumeError::UnsupportedSource {
            volume: volume.name.clone(),
            kind: source_kind(volume),
        });
    };
    Ok(VolumePlan {
        name: volume.name.clone(),
        content,
    })
}

fn empty_dir(
    volume: &str,
    medium: Option<&str>,
    size_limit: Option<&str>,
) -> Result<VolumeContent> {
    let medium = match medium.unwrap_or("") {
        "" => EmptyDirMedium::Disk,
        "Memory" => EmptyDirMedium::Memory,
        other => {
            return Err(VolumeError::UnsupportedValue {
                volume: volume.into(),
                field: "emptyDir.medium",
                value: other.into(),
            });
        }
    };
    let size_limit_bytes = match size_limit {
        None => None,
        Some(text) => {
            let size_error = |source| VolumeError::SizeLimit {
                volume: volume.into(),
                source,
            };
            let quantity = ParsedQuantity::parse(text).map_err(size_error)?;
            let bytes = quantity
                .value_rounded_up()
                .and_then(|v| u64::try_from(v).ok());
            Some(bytes.ok_or_else(|| size_error(QuantityError::OutOfRange(text.into())))?)
        }
    };
    Ok(VolumeContent::EmptyDir {
        medium,
        size_limit_bytes,
    })
}

fn host_path_type(volume: &str, kind: Option<&str>) -> Result<HostPathType> {
    Ok(match kind.unwrap_or("") {
        "" => HostPathType::Unchecked,
        "DirectoryOrCreate" => HostPathType::DirectoryOrCreate,
        "Directory" => HostPathType::Directory,
        "FileOrCreate" => HostPathType::FileOrCreate,
        "File" => HostPathType::File,
        "Socket" => HostPathType::Socket,
        "CharDevice" => HostPathType::CharDevice,
        "BlockDevice" => HostPathType::BlockDevice,
        other => {
            return Err(VolumeError::UnsupportedValue {
                volume: volume.into(),
                field: "hostPath.type",
                value: other.into(),
            });
        }
    })
}

/// The field name of a volume source wasmlet does not provide.
fn source_kind(volume: &Volume) -> String {
    let value = serde_json::to_value(volume).unwrap_or_default();
    value
        .as_object()
        .and_then(|fields| fields.keys().find(|k| k.as_str() != "name").cloned())
        .unwrap_or_else(|| "(none)".to_string())
}

/// Collects the files and token requests of one volume.
struct FilesBuilder<'a> {
    volume: &'a str,
    files: Vec<FileToWrite>,
    tokens: Vec<TokenRequest>,
}

impl<'a> FilesBuilder<'a> {
    fn new(volume: &'a str) -> Self {
        Self {
            volume,
            files: Vec::new(),
            tokens: Vec::new(),
        }
    }

    fn finish(self) -> VolumeContent {
        VolumeContent::Files {
            files: self.files,
            tokens: self.tokens,
        }
    }

    fn default_mode(&self, mode: Option<i32>) -> Result<u32> {
        self.mode(mode, DEFAULT_FILE_MODE)
    }

    fn mode(&self, mode: Option<i32>, default: u32) -> Result<u32> {
        match mode {
            None => Ok(default),
            Some(m) if (0..=0o777).contains(&m) => Ok(m as u32),
            Some(m) => Err(VolumeError::InvalidMode {
                volume: self.volume.into(),
                mode: m,
            }),
        }
    }

    fn path(&self, path: &str) -> Result<String> {
        if let Some(reason) = keys::path_problem(path) {
            return Err(VolumeError::InvalidPath {
                volume: self.volume.into(),
                path: path.into(),
                reason,
            });
        }
        Ok(path.to_string())
    }

    fn add(&mut self, path: &str, bytes: Vec<u8>, mode: u32) -> Result<()> {
        let path = self.path(path)?;
        self.files.retain(|f| f.path != path);
        self.files.push(FileToWrite { path, bytes, mode });
        Ok(())
    }

    /// Adds `keys` (all of them, or the selected items), failing on a missing key unless optional.
    fn add_keys(
        &mut self,
        data: &BTreeMap<String, Vec<u8>>,
        items: Option<&Vec<KeyToPath>>,
        optional: bool,
        missing_key: impl Fn(&str) -> VolumeError,
        mode: u32,
        object: impl Fn() -> String,
    ) -> Result<()> {
        let Some(items) = items.filter(|i| !i.is_empty()) else {
            for (key, bytes) in data {
                if let Some(reason) = keys::key_problem(key) {
                    return Err(VolumeError::InvalidKey {
                        volume: self.volume.into(),
                        object: object(),
                        key: key.clone(),
                        reason,
                    });
                }
                self.add(key, bytes.clone(), mode)?;
            }
            return Ok(());
        };
        for item in items {
            match data.get(&item.key) {
                Some(bytes) => {
                    let item_mode = self.mode(item.mode, mode)?;
                    self.add(&item.path, bytes.clone(), item_mode)?;
                }
                None if optional => {}
                None => return Err(missing_key(&item.key)),
            }
        }
        Ok(())
    }

    fn with_config_map(
        mut self,
        source: &ConfigMapProjection,
        objects: &ConfigObjects,
        mode: u32,
    ) -> Result<Self> {
        let optional = source.optional == Some(true);
        let Some(content) = objects.config_maps.get(&source.name) else {
            return if optional {
                Ok(self)
            } else {
                Err(VolumeError::ConfigMapNotFound(source.name.clone()))
            };
        };
        let mut data: BTreeMap<String, Vec<u8>> = content
            .data
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
            .collect();
        data.extend(
            content
                .binary_data
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        let missing = |key: &str| VolumeError::ConfigMapKeyNotFound(key.to_string());
        let object = || format!("configmap {:?}", source.name);
        self.add_keys(
            &data,
            source.items.as_ref(),
            optional,
            missing,
            mode,
            object,
        )?;
        Ok(self)
    }

    fn with_secret(
        mut self,
        source: &SecretProjection,
        objects: &ConfigObjects,
        mode: u32,
    ) -> Result<Self> {
        let optional = source.optional == Some(true);
        let Some(content) = objects.secrets.get(&source.name) else {
            return if optional {
                Ok(self)
            } else {
                Err(VolumeError::SecretNotFound(source.name.clone()))
            };
        };
        let missing = |key: &str| VolumeError::SecretKeyNotFound(key.to_string());
        let object = || format!("secret {:?}", source.name);
        let items = source.items.as_ref();
        self.add_keys(&content.data, items, optional, missing, mode, object)?;
        Ok(self)
    }

    fn with_downward<'b>(
        mut self,
        pod: &Pod,
        node: &NodeFacts,
        items: impl Iterator<Item = &'b DownwardAPIVolumeFile>,
        mode: u32,
    ) -> Result<Self> {
        for item in items {
            let value = self.downward_value(pod, node, item)?;
            let item_mode = self.mode(item.mode, mode)?;
            self.add(&item.path, value.into_bytes(), item_mode)?;
        }
        Ok(self)
    }

    fn downward_value(
        &self,
        pod: &Pod,
        node: &NodeFacts,
        item: &DownwardAPIVolumeFile,
    ) -> Result<String> {
        let wrap = |source| VolumeError::Downward {
            volume: self.volume.into(),
            source,
        };
        if let Some(field) = &item.field_ref {
            return downward::field_file_value(pod, node, &field.field_path).map_err(wrap);
        }
        let Some(resource) = &item.resource_field_ref else {
            return Err(VolumeError::EmptyDownwardItem {
                volume: self.volume.into(),
                path: item.path.clone(),
            });
        };
        let name = resource.container_name.as_deref().unwrap_or("");
        let container = downward::find_container(pod, name)
            .ok_or_else(|| wrap(DownwardError::ContainerNotFound(name.to_string())))?;
        downward::resource_value(
            container,
            &resource.resource,
            resource.divisor.as_ref(),
            &node.allocatable,
        )
        .map_err(wrap)
    }

    /// The token file when the caller obtained the token (in `objects.tokens`), else a
    /// request for it.
    fn with_token(
        mut self,
        source: &ServiceAccountTokenProjection,
        objects: &ConfigObjects,
        mode: u32,
    ) -> Result<Self> {
        let key = crate::objects::TokenKey::of(source);
        if let Some(token) = objects.tokens.get(&key) {
            self.add(&source.path, token.clone().into_bytes(), mode)?;
            return Ok(self);
        }
        let path = self.path(&source.path)?;
        self.tokens.push(TokenRequest {
            path,
            audience: key.audience,
            expiration_seconds: key.expiration_seconds,
            mode,
        });
        Ok(self)
    }

    fn with_projection(
        self,
        pod: &Pod,
        node: &NodeFacts,
        objects: &ConfigObjects,
        projection: &VolumeProjection,
        mode: u32,
    ) -> Result<Self> {
        if let Some(source) = &projection.config_map {
            return self.with_config_map(source, objects, mode);
        }
        if let Some(source) = &projection.secret {
            return self.with_secret(source, objects, mode);
        }
        if let Some(source) = &projection.downward_api {
            return self.with_downward(pod, node, source.items.iter().flatten(), mode);
        }
        if let Some(source) = &projection.service_account_token {
            return self.with_token(source, objects, mode);
        }
        let kind = serde_json::to_value(projection)
            .ok()
            .and_then(|v| v.as_object().and_then(|o| o.keys().next().cloned()))
            .unwrap_or_else(|| "(none)".to_string());
        Err(VolumeError::UnsupportedSource {
            volume: self.volume.into(),
            kind: format!("projected.{kind}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::{ConfigMapContent, SecretContent};

    fn objects() -> ConfigObjects {
        let bad = ConfigMapContent {
            data: BTreeMap::from([("..data".to_string(), "x".to_string())]),
            binary_data: BTreeMap::new(),
        };
        ConfigObjects {
            config_maps: BTreeMap::from([
                (
                    "cfg".to_string(),
                    ConfigMapContent {
                        data: BTreeMap::from([
                            ("a.conf".to_string(), "A".to_string()),
                            ("b.conf".to_string(), "B".to_string()),
                        ]),
                        binary_data: BTreeMap::from([("blob".to_string(), vec![0, 255])]),
                    },
                ),
                ("bad".to_string(), bad),
            ]),
            secrets: BTreeMap::from([(
                "sec".to_string(),
                SecretContent {
                    data: BTreeMap::from([("token".to_string(), b"t0k".to_vec())]),
                },
            )]),
            tokens: BTreeMap::new(),
        }
    }

    fn plan(volume_yaml: &str) -> Result<VolumeContent> {
        let text = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p, namespace: ns, labels: {{app: demo, tier: web}}}}\nspec:\n  containers:\n  - {{name: c, image: i, resources: {{limits: {{memory: 32Mi}}}}}}\n  volumes:\n  - {volume_yaml}\n"
        );
        let pod: Pod = serde_yaml::from_str(&text).unwrap();
        let node = NodeFacts {
            node_name: "n".into(),
            ..Default::default()
        };
        let mut plans = plan_volumes(&pod, &objects(), &node)?;
        assert_eq!(plans.len(), 1);
        Ok(plans.remove(0).content)
    }

    /// (path, bytes, mode) of a planned file.
    type FileRow = (String, Vec<u8>, u32);

    fn files(volume_yaml: &str) -> Vec<FileRow> {
        match plan(volume_yaml).unwrap_or_else(|e| panic!("{volume_yaml}: {e}")) {
            VolumeContent::Files { files, .. } => files
                .into_iter()
                .map(|f| (f.path, f.bytes, f.mode))
                .collect(),
            other => panic!("{volume_yaml}: not files: {other:?}"),
        }
    }

    fn file(path: &str, bytes: &[u8], mode: u32) -> FileRow {
        (path.to_string(), bytes.to_vec(), mode)
    }

    #[test]
    fn plans_directories() {
        let cases: &[(&str, VolumeContent)] = &[
            (
                "{name: v, emptyDir: {}}",
                VolumeContent::EmptyDir {
                    medium: EmptyDirMedium::Disk,
                    size_limit_bytes: None,
                },
            ),
            (
                "{name: v, emptyDir: {medium: Memory, sizeLimit: 64Mi}}",
                VolumeContent::EmptyDir {
                    medium: EmptyDirMedium::Memory,
                    size_limit_bytes: Some(64 << 20),
                },
            ),
            (
                "{name: v, hostPath: {path: /srv}}",
                VolumeContent::HostPath {
                    path: "/srv".into(),
                    kind: HostPathType::Unchecked,
                },
            ),
            (
                "{name: v, hostPath: {path: /srv, type: DirectoryOrCreate}}",
                VolumeContent::HostPath {
                    path: "/srv".into(),
                    kind: HostPathType::DirectoryOrCreate,
                },
            ),
            (
                "{name: v, hostPath: {path: /f, type: FileOrCreate}}",
                VolumeContent::HostPath {
                    path: "/f".into(),
                    kind: HostPathType::FileOrCreate,
                },
            ),
            (
                "{name: v, hostPath: {path: /s, type: Socket}}",
                VolumeContent::HostPath {
                    path: "/s".into(),
                    kind: HostPathType::Socket,
                },
            ),
        ];
        for (volume, expected) in cases {
            assert_eq!(&plan(volume).unwrap(), expected, "{volume}");
        }
    }

    #[test]
    fn plans_config_map_and_secret_files() {
        let cases: Vec<(&str, Vec<FileRow>)> = vec![
            (
                "{name: v, configMap: {name: cfg}}",
                vec![
                    file("a.conf", b"A", 0o644),
                    file("b.conf", b"B", 0o644),
                    file("blob", &[0, 255], 0o644),
                ],
            ),
            (
                "{name: v, configMap: {name: cfg, defaultMode: 0o400, items: [{key: a.conf, path: conf/a}]}}",
                vec![file("conf/a", b"A", 0o400)],
            ),
            (
                "{name: v, configMap: {name: cfg, items: [{key: a.conf, path: x, mode: 0o600}, {key: b.conf, path: y}]}}",
                vec![file("x", b"A", 0o600), file("y", b"B", 0o644)],
            ),
            ("{name: v, configMap: {name: nope, optional: true}}", vec![]),
            (
                "{name: v, configMap: {name: cfg, optional: true, items: [{key: nope, path: n}, {key: a.conf, path: a}]}}",
                vec![file("a", b"A", 0o644)],
            ),
            (
                "{name: v, secret: {secretName: sec}}",
                vec![file("token", b"t0k", 0o644)],
            ),
            (
                "{name: v, secret: {secretName: sec, defaultMode: 0o440}}",
                vec![file("token", b"t0k", 0o440)],
            ),
            (
                "{name: v, secret: {secretName: nope, optional: true}}",
                vec![],
            ),
        ];
        for (volume, expected) in cases {
            assert_eq!(files(volume), expected, "{volume}");
        }
    }

    #[test]
    fn plans_downward_api_files() {
        let volume = "{name: v, downwardAPI: {items: [{path: name, fieldRef: {fieldPath: metadata.name}}, {path: labels, fieldRef: {fieldPath: metadata.labels}}, {path: mem, resourceFieldRef: {containerName: c, resource: limits.memory, divisor: 1Mi}, mode: 0o400}]}}";
        assert_eq!(
            files(volume),
            vec![
                file("name", b"p", 0o644),
                file("labels", b"app=\"demo\"\ntier=\"web\"", 0o644),
                file("mem", b"32", 0o400)
            ]
        );
    }

    #[test]
    fn plans_projected_volumes() {
        let volume = "{name: v, projected: {defaultMode: 0o440, sources: [{configMap: {name: cfg, items: [{key: a.conf, path: a}]}}, {secret: {name: sec}}, {downwardAPI: {items: [{path: ns, fieldRef: {fieldPath: metadata.namespace}}]}}, {serviceAccountToken: {path: token, audience: vault}}, {serviceAccountToken: {path: t2, expirationSeconds: 600}}]}}";
        let VolumeContent::Files { files, tokens } = plan(volume).unwrap() else {
            panic!("not files")
        };
        let paths: Vec<(&str, u32)> = files.iter().map(|f| (f.path.as_str(), f.mode)).collect();
        assert_eq!(paths, vec![("a", 0o440), ("token", 0o440), ("ns", 0o440)]);
        assert_eq!(
            tokens,
            vec![
                TokenRequest {
                    path: "token".into(),
                    audience: Some("vault".into()),
                    expiration_seconds: 3600,
                    mode: 0o440
                },
                TokenRequest {
                    path: "t2".into(),
                    audience: None,
                    expiration_seconds: 600,
                    mode: 0o440
                },
            ]
        );
    }

    #[test]
    fn reports_volume_errors() {
        let cases: &[(&str, &str)] = &[
            (
                "{name: v, configMap: {name: nope}}",
                "configmap \"nope\" not found",
            ),
            (
                "{name: v, secret: {secretName: nope}}",
                "secret \"nope\" not found",
            ),
            (
                "{name: v, configMap: {name: cfg, items: [{key: nope, path: n}]}}",
                "configmap references non-existent config key: nope",
            ),
            (
                "{name: v, secret: {secretName: sec, items: [{key: nope, path: n}]}}",
                "references non-existent secret key: nope",
            ),
            (
                "{name: v, configMap: {name: cfg, items: [{key: a.conf, path: ../escape}]}}",
                "invalid path \"../escape\": a path may not start with '..'",
            ),
            (
                "{name: v, configMap: {name: bad}}",
                "volume \"v\": configmap \"bad\" has an invalid key \"..data\": a key may not \
                 start with '..'; rename the key",
            ),
            (
                "{name: v, configMap: {name: cfg, items: [{key: a.conf, path: ..data}]}}",
                "invalid path \"..data\"",
            ),
            (
                "{name: v, configMap: {name: cfg, items: [{key: a.conf, path: '.'}]}}",
                "invalid path \".\"",
            ),
            (
                "{name: v, configMap: {name: cfg, items: [{key: a.conf, path: /abs}]}}",
                "invalid path \"/abs\"",
            ),
            (
                "{name: v, configMap: {name: cfg, defaultMode: 4096}}",
                "invalid mode 4096",
            ),
            (
                "{name: v, configMap: {name: cfg, items: [{key: a.conf, path: a, mode: -1}]}}",
                "invalid mode -1",
            ),
            (
                "{name: v, emptyDir: {medium: HugePages}}",
                "unsupported emptyDir.medium \"HugePages\"",
            ),
            ("{name: v, emptyDir: {sizeLimit: huge}}", "sizeLimit"),
            (
                "{name: v, hostPath: {path: /x, type: Pipe}}",
                "unsupported hostPath.type \"Pipe\"",
            ),
            (
                "{name: v, persistentVolumeClaim: {claimName: c}}",
                "unsupported volume source persistentVolumeClaim",
            ),
            ("{name: v}", "unsupported volume source (none)"),
            (
                "{name: v, downwardAPI: {items: [{path: x, fieldRef: {fieldPath: status.phase}}]}}",
                "unsupported fieldPath: status.phase",
            ),
            (
                "{name: v, downwardAPI: {items: [{path: x, resourceFieldRef: {containerName: ghost, resource: limits.cpu}}]}}",
                "container \"ghost\" not found",
            ),
            (
                "{name: v, downwardAPI: {items: [{path: x}]}}",
                "has neither fieldRef nor resourceFieldRef",
            ),
            (
                "{name: v, projected: {sources: [{clusterTrustBundle: {path: b, signerName: s}}]}}",
                "unsupported volume source projected.clusterTrustBundle",
            ),
            (
                "{name: v, projected: {sources: [{serviceAccountToken: {path: ../t}}]}}",
                "invalid path \"../t\"",
            ),
        ];
        for (volume, expected) in cases {
            let error = plan(volume).unwrap_err().to_string();
            assert!(
                error.contains(expected),
                "{volume}: got {error:?}, want {expected:?}"
            );
        }
    }
}
