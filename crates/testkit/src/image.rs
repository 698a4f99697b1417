//! FROM-scratch style container images written as OCI image layout tars, for the tests that
//! import a native (runc) or wasm image into containerd with `ctr images import`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;
use sha2::{Digest, Sha256};

/// One file of an image layer: path, content, mode.
pub struct File<'a>(pub &'a str, pub &'a [u8], pub u32);

/// Writes a FROM-scratch style OCI image layout as a tar (what `docker save`/`ctr export`
/// give) into `dir`: one gzip-less tar layer holding `files`, an image config with
/// `entrypoint` and `cmd`, platform linux/amd64, named `name` (the `io.containerd.image.name`
/// annotation). Returns the tar's path.
pub fn image_tar(
    dir: &Path,
    name: &str,
    files: &[File],
    entrypoint: &[&str],
    cmd: &[&str],
) -> Result<PathBuf> {
    let layer = layer_tar(files)?;
    let diff_id = sha(&layer);
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": entrypoint, "Cmd": cmd, "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]}
    });
    let config = serde_json::to_vec(&config)?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
        "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", &layer)]
    });
    let manifest = serde_json::to_vec(&manifest)?;
    let mut desc = descriptor("application/vnd.oci.image.manifest.v1+json", &manifest);
    desc["platform"] = serde_json::json!({"architecture": "amd64", "os": "linux"});
    desc["annotations"] = serde_json::json!({"io.containerd.image.name": name, "org.opencontainers.image.ref.name": "latest"});
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [desc]});
    let path = dir.join(format!("{}.tar", name.replace(['/', ':'], "_")));
    let mut tar = tar::Builder::new(std::fs::File::create(&path)?);
    add(
        &mut tar,
        "oci-layout",
        br#"{"imageLayoutVersion":"1.0.0"}"#,
        0o644,
    )?;
    add(&mut tar, "index.json", &serde_json::to_vec(&index)?, 0o644)?;
    for blob in [&layer, &config, &manifest] {
        add(
            &mut tar,
            &format!("blobs/sha256/{}", sha(blob)),
            blob,
            0o644,
        )?;
    }
    tar.into_inner()?.flush()?;
    Ok(path)
}

fn layer_tar(files: &[File]) -> Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    for File(path, content, mode) in files {
        add(&mut tar, path.trim_start_matches('/'), content, *mode)?;
    }
    Ok(tar.into_inner()?)
}

fn add<W: Write>(tar: &mut tar::Builder<W>, path: &str, content: &[u8], mode: u32) -> Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_size(content.len() as u64);
    header.set_mode(mode);
    header.set_mtime(0);
    header.set_cksum();
    tar.append_data(&mut header, path, content)?;
    Ok(())
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn descriptor(media_type: &str, blob: &[u8]) -> serde_json::Value {
    serde_json::json!({"mediaType": media_type, "digest": format!("sha256:{}", sha(blob)), "size": blob.len()})
}
