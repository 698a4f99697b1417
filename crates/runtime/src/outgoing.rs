//! Outgoing `wasi:http` requests of a pod's guest: the host name resolved by the pod's
//! resolver ([`crate::dns`]), the connection made inside the pod's network namespace, then
//! HTTP/1.1 (over TLS for `https`, verified against the Mozilla roots as wasmtime does).
//!
//! The request's timeouts are honoured as wasmtime's own sender honours them: the connect
//! timeout bounds each connection attempt and the TLS and HTTP handshakes, the first-byte
//! timeout the wait for the response head, the between-bytes timeout each wait for more of
//! the body (10 minutes each when the guest gives none). The addresses of a name are tried
//! in order until one connects.

use std::future::{Future, poll_fn};
use std::net::{IpAddr, SocketAddr};
use std::pin::{Pin, pin};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use wasmlet_netns::NetNs;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

use crate::dns::{LookupError, PodResolver};

/// What the hook hands back: the response and the future that drives the connection.
pub(crate) type Sent = wasmtime_wasi_http::Result<(
    hyper::Response<WasiBody>,
    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
)>;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

trait Stream: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static> Stream for T {}

struct Timeouts {
    connect: Duration,
    first_byte: Duration,
    between_bytes: Duration,
}

impl Timeouts {
    fn of(options: Option<RequestOptions>) -> Timeouts {
        let pick = |t: Option<Duration>| t.unwrap_or(DEFAULT_TIMEOUT).max(Duration::new(0, 1));
        Timeouts {
            connect: pick(options.and_then(|o| o.connect_timeout)),
            first_byte: pick(options.and_then(|o| o.first_byte_timeout)),
            between_bytes: pick(options.and_then(|o| o.between_bytes_timeout)),
        }
    }
}

/// Sends `request` as the pod: its host resolved by `resolver`, connected from `namespace`.
pub(crate) async fn send(
    mut request: hyper::Request<WasiBody>,
    options: Option<RequestOptions>,
    resolver: Arc<PodResolver>,
    namespace: Option<Arc<NetNs>>,
) -> Sent {
    let timeouts = Timeouts::of(options);
    let uri = request.uri();
    let use_tls = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
    let authority = uri.authority().ok_or(Error::HttpRequestUriInvalid)?;
    let host = authority.host().to_owned();
    let port = authority
        .port_u16()
        .unwrap_or(if use_tls { 443 } else { 80 });
    let ips = resolver.lookup(&host).await.map_err(dns_error)?;
    let tcp = connect(&ips, port, namespace.as_deref(), timeouts.connect).await?;
    let stream: Box<dyn Stream> = match use_tls {
        true => Box::new(tls(tcp, &host, timeouts.connect).await?),
        false => Box::new(tcp),
    };
    let handshake = hyper::client::conn::http1::Builder::new().handshake(TokioIo::new(stream));
    let (mut sender, conn) = tokio::time::timeout(timeouts.connect, handshake)
        .await
        .map_err(|_| Error::ConnectionTimeout)??;
    // The request line carries the path only: scheme and authority are for proxies.
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    *request.uri_mut() = http::Uri::builder()
        .path_and_query(path)
        .build()
        .map_err(|_| Error::HttpRequestUriInvalid)?;
    let send = async move {
        let response = tokio::time::timeout(timeouts.first_byte, sender.send_request(request))
            .await
            .map_err(|_| Error::ConnectionReadTimeout)??;
        Ok::<_, Error>(
            response
                .map(|incoming| TimedBody::new(incoming, timeouts.between_bytes).boxed_unsync()),
        )
    };
    drive(send, conn).await
}

