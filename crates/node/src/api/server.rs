//! The kubelet HTTPS API: `/healthz`, `/pods`, `/containerLogs/{ns}/{pod}/{container}`,
//! `/portForward/{ns}/{pod}` ([`crate::api::portforward`]), `/exec`, `/attach` and `/run` (refused
//! with the reason: [`crate::api::streaming`]),
//! and the resource figures: `/stats/summary` (the Summary API, JSON), `/metrics/resource`
//! (what metrics-server scrapes) and `/metrics` (the agent's own), all read at the time of
//! the request from the machine and the running pods' usage counters.
//!
//! Every request is authenticated (a client certificate from the cluster CA, or a bearer
//! token checked with a TokenReview) and authorised with a SubjectAccessReview on the node's
//! `nodes/<subresource>`, as the kubelet's webhook mode; anonymous requests get 401.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, RawQuery, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use rustls::pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use wasmlet_worker::PodDir;

use crate::api::disk::PodDisk;
use crate::api::logs::{self, LogOptions};
use crate::api::metrics;
use crate::api::portforward;
use crate::api::stats::{self, CpuRates, Summary};
use crate::api::streaming;
use crate::node::machine;
use crate::pods::PodStore;
use crate::pods::running::RunningPods;
use crate::tls::identity::ServingCert;

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The certificate, key or client CA could not be used.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// The port could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// The result type of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the handlers need.
#[derive(Clone)]
pub struct ApiContext {
    /// The node's client.
    pub client: Client,
    /// This node's name.
    pub node_name: String,
    /// Where pods' directories live (`<data_dir>/pods/<uid>/logs/<container>/<n>.log`).
    pub data_dir: PathBuf,
    /// The pods whose workers run, with their usage.
    pub running: Arc<RunningPods>,
    /// The pods bound to this node, as the agent's watch last saw them.
    pub pods: PodStore,
    /// The previous CPU samples, for the summary's `usageNanoCores`.
    pub rates: Arc<CpuRates>,
}

/// Who made a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User {
    /// The user name.
    pub name: String,
    /// The user's groups.
    pub groups: Vec<String>,
    /// The user's UID (tokens only).
    pub uid: Option<String>,
}

/// The TLS configuration: the serving certificate as `serving` holds it when a connection
/// starts (so a rotated one is served from then on), and client certificates verified against
/// `client_ca_der` but optional (a bearer token may authenticate instead).
pub fn tls_config(
    serving: Arc<ServingCert>,
    client_ca_der: &[Vec<u8>],
) -> Result<rustls::ServerConfig> {
    let tls = |e: &dyn std::fmt::Display| Error::Tls(e.to_string());
    let mut roots = rustls::RootCertStore::empty();
    for der in client_ca_der {
        roots
            .add(CertificateDer::from(der.clone()))
            .map_err(|e| tls(&e))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| tls(&e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(serving);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Serves the API on `addr` until `cancel` fires.
pub async fn serve(
    addr: SocketAddr,
    tls: rustls::ServerConfig,
    context: ApiContext,
    cancel: CancellationToken,
) -> Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let router = router(context);
    tracing::info!(%addr, "kubelet API listening");
    loop {
        let (stream, peer) = tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => { tracing::warn!(%err, "accepting"); continue; }
            },
        };
        tokio::spawn(connection(stream, peer, acceptor.clone(), router.clone()));
    }
}

async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    router: Router,
) {
    let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(err)) => return tracing::debug!(%peer, %err, "TLS handshake"),
        Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
    };
    let user = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(cert_user);
    let service = router.layer(axum::Extension(PeerCert(user)));
    let service = hyper_util::service::TowerToHyperService::new(service);
    let builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    let io = hyper_util::rt::TokioIo::new(tls);
    // With upgrades: /portForward switches the connection to SPDY.
    if let Err(err) = builder.serve_connection_with_upgrades(io, service).await {
        tracing::debug!(%peer, %err, "connection");
    }
}

/// The user a verified client certificate names: CN the name, O the groups.
pub fn cert_user(der: &CertificateDer<'_>) -> Option<User> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Some(User {
        name,
        groups,
        uid: None,
    })
}

