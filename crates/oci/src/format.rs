//! The ways WebAssembly is packaged in OCI registries: which one an image uses, and how to
//! write the two we push.
//!
//! | format | config media type | wasm layer |
//! |---|---|---|
//! | CNCF wasm artifact | `application/vnd.wasm.config.v0+json` | `application/wasm` |
//! | wasm-to-oci | `application/vnd.wasm.config.v1+json` (`{}`) | `application/vnd.wasm.content.layer.v1+wasm` |
//! | runwasi component layer | image config, architecture `wasm` | `application/vnd.bytecodealliance.wasm.component.layer.v0+wasm` |
//! | container image | OCI or Docker image config | tar layers; the entrypoint names the `.wasm` file |

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::wasm::{ComponentInterface, WasmKind};

/// OCI and wasm media types.
pub mod media {
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// Docker schema 2 manifest.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker manifest list.
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    /// OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// Docker image config.
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    /// OCI tar layer.
    pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    /// OCI gzip tar layer.
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// Docker gzip tar layer.
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    /// Docker tar layer (rare).
    pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
    /// OCI 1.1 empty config of artifacts.
    pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
    /// CNCF TAG-Runtime wasm config.
    pub const WASM_CONFIG_V0: &str = "application/vnd.wasm.config.v0+json";
    /// CNCF TAG-Runtime wasm layer.
    pub const WASM_LAYER: &str = "application/wasm";
    /// wasm-to-oci config.
    pub const WASM_TO_OCI_CONFIG: &str = "application/vnd.wasm.config.v1+json";
    /// wasm-to-oci layer.
    pub const WASM_TO_OCI_LAYER: &str = "application/vnd.wasm.content.layer.v1+wasm";
    /// An older wasm-to-oci / Krustlet layer spelling.
    pub const MODULE_WASM_LAYER: &str = "application/vnd.module.wasm.content.layer.v1+wasm";
    /// runwasi's component layer.
    pub const RUNWASI_COMPONENT_LAYER: &str =
        "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm";

    /// The media types accepted when asking a registry for a manifest.
    pub const MANIFEST_ACCEPT: &[&str] = &[OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

    /// Whether a layer media type holds raw wasm bytes (not a tar).
    pub fn is_wasm_layer(media_type: &str) -> bool {
        [
            WASM_LAYER,
            WASM_TO_OCI_LAYER,
            MODULE_WASM_LAYER,
            RUNWASI_COMPONENT_LAYER,
        ]
        .contains(&media_type)
    }

    /// Whether a manifest media type is an image index (OCI) or manifest list (Docker).
    pub fn is_index(media_type: &str) -> bool {
        media_type == OCI_INDEX || media_type == DOCKER_LIST
    }

    /// Whether a layer media type is a tar archive, and whether it is gzip-compressed.
    pub fn tar_layer(media_type: &str) -> Option<bool> {
        match media_type {
            OCI_LAYER_TAR | DOCKER_LAYER_TAR => Some(false),
            OCI_LAYER_GZIP | DOCKER_LAYER_GZIP => Some(true),
            _ => None,
        }
    }
}

/// Problems deciding how an image packages its wasm.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// Nothing in the image is WebAssembly.
    #[error(
        "image holds no WebAssembly: config `{config}`, layers [{layers}]; push a .wasm with `wasmlet push`, or build an image whose entrypoint names a .wasm file"
    )]
    NoWasm {
        /// The config media type.
        config: String,
        /// The layer media types.
        layers: String,
    },
    /// A container image whose entrypoint does not name a `.wasm` file.
    #[error(
        "container image has no WebAssembly entrypoint: ENTRYPOINT/CMD is {argv:?}; set CMD [\"/module.wasm\"] (the path of the .wasm inside the image)"
    )]
    NoEntrypoint {
        /// ENTRYPOINT followed by CMD.
        argv: Vec<String>,
    },
    /// The config blob is not valid JSON of the expected shape.
    #[error("invalid image config ({media_type}): {reason}")]
    InvalidConfig {
        /// Its media type.
        media_type: String,
        /// The parse error.
        reason: String,
    },
}

/// Which packaging an image uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// CNCF TAG-Runtime wasm artifact (the default for push).
    #[serde(rename = "cncf-wasm-artifact")]
    CncfArtifact,
    /// The layout `wasm-to-oci` writes.
    WasmToOci,
    /// runwasi's component layer in an image.
    RunwasiComponent,
    /// An ordinary container image whose entrypoint names a `.wasm` file.
    ContainerImage,
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::CncfArtifact => "cncf-wasm-artifact",
            Format::WasmToOci => "wasm-to-oci",
            Format::RunwasiComponent => "runwasi-component",
            Format::ContainerImage => "container-image",
        })
    }
}

