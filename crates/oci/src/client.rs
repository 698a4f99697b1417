//! A registry client for the OCI distribution API, with the registry token protocol.
//!
//! Written on `reqwest` rather than taken from an OCI client crate because wasmlet needs
//! control over exactly the places where registries differ: token answers in every shape
//! (`token`, `access_token`, both), tokens refreshed on expiry, retries with back-off on
//! 5xx and broken connections, downloads resumed with `Range` and streamed to the store
//! while hashed, and plain HTTP only for loopback or listed registries.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_RANGE, CONTENT_TYPE, HeaderMap, LOCATION, RANGE,
    WWW_AUTHENTICATE,
};
use reqwest::{Method, StatusCode};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use crate::auth::{self, Challenge, Keyring, Token};
use crate::digest::Digest;
use crate::format::{Descriptor, media};
use crate::reference::Reference;
use crate::store::{self, Store};

/// Registry failures, each naming the registry and what was asked of it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 401 after authenticating (or no credentials where they are required).
    #[error(
        "registry {registry} refused access to {reference} (401 Unauthorized{detail}); give credentials with --username/--password-stdin, ~/.docker/config.json or an imagePullSecret"
    )]
    Unauthorized {
        /// The registry.
        registry: String,
        /// The reference.
        reference: String,
        /// The registry's error text, if any.
        detail: String,
    },
    /// 403: authenticated but not allowed.
    #[error(
        "registry {registry} denied access to {reference} (403 Forbidden{detail}); the credentials lack permission for this repository"
    )]
    Denied {
        /// The registry.
        registry: String,
        /// The reference.
        reference: String,
        /// The registry's error text, if any.
        detail: String,
    },
    /// 404.
    #[error(
        "{what} of {reference} not found in registry {registry} (404); check the repository, tag or digest"
    )]
    NotFound {
        /// The registry.
        registry: String,
        /// The reference.
        reference: String,
        /// What was missing (manifest, blob sha256:...).
        what: String,
    },
    /// Any other unexpected status, after retries.
    #[error("registry {registry} answered {status} to {url}{detail}")]
    Status {
        /// The registry.
        registry: String,
        /// The URL.
        url: String,
        /// The status.
        status: StatusCode,
        /// The registry's error text, if any.
        detail: String,
    },
    /// The registry could not be reached or the connection broke, after retries.
    #[error(
        "cannot reach registry {registry} ({url}): {source}; is it running, and for a plain-HTTP registry that is not on loopback, did you pass --insecure-registry {registry}?"
    )]
    Transport {
        /// The registry.
        registry: String,
        /// The URL.
        url: String,
        /// The transport error.
        source: reqwest::Error,
    },
    /// A manifest or config larger than we accept.
    #[error("{what} of {reference} is larger than the {limit}-byte limit; refusing to read it")]
    TooLarge {
        /// What.
        what: String,
        /// The reference.
        reference: String,
        /// The limit.
        limit: usize,
    },
    /// A manifest, index, config or token answer that did not arrive whole in time.
    #[error(
        "registry {registry} did not deliver the {what} of {reference} within {}s, the deadline for manifests, configs and token answers; the registry or the network is stalled or far too slow (raise document_deadline in the registry client options if it is only slow)",
        limit.as_secs_f64()
    )]
    Deadline {
        /// The registry.
        registry: String,
        /// The reference.
        reference: String,
        /// What was being read.
        what: String,
        /// The deadline.
        limit: Duration,
    },
    /// A blob download slower than the minimum progress.
    #[error(
        "the registry sent blob {digest} of {reference} too slowly: {got} bytes in {}s after {received} of {size} bytes, under the minimum of {min} bytes per {}s window; the download was stopped (check the network, or lower blob_min_bytes or raise blob_window in the registry client options)",
        window.as_secs_f64(),
        window.as_secs_f64()
    )]
    Stalled {
        /// The reference (its registry first).
        reference: String,
        /// The blob.
        digest: Digest,
        /// Bytes received in the last window.
        got: u64,
        /// Bytes received in all.
        received: u64,
        /// The blob's declared size.
        size: u64,
        /// The minimum per window.
        min: u64,
        /// The window.
        window: Duration,
    },
    /// A blob whose declared size is over the limit; refused before downloading.
    #[error(
        "blob {digest} of {reference} is declared as {size} bytes, over the {limit}-byte limit for one blob; nothing was downloaded (raise max_blob_bytes in the registry client options if the image is really that large)"
    )]
    BlobTooLarge {
        /// The reference.
        reference: String,
        /// The blob.
        digest: Digest,
        /// Its declared size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A blob download whose connection kept breaking.
    #[error(
        "downloading blob {digest} of {reference} failed: the connection broke {breaks} times, the last after {received} of {size} bytes ({last}); the registry or the network drops long transfers"
    )]
    Interrupted {
        /// The reference (its registry first).
        reference: String,
        /// The blob.
        digest: Digest,
        /// How many times the connection broke.
        breaks: u32,
        /// Bytes received in all.
        received: u64,
        /// The blob's declared size.
        size: u64,
        /// The last transport error.
        last: String,
    },
    /// Content whose digest or size is not what was asked for.
    #[error(
        "{what} of {reference}: expected {expected}, got {actual}; the registry served corrupt or different content, nothing was stored"
    )]
    Mismatch {
        /// What.
        what: String,
        /// The reference.
        reference: String,
        /// Expected digest or size.
        expected: String,
        /// Actual digest or size.
        actual: String,
    },
    /// The registry's answers do not follow the distribution spec.
    #[error("registry {registry} sent an invalid answer for {reference}: {reason}")]
    Protocol {
        /// The registry.
        registry: String,
        /// The reference.
        reference: String,
        /// What was wrong.
        reason: String,
    },
    /// The registry's TLS certificate is not signed by a trusted CA.
    #[error(
        "registry {registry} presented a TLS certificate wasmlet does not trust ({detail}); pass --ca-file with the CA that signed it"
    )]
    UntrustedCertificate {
        /// The registry.
        registry: String,
        /// The TLS error.
        detail: String,
    },
    /// A `--ca-file` could not be used.
    #[error("cannot use CA file {path}: {reason}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Credentials or token answers.
    #[error(transparent)]
    Auth(#[from] auth::Error),
    /// The local store.
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// Shorthand for this module's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The default deadline for a small document (manifest, index, config, token answer), from
/// sending the request to its last byte: 60 s. Such documents are a few KiB; a registry that
/// needs longer is stalled (or trickling bytes to hold the pull), not slow.
pub const DOCUMENT_DEADLINE: Duration = Duration::from_secs(60);

/// The default minimum progress of a blob download: 64 KiB in every [`BLOB_WINDOW`] (about
/// 2 KiB/s), so a registry trickling a byte a second is cut off after one window while any
/// working link, however slow, passes.
pub const BLOB_MIN_BYTES: u64 = 64 << 10;

/// The default window over which [`BLOB_MIN_BYTES`] must arrive: 30 s.
pub const BLOB_WINDOW: Duration = Duration::from_secs(30);

/// The default largest blob (layer) a pull downloads: 4 GiB, well above any WebAssembly
/// module or image layer that holds one; a descriptor declaring more is refused before any
/// byte is fetched.
pub const MAX_BLOB_BYTES: u64 = 4 << 30;

/// The default largest manifest, index or config accepted: 4 MiB (real ones are a few KiB).
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// The longest error answer read from a registry, to quote in our error: 16 KiB.
const MAX_ERROR_BODY_BYTES: usize = 16 << 10;

/// How a [`Client`] behaves. Defaults: no credentials, system roots, plain HTTP only for
/// loopback registries, 4 MiB manifest limit, 5 attempts starting at 200 ms back-off, a
/// [`DOCUMENT_DEADLINE`] of 60 s and blobs held to [`BLOB_MIN_BYTES`] per [`BLOB_WINDOW`].
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Credentials by registry.
    pub keyring: Keyring,
    /// Extra PEM root certificates to trust.
    pub ca_files: Vec<PathBuf>,
    /// Registries (host[:port]) allowed over plain HTTP besides loopback ones.
    pub insecure: Vec<String>,
    /// Largest manifest or config accepted, in bytes.
    pub max_manifest_bytes: usize,
    /// Attempts per request on 5xx, 429 and broken connections.
    pub attempts: u32,
    /// First back-off delay; doubles per attempt.
    pub backoff: Duration,
    /// Deadline for a manifest, index, config or token answer, request to last byte (also for
    /// a blob request's answer headers, a blob existence check and a manifest upload).
    /// Default [`DOCUMENT_DEADLINE`].
    pub document_deadline: Duration,
    /// A blob download fails when fewer bytes than this (or than what remains) arrive in any
    /// `blob_window`; 0 turns the check off. Default [`BLOB_MIN_BYTES`].
    pub blob_min_bytes: u64,
    /// The window of `blob_min_bytes`. Default [`BLOB_WINDOW`].
    pub blob_window: Duration,
    /// Largest blob a descriptor may declare for download. Default [`MAX_BLOB_BYTES`].
    pub max_blob_bytes: u64,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            keyring: Keyring::default(),
            ca_files: Vec::new(),
            insecure: Vec::new(),
            max_manifest_bytes: MAX_MANIFEST_BYTES,
            attempts: 5,
            backoff: Duration::from_millis(200),
            document_deadline: DOCUMENT_DEADLINE,
            blob_min_bytes: BLOB_MIN_BYTES,
            blob_window: BLOB_WINDOW,
            max_blob_bytes: MAX_BLOB_BYTES,
        }
    }
}

