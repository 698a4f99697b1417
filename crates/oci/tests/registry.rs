//! The OCI layer against a real registry (Debian's docker-registry, distribution 2.8):
//! open, htpasswd and token auth, every token answer shape, and injected faults.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use wasmlet_oci::auth::{Credential, Keyring};
use wasmlet_oci::client::{self, Client, ClientConfig, NoProgress};
use wasmlet_oci::format::{Format, media};
use wasmlet_oci::push::Artifact;
use wasmlet_oci::store::Store;
use wasmlet_oci::wasm::WasmKind;
use wasmlet_oci::{Digest, Reference, layout, pull, push};
use wasmlet_testkit::{Auth, Fault, FaultProxy, Registry, TokenServer, TokenShape};

fn client(credential: Option<(&str, &str, &str)>) -> Client {
    let mut keyring = Keyring::default();
    if let Some((host, u, p)) = credential {
        keyring.insert(
            host,
            Credential::Basic {
                username: u.into(),
                password: p.into(),
            },
        );
    }
    Client::new(ClientConfig {
        keyring,
        attempts: 4,
        backoff: Duration::from_millis(20),
        ..Default::default()
    })
    .unwrap()
}

fn artifact(wasm: &[u8], format: Format) -> Artifact {
    Artifact {
        wasm: Bytes::copy_from_slice(wasm),
        file_name: "hello.wasm".into(),
        format,
        annotations: BTreeMap::from([(
            "org.opencontainers.image.source".into(),
            "wasmlet-tests".into(),
        )]),
        author: Some("wasmlet tests".into()),
    }
}

/// A store in a temp dir that lives as long as the returned guard.
fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}

/// The error of a pull that must fail, into a throwaway store.
async fn failed_pull(c: &Client, r: &Reference) -> pull::Error {
    let (_dir, store) = temp_store();
    pull::pull(c, &store, r, &NoProgress).await.unwrap_err()
}

/// Pushes `wasm` to `r` anonymously.
async fn push_ok(r: &Reference, wasm: &[u8], format: Format) {
    push::push(&client(None), r, &artifact(wasm, format), &NoProgress)
        .await
        .unwrap();
}

fn reference(host: &str, path: &str) -> Reference {
    format!("{host}/{path}").parse().unwrap()
}

/// A valid module of about `size` bytes: hello plus a custom section of padding.
fn big_module(size: usize) -> Vec<u8> {
    let mut bytes = wasmlet_fixtures::hello().to_vec();
    let name = b"padding";
    let payload_len = name.len() + 1 + size;
    bytes.push(0);
    leb128(&mut bytes, payload_len as u64);
    bytes.push(name.len() as u8);
    bytes.extend_from_slice(name);
    bytes.extend((0..size).map(|i| (i * 7 % 251) as u8));
    bytes
}

fn leb128(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

async fn push_and_pull(
    c: &Client,
    r: &Reference,
    wasm: &[u8],
    format: Format,
) -> wasmlet_oci::store::Image {
    push::push(c, r, &artifact(wasm, format), &NoProgress)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let image = pull::pull(c, &store, r, &NoProgress).await.unwrap();
    assert_eq!(
        store.read_blob(&image.wasm).unwrap(),
        wasm,
        "pulled wasm differs from pushed"
    );
    image
}

#[tokio::test]
async fn open_registry_round_trips_both_push_formats() {
    let registry = Registry::start(Auth::Open);
    let c = client(None);
    let hello = wasmlet_fixtures::hello();
    let image = push_and_pull(
        &c,
        &reference(&registry.host(), "demo/hello:v1"),
        hello,
        Format::CncfArtifact,
    )
    .await;
    assert_eq!(
        (image.format, image.kind),
        (Format::CncfArtifact, WasmKind::Module)
    );
    let image = push_and_pull(
        &c,
        &reference(&registry.host(), "bifrost/hello-wasm:v1"),
        hello,
        Format::WasmToOci,
    )
    .await;
    assert_eq!(image.format, Format::WasmToOci);
}

#[tokio::test]
async fn components_carry_their_interface() {
    let registry = Registry::start(Auth::Open);
    let c = client(None);
    let component = wasmlet_fixtures::hello_component();
    let r = reference(&registry.host(), "demo/hello-component:v1");
    let image = push_and_pull(&c, &r, component, Format::CncfArtifact).await;
    assert_eq!(image.kind, WasmKind::Component);
    let top = c.fetch_manifest(&r).await.unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&top.bytes).unwrap();
    let config_digest: Digest = manifest["config"]["digest"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let desc = serde_json::from_value(manifest["config"].clone()).unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&c.fetch_small_blob(&r, &desc).await.unwrap()).unwrap();
    assert_eq!(config["os"], "wasip2", "config {config_digest}: {config}");
    let exports = config["component"]["exports"].as_array().unwrap();
    assert!(
        exports
            .iter()
            .any(|e| e.as_str().unwrap().starts_with("wasi:cli/run")),
        "{config}"
    );
}

