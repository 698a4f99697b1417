//! `/portForward/{namespace}/{pod}[/{uid}]`: what `kubectl port-forward` reaches through the
//! API server, served as the kubelet's streaming server serves it.
//!
//! The API server upgrades the request to SPDY/3.1 (`X-Stream-Protocol-Version:
//! portforward.k8s.io`; a kubectl speaking WebSockets to the API server is tunnelled to the
//! same SPDY here). For each local connection the client opens two streams with the same
//! `requestID`: `streamType: error` and `streamType: data`, both naming the pod's `port`. Once
//! both are there, the agent dials the pod on that port and copies bytes both ways; a failure
//! is written on the error stream as the kubelet's JSON (`{"closeConnection":...,"message":
//! "error forwarding port P to pod NAME, uid UID: ..."}`), which kubectl prints.
//!
//! Bounds: frames and header blocks as in [`crate::api::spdy`]; a connection with no frame for
//! [`IDLE`] is closed (the kubelet's `--streaming-connection-idle-timeout` default); writes to
//! the API server give up after [`WRITE_DEADLINE`]; a pod that does not accept within
//! [`DIAL_TIMEOUT`] gets the error.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use kube::api::Api;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::api::server::{ApiContext, Watched};
use crate::api::spdy::{self, Frame, HeaderCodec};

/// A session with no frame for this long is closed.
pub const IDLE: Duration = Duration::from_secs(4 * 60 * 60);
/// A write to the API server that does not finish in this long ends the session.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(60);
/// How long the pod has to accept a forwarded connection.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// The subprotocol spoken on the streams.
const PROTOCOL: &str = "portforward.k8s.io";
/// Bytes read from the pod per data frame.
const CHUNK: usize = 32 << 10;

/// The pod a session forwards to.
#[derive(Clone, Debug)]
struct Target {
    pod: String,
    uid: String,
    ip: IpAddr,
}

/// What the session's writer sends to the API server.
enum Out {
    /// Accept a stream.
    Reply(u32),
    /// Refuse a stream.
    Refuse(u32),
    /// A frame already encoded.
    Frame(Vec<u8>),
}

/// Serves `/portForward/...`: checks the pod and the upgrade, answers 101, then runs the
/// session on the upgraded connection.
pub(crate) async fn handle(
    State(context): State<Arc<ApiContext>>,
    UrlPath(rest): UrlPath<String>,
    mut request: Request,
) -> Response {
    let target = match target(&context, &rest).await {
        Ok(target) => target,
        Err((code, message)) => return (code, message).into_response(),
    };
    if let Err(message) = check_upgrade(request.headers()) {
        return (StatusCode::BAD_REQUEST, message).into_response();
    }
    let offered = offered_protocols(request.headers());
    if !offered.is_empty() && !offered.iter().any(|p| p == PROTOCOL) {
        let message = format!(
            "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts [\"{PROTOCOL}\"]"
        );
        return (StatusCode::FORBIDDEN, message).into_response();
    }
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => session(TokioIo::new(upgraded), target).await,
            Err(err) => tracing::debug!(%err, "port-forward upgrade"),
        }
    });
    switching_protocols(!offered.is_empty())
}