/// Where the wasm bytes sit in an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WasmLocation {
    /// A layer holding the raw wasm bytes.
    Layer(Digest),
    /// A file inside the image's tar layers.
    File(String),
}

/// The verdict on an image: its format, where its wasm is, and its run settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Detected {
    /// The packaging format.
    pub format: Format,
    /// Where the wasm bytes are.
    pub wasm: WasmLocation,
    /// ENTRYPOINT then CMD from an image config (empty for artifacts).
    pub argv: Vec<String>,
    /// `K=V` environment from an image config.
    pub env: Vec<String>,
    /// The working directory from an image config.
    pub working_dir: Option<String>,
}

/// The manifest fields detection needs (a subset of OCI and Docker manifests).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// The manifest's own media type, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// OCI 1.1 artifact type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The config blob.
    pub config: Descriptor,
    /// The layers.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// An image index / manifest list.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Always 2.
    pub schema_version: u32,
    /// Its media type, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The manifests.
    pub manifests: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub annotations: std::collections::BTreeMap<String, String>,
}

impl Index {
    /// The manifest that holds the WebAssembly: the first entry whose platform is a wasm one
    /// (`wasi/wasm`, `wasip1/wasm`, `wasip2/wasm`), else the index's only entry.
    pub fn wasm_manifest(&self) -> Option<&Descriptor> {
        let wasm = self
            .manifests
            .iter()
            .find(|d| d.platform.as_ref().is_some_and(Platform::is_wasm));
        match (wasm, self.manifests.as_slice()) {
            (Some(d), _) | (None, [d]) => Some(d),
            _ => None,
        }
    }