#[tokio::test]
async fn htpasswd_registry_needs_the_right_password() {
    let registry = Registry::start(Auth::Htpasswd {
        user: "alice".into(),
        password: "s3cret".into(),
    });
    let host = registry.host();
    let r = reference(&host, "private/hello:v1");
    let good = client(Some((&host, "alice", "s3cret")));
    push_and_pull(&good, &r, wasmlet_fixtures::hello(), Format::CncfArtifact).await;
    for bad in [client(None), client(Some((&host, "alice", "wrong")))] {
        let err = failed_pull(&bad, &r).await;
        let text = err.to_string();
        assert!(
            matches!(
                err,
                pull::Error::Registry(client::Error::Unauthorized { .. })
            ),
            "{text}"
        );
        assert!(
            text.contains(&host)
                && text.contains("private/hello:v1")
                && text.contains("--username"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn token_auth_accepts_every_answer_shape_including_harbors() {
    for shape in [
        TokenShape::Harbor,
        TokenShape::Token,
        TokenShape::AccessToken,
        TokenShape::Both,
    ] {
        let tokens = TokenServer::start(shape, Some(("bob", "pw")), 300);
        let registry = Registry::start(tokens.registry_auth());
        let host = registry.host();
        let c = client(Some((&host, "bob", "pw")));
        let r = reference(&host, "bifrost/hello-wasm:v1");
        let image = push_and_pull(&c, &r, wasmlet_fixtures::hello(), Format::WasmToOci).await;
        assert_eq!(image.format, Format::WasmToOci, "{shape:?}");
        assert!(
            tokens.issued() >= 2,
            "{shape:?}: push and pull scopes each need a token"
        );
        let err = failed_pull(&client(None), &r).await;
        assert!(
            matches!(
                err,
                pull::Error::Registry(client::Error::Unauthorized { .. })
            ),
            "{shape:?}: {err}"
        );
    }
}

#[tokio::test]
async fn expired_tokens_are_refreshed() {
    let tokens = TokenServer::start(TokenShape::Harbor, None, 1);
    let registry = Registry::start(tokens.registry_auth());
    let c = client(None);
    let r = reference(&registry.host(), "demo/hello:v1");
    push_and_pull(&c, &r, wasmlet_fixtures::hello(), Format::CncfArtifact).await;
    let before = tokens.issued();
    c.fetch_manifest(&r).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.fetch_manifest(&r).await.unwrap();
    assert!(
        tokens.issued() > before,
        "a token past expires_in must be fetched again"
    );
}

#[tokio::test]
async fn a_connection_dropped_mid_blob_is_resumed() {
    let registry = Registry::start(Auth::Open);
    let wasm = big_module(3 << 20);
    let r = reference(&registry.host(), "demo/big:v1");
    push_ok(&r, &wasm, Format::CncfArtifact).await;
    let proxy = FaultProxy::start(&registry.url(), Fault::DropMidBlob(100_000));
    let (_dir, store) = temp_store();
    let image = pull::pull(
        &client(None),
        &store,
        &reference(&proxy.host(), "demo/big:v1"),
        &NoProgress,
    )
    .await
    .unwrap();
    assert_eq!(store.read_blob(&image.wasm).unwrap(), wasm);
    let blob_gets = proxy
        .requests()
        .iter()
        .filter(|l| l.starts_with("GET") && l.contains(&image.wasm.to_string()))
        .count();
    assert!(
        blob_gets >= 2,
        "expected a second request after the drop: {:?}",
        proxy.requests()
    );
    assert!(
        proxy.requests().iter().any(|l| l.ends_with(" 206")),
        "the second request resumes with Range: {:?}",
        proxy.requests()
    );
}

#[tokio::test]
async fn server_errors_are_retried() {
    let registry = Registry::start(Auth::Open);
    let r = reference(&registry.host(), "demo/hello:v1");
    push_ok(&r, wasmlet_fixtures::hello(), Format::CncfArtifact).await;
    let proxy = FaultProxy::start(&registry.url(), Fault::FailFirst(2));
    let (_dir, store) = temp_store();
    pull::pull(
        &client(None),
        &store,
        &reference(&proxy.host(), "demo/hello:v1"),
        &NoProgress,
    )
    .await
    .unwrap();
    assert!(proxy.requests()[..2].iter().all(|l| l.ends_with(" 500")));
}

#[tokio::test]
async fn corrupt_blobs_and_garbage_manifests_leave_the_store_clean() {
    let registry = Registry::start(Auth::Open);
    let r = reference(&registry.host(), "demo/hello:v1");
    push_ok(&r, wasmlet_fixtures::hello(), Format::CncfArtifact).await;
    let wasm_digest = Digest::of(wasmlet_fixtures::hello());
    for fault in [Fault::CorruptBlobs, Fault::GarbageManifests] {
        let proxy = FaultProxy::start(&registry.url(), fault.clone());
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let err = pull::pull(
            &client(None),
            &store,
            &reference(&proxy.host(), "demo/hello:v1"),
            &NoProgress,
        )
        .await
        .unwrap_err();
        let text = err.to_string();
        match fault {
            Fault::CorruptBlobs => assert!(
                text.contains("expected sha256:") && text.contains("nothing was stored"),
                "{text}"
            ),
            _ => assert!(text.contains("invalid manifest"), "{text}"),
        }
        assert!(
            !store.has_blob(&wasm_digest),
            "{fault:?}: a bad blob entered the store"
        );
        assert!(store.images().unwrap().is_empty(), "{fault:?}");
        for left in ["tmp", "blobs/sha256", "leases"] {
            let files: Vec<_> = std::fs::read_dir(dir.path().join(left)).unwrap().collect();
            assert!(files.is_empty(), "{fault:?}: {left} holds {files:?}");
        }
    }
}

#[tokio::test]
async fn a_prune_during_a_pull_leaves_the_pull_whole() {
    let registry = Registry::start(Auth::Open);
    let wasm = big_module(32 << 10);
    let r = reference(&registry.host(), "demo/slow:v1");
    push_ok(&r, &wasm, Format::CncfArtifact).await;
    // 4 KiB every 50 ms: the blob takes about 0.4 s, long enough to prune in the middle.
    let proxy = FaultProxy::start(&registry.url(), trickle("/blobs/", 4096, 50));
    let slow = reference(&proxy.host(), "demo/slow:v1");
    let (_dir, store) = temp_store();
    let pulling = {
        let store = store.clone();
        tokio::spawn(async move { pull::pull(&client(None), &store, &slow, &NoProgress).await })
    };
    let mut pruned_mid_pull = 0;
    while !pulling.is_finished() {
        let busy = std::fs::read_dir(store.root().join("tmp")).unwrap().count() > 0;
        store.prune().unwrap();
        pruned_mid_pull += usize::from(busy);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let image = pulling.await.unwrap().unwrap();
    assert!(
        pruned_mid_pull > 0,
        "no prune ran while the blob was being written"
    );
    assert_eq!(store.read_blob(&image.wasm).unwrap(), wasm);
    assert_eq!(
        store.prune().unwrap(),
        (0, 0),
        "the pulled image keeps all it has"
    );
}

#[tokio::test]
async fn missing_images_and_oversized_manifests_are_named() {
    let registry = Registry::start(Auth::Open);
    let r = reference(&registry.host(), "demo/absent:v9");
    let err = failed_pull(&client(None), &r).await.to_string();
    assert!(
        err.contains("not found")
            && err.contains("demo/absent:v9")
            && err.contains(&registry.host()),
        "{err}"
    );
    let r = reference(&registry.host(), "demo/hello:v1");
    push_ok(&r, wasmlet_fixtures::hello(), Format::CncfArtifact).await;
    let tiny = Client::new(ClientConfig {
        max_manifest_bytes: 64,
        ..Default::default()
    })
    .unwrap();
    let err = failed_pull(&tiny, &r).await.to_string();
    assert!(err.contains("larger than the 64-byte limit"), "{err}");
}

#[tokio::test]
async fn concurrent_pulls_of_one_image_agree() {
    let registry = Registry::start(Auth::Open);
    let wasm = big_module(1 << 20);
    let r = reference(&registry.host(), "demo/big:v1");
    push_ok(&r, &wasm, Format::CncfArtifact).await;
    let (_dir, store) = temp_store();
    let pulls = (0..4).map(|_| {
        let (store, r) = (store.clone(), r.clone());
        tokio::spawn(async move { pull::pull(&client(None), &store, &r, &NoProgress).await })
    });
    for result in futures::future::join_all(pulls).await {
        result.unwrap().unwrap();
    }
    let image = store.image(&r.to_string()).unwrap();
    assert_eq!(store.read_blob(&image.wasm).unwrap(), wasm);
    assert_eq!(store.images().unwrap().len(), 1);
}

/// Pushes a FROM-scratch style image (a gzip tar layer with /hello.wasm, CMD naming it)
/// behind an index with a linux/amd64 decoy and a wasip1/wasm entry.
async fn push_scratch_image(c: &Client, r: &Reference) -> Digest {
    push_scratch_image_of(c, r, wasmlet_fixtures::hello()).await
}

/// [`push_scratch_image`] with `entrypoint` as the content of /hello.wasm.
async fn push_scratch_image_of(c: &Client, r: &Reference, entrypoint: &[u8]) -> Digest {
    let mut tar = tar::Builder::new(Vec::new());
    let hello = wasmlet_fixtures::hello();
    let mut header = tar::Header::new_gnu();
    header.set_size(entrypoint.len() as u64);
    header.set_mode(0o755);
    tar.append_data(&mut header, "hello.wasm", entrypoint)
        .unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar.into_inner().unwrap()).unwrap();
    let layer = Bytes::from(gz.finish().unwrap());
    let config = Bytes::from(
        serde_json::json!({"architecture": "wasm", "os": "wasip1", "config": {"Cmd": ["/hello.wasm"]},
            "rootfs": {"type": "layers", "diff_ids": []}})
        .to_string(),
    );
    let (ld, cd) = (Digest::of(&layer), Digest::of(&config));
    c.push_blob(r, layer.clone(), &ld, &NoProgress)
        .await
        .unwrap();
    c.push_blob(r, config.clone(), &cd, &NoProgress)
        .await
        .unwrap();
    let manifest = Bytes::from(
        serde_json::json!({"schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
            "config": {"mediaType": media::OCI_CONFIG, "digest": cd, "size": config.len()},
            "layers": [{"mediaType": media::OCI_LAYER_GZIP, "digest": ld, "size": layer.len()}]})
        .to_string(),
    );
    let by_digest = r.with_digest(Digest::of(&manifest));
    let untagged: Reference = format!(
        "{}/{}@{}",
        r.registry(),
        r.repository(),
        Digest::of(&manifest)
    )
    .parse()
    .unwrap();
    let md = c
        .push_manifest(&untagged, manifest.clone(), media::OCI_MANIFEST)
        .await
        .unwrap();
    let decoy = push::package(&artifact(hello, Format::WasmToOci)).unwrap();
    let decoy_ref: Reference = format!("{}/{}:decoy", r.registry(), r.repository())
        .parse()
        .unwrap();
    push::push(
        c,
        &decoy_ref,
        &artifact(hello, Format::WasmToOci),
        &NoProgress,
    )
    .await
    .unwrap();
    let index = Bytes::from(
        serde_json::json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": [
            {"mediaType": media::OCI_MANIFEST, "digest": decoy.digest, "size": decoy.manifest.len(),
             "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": media::OCI_MANIFEST, "digest": md, "size": manifest.len(),
             "platform": {"os": "wasip1", "architecture": "wasm"}}]})
        .to_string(),
    );
    c.push_manifest(r, index, media::OCI_INDEX).await.unwrap();
    let _ = by_digest;
    md
}

#[tokio::test]
async fn container_images_behind_an_index_yield_their_entrypoint_module() {
    let registry = Registry::start(Auth::Open);
    let c = client(None);
    let r = reference(&registry.host(), "demo/scratch:v1");
    let manifest = push_scratch_image(&c, &r).await;
    let (_dir, store) = temp_store();
    let image = pull::pull(&c, &store, &r, &NoProgress).await.unwrap();
    assert_eq!(image.format, Format::ContainerImage);
    assert_eq!(
        image.manifest, manifest,
        "the wasip1/wasm entry, not the decoy"
    );
    assert_eq!(image.media_type, media::OCI_INDEX);
    assert_eq!(image.argv, vec!["/hello.wasm"]);
    assert_eq!(
        store.read_blob(&image.wasm).unwrap(),
        wasmlet_fixtures::hello()
    );
}

#[tokio::test]
async fn a_gzip_bomb_is_refused_and_leaves_nothing() {
    let registry = Registry::start(Auth::Open);
    let c = client(None);
    let r = reference(&registry.host(), "demo/bomb:v1");
    let zeros = vec![0u8; 64 << 20];
    push_scratch_image_of(&c, &r, &zeros).await;
    for (max_file_bytes, expected) in [
        (
            16 << 20,
            "is 67108864 bytes, over the limit of 16777216 bytes",
        ),
        (128 << 20, "entrypoint /hello.wasm is not WebAssembly"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let limits = wasmlet_oci::layers::LayerLimits {
            max_file_bytes,
            ..Default::default()
        };
        let store = Store::open(dir.path()).unwrap().with_limits(limits);
        let err = pull::pull(&c, &store, &r, &NoProgress).await.unwrap_err();
        assert!(err.to_string().contains(expected), "{err}");
        for left in ["tmp", "blobs/sha256", "leases"] {
            let files: Vec<_> = std::fs::read_dir(dir.path().join(left)).unwrap().collect();
            assert!(files.is_empty(), "{left} holds {files:?} after: {err}");
        }
    }
}

#[tokio::test]
async fn layouts_export_and_import_without_a_registry() {
    let registry = Registry::start(Auth::Open);
    let c = client(None);
    let r = reference(&registry.host(), "demo/scratch:v1");
    push_scratch_image(&c, &r).await;
    let r2 = reference(&registry.host(), "demo/hello:v2");
    push::push(
        &c,
        &r2,
        &artifact(wasmlet_fixtures::hello_component(), Format::CncfArtifact),
        &NoProgress,
    )
    .await
    .unwrap();
    let (_dir, store) = temp_store();
    let images = vec![
        pull::pull(&c, &store, &r, &NoProgress).await.unwrap(),
        pull::pull(&c, &store, &r2, &NoProgress).await.unwrap(),
    ];
    let out = tempfile::tempdir().unwrap();
    for dest in [out.path().join("dir"), out.path().join("images.tar")] {
        layout::export(&store, &images, &dest).unwrap();
        let (_fresh_dir, fresh) = temp_store();
        let imported = layout::import(&fresh, &dest, None, &NoProgress)
            .await
            .unwrap();
        assert_eq!(imported.len(), 2, "{}", dest.display());
        for (a, b) in images.iter().zip(&imported) {
            assert_eq!(
                (&a.reference, &a.digest, &a.wasm, a.format),
                (&b.reference, &b.digest, &b.wasm, b.format)
            );
        }
    }
}

#[tokio::test]
async fn https_registries_need_their_ca() {
    let registry = Registry::start_tls(Auth::Open);
    let r = reference(&registry.host(), "tls/hello:v1");
    let trusting = Client::new(ClientConfig {
        ca_files: vec![registry.ca_file()],
        ..Default::default()
    })
    .unwrap();
    let image = push_and_pull(
        &trusting,
        &r,
        wasmlet_fixtures::hello(),
        Format::CncfArtifact,
    )
    .await;
    assert_eq!(image.format, Format::CncfArtifact);
    let err = failed_pull(&client(None), &r).await.to_string();
    assert!(
        err.contains("does not trust")
            && err.contains("--ca-file")
            && err.contains(&registry.host()),
        "{err}"
    );
}

#[tokio::test]
async fn credentials_are_withheld_from_a_plain_http_realm_elsewhere() {
    let tokens = TokenServer::start(TokenShape::Token, Some(("bob", "pw")), 300);
    let realm = "http://token.wasmlet.invalid:5001/token";
    let registry = Registry::start(tokens.registry_auth_at(realm));
    let host = registry.host();
    let r = reference(&host, "demo/hello:v1");
    let err = failed_pull(&client(Some((&host, "bob", "pw"))), &r).await;
    let text = err.to_string();
    assert!(
        matches!(
            err,
            pull::Error::Registry(client::Error::Auth(
                wasmlet_oci::auth::Error::CleartextRealm { .. }
            ))
        ),
        "{text}"
    );
    assert!(
        text.contains(realm)
            && text.contains("withheld")
            && text.contains("--insecure-registry token.wasmlet.invalid:5001"),
        "{text}"
    );
    let mut listed = ClientConfig {
        insecure: vec!["token.wasmlet.invalid:5001".into()],
        ..Default::default()
    };
    listed.keyring.insert(
        &host,
        Credential::Basic {
            username: "bob".into(),
            password: "pw".into(),
        },
    );
    let err = failed_pull(&Client::new(listed).unwrap(), &r)
        .await
        .to_string();
    assert!(
        err.contains("cannot reach") && err.contains("token.wasmlet.invalid"),
        "an allowed realm is asked (and is unreachable here): {err}"
    );
}

#[tokio::test]
async fn a_realm_that_is_not_an_absolute_url_is_refused() {
    let tokens = TokenServer::start(TokenShape::Token, None, 300);
    let registry = Registry::start(tokens.registry_auth_at("/token"));
    let r = reference(&registry.host(), "demo/hello:v1");
    let err = failed_pull(&client(None), &r).await.to_string();
    assert!(
        err.contains("token realm `/token`") && err.contains("not an absolute http"),
        "{err}"
    );
}

/// A client with `config`'s limits and the tests' quick retries.
fn limited_client(config: ClientConfig) -> Client {
    Client::new(ClientConfig {
        attempts: 2,
        backoff: Duration::from_millis(20),
        ..config
    })
    .unwrap()
}

fn trickle(path: &str, bytes: usize, every_ms: u64) -> Fault {
    Fault::Trickle {
        path: path.into(),
        bytes,
        every: Duration::from_millis(every_ms),
    }
}

#[tokio::test]
async fn a_manifest_trickled_past_the_deadline_is_refused() {
    let registry = Registry::start(Auth::Open);
    let r = reference(&registry.host(), "demo/hello:v1");
    push_ok(&r, wasmlet_fixtures::hello(), Format::CncfArtifact).await;
    let manifest_len = client(None).fetch_manifest(&r).await.unwrap().bytes.len();
    assert!(manifest_len > 160, "16 bytes a 50 ms take over 0.5 s");
    let proxy = FaultProxy::start(&registry.url(), trickle("/manifests/", 16, 50));
    let c = limited_client(ClientConfig {
        document_deadline: Duration::from_millis(500),
        ..Default::default()
    });
    let err = failed_pull(&c, &reference(&proxy.host(), "demo/hello:v1")).await;
    let text = err.to_string();
    assert!(
        matches!(&err, pull::Error::Registry(client::Error::Deadline { what, .. }) if what == "manifest"),
        "{text}"
    );
    assert!(
        text.contains(&proxy.host()) && text.contains("0.5s") && text.contains("document_deadline"),
        "{text}"
    );
}

#[tokio::test]
async fn a_token_answer_trickled_past_the_deadline_is_refused() {
    let tokens = TokenServer::start(TokenShape::Token, None, 300);
    let proxy = FaultProxy::start(&tokens.url(), trickle("/token", 16, 50));
    let realm = format!("http://{}/token", proxy.host());
    let registry = Registry::start(tokens.registry_auth_at(&realm));
    let c = limited_client(ClientConfig {
        document_deadline: Duration::from_millis(500),
        ..Default::default()
    });
    let err = failed_pull(&c, &reference(&registry.host(), "demo/hello:v1")).await;
    let text = err.to_string();
    assert!(
        matches!(&err, pull::Error::Registry(client::Error::Deadline { what, .. }) if what.contains("token answer")),
        "{text}"
    );
    assert!(text.contains(&realm), "{text}");
}

#[tokio::test]
async fn a_blob_trickled_under_the_minimum_progress_is_stopped() {
    let registry = Registry::start(Auth::Open);
    let wasm = big_module(32 << 10);
    let r = reference(&registry.host(), "demo/slow:v1");
    push_ok(&r, &wasm, Format::CncfArtifact).await;
    // 1 KiB every 100 ms: at most 5 KiB a 500 ms window, the whole blob in over 3 s.
    let proxy = FaultProxy::start(&registry.url(), trickle("/blobs/", 1024, 100));
    let slow = reference(&proxy.host(), "demo/slow:v1");
    let strict = limited_client(ClientConfig {
        blob_min_bytes: 16 << 10,
        blob_window: Duration::from_millis(500),
        ..Default::default()
    });
    let err = failed_pull(&strict, &slow).await;
    let text = err.to_string();
    let wasm_digest = Digest::of(&wasm);
    assert!(
        matches!(&err, pull::Error::Registry(client::Error::Stalled { digest, .. }) if *digest == wasm_digest),
        "{text}"
    );
    assert!(
        text.contains("too slowly")
            && text.contains("16384 bytes per 0.5s")
            && text.contains("blob_min_bytes"),
        "{text}"
    );
    // The same trickle passes a rule it meets twentyfold (1 KiB in every 2 s).
    let lenient = limited_client(ClientConfig {
        blob_min_bytes: 1024,
        blob_window: Duration::from_secs(2),
        ..Default::default()
    });
    let (_dir, store) = temp_store();
    let image = pull::pull(&lenient, &store, &slow, &NoProgress)
        .await
        .unwrap();
    assert_eq!(store.read_blob(&image.wasm).unwrap(), wasm);
}

/// Pushes a module of about 3 MiB to `r`; returns it.
async fn push_big(r: &Reference) -> Vec<u8> {
    let wasm = big_module(3 << 20);
    push_ok(r, &wasm, Format::CncfArtifact).await;
    wasm
}

fn wasm_descriptor(wasm: &[u8], size: u64) -> wasmlet_oci::format::Descriptor {
    wasmlet_oci::format::Descriptor {
        media_type: media::WASM_LAYER.into(),
        digest: Digest::of(wasm),
        size,
        platform: None,
        annotations: Default::default(),
    }
}

#[tokio::test]
async fn a_blob_declared_over_the_limit_is_refused_before_downloading() {
    let registry = Registry::start(Auth::Open);
    let r = reference(&registry.host(), "demo/big:v1");
    let wasm = push_big(&r).await;
    let proxy = FaultProxy::start(&registry.url(), Fault::None);
    let via = reference(&proxy.host(), "demo/big:v1");
    let (_dir, store) = temp_store();
    let huge = wasm_descriptor(&wasm, 100 << 30);
    let err = client(None)
        .fetch_blob(&via, &huge, &store, &NoProgress)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, client::Error::BlobTooLarge { .. }), "{text}");
    assert!(
        text.contains("107374182400 bytes")
            && text.contains("4294967296-byte limit")
            && text.contains("max_blob_bytes"),
        "{text}"
    );
    assert!(proxy.requests().is_empty(), "{:?}", proxy.requests());
    let small = limited_client(ClientConfig {
        max_blob_bytes: 1 << 20,
        ..Default::default()
    });
    let err = failed_pull(&small, &via).await.to_string();
    assert!(err.contains("1048576-byte limit"), "{err}");
}