/// The pod named by `NAMESPACE/POD[/UID]`, if it is this node's and has an IP.
async fn target(context: &ApiContext, rest: &str) -> Result<Target, (StatusCode, String)> {
    let not_found = |m: &str| (StatusCode::NOT_FOUND, m.to_string());
    let parts: Vec<&str> = rest.split('/').collect();
    let (namespace, pod) = match parts.as_slice() {
        [ns, pod] | [ns, pod, _] if !ns.is_empty() && !pod.is_empty() => (*ns, *pod),
        _ => return Err(not_found("expected /portForward/NAMESPACE/POD[/UID]")),
    };
    let watched = Watched {
        store: context.pods.clone(),
        api: Api::namespaced(context.client.clone(), namespace),
        namespace: namespace.to_string(),
        pod: pod.to_string(),
    };
    let object = watched
        .get()
        .await
        .map_err(|_| not_found("pod does not exist"))?;
    let spec = object.spec.as_ref();
    if spec.and_then(|s| s.node_name.as_deref()) != Some(context.node_name.as_str()) {
        return Err(not_found("pod does not exist"));
    }
    let ip = object
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .and_then(|ip| ip.parse().ok())
        .ok_or_else(|| {
            (
                StatusCode::BAD_REQUEST,
                format!("pod {pod} has no IP yet: it is not running"),
            )
        })?;
    Ok(Target {
        pod: pod.to_string(),
        uid: object.metadata.uid.clone().unwrap_or_default(),
        ip,
    })
}

fn check_upgrade(headers: &HeaderMap) -> Result<(), String> {
    let has = |name: &str, want: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .unwrap_or_default()
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(want))
        })
    };
    match has("connection", "upgrade") && has("upgrade", "SPDY/3.1") {
        true => Ok(()),
        false => Err("unable to upgrade: missing upgrade headers in request".into()),
    }
}

fn offered_protocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all("x-stream-protocol-version")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

fn switching_protocols(negotiated: bool) -> Response {
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert("connection", HeaderValue::from_static("Upgrade"));
    headers.insert("upgrade", HeaderValue::from_static("SPDY/3.1"));
    if negotiated {
        headers.insert(
            "x-stream-protocol-version",
            HeaderValue::from_static(PROTOCOL),
        );
    }
    response
}

/// A pair of streams being assembled for one forwarded connection.
#[derive(Default)]
struct Pair {
    port: u16,
    data: Option<(u32, mpsc::Receiver<Vec<u8>>)>,
    error: Option<u32>,
}

/// One SPDY session: reads frames until the API server closes it, is idle for [`IDLE`], or
/// breaks; each complete pair of streams is forwarded by a task of its own.
async fn session<Io>(io: Io, target: Target)
where
    Io: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, writer) = tokio::io::split(io);
    let (out, outbox) = mpsc::channel::<Out>(64);
    let writer = tokio::spawn(write_loop(writer, outbox));
    let mut codec = HeaderCodec::default();
    let mut streams = SessionStreams {
        target,
        out,
        inbound: HashMap::new(),
        pairs: HashMap::new(),
    };
    loop {
        let read = tokio::time::timeout(IDLE, spdy::read_frame(&mut reader, &mut codec)).await;
        let frame = match read {
            Ok(Ok(frame)) => frame,
            Ok(Err(err)) => {
                tracing::debug!(pod = %streams.target.pod, %err, "port-forward session ends");
                break;
            }
            Err(_) => break,
        };
        if !streams.on_frame(frame).await {
            break;
        }
    }
    drop(streams);
    let _ = writer.await;
}

/// The streams of a session: where each data stream's bytes go, and the pairs not yet
/// complete.
struct SessionStreams {
    target: Target,
    out: mpsc::Sender<Out>,
    inbound: HashMap<u32, mpsc::Sender<Vec<u8>>>,
    pairs: HashMap<String, Pair>,
}

impl SessionStreams {
    /// Handles one frame; false when the session is over.
    async fn on_frame(&mut self, frame: Frame) -> bool {
        match frame {
            Frame::SynStream {
                stream_id, headers, ..
            } => self.on_new_stream(stream_id, &headers).await,
            Frame::Data {
                stream_id,
                data,
                fin,
            } => self.on_data(stream_id, data, fin).await,
            Frame::RstStream { stream_id } => {
                self.inbound.remove(&stream_id);
            }
            Frame::Ping { id } => {
                let _ = self.out.send(Out::Frame(spdy::ping(id))).await;
            }
            Frame::GoAway => return false,
            Frame::Other => {}
        }
        true
    }

