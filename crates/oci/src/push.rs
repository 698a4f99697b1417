//! Packaging a .wasm as an OCI artifact and pushing it.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::client::{self, Client, Progress};
use crate::digest::Digest;
use crate::format::{self, Descriptor, Format, Manifest, media};
use crate::reference::Reference;
use crate::wasm::{self, ComponentInterface, WasmKind};

/// Why a push failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file is not a module or component.
    #[error("{file}: {source}")]
    NotWasm {
        /// The file name.
        file: String,
        /// Why.
        source: wasm::Error,
    },
    /// A format wasmlet reads but does not write.
    #[error("wasmlet pushes the cncf and wasm-to-oci formats, not {0}")]
    Unsupported(Format),
    /// The registry failed.
    #[error(transparent)]
    Registry(#[from] client::Error),
}

/// What to push.
#[derive(Clone, Debug)]
pub struct Artifact {
    /// The wasm bytes.
    pub wasm: Bytes,
    /// The file name, recorded as the layer's `org.opencontainers.image.title`.
    pub file_name: String,
    /// The packaging to write.
    pub format: Format,
    /// Manifest annotations (`org.opencontainers.image.created` is added when absent).
    pub annotations: BTreeMap<String, String>,
    /// The author, for the CNCF config.
    pub author: Option<String>,
}

/// The result of packaging: the blobs and manifest a push uploads.
#[derive(Clone, Debug)]
pub struct Packaged {
    /// Module or component.
    pub kind: WasmKind,
    /// The config blob and its descriptor.
    pub config: (Descriptor, Bytes),
    /// The wasm layer descriptor.
    pub layer: Descriptor,
    /// The manifest bytes.
    pub manifest: Bytes,
    /// The manifest digest.
    pub digest: Digest,
}

/// Builds the config and manifest for `artifact`.
pub fn package(artifact: &Artifact) -> Result<Packaged, Error> {
    if !matches!(artifact.format, Format::CncfArtifact | Format::WasmToOci) {
        return Err(Error::Unsupported(artifact.format));
    }
    let not_wasm = |source| Error::NotWasm {
        file: artifact.file_name.clone(),
        source,
    };
    let kind = WasmKind::detect(&artifact.wasm).map_err(not_wasm)?;
    let interface = match kind {
        WasmKind::Component => Some(ComponentInterface::read(&artifact.wasm).map_err(not_wasm)?),
        WasmKind::Module => None,
    };
    let created = crate::pull::now_rfc3339();
    let layer = Descriptor {
        media_type: format::layer_media_type(artifact.format).to_string(),
        digest: Digest::of(&artifact.wasm),
        size: artifact.wasm.len() as u64,
        platform: None,
        annotations: BTreeMap::from([(
            "org.opencontainers.image.title".to_string(),
            artifact.file_name.clone(),
        )]),
    };
    let (config_type, config_bytes) = format::config_for_push(
        artifact.format,
        kind,
        &layer.digest,
        interface,
        created.clone(),
        artifact.author.clone(),
    );
    let config = Descriptor {
        media_type: config_type,
        digest: Digest::of(&config_bytes),
        size: config_bytes.len() as u64,
        platform: None,
        annotations: BTreeMap::new(),
    };
    let mut annotations = artifact.annotations.clone();
    annotations
        .entry("org.opencontainers.image.created".to_string())
        .or_insert(created);
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(media::OCI_MANIFEST.to_string()),
        artifact_type: None,
        config: config.clone(),
        layers: vec![layer.clone()],
        annotations,
    };
    let manifest = Bytes::from(serde_json::to_vec(&manifest).unwrap_or_default());
    Ok(Packaged {
        kind,
        config: (config, config_bytes.into()),
        digest: Digest::of(&manifest),
        layer,
        manifest,
    })
}

/// Packages and pushes `artifact` to `reference`; returns what was pushed.
pub async fn push(
    client: &Client,
    reference: &Reference,
    artifact: &Artifact,
    progress: &dyn Progress,
) -> Result<Packaged, Error> {
    let packaged = package(artifact)?;
    client
        .push_blob(
            reference,
            artifact.wasm.clone(),
            &packaged.layer.digest,
            progress,
        )
        .await?;
    let (config, bytes) = &packaged.config;
    client
        .push_blob(reference, bytes.clone(), &config.digest, progress)
        .await?;
    client
        .push_manifest(reference, packaged.manifest.clone(), media::OCI_MANIFEST)
        .await?;
    Ok(packaged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact(wasm: Vec<u8>, format: Format) -> Artifact {
        Artifact {
            wasm: wasm.into(),
            file_name: "hello.wasm".into(),
            format,
            annotations: BTreeMap::from([("org.opencontainers.image.source".into(), "x".into())]),
            author: None,
        }
    }

    #[test]
    fn packages_both_formats() {
        let module = wat::parse_str("(module)").unwrap();
        let p = package(&artifact(module.clone(), Format::CncfArtifact)).unwrap();
        let m: serde_json::Value = serde_json::from_slice(&p.manifest).unwrap();
        assert_eq!(m["config"]["mediaType"], media::WASM_CONFIG_V0);
        assert_eq!(m["layers"][0]["mediaType"], media::WASM_LAYER);
        assert_eq!(
            m["layers"][0]["annotations"]["org.opencontainers.image.title"],
            "hello.wasm"
        );
        assert_eq!(m["annotations"]["org.opencontainers.image.source"], "x");
        assert!(m["annotations"]["org.opencontainers.image.created"].is_string());
        let p = package(&artifact(module, Format::WasmToOci)).unwrap();
        assert_eq!(&p.config.1[..], b"{}");
        assert_eq!(p.config.0.media_type, media::WASM_TO_OCI_CONFIG);
        assert_eq!(p.layer.media_type, media::WASM_TO_OCI_LAYER);
    }

    #[test]
    fn refuses_what_it_cannot_push() {
        let err = package(&artifact(b"#!/bin/sh".to_vec(), Format::CncfArtifact)).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("hello.wasm: not a WebAssembly binary"),
            "{err}"
        );
        let module = wat::parse_str("(module)").unwrap();
        assert!(matches!(
            package(&artifact(module, Format::ContainerImage)),
            Err(Error::Unsupported(_))
        ));
    }
}