#[derive(Clone)]
struct PeerCert(Option<User>);

fn router(context: ApiContext) -> Router {
    let context = Arc::new(context);
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/pods", get(pods))
        .route("/stats/summary", get(stats_summary))
        .route("/metrics/resource", get(resource_metrics))
        .route("/metrics", get(agent_metrics))
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs),
        )
        .route(
            "/exec/{*target}",
            get(streaming::exec).post(streaming::exec),
        )
        .route(
            "/attach/{*target}",
            get(streaming::attach).post(streaming::attach),
        )
        .route("/run/{*target}", post(streaming::run))
        .route(
            "/portForward/{*target}",
            get(portforward::handle).post(portforward::handle),
        )
        .layer(axum::middleware::from_fn_with_state(
            context.clone(),
            authorize,
        ))
        .with_state(context)
}

/// The kubelet's subresource of `nodes` for a path.
pub fn subresource(path: &str) -> &'static str {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    match first {
        "stats" => "stats",
        "metrics" => "metrics",
        "logs" => "log",
        "spec" => "spec",
        "checkpoint" => "checkpoint",
        "configz" => "configz",
        "healthz" => "healthz",
        _ => "proxy",
    }
}

/// The API verb for an HTTP method, as the kubelet maps it.
pub fn verb(method: &Method) -> &'static str {
    match *method {
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "get",
    }
}

async fn authorize(
    State(context): State<Arc<ApiContext>>,
    request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<PeerCert>()
        .and_then(|p| p.0.clone());
    let user = match peer {
        Some(user) => Some(user),
        None => token_user(&context.client, request.headers()).await,
    };
    let Some(user) = user else {
        return (StatusCode::UNAUTHORIZED, "Unauthorized").into_response();
    };
    let verb = verb(request.method());
    let subresource = subresource(request.uri().path());
    match allowed(&context, &user, verb, subresource).await {
        Ok(true) => next.run(request).await,
        Ok(false) => forbidden(&user, verb, subresource, &context.node_name),
        Err(err) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Authorization error: {err}"),
        )
            .into_response(),
    }
}

fn forbidden(user: &User, verb: &str, subresource: &str, node: &str) -> Response {
    let text = format!(
        "Forbidden (user={}, verb={verb}, resource=nodes, subresource={subresource}, name={node})",
        user.name
    );
    (StatusCode::FORBIDDEN, text).into_response()
}

async fn token_user(client: &Client, headers: &HeaderMap) -> Option<User> {
    let header = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let token = header.strip_prefix("Bearer ")?.trim();
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: token.into(),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<TokenReview> = Api::all(client.clone());
    let answer = api.create(&PostParams::default(), &review).await.ok()?;
    let status = answer.status?;
    if status.authenticated != Some(true) {
        return None;
    }
    let info = status.user?;
    Some(User {
        name: info.username?,
        groups: info.groups.unwrap_or_default(),
        uid: info.uid,
    })
}

async fn allowed(
    context: &ApiContext,
    user: &User,
    verb: &str,
    subresource: &str,
) -> Result<bool, kube::Error> {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.name.clone()),
            groups: Some(user.groups.clone()),
            uid: user.uid.clone(),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                resource: Some("nodes".into()),
                subresource: Some(subresource.into()),
                name: Some(context.node_name.clone()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SubjectAccessReview> = Api::all(context.client.clone());
    let answer = api.create(&PostParams::default(), &review).await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

/// The pods bound to this node, from the agent's own watch (as the kubelet answers from its
/// pod manager, without asking the API server).
async fn pods(State(context): State<Arc<ApiContext>>) -> Response {
    let items: Vec<Pod> = context.pods.state().iter().map(|p| Pod::clone(p)).collect();
    let body =
        serde_json::json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items});
    axum::Json(body).into_response()
}