#[tokio::test]
async fn a_blob_longer_than_declared_is_cut_off() {
    let registry = Registry::start(Auth::Open);
    let r = reference(&registry.host(), "demo/big:v1");
    let wasm = push_big(&r).await;
    let (_dir, store) = temp_store();
    let short = wasm_descriptor(&wasm, 1000);
    let err = client(None)
        .fetch_blob(&r, &short, &store, &NoProgress)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("expected 1000 bytes, got more than 1000 bytes"),
        "{err}"
    );
}

#[tokio::test]
async fn a_connection_that_keeps_breaking_is_reported_as_such() {
    let registry = Registry::start(Auth::Open);
    let r = reference(&registry.host(), "demo/big:v1");
    let wasm = push_big(&r).await;
    let proxy = FaultProxy::start(&registry.url(), Fault::DropEveryBlob(100_000));
    let err = failed_pull(&client(None), &reference(&proxy.host(), "demo/big:v1")).await;
    let text = err.to_string();
    assert!(
        matches!(
            err,
            pull::Error::Registry(client::Error::Interrupted {
                breaks: 4,
                received: 400_000,
                ..
            })
        ),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "broke 4 times, the last after 400000 of {} bytes",
            wasm.len()
        )) && !text.contains("is it running"),
        "{text}"
    );
    let resumed = proxy
        .requests()
        .iter()
        .filter(|l| l.ends_with(" 206"))
        .count();
    assert_eq!(resumed, 3, "each break resumes: {:?}", proxy.requests());
}