    /// Accepts (or refuses) a stream and starts forwarding once its pair is complete.
    async fn on_new_stream(&mut self, stream_id: u32, headers: &[(String, String)]) {
        let (kind, port, request) = match stream_kind(stream_id, headers) {
            Ok(found) => found,
            Err(reason) => {
                tracing::debug!(pod = %self.target.pod, stream_id, reason, "port-forward stream refused");
                let _ = self.out.send(Out::Refuse(stream_id)).await;
                return;
            }
        };
        let _ = self.out.send(Out::Reply(stream_id)).await;
        let pair = self.pairs.entry(request.clone()).or_default();
        pair.port = port;
        match kind {
            Kind::Data => {
                let (tx, rx) = mpsc::channel(64);
                self.inbound.insert(stream_id, tx);
                pair.data = Some((stream_id, rx));
            }
            Kind::Error => pair.error = Some(stream_id),
        }
        if pair.data.is_some() && pair.error.is_some() {
            let pair = self.pairs.remove(&request).unwrap_or_default();
            start_forward(pair, &self.target, &self.out);
        }
    }

    /// Passes a data stream's bytes on; its FIN (or a forward that is gone) ends it.
    async fn on_data(&mut self, stream_id: u32, data: Vec<u8>, fin: bool) {
        if let Some(tx) = self.inbound.get(&stream_id)
            && !data.is_empty()
            && tx.send(data).await.is_err()
        {
            self.inbound.remove(&stream_id);
        }
        if fin {
            self.inbound.remove(&stream_id);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Data,
    Error,
}

/// A stream's type, port and request ID, checked as the kubelet checks them.
fn stream_kind(
    stream_id: u32,
    headers: &[(String, String)],
) -> Result<(Kind, u16, String), String> {
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let port = get("port").ok_or("\"port\" header is required")?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("unable to parse {port:?} as a port"))?;
    let kind = match get("streamtype") {
        Some("data") => Kind::Data,
        Some("error") => Kind::Error,
        Some(other) => return Err(format!("invalid stream type {other:?}")),
        None => return Err("\"streamType\" header is required".into()),
    };
    // Clients before request IDs sent the error stream, then the data stream two IDs later.
    let request = match (get("requestid"), kind) {
        (Some(id), _) => id.to_string(),
        (None, Kind::Error) => stream_id.to_string(),
        (None, Kind::Data) => stream_id.saturating_sub(2).to_string(),
    };
    Ok((kind, port, request))
}

fn start_forward(pair: Pair, target: &Target, out: &mpsc::Sender<Out>) {
    let (Some((data, inbound)), Some(error)) = (pair.data, pair.error) else {
        return;
    };
    let streams = Streams {
        data,
        error,
        out: out.clone(),
    };
    tokio::spawn(forward(target.clone(), pair.port, inbound, streams));
}

/// The two streams of one forwarded connection, and the way to the API server.
struct Streams {
    data: u32,
    error: u32,
    out: mpsc::Sender<Out>,
}

impl Streams {
    async fn send(&self, frame: Vec<u8>) -> bool {
        self.out.send(Out::Frame(frame)).await.is_ok()
    }

    /// Ends both streams (FIN), as the kubelet closes them when a forward is done.
    async fn close(&self) {
        self.send(spdy::data(self.data, &[], true)).await;
        self.send(spdy::data(self.error, &[], true)).await;
    }
}

/// Dials the pod and copies both ways until either side is done.
async fn forward(
    target: Target,
    port: u16,
    mut inbound: mpsc::Receiver<Vec<u8>>,
    streams: Streams,
) {
    let addr = SocketAddr::new(target.ip, port);
    let conn = match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(err)) => {
            return fail(&target, port, &format!("dial tcp {addr}: {err}"), &streams).await;
        }
        Err(_) => {
            return fail(
                &target,
                port,
                &format!("dial tcp {addr}: i/o timeout"),
                &streams,
            )
            .await;
        }
    };
    let (mut from_pod, mut to_pod) = conn.into_split();
    let upstream = async {
        while let Some(bytes) = inbound.recv().await {
            if to_pod.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = to_pod.shutdown().await;
    };
    let downstream = async {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match tokio::time::timeout(IDLE, from_pod.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => {
                    if !streams
                        .send(spdy::data(streams.data, &buf[..n], false))
                        .await
                    {
                        return;
                    }
                }
                _ => return,
            }
        }
    };
    tokio::join!(upstream, downstream);
    streams.close().await;
}