/// The summary now: the machine's readings (a failed one is left out), the running
/// containers' usage and, `with_disk`, the pods' disk use.
fn take_summary(context: &ApiContext, with_disk: bool) -> Summary {
    let running = context.running.list();
    let disks = match with_disk {
        true => (running.iter())
            .map(|pod| (pod.uid.clone(), PodDisk::read(&context.data_dir, &pod.uid)))
            .collect(),
        false => Default::default(),
    };
    let pods = running.into_iter().map(|pod| {
        let usage = pod.usage.containers();
        (pod, usage)
    });
    let inputs = stats::Inputs {
        node_name: context.node_name.clone(),
        at: Timestamp::now(),
        cpu: ok("CPU time", machine::cpu()),
        memory: ok("memory", machine::memory()),
        machine: ok("machine", machine::read(&context.data_dir)),
        process: ok("agent process", machine::process()),
        pods: pods.collect(),
        disks,
    };
    stats::summary(&inputs, &context.rates)
}

/// A reading, or `None` (logged) when it failed.
fn ok<T>(what: &str, reading: Result<T, machine::Error>) -> Option<T> {
    reading
        .inspect_err(|err| tracing::debug!(%err, "reading the {what} for the stats"))
        .ok()
}

/// The summary with the pods' disk use, read off the async threads (it walks their
/// directories).
async fn stats_summary(State(context): State<Arc<ApiContext>>) -> Response {
    match tokio::task::spawn_blocking(move || take_summary(&context, true)).await {
        Ok(summary) => axum::Json(summary).into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
    }
}

async fn resource_metrics(State(context): State<Arc<ApiContext>>) -> Response {
    prometheus_text(metrics::resource_metrics(&take_summary(&context, false)))
}

async fn agent_metrics(State(context): State<Arc<ApiContext>>) -> Response {
    let pods = context.running.list();
    let counts = metrics::AgentCounts {
        node_name: context.node_name.clone(),
        running_pods: pods.len(),
        running_containers: pods.iter().map(|p| p.usage.containers().len()).sum(),
    };
    prometheus_text(metrics::agent_metrics(
        &counts,
        machine::process().ok().as_ref(),
    ))
}

fn prometheus_text(text: String) -> Response {
    let content_type = "text/plain; version=0.0.4; charset=utf-8";
    ([(axum::http::header::CONTENT_TYPE, content_type)], text).into_response()
}

async fn container_logs(
    State(context): State<Arc<ApiContext>>,
    UrlPath((namespace, pod, container)): UrlPath<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let query = query.unwrap_or_default();
    let pairs: Vec<(String, String)> = url_pairs(&query);
    let options = match LogOptions::from_query(
        pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        Timestamp::now(),
    ) {
        Ok(options) => options,
        Err(err) => return (StatusCode::BAD_REQUEST, err.to_string()).into_response(),
    };
    let watched = Watched {
        store: context.pods.clone(),
        api: Api::namespaced(context.client.clone(), &namespace),
        namespace,
        pod,
    };
    let pod_object = match watched.get().await {
        Ok(pod) => pod,
        Err(err) => {
            let (namespace, pod) = (&watched.namespace, &watched.pod);
            return (
                StatusCode::NOT_FOUND,
                format!("pod {namespace}/{pod}: {err}"),
            )
                .into_response();
        }
    };
    let uid = pod_object.metadata.uid.clone().unwrap_or_default();
    let Ok(pod_dir) = PodDir::new(&context.data_dir, &uid) else {
        return (StatusCode::NOT_FOUND, "pod has no usable uid").into_response();
    };
    if !is_plain(&container) {
        return (StatusCode::BAD_REQUEST, "bad container name").into_response();
    }
    let dir = pod_dir.logs(&container);
    let files = match logs::files(&dir, &container, options.previous) {
        Ok(files) => files,
        Err(err) => return (StatusCode::NOT_FOUND, err.to_string()).into_response(),
    };
    if options.follow && !options.previous {
        return follow(watched, container, files, options).await;
    }
    let text: String = files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .collect();
    Body::from(logs::render(&text, &options)).into_response()
}