    /// The platforms of the entries, comma-separated (`unknown` for an entry without one).
    pub fn platforms(&self) -> String {
        self.manifests
            .iter()
            .map(|d| {
                d.platform
                    .as_ref()
                    .map_or("unknown".into(), |p| p.to_string())
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A content descriptor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the content.
    pub media_type: String,
    /// Digest of the content.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// Platform, in indexes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// A platform in an image index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// CPU architecture, `wasm` for wasm images.
    pub architecture: String,
    /// OS, `wasi`, `wasip1` or `wasip2` for wasm images.
    pub os: String,
    /// Variant, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// Whether this is a WebAssembly platform (`wasi/wasm`, `wasip1/wasm`, `wasip2/wasm`).
    pub fn is_wasm(&self) -> bool {
        matches!(self.architecture.as_str(), "wasm" | "wasm32")
            && matches!(self.os.as_str(), "wasi" | "wasip1" | "wasip2")
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// The CNCF TAG-Runtime wasm config (`application/vnd.wasm.config.v0+json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WasmConfig {
    /// RFC 3339 creation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The author.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Always `wasm`.
    pub architecture: String,
    /// `wasip1` or `wasip2`.
    pub os: String,
    /// The digests of the wasm layers.
    #[serde(default)]
    pub layer_digests: Vec<Digest>,
    /// A component's imports and exports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<ComponentInterface>,
}

/// The parts of an OCI/Docker image config that say how to run the image.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ImageConfig {
    #[serde(default, alias = "Config")]
    config: Option<RunConfig>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct RunConfig {
    #[serde(rename = "Entrypoint", default)]
    entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    cmd: Option<Vec<String>>,
    #[serde(rename = "Env", default)]
    env: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    working_dir: Option<String>,
}

/// Decides the format of a manifest whose config blob is `config`.
pub fn detect(manifest: &Manifest, config: &[u8]) -> Result<Detected, Error> {
    let cfg_type = manifest.config.media_type.as_str();
    let wasm_layer = manifest
        .layers
        .iter()
        .find(|l| media::is_wasm_layer(&l.media_type));
    let format = match (cfg_type, wasm_layer.map(|l| l.media_type.as_str())) {
        (media::WASM_CONFIG_V0, _) | (_, Some(media::WASM_LAYER)) => Some(Format::CncfArtifact),
        (media::WASM_TO_OCI_CONFIG, _)
        | (_, Some(media::WASM_TO_OCI_LAYER | media::MODULE_WASM_LAYER)) => Some(Format::WasmToOci),
        (_, Some(media::RUNWASI_COMPONENT_LAYER)) => Some(Format::RunwasiComponent),
        _ => None,
    };
    let image = parse_image_config(cfg_type, config)?;
    let run = image.config.unwrap_or_default();
    let argv: Vec<String> = run
        .entrypoint
        .unwrap_or_default()
        .into_iter()
        .chain(run.cmd.unwrap_or_default())
        .collect();
    let env = run.env.unwrap_or_default();
    let working_dir = run.working_dir.filter(|w| !w.is_empty());
    let wasm = match (format, wasm_layer) {
        (Some(_), Some(layer)) => WasmLocation::Layer(layer.digest.clone()),
        (Some(_), None) | (None, _) if !has_tar_layers(manifest) => {
            return Err(no_wasm(manifest));
        }
        _ => WasmLocation::File(entrypoint_wasm(&argv)?),
    };
    Ok(Detected {
        format: format.unwrap_or(Format::ContainerImage),
        wasm,
        argv,
        env,
        working_dir,
    })
}

fn parse_image_config(media_type: &str, config: &[u8]) -> Result<ImageConfig, Error> {
    if ![media::OCI_CONFIG, media::DOCKER_CONFIG].contains(&media_type) {
        return Ok(ImageConfig::default());
    }
    serde_json::from_slice(config).map_err(|e| Error::InvalidConfig {
        media_type: media_type.to_string(),
        reason: e.to_string(),
    })
}

fn has_tar_layers(manifest: &Manifest) -> bool {
    [media::OCI_CONFIG, media::DOCKER_CONFIG].contains(&manifest.config.media_type.as_str())
        && manifest
            .layers
            .iter()
            .any(|l| media::tar_layer(&l.media_type).is_some())
}

/// The `.wasm` file an image's ENTRYPOINT/CMD runs: the first element, which must name a file.
fn entrypoint_wasm(argv: &[String]) -> Result<String, Error> {
    argv.first()
        .filter(|p| p.ends_with(".wasm"))
        .cloned()
        .ok_or_else(|| Error::NoEntrypoint {
            argv: argv.to_vec(),
        })
}

fn no_wasm(manifest: &Manifest) -> Error {
    Error::NoWasm {
        config: manifest.config.media_type.clone(),
        layers: manifest
            .layers
            .iter()
            .map(|l| l.media_type.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// Builds the config blob for a push in `format`.
pub fn config_for_push(
    format: Format,
    kind: WasmKind,
    layer: &Digest,
    interface: Option<ComponentInterface>,
    created: String,
    author: Option<String>,
) -> (String, Vec<u8>) {
    match format {
        Format::WasmToOci => (media::WASM_TO_OCI_CONFIG.to_string(), b"{}".to_vec()),
        _ => {
            let config = WasmConfig {
                created: Some(created),
                author,
                architecture: "wasm".to_string(),
                os: kind.wasi_os().to_string(),
                layer_digests: vec![layer.clone()],
                component: interface,
            };
            let bytes = serde_json::to_vec(&config).unwrap_or_default();
            (media::WASM_CONFIG_V0.to_string(), bytes)
        }
    }
}

/// The layer media type for a push in `format`.
pub fn layer_media_type(format: Format) -> &'static str {
    match format {
        Format::WasmToOci => media::WASM_TO_OCI_LAYER,
        _ => media::WASM_LAYER,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(media_type: &str, seed: &[u8]) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest: Digest::of(seed),
            size: seed.len() as u64,
            platform: None,
            annotations: Default::default(),
        }
    }

    fn manifest(config: &str, layers: &[&str]) -> Manifest {
        Manifest {
            schema_version: 2,
            media_type: Some(media::OCI_MANIFEST.into()),
            artifact_type: None,
            config: desc(config, b"config"),
            layers: layers.iter().map(|l| desc(l, l.as_bytes())).collect(),
            annotations: Default::default(),
        }
    }

    const SCRATCH_CONFIG: &str = r#"{"architecture":"wasm","os":"wasi","config":{"Cmd":["/hello.wasm"],"Env":["A=1"],"WorkingDir":"/"}}"#;

    #[test]
    fn detects_each_format() {
        let cases: &[(&str, &[&str], &str, Format)] = &[
            (
                media::WASM_CONFIG_V0,
                &[media::WASM_LAYER],
                "{}",
                Format::CncfArtifact,
            ),
            (
                media::OCI_EMPTY,
                &[media::WASM_LAYER],
                "{}",
                Format::CncfArtifact,
            ),
            (
                media::WASM_TO_OCI_CONFIG,
                &[media::WASM_TO_OCI_LAYER],
                "{}",
                Format::WasmToOci,
            ),
            (
                media::OCI_CONFIG,
                &[media::MODULE_WASM_LAYER],
                "{}",
                Format::WasmToOci,
            ),
            (
                media::OCI_CONFIG,
                &[media::OCI_LAYER_GZIP, media::RUNWASI_COMPONENT_LAYER],
                r#"{"architecture":"wasm"}"#,
                Format::RunwasiComponent,
            ),
            (
                media::OCI_CONFIG,
                &[media::OCI_LAYER_TAR],
                SCRATCH_CONFIG,
                Format::ContainerImage,
            ),
            (
                media::DOCKER_CONFIG,
                &[media::DOCKER_LAYER_GZIP],
                SCRATCH_CONFIG,
                Format::ContainerImage,
            ),
        ];
        for (config, layers, config_json, want) in cases {
            let m = manifest(config, layers);
            let d = detect(&m, config_json.as_bytes()).unwrap();
            assert_eq!(d.format, *want, "{config} {layers:?}");
        }
    }

    #[test]
    fn container_image_wasm_is_the_entrypoint_file() {
        let m = manifest(media::OCI_CONFIG, &[media::OCI_LAYER_GZIP]);
        let d = detect(&m, SCRATCH_CONFIG.as_bytes()).unwrap();
        assert_eq!(d.wasm, WasmLocation::File("/hello.wasm".into()));
        assert_eq!(d.argv, vec!["/hello.wasm"]);
        assert_eq!(d.env, vec!["A=1"]);
        assert_eq!(d.working_dir.as_deref(), Some("/"));
        let d = detect(
            &m,
            br#"{"config":{"Entrypoint":["/app.wasm"],"Cmd":["--flag"]}}"#,
        )
        .unwrap();
        assert_eq!(d.argv, vec!["/app.wasm", "--flag"]);
    }

    #[test]
    fn wasm_artifacts_point_at_their_layer() {
        let m = manifest(media::WASM_CONFIG_V0, &[media::WASM_LAYER]);
        let d = detect(&m, b"{}").unwrap();
        assert_eq!(
            d.wasm,
            WasmLocation::Layer(Digest::of(media::WASM_LAYER.as_bytes()))
        );
    }

    #[test]
    fn images_without_wasm_are_refused_clearly() {
        let m = manifest(media::OCI_CONFIG, &[media::OCI_LAYER_GZIP]);
        let err = detect(&m, br#"{"config":{"Cmd":["/bin/sh"]}}"#).unwrap_err();
        assert!(matches!(err, Error::NoEntrypoint { .. }));
        assert!(err.to_string().contains("CMD"));
        let m = manifest(
            "application/vnd.example.config",
            &["application/octet-stream"],
        );
        assert!(matches!(detect(&m, b"{}"), Err(Error::NoWasm { .. })));
        let m = manifest(media::OCI_CONFIG, &[media::OCI_LAYER_GZIP]);
        assert!(matches!(
            detect(&m, b"not json"),
            Err(Error::InvalidConfig { .. })
        ));
    }

    #[test]
    fn push_configs() {
        let layer = Digest::of(b"wasm");
        let (mt, bytes) = config_for_push(
            Format::WasmToOci,
            WasmKind::Module,
            &layer,
            None,
            "t".into(),
            None,
        );
        assert_eq!(
            (mt.as_str(), bytes.as_slice()),
            (media::WASM_TO_OCI_CONFIG, &b"{}"[..])
        );
        let (mt, bytes) = config_for_push(
            Format::CncfArtifact,
            WasmKind::Component,
            &layer,
            Some(ComponentInterface {
                exports: vec!["wasi:cli/run@0.2.0".into()],
                imports: vec![],
            }),
            "2026-01-01T00:00:00Z".into(),
            Some("me".into()),
        );
        assert_eq!(mt, media::WASM_CONFIG_V0);
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["os"], "wasip2");
        assert_eq!(v["architecture"], "wasm");
        assert_eq!(v["layerDigests"][0], layer.to_string());
        assert_eq!(v["component"]["exports"][0], "wasi:cli/run@0.2.0");
    }

    #[test]
    fn format_names_agree_in_text_and_json() {
        for f in [
            Format::CncfArtifact,
            Format::WasmToOci,
            Format::RunwasiComponent,
            Format::ContainerImage,
        ] {
            assert_eq!(serde_json::to_value(f).unwrap(), f.to_string());
        }
    }

    #[test]
    fn wasm_platforms() {
        let p = |os: &str, arch: &str| Platform {
            architecture: arch.into(),
            os: os.into(),
            variant: None,
        };
        assert!(p("wasi", "wasm").is_wasm());
        assert!(p("wasip1", "wasm").is_wasm());
        assert!(!p("linux", "amd64").is_wasm());
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    fn descriptor_json() -> impl Strategy<Value = serde_json::Value> {
        let media = prop_oneof![
            Just(media::WASM_LAYER.to_string()),
            Just(media::OCI_LAYER_GZIP.to_string()),
            Just(media::OCI_CONFIG.to_string()),
            "[a-z./+-]{0,30}",
        ];
        (media, "[0-9a-f]{64}", any::<u64>()).prop_map(|(m, hex, size)| {
            serde_json::json!({"mediaType": m, "digest": format!("sha256:{hex}"), "size": size})
        })
    }

    fn manifest_json() -> impl Strategy<Value = serde_json::Value> {
        (
            descriptor_json(),
            prop::collection::vec(descriptor_json(), 0..4),
        )
            .prop_map(|(config, layers)| {
                serde_json::json!({"schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
                    "config": config, "layers": layers})
            })
    }

    fn index_json() -> impl Strategy<Value = serde_json::Value> {
        prop::collection::vec(descriptor_json(), 0..4).prop_map(|manifests| {
            serde_json::json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX,
                "manifests": manifests})
        })
    }

    /// Replaces the value reached by following `picks` (one child per step) with `with`.
    fn mutate(v: &mut serde_json::Value, picks: &[prop::sample::Index], with: serde_json::Value) {
        let Some((pick, rest)) = picks.split_first() else {
            *v = with;
            return;
        };
        let child = match v {
            serde_json::Value::Object(m) if !m.is_empty() => {
                let i = pick.index(m.len());
                m.values_mut().nth(i)
            }
            serde_json::Value::Array(a) if !a.is_empty() => {
                let i = pick.index(a.len());
                a.get_mut(i)
            }
            _ => None,
        };
        match child {
            Some(c) => mutate(c, rest, with),
            None => *v = with,
        }
    }

    fn odd_value() -> impl Strategy<Value = serde_json::Value> {
        prop_oneof![
            Just(serde_json::Value::Null),
            any::<i64>().prop_map(serde_json::Value::from),
            "\\PC{0,20}".prop_map(serde_json::Value::from),
            Just(serde_json::json!([])),
            Just(serde_json::json!({})),
            Just(serde_json::json!(-1)),
            Just(serde_json::json!(1e300)),
        ]
    }

    /// A manifest that parses round-trips through serialisation, and detection never panics.
    fn check_manifest(bytes: &[u8], config: &[u8]) -> Result<(), TestCaseError> {
        if let Ok(m) = serde_json::from_slice::<Manifest>(bytes) {
            let again: Manifest = serde_json::from_slice(&serde_json::to_vec(&m).unwrap())
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(
                serde_json::to_value(&again).ok(),
                serde_json::to_value(&m).ok()
            );
            if let Err(e) = detect(&m, config) {
                prop_assert!(!e.to_string().is_empty());
            }
        }
        if let Ok(i) = serde_json::from_slice::<Index>(bytes) {
            let again: Index = serde_json::from_slice(&serde_json::to_vec(&i).unwrap())
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(
                serde_json::to_value(&again).ok(),
                serde_json::to_value(&i).ok()
            );
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn manifest_and_index_properties_on_arbitrary_bytes(
            bytes in prop::collection::vec(any::<u8>(), 0..300),
            config in prop::collection::vec(any::<u8>(), 0..100),
        ) {
            check_manifest(&bytes, &config)?;
        }

        #[test]
        fn manifest_properties_on_mutated_manifests(
            mut v in prop_oneof![manifest_json(), index_json()],
            picks in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
            with in odd_value(),
            config in prop_oneof![
                Just(br#"{"config":{"Cmd":["/a.wasm"]}}"#.to_vec()),
                prop::collection::vec(any::<u8>(), 0..60),
            ],
        ) {
            let bytes = serde_json::to_vec(&v).unwrap();
            check_manifest(&bytes, &config)?;
            mutate(&mut v, &picks, with);
            check_manifest(&serde_json::to_vec(&v).unwrap(), &config)?;
        }
    }
}