/// Writes the kubelet's error answer on the error stream, then closes both streams.
async fn fail(target: &Target, port: u16, reason: &str, streams: &Streams) {
    let message = format!(
        "error forwarding port {port} to pod {}, uid {}: {reason}",
        target.pod, target.uid
    );
    let body = serde_json::json!({"closeConnection": true, "message": message});
    let mut bytes = body.to_string().into_bytes();
    bytes.push(b'\n');
    streams.send(spdy::data(streams.error, &bytes, false)).await;
    streams.close().await;
}

/// Encodes and writes what the session sends, in order (header blocks share one zlib
/// stream, so the order of encoding is the order on the wire); a GOAWAY at the end.
async fn write_loop(mut writer: impl AsyncWrite + Unpin, mut outbox: mpsc::Receiver<Out>) {
    let mut codec = HeaderCodec::default();
    let mut last_stream = 0;
    while let Some(out) = outbox.recv().await {
        let frame = match out {
            Out::Reply(id) => {
                last_stream = last_stream.max(id);
                spdy::syn_reply(id, &mut codec)
            }
            Out::Refuse(id) => spdy::rst_stream(id, 1),
            Out::Frame(frame) => frame,
        };
        match tokio::time::timeout(WRITE_DEADLINE, writer.write_all(&frame)).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
    let _ = tokio::time::timeout(WRITE_DEADLINE, async {
        let _ = writer.write_all(&spdy::go_away(last_stream)).await;
        let _ = writer.shutdown().await;
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn streams_are_checked_as_the_kubelet_checks_them() {
        let ok = headers(&[("streamtype", "data"), ("port", "8080"), ("requestid", "7")]);
        assert_eq!(stream_kind(3, &ok), Ok((Kind::Data, 8080, "7".into())));
        let legacy = headers(&[("streamtype", "data"), ("port", "80")]);
        assert_eq!(stream_kind(3, &legacy), Ok((Kind::Data, 80, "1".into())));
        let legacy = headers(&[("streamtype", "error"), ("port", "80")]);
        assert_eq!(stream_kind(1, &legacy), Ok((Kind::Error, 80, "1".into())));
        for (bad, want) in [
            (
                headers(&[("streamtype", "data")]),
                "\"port\" header is required",
            ),
            (
                headers(&[("streamtype", "data"), ("port", "0")]),
                "as a port",
            ),
            (
                headers(&[("streamtype", "data"), ("port", "70000")]),
                "as a port",
            ),
            (
                headers(&[("streamtype", "stdin"), ("port", "1")]),
                "invalid stream type",
            ),
            (
                headers(&[("port", "1")]),
                "\"streamType\" header is required",
            ),
        ] {
            let err = stream_kind(1, &bad).unwrap_err();
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn only_spdy_upgrades_with_our_protocol_are_taken() {
        let mut h = HeaderMap::new();
        assert!(check_upgrade(&h).is_err());
        h.insert("connection", HeaderValue::from_static("Upgrade"));
        h.insert("upgrade", HeaderValue::from_static("SPDY/3.1"));
        assert!(check_upgrade(&h).is_ok());
        h.insert(
            "x-stream-protocol-version",
            HeaderValue::from_static("portforward.k8s.io, v4.channel.k8s.io"),
        );
        assert_eq!(
            offered_protocols(&h),
            vec!["portforward.k8s.io", "v4.channel.k8s.io"]
        );
    }
}