#[tokio::test]
async fn a_resume_answered_with_the_wrong_range_restarts_once() {
    let registry = Registry::start(Auth::Open);
    let r = reference(&registry.host(), "demo/big:v1");
    let wasm = push_big(&r).await;
    let proxy = FaultProxy::start(&registry.url(), Fault::DropThenWrongRange(100_000));
    let (_dir, store) = temp_store();
    let via = reference(&proxy.host(), "demo/big:v1");
    let image = pull::pull(&client(None), &store, &via, &NoProgress)
        .await
        .unwrap();
    assert_eq!(store.read_blob(&image.wasm).unwrap(), wasm);
    let blob_gets: Vec<String> = proxy
        .requests()
        .into_iter()
        .filter(|l| l.contains(&image.wasm.to_string()))
        .collect();
    assert_eq!(
        blob_gets.len(),
        3,
        "drop, wrong 206, fresh 200: {blob_gets:?}"
    );
    assert!(
        blob_gets[1].ends_with(" 206") && blob_gets[2].ends_with(" 200"),
        "{blob_gets:?}"
    );
}

#[tokio::test]
async fn a_registry_that_never_resumes_right_is_restarted_once_then_named() {
    let registry = Registry::start(Auth::Open);
    let r = reference(&registry.host(), "demo/big:v1");
    push_big(&r).await;
    let proxy = FaultProxy::start(&registry.url(), Fault::DropEveryBlobWrongRange(100_000));
    let err = failed_pull(&client(None), &reference(&proxy.host(), "demo/big:v1")).await;
    let text = err.to_string();
    assert!(
        text.contains("answered 206 Partial Content with Content-Range bytes 0-")
            && text.contains("twice")
            && text.contains("cannot resume downloads"),
        "{text}"
    );
    let wrong = proxy
        .requests()
        .iter()
        .filter(|l| l.ends_with(" 206"))
        .count();
    assert_eq!(
        wrong,
        2,
        "one restart, then the error: {:?}",
        proxy.requests()
    );
}

/// A peer on loopback that accepts connections and never answers; returns its host.
fn silent_peer() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        // Holds at most a few connections; the thread ends with the test process.
        for conn in listener.incoming().take(64).flatten() {
            held.push(conn);
        }
    });
    host
}

#[tokio::test]
async fn a_registry_that_never_answers_fails_at_the_deadline() {
    let host = silent_peer();
    let c = limited_client(ClientConfig {
        document_deadline: Duration::from_millis(500),
        ..Default::default()
    });
    let r = reference(&host, "demo/hello:v1");
    let err = failed_pull(&c, &r).await;
    assert!(
        matches!(&err, pull::Error::Registry(client::Error::Deadline { what, .. }) if what == "manifest"),
        "{err}"
    );
    let err = push::push(
        &c,
        &r,
        &artifact(wasmlet_fixtures::hello(), Format::CncfArtifact),
        &NoProgress,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("whether it has blob") && err.contains("0.5s"),
        "{err}"
    );
}
