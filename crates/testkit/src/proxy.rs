//! A proxy in front of a registry (or token server) that injects faults: broken connections
//! mid-blob, 5xx answers, corrupt blobs, garbage manifests and bodies trickled slowly.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use crate::free_port;

/// What the proxy breaks.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Pass everything through.
    None,
    /// The first GET of each blob sends this many bytes, then drops the connection.
    DropMidBlob(usize),
    /// Every GET of a blob (resumed ones too) sends this many bytes, then drops.
    DropEveryBlob(usize),
    /// The first GET of each blob drops after this many bytes, and a resumed GET (with
    /// `Range`) is asked upstream from byte 0, so its 206 names the wrong range.
    DropThenWrongRange(usize),
    /// Every GET of a blob drops after this many bytes, and every resumed GET is asked
    /// upstream from byte 0 (a registry that can never resume).
    DropEveryBlobWrongRange(usize),
    /// The first N requests get a 500.
    FailFirst(usize),
    /// Blob bodies have one byte flipped (same length).
    CorruptBlobs,
    /// Manifest bodies are replaced with invalid JSON.
    GarbageManifests,
    /// Successful GET bodies whose path contains `path` are sent `bytes` at a time, one
    /// piece every `every` (headers, Content-Length included, are sent at once).
    Trickle {
        /// A part of the request path, e.g. `/manifests/`, `/blobs/` or `/token`.
        path: String,
        /// Bytes per piece.
        bytes: usize,
        /// The pause before each piece.
        every: Duration,
    },
}

struct Shared {
    upstream: String,
    fault: Fault,
    http: reqwest::Client,
    log: Mutex<Vec<String>>,
    dropped: Mutex<Vec<String>>,
}

/// A running proxy; stopped when dropped.
pub struct FaultProxy {
    port: u16,
    shared: Arc<Shared>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (e.g. `http://127.0.0.1:5000`) that injects `fault`.
    pub fn start(upstream: &str, fault: Fault) -> FaultProxy {
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            fault,
            http: reqwest::Client::new(),
            log: Mutex::default(),
            dropped: Mutex::default(),
        });
        let port = free_port();
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(shared.clone());
        let stop = serve(port, app);
        FaultProxy {
            port,
            shared,
            _stop: stop,
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `METHOD path status` for each request seen.
    pub fn requests(&self) -> Vec<String> {
        self.shared
            .log
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }
}