/// Reports transfer progress; every method has an empty default.
pub trait Progress: Send + Sync {
    /// A transfer of `total` bytes named `id` begins.
    fn start(&self, _id: &str, _total: u64) {}
    /// `n` more bytes moved (may go back to 0 on a restart: see `restart`).
    fn advance(&self, _id: &str, _n: u64) {}
    /// The transfer restarts from `at` bytes.
    fn restart(&self, _id: &str, _at: u64) {}
    /// The transfer is complete (or was not needed).
    fn finish(&self, _id: &str) {}
}

/// A [`Progress`] that reports nothing.
pub struct NoProgress;
impl Progress for NoProgress {}

/// A fetched manifest or index.
#[derive(Clone, Debug)]
pub struct FetchedManifest {
    /// The raw bytes (digests are over these).
    pub bytes: Bytes,
    /// Their digest.
    pub digest: Digest,
    /// The media type (from the content, else the Content-Type header).
    pub media_type: String,
}

#[derive(Default)]
struct State {
    /// `http` or `https` per registry, decided on first contact.
    schemes: HashMap<String, &'static str>,
    /// Bearer tokens by (registry, scope), with their expiry.
    tokens: HashMap<(String, String), (String, Instant)>,
    /// Registries that asked for basic auth.
    basic: HashMap<String, bool>,
}

/// A registry client; cheap to clone, shares connections and tokens.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    config: Arc<ClientConfig>,
    state: Arc<Mutex<State>>,
}

/// A request, rebuilt for each attempt.
struct Req<'a> {
    method: Method,
    url: String,
    headers: HeaderMap,
    body: Option<Bytes>,
    reference: &'a Reference,
    push: bool,
    /// When the operation this request serves must be done; a token fetched for it must be
    /// done by then too.
    deadline: Option<tokio::time::Instant>,
}