fn is_plain(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn url_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A pod a request names: from the node's watch, else the API server.
pub(crate) struct Watched {
    pub(crate) store: PodStore,
    pub(crate) api: Api<Pod>,
    pub(crate) namespace: String,
    pub(crate) pod: String,
}

impl Watched {
    /// The pod as this node's watch knows it (the API server asked only when the watch has
    /// not seen it, as just after the agent started).
    pub(crate) async fn get(&self) -> kube::Result<Arc<Pod>> {
        let key = kube::runtime::reflector::ObjectRef::new(&self.pod).within(&self.namespace);
        match self.store.get(&key) {
            Some(pod) => Ok(pod),
            None => self.api.get(&self.pod).await.map(Arc::new),
        }
    }
}

/// Streams the current log: what is there (after tail/since), then new lines as they are
/// written, until the container is terminated in the pod's status and the file is drained.
async fn follow(
    pod: Watched,
    container: String,
    files: Vec<PathBuf>,
    options: LogOptions,
) -> Response {
    let text: String = files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .collect();
    let first = logs::render(&text, &options);
    let current = files.last().cloned().unwrap_or_default();
    let offset = std::fs::metadata(&current).map_or(0, |m| m.len());
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(16);
    tokio::spawn(async move {
        if sender.send(Ok(first)).await.is_err() {
            return;
        }
        let file = (current.as_path(), offset, options.timestamps);
        tail_file(&pod, &container, file, &sender).await;
    });
    let stream = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    });
    Body::from_stream(stream).into_response()
}

/// Sends the lines written to `path` past `offset` until `container` has terminated.
async fn tail_file(
    pod: &Watched,
    container: &str,
    (path, mut offset, timestamps): (&std::path::Path, u64, bool),
    sender: &tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
) {
    loop {
        let stopped = terminated(pod, container).await;
        let chunk = read_new_lines(path, &mut offset, timestamps);
        if !chunk.is_empty() && sender.send(Ok(chunk)).await.is_err() {
            return;
        }
        if stopped || sender.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn read_new_lines(path: &std::path::Path, offset: &mut u64, timestamps: bool) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut text = Vec::new();
    let Ok(mut file) = std::fs::File::open(path) else {
        return text;
    };
    if file.seek(SeekFrom::Start(*offset)).is_err() || file.read_to_end(&mut text).is_err() {
        return Vec::new();
    }
    let complete = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    *offset += complete as u64;
    let text = String::from_utf8_lossy(&text[..complete]);
    let mut out = Vec::new();
    for entry in text.lines().filter_map(logs::parse_line) {
        logs::write_entry(&mut out, &entry, timestamps);
    }
    out
}

/// Whether `container` has terminated in the pod's status (or the pod is gone).
async fn terminated(pod: &Watched, container: &str) -> bool {
    let Ok(pod) = pod.get().await else {
        return true;
    };
    let Some(status) = &pod.status else {
        return false;
    };
    let statuses = (status.container_statuses.iter().flatten())
        .chain(status.init_container_statuses.iter().flatten());
    statuses.filter(|s| s.name == container).any(|s| {
        s.state
            .as_ref()
            .is_some_and(|state| state.terminated.is_some())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_the_kubelet_subresources() {
        let table = [
            ("/stats/summary", "stats"),
            ("/metrics/resource", "metrics"),
            ("/metrics", "metrics"),
            ("/logs/", "log"),
            ("/containerLogs/ns/p/c", "proxy"),
            ("/pods", "proxy"),
            ("/healthz", "healthz"),
        ];
        for (path, want) in table {
            assert_eq!(subresource(path), want, "{path}");
        }
        assert_eq!(verb(&Method::GET), "get");
        assert_eq!(verb(&Method::POST), "create");
    }

    #[test]
    fn query_decoding() {
        let pairs = url_pairs("sinceTime=2024-01-01T00%3A00%3A00Z&follow&tailLines=3");
        assert_eq!(
            pairs[0],
            ("sinceTime".into(), "2024-01-01T00:00:00Z".into())
        );
        assert_eq!(pairs[1], ("follow".into(), String::new()));
        assert_eq!(percent_decode("%zz+a"), "%zz a");
    }

    #[test]
    fn plain_names_only() {
        assert!(is_plain("abc-123_x.y"));
        assert!(!is_plain("../etc"));
        assert!(!is_plain("a/b"));
        assert!(!is_plain(""));
    }
}