async fn forward(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let method = request.method().clone();
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let seen = shared.log.lock().map(|l| l.len()).unwrap_or(0);
    if let Fault::FailFirst(n) = shared.fault
        && seen < n
    {
        record(&shared, &method, &path, 500);
        return (StatusCode::INTERNAL_SERVER_ERROR, "injected failure").into_response();
    }
    let mut headers = request.headers().clone();
    headers.remove("host");
    if matches!(
        shared.fault,
        Fault::DropThenWrongRange(_) | Fault::DropEveryBlobWrongRange(_)
    ) && headers.contains_key("range")
    {
        headers.insert("range", axum::http::HeaderValue::from_static("bytes=0-"));
    }
    let body = axum::body::to_bytes(request.into_body(), 64 << 20)
        .await
        .unwrap_or_default();
    let upstream = shared
        .http
        .request(method.clone(), format!("{}{path}", shared.upstream))
        .headers(headers)
        .body(body)
        .send()
        .await;
    let upstream = match upstream {
        Ok(u) => u,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = upstream.status();
    record(&shared, &method, &path, status.as_u16());
    let headers = upstream.headers().clone();
    let is_blob = path.contains("/blobs/sha256:") && method == "GET" && status.is_success();
    let is_manifest = path.contains("/manifests/") && method == "GET" && status.is_success();
    match (&shared.fault, is_blob, is_manifest) {
        (Fault::DropMidBlob(n) | Fault::DropThenWrongRange(n), true, _)
            if first_time(&shared, &path) =>
        {
            drop_after(status, headers, upstream, *n)
        }
        (Fault::DropEveryBlob(n) | Fault::DropEveryBlobWrongRange(n), true, _) => {
            drop_after(status, headers, upstream, *n)
        }
        (Fault::CorruptBlobs, true, _) => corrupt(status, headers, upstream).await,
        (Fault::GarbageManifests, _, true) => garbage(status, headers),
        (
            Fault::Trickle {
                path: p,
                bytes,
                every,
            },
            _,
            _,
        ) if path.contains(p.as_str()) && method == "GET" && status.is_success() => {
            trickle(status, headers, upstream, *bytes, *every).await
        }
        _ => respond(status, headers, Body::from_stream(upstream.bytes_stream())),
    }
}

fn record(shared: &Shared, method: &axum::http::Method, path: &str, status: u16) {
    if let Ok(mut l) = shared.log.lock() {
        l.push(format!("{method} {path} {status}"));
    }
}

fn first_time(shared: &Shared, path: &str) -> bool {
    let mut dropped = shared.dropped.lock().expect("proxy state");
    if dropped.iter().any(|p| p == path) {
        return false;
    }
    dropped.push(path.to_string());
    true
}

fn respond(status: StatusCode, headers: HeaderMap, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    for (k, v) in headers.iter() {
        if k != "transfer-encoding" && k != "connection" {
            response.headers_mut().insert(k, v.clone());
        }
    }
    response
}

/// Sends the first `n` bytes, then fails the body stream, which drops the connection.
fn drop_after(
    status: StatusCode,
    headers: HeaderMap,
    upstream: reqwest::Response,
    n: usize,
) -> Response {
    let mut sent = 0usize;
    let stream = upstream.bytes_stream().map(move |chunk| {
        let chunk = chunk.map_err(std::io::Error::other)?;
        if sent >= n {
            return Err(std::io::Error::other("injected connection drop"));
        }
        let take = chunk.len().min(n - sent);
        sent += take;
        Ok(chunk.slice(..take))
    });
    respond(status, headers, Body::from_stream(stream))
}

/// Sends the upstream body `bytes` at a time with a pause of `every` before each piece.
async fn trickle(
    status: StatusCode,
    headers: HeaderMap,
    upstream: reqwest::Response,
    bytes: usize,
    every: Duration,
) -> Response {
    let body = upstream.bytes().await.unwrap_or_default();
    let pieces: Vec<bytes::Bytes> = (0..body.len())
        .step_by(bytes.max(1))
        .map(|at| body.slice(at..(at + bytes.max(1)).min(body.len())))
        .collect();
    let stream = futures::stream::iter(pieces).then(move |piece| async move {
        tokio::time::sleep(every).await;
        Ok::<_, std::io::Error>(piece)
    });
    respond(status, headers, Body::from_stream(stream))
}

async fn corrupt(status: StatusCode, headers: HeaderMap, upstream: reqwest::Response) -> Response {
    let mut bytes = upstream
        .bytes()
        .await
        .map(|b| b.to_vec())
        .unwrap_or_default();
    if let Some(last) = bytes.last_mut() {
        *last ^= 0xff;
    }
    respond(status, headers, Body::from(bytes))
}

fn garbage(status: StatusCode, mut headers: HeaderMap) -> Response {
    let body = b"{\"schemaVersion\": 2, \"config\": [oops".to_vec();
    headers.insert("content-length", body.len().into());
    headers.remove("docker-content-digest");
    respond(status, headers, Body::from(body))
}

/// Serves `app` on 127.0.0.1:`port` on a thread of its own until the sender is dropped.
pub(crate) fn serve(port: u16, app: axum::Router) -> tokio::sync::oneshot::Sender<()> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("test server runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .expect("binding test server");
            let _ = ready_tx.send(());
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
    });
    ready_rx.recv().expect("test server started");
    stop
}