impl Client {
    /// Builds a client.
    pub fn new(config: ClientConfig) -> Result<Client> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("wasmlet/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60));
        for path in &config.ca_files {
            builder = builder.add_root_certificate(load_ca(path)?);
        }
        let http = builder.build().map_err(|e| Error::CaFile {
            path: PathBuf::new(),
            reason: e.to_string(),
        })?;
        Ok(Client {
            http,
            config: Arc::new(config),
            state: Arc::default(),
        })
    }

    /// Fetches the manifest (or index) `reference` names, verified against its digest, within
    /// the document deadline.
    pub async fn fetch_manifest(&self, reference: &Reference) -> Result<FetchedManifest> {
        let deadline = self.document_deadline();
        let fetch = self.fetch_manifest_by(reference, deadline);
        self.by_deadline(reference, "manifest", deadline, fetch)
            .await
    }

    async fn fetch_manifest_by(
        &self,
        reference: &Reference,
        deadline: tokio::time::Instant,
    ) -> Result<FetchedManifest> {
        let path = format!("manifests/{}", reference.manifest_key());
        let mut headers = HeaderMap::new();
        let accept = media::MANIFEST_ACCEPT.join(", ");
        headers.insert(
            ACCEPT,
            accept
                .parse()
                .map_err(|_| self.protocol(reference, "accept"))?,
        );
        let mut req = self.req(Method::GET, reference, &path, headers, None, false);
        req.deadline = Some(deadline);
        let resp = self.send(req).await?;
        let resp = self
            .expect(resp, reference, "manifest", &[StatusCode::OK])
            .await?;
        let header_digest = header_str(resp.headers(), "docker-content-digest");
        let content_type = header_str(resp.headers(), CONTENT_TYPE.as_str());
        let bytes = self.read_limited(resp, reference, "manifest").await?;
        let digest = Digest::of(&bytes);
        let expected = reference
            .digest()
            .cloned()
            .or_else(|| header_digest.and_then(|d| d.parse().ok()));
        if let Some(expected) = expected.filter(|e| *e != digest) {
            return Err(mismatch("manifest", reference, &expected, &digest));
        }
        let media_type = media_type_of(&bytes).or(content_type).unwrap_or_default();
        Ok(FetchedManifest {
            bytes,
            digest,
            media_type,
        })
    }

    /// Fetches a small blob (a config) into memory, verified, within the document deadline.
    pub async fn fetch_small_blob(
        &self,
        reference: &Reference,
        desc: &Descriptor,
    ) -> Result<Bytes> {
        let deadline = self.document_deadline();
        let what = format!("blob {}", desc.digest);
        let fetch = self.fetch_small_blob_by(reference, desc, deadline);
        self.by_deadline(reference, &what, deadline, fetch).await
    }

    async fn fetch_small_blob_by(
        &self,
        reference: &Reference,
        desc: &Descriptor,
        deadline: tokio::time::Instant,
    ) -> Result<Bytes> {
        if desc.size as usize > self.config.max_manifest_bytes {
            return Err(Error::TooLarge {
                what: format!("config {}", desc.digest),
                reference: reference.to_string(),
                limit: self.config.max_manifest_bytes,
            });
        }
        let path = format!("blobs/{}", desc.digest);
        let mut req = self.req(Method::GET, reference, &path, HeaderMap::new(), None, false);
        req.deadline = Some(deadline);
        let resp = self.send(req).await?;
        let what = format!("blob {}", desc.digest);
        let resp = self
            .expect(resp, reference, &what, &[StatusCode::OK])
            .await?;
        let bytes = self.read_limited(resp, reference, &what).await?;
        let actual = Digest::of(&bytes);
        if actual != desc.digest {
            return Err(mismatch(&what, reference, &desc.digest, &actual));
        }
        Ok(bytes)
    }

    /// Downloads a blob into the store, streaming and hashing, resuming with `Range` when
    /// the connection breaks. Does nothing when the store already has it.
    pub async fn fetch_blob(
        &self,
        reference: &Reference,
        desc: &Descriptor,
        store: &Store,
        progress: &dyn Progress,
    ) -> Result<()> {
        if desc.size > self.config.max_blob_bytes {
            return Err(Error::BlobTooLarge {
                reference: reference.to_string(),
                digest: desc.digest.clone(),
                size: desc.size,
                limit: self.config.max_blob_bytes,
            });
        }
        let id = desc.digest.to_string();
        progress.start(&id, desc.size);
        if store.has_blob(&desc.digest) {
            progress.finish(&id);
            return Ok(());
        }
        let (tmp, file) = store.temp_file()?;
        let what = format!("blob {}", desc.digest);
        let result = match self.download(reference, desc, &tmp, file, progress).await {
            Ok(actual) => store
                .commit_hashed(&tmp, &desc.digest, &actual, &what)
                .map_err(|e| match e {
                    store::Error::DigestMismatch {
                        expected, actual, ..
                    } => mismatch(&what, reference, &expected, &actual),
                    other => other.into(),
                }),
            Err(e) => Err(e),
        };
        let _ = std::fs::remove_file(&tmp);
        progress.finish(&id);
        result
    }

