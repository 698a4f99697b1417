//! Workloads for the end-to-end tests: a private registry holding the fixtures, manifests
//! applied with kubectl, and waits on what kubectl shows.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use serde_json::Value;
use wasmlet_oci::auth::{Credential, Keyring};
use wasmlet_oci::client::{Client, ClientConfig, NoProgress};
use wasmlet_oci::format::Format;
use wasmlet_oci::push::{self, Artifact};
use wasmlet_testkit::{Registry, TokenServer, TokenShape};

use super::{Cluster, eventually};

/// The registry user of the tests.
pub const USER: (&str, &str) = ("bob", "s3cret");

/// Waits until the `web` Deployment has `replicas` available pods (all Ready), and returns
/// its pods.
pub async fn available(cluster: &Cluster, replicas: i64) -> Result<Vec<Value>> {
    let what = format!("{replicas} available replicas");
    let found = eventually(Duration::from_secs(120), &what, || {
        let deployment = cluster.kubectl_json(&["get", "deployment", "web"]).ok()?;
        let status = &deployment["status"];
        let done = status["availableReplicas"].as_i64() == Some(replicas)
            && status["replicas"].as_i64() == Some(replicas);
        done.then_some(())?;
        let list = cluster
            .kubectl_json(&["get", "pods", "-l", "app=web"])
            .ok()?;
        let items = list["items"].as_array()?.clone();
        (items.len() as i64 == replicas).then_some(items)
    })
    .await;
    found.map_err(|err| {
        let pods = cluster
            .kubectl(&["get", "pods", "-o", "yaml"])
            .unwrap_or_default();
        let events = cluster.kubectl(&["get", "events"]).unwrap_or_default();
        let nodes = cluster
            .kubectl(&["get", "nodes", "-o", "wide"])
            .unwrap_or_default();
        let scheduler = cluster.log_tail("kube-scheduler", 40);
        let manager = cluster.log_tail("kube-controller-manager", 40);
        err.context(format!(
            "{pods}\n{events}\n{nodes}\nkube-scheduler's log, last lines:\n{scheduler}\n\
             kube-controller-manager's log, last lines:\n{manager}"
        ))
    })
}

/// Whether `wasm` is a component (its layer field is 1; a core module's is 0).
pub fn wasmlet_runtime_is_component(wasm: &[u8]) -> bool {
    wasm.get(6) == Some(&1)
}

pub fn http_get(url: &str) -> Result<String> {
    let output = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", url])
        .output()?;
    if !output.status.success() {
        bail!("curl {url}: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .trim_end()
        .to_owned())
}

/// Pushes `wasm` with the test user: a module as a wasm-to-oci artifact (the seed's
/// format), a component in the CNCF format.
pub async fn push(host: &str, path: &str, wasm: &[u8]) -> Result<()> {
    let mut keyring = Keyring::default();
    let (username, password) = USER;
    keyring.insert(
        host,
        Credential::Basic {
            username: username.into(),
            password: password.into(),
        },
    );
    let client = Client::new(ClientConfig {
        keyring,
        ..ClientConfig::default()
    })?;
    let artifact = Artifact {
        wasm: Bytes::copy_from_slice(wasm),
        file_name: format!("{}.wasm", path.rsplit('/').next().unwrap_or("module")),
        format: match wasmlet_runtime_is_component(wasm) {
            true => Format::CncfArtifact,
            false => Format::WasmToOci,
        },
        annotations: BTreeMap::new(),
        author: None,
    };
    let reference = format!("{host}/{path}").parse()?;
    push::push(&client, &reference, &artifact, &NoProgress).await?;
    Ok(())
}

/// A registry behind a token server answering in `shape` for [`USER`], holding `images`
/// (path, wasm), and the pull secret `regcred` for it in the default namespace.
pub async fn private_registry(
    cluster: &Cluster,
    shape: TokenShape,
    images: &[(&str, &[u8])],
) -> Result<(TokenServer, Registry, String)> {
    let tokens = TokenServer::start(shape, Some(USER), 300);
    let registry = Registry::start(tokens.registry_auth());
    let host = registry.host();
    for (path, wasm) in images {
        push(&host, path, wasm).await?;
    }
    cluster.kubectl(&[
        "create",
        "secret",
        "docker-registry",
        "regcred",
        &format!("--docker-server={host}"),
        &format!("--docker-username={}", USER.0),
        &format!("--docker-password={}", USER.1),
    ])?;
    Ok((tokens, registry, host))
}

pub fn apply(cluster: &Cluster, dir: &std::path::Path, manifest: &str) -> Result<()> {
    let path = dir.join("manifest.yaml");
    std::fs::write(&path, manifest)?;
    cluster.kubectl(&["apply", "-f", path.to_str().context("path")?])?;
    Ok(())
}

pub async fn wait_for_phase(cluster: &Cluster, pod: &str, phase: &str) -> Result<Value> {
    let what = format!("pod {pod} {phase}");
    let found = eventually(Duration::from_secs(90), &what, || {
        let pod = cluster.kubectl_json(&["get", "pod", pod]).ok()?;
        (pod["status"]["phase"] == phase).then_some(pod)
    })
    .await;
    match found {
        Ok(pod) => Ok(pod),
        Err(err) => {
            let now = cluster
                .kubectl(&["get", "pod", pod, "-o", "yaml"])
                .unwrap_or_default();
            bail!("{err}\n{now}")
        }
    }
}