/// Waits for the response while driving the connection's I/O; hands back what is left of the
/// connection (the body's transfer) as the future wasmtime awaits.
async fn drive<S, C>(send: S, conn: C) -> Sent
where
    S: Future<Output = wasmtime_wasi_http::Result<hyper::Response<WasiBody>>>,
    C: Future<Output = hyper::Result<()>> + Send + Unpin + 'static,
{
    let mut send = pin!(send);
    let mut conn = Some(conn);
    let response = poll_fn(|cx| {
        if let Poll::Ready(result) = send.as_mut().poll(cx) {
            return Poll::Ready(result);
        }
        let Some(io) = conn.as_mut() else {
            return Poll::Pending;
        };
        let ended = ready!(Pin::new(io).poll(cx));
        conn = None;
        match ended {
            Ok(()) => send.as_mut().poll(cx),
            Err(err) => Poll::Ready(Err(Error::from(err))),
        }
    })
    .await?;
    let rest = async move {
        match conn {
            None => Ok(()),
            Some(io) => io.await.map_err(|err| match err.is_timeout() {
                true => Error::HttpResponseTimeout,
                false => Error::from(err),
            }),
        }
    };
    Ok((response, Box::new(rest)))
}

/// A TCP connection to the first of `ips` that answers on `port`, its socket made inside
/// `namespace`.
async fn connect(
    ips: &[IpAddr],
    port: u16,
    namespace: Option<&NetNs>,
    timeout: Duration,
) -> wasmtime_wasi_http::Result<tokio::net::TcpStream> {
    let mut last = Error::ConnectionRefused;
    for ip in ips {
        let addr = SocketAddr::new(*ip, port);
        let socket = match new_socket(addr, namespace) {
            Ok(socket) => socket,
            Err(err) => {
                last = Error::Connect(err);
                continue;
            }
        };
        match tokio::time::timeout(timeout, socket.connect(addr)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(err)) => last = connect_error(err),
            Err(_) => last = Error::ConnectionTimeout,
        }
    }
    Err(last)
}

fn new_socket(
    addr: SocketAddr,
    namespace: Option<&NetNs>,
) -> std::io::Result<tokio::net::TcpSocket> {
    let make = || match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    };
    match namespace {
        None => make(),
        Some(ns) => ns.within(make).map_err(std::io::Error::other)?,
    }
}

fn connect_error(err: std::io::Error) -> Error {
    match err.kind() {
        std::io::ErrorKind::ConnectionRefused => Error::ConnectionRefused,
        std::io::ErrorKind::TimedOut => Error::ConnectionTimeout,
        _ => Error::Connect(err),
    }
}

async fn tls(
    tcp: tokio::net::TcpStream,
    host: &str,
    timeout: Duration,
) -> wasmtime_wasi_http::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let name = match host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        Ok(ip) => rustls::pki_types::ServerName::from(ip),
        Err(_) => rustls::pki_types::ServerName::try_from(host.to_owned())
            .map_err(|_| Error::HttpRequestUriInvalid)?,
    };
    let connector = tokio_rustls::TlsConnector::from(tls_config());
    match tokio::time::timeout(timeout, connector.connect(name, tcp)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(err)) => Err(Error::Tls(err)),
        Err(_) => Err(Error::ConnectionTimeout),
    }
}

/// One client configuration for every request: the Mozilla roots, no client certificate.
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.into(),
            };
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

/// A failed name lookup as `wasi:http` reports it.
fn dns_error(err: LookupError) -> Error {
    tracing::debug!("an outgoing request's host name: {err}");
    match err {
        LookupError::InvalidName(_) => Error::HttpRequestUriInvalid,
        LookupError::NotFound(_) => Error::DnsError {
            rcode: Some("NXDOMAIN".into()),
            info_code: None,
        },
        LookupError::Unavailable { .. } => Error::DnsTimeout,
        LookupError::Failed { reason, .. } => Error::DnsError {
            rcode: Some(reason),
            info_code: None,
        },
    }
}

/// A response body that fails when no frame arrives within the between-bytes timeout.
struct TimedBody {
    incoming: Incoming,
    timeout: tokio::time::Interval,
}

impl TimedBody {
    fn new(incoming: Incoming, between_bytes: Duration) -> TimedBody {
        let mut timeout = tokio::time::interval(between_bytes);
        timeout.reset();
        TimedBody { incoming, timeout }
    }
}

impl http_body::Body for TimedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Error>>> {
        match Pin::new(&mut self.incoming).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                self.timeout.reset();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) if err.is_timeout() => {
                Poll::Ready(Some(Err(Error::HttpResponseTimeout)))
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(Error::from(err)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                ready!(self.timeout.poll_tick(cx));
                Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.incoming.size_hint()
    }
}