    /// Streams a blob into `file` (the store's temp file `tmp`) through a large write buffer,
    /// hashing as it goes; returns the digest of what was written.
    async fn download(
        &self,
        reference: &Reference,
        desc: &Descriptor,
        tmp: &std::path::Path,
        file: std::fs::File,
        progress: &dyn Progress,
    ) -> Result<Digest> {
        let id = desc.digest.to_string();
        let what = format!("blob {}", desc.digest);
        let file = tokio::fs::File::from_std(file);
        let mut sink = Sink {
            file: tokio::io::BufWriter::with_capacity(1 << 20, file),
            hasher: Sha256::new(),
            written: 0,
        };
        let (mut breaks, mut restarted) = (0, false);
        loop {
            let mut headers = HeaderMap::new();
            if sink.written > 0 {
                let range = format!("bytes={}-", sink.written);
                headers.insert(
                    RANGE,
                    range
                        .parse()
                        .map_err(|_| self.protocol(reference, "range"))?,
                );
            }
            let path = format!("blobs/{}", desc.digest);
            let resp = self.blob_answer(reference, &path, headers, &what).await?;
            if sink.written > 0 && !resumes(&resp, sink.written, desc.size) {
                if restarted {
                    return Err(self.no_resume(reference, desc, &resp));
                }
                tracing::warn!(%reference, blob = %desc.digest, status = %resp.status(), "resume not honoured, restarting from 0");
                restarted = true;
                sink.restart(tmp).await?;
                progress.restart(&id, 0);
                if resp.status() != StatusCode::OK {
                    continue;
                }
            }
            match self
                .copy_body(resp, &mut sink, desc, reference, progress)
                .await
            {
                Ok(()) => break,
                Err(CopyError::Fatal(e)) => return Err(e),
                Err(CopyError::Broken(e)) => {
                    breaks += 1;
                    if breaks >= self.config.attempts {
                        return Err(self.interrupted(reference, desc, breaks, sink.written, e));
                    }
                    tracing::warn!(%reference, blob = %desc.digest, written = sink.written, "download broke, resuming: {e}");
                    tokio::time::sleep(self.backoff(breaks)).await;
                }
            }
        }
        sink.file.flush().await.map_err(|e| io_err(tmp, e))?;
        if sink.written != desc.size {
            return Err(Error::Mismatch {
                what,
                reference: reference.to_string(),
                expected: format!("{} bytes", desc.size),
                actual: format!("{} bytes", sink.written),
            });
        }
        Ok(Digest::from_sha256(sink.hasher))
    }

    fn interrupted(
        &self,
        reference: &Reference,
        desc: &Descriptor,
        breaks: u32,
        received: u64,
        last: reqwest::Error,
    ) -> Error {
        Error::Interrupted {
            reference: reference.to_string(),
            digest: desc.digest.clone(),
            breaks,
            received,
            size: desc.size,
            last: error_chain(&last),
        }
    }

    fn no_resume(
        &self,
        reference: &Reference,
        desc: &Descriptor,
        resp: &reqwest::Response,
    ) -> Error {
        let range = header_str(resp.headers(), CONTENT_RANGE.as_str());
        self.protocol(
            reference,
            &format!(
                "blob {}: a download resumed with Range was answered {} with Content-Range {} twice (expected 206 from the bytes already received); the registry cannot resume downloads",
                desc.digest,
                resp.status(),
                range.as_deref().unwrap_or("(none)")
            ),
        )
    }

    /// Sends a blob request and waits for its answer's headers, within the document deadline.
    async fn blob_answer(
        &self,
        reference: &Reference,
        path: &str,
        headers: HeaderMap,
        what: &str,
    ) -> Result<reqwest::Response> {
        let deadline = self.document_deadline();
        let mut req = self.req(Method::GET, reference, path, headers, None, false);
        req.deadline = Some(deadline);
        let answer = async {
            let resp = self.send(req).await?;
            let ok = [StatusCode::OK, StatusCode::PARTIAL_CONTENT];
            self.expect(resp, reference, what, &ok).await
        };
        let what = format!("answer to the request for {what}");
        self.by_deadline(reference, &what, deadline, answer).await
    }

    async fn copy_body(
        &self,
        resp: reqwest::Response,
        sink: &mut Sink,
        desc: &Descriptor,
        reference: &Reference,
        progress: &dyn Progress,
    ) -> Result<(), CopyError> {
        let id = desc.digest.to_string();
        let mut stream = resp.bytes_stream();
        let remaining = desc.size.saturating_sub(sink.written);
        let mut pace = Pace::new(
            self.config.blob_min_bytes,
            self.config.blob_window,
            remaining,
        );
        loop {
            let next = tokio::time::timeout_at(pace.end, stream.next()).await;
            let chunk = match next {
                Err(_) => {
                    let now = tokio::time::Instant::now();
                    pace.roll(now)
                        .map_err(|got| self.stalled(reference, desc, sink, got))?;
                    continue;
                }
                Ok(None) => break,
                Ok(Some(chunk)) => chunk.map_err(CopyError::Broken)?,
            };
            if sink.written + chunk.len() as u64 > desc.size {
                return Err(CopyError::Fatal(Error::Mismatch {
                    what: format!("blob {}", desc.digest),
                    reference: reference.to_string(),
                    expected: format!("{} bytes", desc.size),
                    actual: format!("more than {} bytes", desc.size),
                }));
            }
            sink.write(&chunk).await.map_err(CopyError::Fatal)?;
            progress.advance(&id, chunk.len() as u64);
            pace.add(chunk.len() as u64);
            let now = tokio::time::Instant::now();
            if now >= pace.end {
                pace.roll(now)
                    .map_err(|got| self.stalled(reference, desc, sink, got))?;
            }
        }
        Ok(())
    }

    fn stalled(
        &self,
        reference: &Reference,
        desc: &Descriptor,
        sink: &Sink,
        got: u64,
    ) -> CopyError {
        CopyError::Fatal(Error::Stalled {
            reference: reference.to_string(),
            digest: desc.digest.clone(),
            got,
            received: sink.written,
            size: desc.size,
            min: self.config.blob_min_bytes,
            window: self.config.blob_window,
        })
    }

    fn document_deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.config.document_deadline
    }

    /// Runs `fut` until `deadline`; past it, fails naming `what` and the limit.
    async fn by_deadline<T>(
        &self,
        reference: &Reference,
        what: &str,
        deadline: tokio::time::Instant,
        fut: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout_at(deadline, fut).await {
            Ok(result) => result,
            Err(_) => Err(Error::Deadline {
                registry: reference.registry().to_string(),
                reference: reference.to_string(),
                what: what.to_string(),
                limit: self.config.document_deadline,
            }),
        }
    }

    /// Whether the registry already has a blob, within the document deadline.
    pub async fn has_blob(&self, reference: &Reference, digest: &Digest) -> Result<bool> {
        let deadline = self.document_deadline();
        let path = format!("blobs/{digest}");
        let mut req = self.req(Method::HEAD, reference, &path, HeaderMap::new(), None, true);
        req.deadline = Some(deadline);
        let check = async {
            let resp = self.send(req).await?;
            match resp.status() {
                StatusCode::OK => Ok(true),
                StatusCode::NOT_FOUND => Ok(false),
                _ => self
                    .expect(resp, reference, "blob", &[])
                    .await
                    .map(|_| false),
            }
        };
        let what = format!("answer to whether it has blob {digest}");
        self.by_deadline(reference, &what, deadline, check).await
    }

    /// Uploads a blob (monolithic POST then PUT) unless the registry has it.
    pub async fn push_blob(
        &self,
        reference: &Reference,
        bytes: Bytes,
        digest: &Digest,
        progress: &dyn Progress,
    ) -> Result<()> {
        let id = digest.to_string();
        progress.start(&id, bytes.len() as u64);
        if self.has_blob(reference, digest).await? {
            progress.finish(&id);
            return Ok(());
        }
        let resp = self
            .send(self.req(
                Method::POST,
                reference,
                "blobs/uploads/",
                HeaderMap::new(),
                None,
                true,
            ))
            .await?;
        let resp = self
            .expect(resp, reference, "blob upload", &[StatusCode::ACCEPTED])
            .await?;
        let location = header_str(resp.headers(), LOCATION.as_str())
            .ok_or_else(|| self.protocol(reference, "upload answer has no Location header"))?;
        let url = self.upload_url(reference, &location, digest)?;
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            "application/octet-stream"
                .parse()
                .map_err(|_| self.protocol(reference, "ct"))?,
        );
        let len = bytes.len() as u64;
        let req = Req {
            method: Method::PUT,
            url,
            headers,
            body: Some(bytes),
            reference,
            push: true,
            deadline: None,
        };
        let resp = self.send(req).await?;
        self.expect(
            resp,
            reference,
            &format!("blob {digest}"),
            &[StatusCode::CREATED],
        )
        .await?;
        progress.advance(&id, len);
        progress.finish(&id);
        Ok(())
    }

    /// Uploads a manifest under the reference's tag (or digest), within the document
    /// deadline; returns its digest.
    pub async fn push_manifest(
        &self,
        reference: &Reference,
        bytes: Bytes,
        media_type: &str,
    ) -> Result<Digest> {
        let digest = Digest::of(&bytes);
        let path = format!(
            "manifests/{}",
            reference.tag().map_or(digest.to_string(), str::to_string)
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            media_type
                .parse()
                .map_err(|_| self.protocol(reference, "media type"))?,
        );
        let deadline = self.document_deadline();
        let mut req = self.req(Method::PUT, reference, &path, headers, Some(bytes), true);
        req.deadline = Some(deadline);
        let upload = async {
            let resp = self.send(req).await?;
            let ok = [StatusCode::CREATED, StatusCode::OK];
            self.expect(resp, reference, "manifest", &ok).await
        };
        self.by_deadline(reference, "answer to the manifest upload", deadline, upload)
            .await?;
        Ok(digest)
    }

    fn req<'a>(
        &self,
        method: Method,
        reference: &'a Reference,
        path: &str,
        headers: HeaderMap,
        body: Option<Bytes>,
        push: bool,
    ) -> Req<'a> {
        let url = format!("/v2/{}/{path}", reference.repository());
        Req {
            method,
            url,
            headers,
            body,
            reference,
            push,
            deadline: None,
        }
    }

    fn upload_url(&self, reference: &Reference, location: &str, digest: &Digest) -> Result<String> {
        let sep = if location.contains('?') { '&' } else { '?' };
        let with_digest = format!("{location}{sep}digest={digest}");
        if with_digest.starts_with('/') {
            return Ok(with_digest);
        }
        let url = reqwest::Url::parse(&with_digest).map_err(|e| {
            self.protocol(reference, &format!("bad upload Location `{location}`: {e}"))
        })?;
        Ok(url.to_string())
    }

    /// Sends with auth, following one 401 challenge, retrying 5xx/429/broken connections.
    async fn send(&self, req: Req<'_>) -> Result<reqwest::Response> {
        let mut attempt = 0;
        let mut authenticated = false;
        loop {
            let url = self.absolute(&req).await?;
            let auth = self.cached_auth(&req);
            let mut builder = self
                .http
                .request(req.method.clone(), &url)
                .headers(req.headers.clone());
            if let Some(a) = &auth {
                builder = builder.header(AUTHORIZATION, a);
            }
            if let Some(body) = &req.body {
                builder = builder.body(body.clone());
            }
            let outcome = builder.send().await;
            let retry = match &outcome {
                Err(_) => true,
                Ok(r) => {
                    r.status().is_server_error() || r.status() == StatusCode::TOO_MANY_REQUESTS
                }
            };
            if retry && attempt + 1 < self.config.attempts {
                attempt += 1;
                tracing::debug!(url, attempt, "registry request failed, retrying");
                tokio::time::sleep(self.backoff(attempt)).await;
                continue;
            }
            let resp = outcome.map_err(|e| self.transport(req.reference, &url, e))?;
            if resp.status() == StatusCode::UNAUTHORIZED && !authenticated {
                authenticated = true;
                if self.authenticate(&req, resp.headers()).await? {
                    continue;
                }
            }
            return Ok(resp);
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        self.config.backoff * 2u32.saturating_pow(attempt.saturating_sub(1)).min(64)
    }

    /// Turns a path into a URL, deciding the scheme on first contact with a registry.
    async fn absolute(&self, req: &Req<'_>) -> Result<String> {
        if req.url.starts_with("http://") || req.url.starts_with("https://") {
            return Ok(req.url.clone());
        }
        let scheme = self.scheme(req.reference).await?;
        Ok(format!(
            "{scheme}://{}{}",
            req.reference.api_host(),
            req.url
        ))
    }

    async fn scheme(&self, reference: &Reference) -> Result<&'static str> {
        let registry = reference.registry().to_string();
        if let Some(s) = self.lock().schemes.get(&registry) {
            return Ok(s);
        }
        let scheme = if self.allows_http(reference) {
            self.probe(reference).await
        } else {
            "https"
        };
        self.lock().schemes.insert(registry, scheme);
        Ok(scheme)
    }

    /// For registries allowed over HTTP: HTTPS when it answers, else HTTP.
    async fn probe(&self, reference: &Reference) -> &'static str {
        let url = format!("https://{}/v2/", reference.api_host());
        match self
            .http
            .get(&url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
        {
            Ok(_) => "https",
            Err(e) if is_certificate_error(&e) => "https",
            Err(_) => "http",
        }
    }

    fn allows_http(&self, reference: &Reference) -> bool {
        self.plain_http_allowed(reference.registry())
    }

    /// Whether `host[:port]` may be spoken to over plain HTTP: loopback, or listed insecure.
    fn plain_http_allowed(&self, authority: &str) -> bool {
        crate::reference::is_loopback_authority(authority)
            || self
                .config
                .insecure
                .iter()
                .any(|i| i.eq_ignore_ascii_case(authority))
    }

    fn scope(req: &Req<'_>) -> String {
        let actions = if req.push { "pull,push" } else { "pull" };
        format!("repository:{}:{actions}", req.reference.repository())
    }

    fn cached_auth(&self, req: &Req<'_>) -> Option<String> {
        let registry = req.reference.registry().to_string();
        let state = self.lock();
        let key = (registry.clone(), Self::scope(req));
        if let Some((token, _)) = state
            .tokens
            .get(&key)
            .filter(|(_, expiry)| Instant::now() < *expiry)
        {
            return Some(format!("Bearer {token}"));
        }
        if state.basic.get(&registry).copied().unwrap_or(false) {
            return self.config.keyring.get(&registry).basic_header();
        }
        None
    }

    /// Answers a 401 challenge; returns whether the request should be sent again.
    async fn authenticate(&self, req: &Req<'_>, headers: &HeaderMap) -> Result<bool> {
        let registry = req.reference.registry().to_string();
        let header = header_str(headers, WWW_AUTHENTICATE.as_str()).unwrap_or_default();
        let credential = self.config.keyring.get(&registry);
        match Challenge::parse(&header) {
            Some(Challenge::Basic) => {
                self.lock().basic.insert(registry, true);
                Ok(credential.basic_header().is_some())
            }
            Some(Challenge::Bearer { realm, service, .. }) => {
                let scope = Self::scope(req);
                let deadline = self.document_deadline();
                let deadline = req.deadline.map_or(deadline, |d| d.min(deadline));
                let fetch = self.fetch_token(
                    req.reference,
                    &realm,
                    service.as_deref(),
                    &scope,
                    &credential,
                );
                let what = format!("token answer from realm {realm}");
                let token = self
                    .by_deadline(req.reference, &what, deadline, fetch)
                    .await?;
                let lifetime = token
                    .expires_in
                    .saturating_sub((token.expires_in / 10).min(Duration::from_secs(10)));
                self.lock()
                    .tokens
                    .insert((registry, scope), (token.token, Instant::now() + lifetime));
                Ok(true)
            }
            None if header.is_empty() => Ok(false),
            None => Err(auth::Error::Challenge { registry, header }.into()),
        }
    }

    async fn fetch_token(
        &self,
        reference: &Reference,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        credential: &auth::Credential,
    ) -> Result<Token> {
        let registry = reference.registry();
        let url = auth::parse_realm(registry, realm)?;
        let basic = credential.basic_header();
        if basic.is_some() {
            auth::check_realm_for_credentials(registry, &url, |a| self.plain_http_allowed(a))?;
        }
        let mut query = vec![("scope", scope)];
        if let Some(s) = service {
            query.push(("service", s));
        }
        let mut builder = self.http.get(url).query(&query);
        if let Some(basic) = basic {
            builder = builder.header(AUTHORIZATION, basic);
        }
        let resp = builder
            .send()
            .await
            .map_err(|e| self.transport(reference, realm, e))?;
        let resp = self
            .expect(resp, reference, "token", &[StatusCode::OK])
            .await?;
        let body = self.read_limited(resp, reference, "token answer").await?;
        Ok(Token::parse(&body, realm)?)
    }

    async fn expect(
        &self,
        resp: reqwest::Response,
        reference: &Reference,
        what: &str,
        ok: &[StatusCode],
    ) -> Result<reqwest::Response> {
        let status = resp.status();
        if ok.contains(&status) {
            return Ok(resp);
        }
        let registry = reference.registry().to_string();
        let url = resp.url().to_string();
        let body = error_body(resp).await;
        let detail = error_detail(&body);
        let reference = reference.to_string();
        Err(match status {
            StatusCode::UNAUTHORIZED => Error::Unauthorized {
                registry,
                reference,
                detail,
            },
            StatusCode::FORBIDDEN => Error::Denied {
                registry,
                reference,
                detail,
            },
            StatusCode::NOT_FOUND => Error::NotFound {
                registry,
                reference,
                what: what.to_string(),
            },
            status => Error::Status {
                registry,
                url,
                status,
                detail,
            },
        })
    }

    async fn read_limited(
        &self,
        resp: reqwest::Response,
        reference: &Reference,
        what: &str,
    ) -> Result<Bytes> {
        let limit = self.config.max_manifest_bytes;
        let too_large = || Error::TooLarge {
            what: what.to_string(),
            reference: reference.to_string(),
            limit,
        };
        if resp.content_length().is_some_and(|n| n as usize > limit) {
            return Err(too_large());
        }
        let url = resp.url().to_string();
        let mut out = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.transport(reference, &url, e))?;
            if out.len() + chunk.len() > limit {
                return Err(too_large());
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out.into())
    }

    fn transport(&self, reference: &Reference, url: &str, source: reqwest::Error) -> Error {
        if is_certificate_error(&source) {
            return Error::UntrustedCertificate {
                registry: reference.registry().to_string(),
                detail: error_chain(&source),
            };
        }
        Error::Transport {
            registry: reference.registry().to_string(),
            url: url.to_string(),
            source,
        }
    }

    fn protocol(&self, reference: &Reference, reason: &str) -> Error {
        Error::Protocol {
            registry: reference.registry().to_string(),
            reference: reference.to_string(),
            reason: reason.to_string(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Where a download goes: a buffered temp file and the running hash of its content.
struct Sink {
    file: tokio::io::BufWriter<tokio::fs::File>,
    hasher: Sha256,
    written: u64,
}

impl Sink {
    async fn write(&mut self, chunk: &[u8]) -> Result<()> {
        self.file
            .write_all(chunk)
            .await
            .map_err(|e| io_err(std::path::Path::new("blob temp file"), e))?;
        self.hasher.update(chunk);
        self.written += chunk.len() as u64;
        Ok(())
    }

    /// Starts over from byte 0 (the registry ignored our Range request).
    /// Empties the temp file (the same open file, so it stays locked against a prune).
    async fn restart(&mut self, tmp: &std::path::Path) -> Result<()> {
        use tokio::io::AsyncSeekExt;
        self.file.flush().await.map_err(|e| io_err(tmp, e))?;
        let file = self.file.get_mut();
        file.set_len(0).await.map_err(|e| io_err(tmp, e))?;
        file.seek(std::io::SeekFrom::Start(0))
            .await
            .map_err(|e| io_err(tmp, e))?;
        self.hasher = Sha256::new();
        self.written = 0;
        Ok(())
    }
}

/// Whether a registry's answer to `Range: bytes=<from>-` continues a blob of `size` bytes:
/// 206 with `Content-Range: bytes <from>-<size-1>/<size or *>`.
fn resumes(resp: &reqwest::Response, from: u64, size: u64) -> bool {
    resp.status() == StatusCode::PARTIAL_CONTENT
        && header_str(resp.headers(), CONTENT_RANGE.as_str())
            .is_some_and(|r| content_range_continues(&r, from, size))
}

fn content_range_continues(header: &str, from: u64, size: u64) -> bool {
    let Some((range, total)) = header
        .trim()
        .strip_prefix("bytes ")
        .and_then(|r| r.split_once('/'))
    else {
        return false;
    };
    let total_ok = total == "*" || total.parse::<u64>() == Ok(size);
    let range_ok = range.split_once('-').is_some_and(|(a, b)| {
        a.parse::<u64>() == Ok(from) && b.parse::<u64>() == Ok(size.saturating_sub(1))
    });
    total_ok && range_ok
}

/// A blob download's progress check: at least `min` bytes (or what remains, if less) must
/// arrive in each window ending at `end`.
struct Pace {
    min: u64,
    window: Duration,
    end: tokio::time::Instant,
    got: u64,
    remaining: u64,
    needed: u64,
}

impl Pace {
    fn new(min: u64, window: Duration, remaining: u64) -> Pace {
        let off = min == 0 || window.is_zero();
        // Off: a window that never ends (a year is as good as never for one download).
        let window = if off {
            Duration::from_secs(365 * 86_400)
        } else {
            window
        };
        Pace {
            min,
            window,
            end: tokio::time::Instant::now() + window,
            got: 0,
            remaining,
            needed: min.min(remaining),
        }
    }

    fn add(&mut self, n: u64) {
        self.got += n;
        self.remaining = self.remaining.saturating_sub(n);
    }

    /// Closes the window that ended: `Err(bytes received in it)` when too few arrived, else
    /// opens the next one at `now`.
    fn roll(&mut self, now: tokio::time::Instant) -> Result<(), u64> {
        if self.got < self.needed {
            return Err(self.got);
        }
        self.end = now + self.window;
        self.got = 0;
        self.needed = self.min.min(self.remaining);
        Ok(())
    }
}

enum CopyError {
    Broken(reqwest::Error),
    Fatal(Error),
}

fn mismatch(what: &str, reference: &Reference, expected: &Digest, actual: &Digest) -> Error {
    Error::Mismatch {
        what: what.to_string(),
        reference: reference.to_string(),
        expected: expected.to_string(),
        actual: actual.to_string(),
    }
}

fn io_err(path: &std::path::Path, source: std::io::Error) -> Error {
    store::Error::Io {
        path: path.to_owned(),
        source,
    }
    .into()
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The start of an error answer's body (at most [`MAX_ERROR_BODY_BYTES`]), as text.
async fn error_body(resp: reqwest::Response) -> String {
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        let room = MAX_ERROR_BODY_BYTES - out.len();
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() == MAX_ERROR_BODY_BYTES {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `mediaType` field of a manifest or index, when it has one.
fn media_type_of(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(bytes).ok()?;
    probe
        .media_type
        .or_else(|| probe.manifests.map(|_| media::OCI_INDEX.to_string()))
}

/// The first message of a distribution-spec error body, as `: message`.
fn error_detail(body: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorItem>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorItem {
        code: Option<String>,
        message: Option<String>,
    }
    match serde_json::from_str::<Errors>(body) {
        Ok(e) => e
            .errors
            .first()
            .map(|i| {
                format!(
                    ": {} {}",
                    i.code.clone().unwrap_or_default(),
                    i.message.clone().unwrap_or_default()
                )
            })
            .unwrap_or_default(),
        Err(_) if body.trim().is_empty() => String::new(),
        Err(_) => format!(": {}", body.chars().take(160).collect::<String>().trim()),
    }
}

/// The messages of an error and its sources, joined.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    parts.join(": ")
}

/// Whether a transport error is a TLS certificate verification failure.
fn is_certificate_error(e: &reqwest::Error) -> bool {
    let chain = error_chain(e).to_ascii_lowercase();
    chain.contains("certificate") || chain.contains("unknownissuer")
}

fn load_ca(path: &std::path::Path) -> Result<reqwest::Certificate> {
    let err = |reason: String| Error::CaFile {
        path: path.to_owned(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    reqwest::Certificate::from_pem(&pem).map_err(|e| err(format!("not a PEM certificate: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_details_from_registry_bodies() {
        assert_eq!(
            error_detail(r#"{"errors":[{"code":"DENIED","message":"no"}]}"#),
            ": DENIED no"
        );
        assert_eq!(error_detail(""), "");
        assert_eq!(error_detail("plain"), ": plain");
    }

    #[test]
    fn media_type_probe() {
        assert_eq!(media_type_of(br#"{"mediaType":"x"}"#).as_deref(), Some("x"));
        assert_eq!(
            media_type_of(br#"{"manifests":[]}"#).as_deref(),
            Some(media::OCI_INDEX)
        );
        assert_eq!(media_type_of(br#"{"config":{}}"#), None);
    }

    #[test]
    fn plain_http_only_for_loopback_and_listed_registries() {
        let c = Client::new(ClientConfig {
            insecure: vec!["reg.example:5000".into()],
            ..Default::default()
        })
        .unwrap();
        for (r, want) in [
            ("127.0.0.1:5000/a", true),
            ("localhost/a", true),
            ("reg.example:5000/a", true),
            ("reg.example/a", false),
            ("10.1.2.3:5000/a", false),
        ] {
            assert_eq!(c.allows_http(&r.parse().unwrap()), want, "{r}");
        }
    }

    #[test]
    fn pace_needs_the_minimum_or_what_remains_in_each_window() {
        let now = tokio::time::Instant::now();
        let mut pace = Pace::new(100, Duration::from_secs(1), 250);
        pace.add(99);
        assert_eq!(pace.roll(now), Err(99), "99 of the 100 needed");
        let mut pace = Pace::new(100, Duration::from_secs(1), 250);
        pace.add(100);
        assert_eq!(pace.roll(now), Ok(()));
        assert_eq!(pace.end, now + Duration::from_secs(1));
        pace.add(100);
        assert_eq!(pace.roll(now), Ok(()));
        pace.add(49);
        assert_eq!(pace.roll(now), Err(49), "50 remained, all needed");
        let mut pace = Pace::new(100, Duration::from_secs(1), 250);
        pace.add(50);
        pace.add(50);
        assert_eq!(pace.roll(now), Ok(()));
        let mut off = Pace::new(0, Duration::from_secs(1), 250);
        assert_eq!(off.roll(now), Ok(()), "0 turns the check off");
    }

    #[test]
    fn content_ranges_that_continue_a_download() {
        for (header, ok) in [
            ("bytes 100-999/1000", true),
            ("bytes 100-999/*", true),
            ("bytes 0-999/1000", false),
            ("bytes 100-998/1000", false),
            ("bytes 100-999/2000", false),
            ("items 100-999/1000", false),
            ("bytes 100-999", false),
            ("", false),
        ] {
            assert_eq!(content_range_continues(header, 100, 1000), ok, "{header}");
        }
    }

    #[test]
    fn backoff_doubles() {
        let c = Client::new(ClientConfig::default()).unwrap();
        assert_eq!(c.backoff(1), Duration::from_millis(200));
        assert_eq!(c.backoff(3), Duration::from_millis(800));
    }

    #[test]
    fn upload_locations() {
        let c = Client::new(ClientConfig::default()).unwrap();
        let r: Reference = "127.0.0.1:5000/a/b:v1".parse().unwrap();
        let d = Digest::of(b"");
        assert_eq!(
            c.upload_url(&r, "/v2/a/b/blobs/uploads/u1?_state=s", &d)
                .unwrap(),
            format!("/v2/a/b/blobs/uploads/u1?_state=s&digest={d}")
        );
        assert_eq!(
            c.upload_url(&r, "http://h:1/up/u2", &d).unwrap(),
            format!("http://h:1/up/u2?digest={d}")
        );
    }
}
