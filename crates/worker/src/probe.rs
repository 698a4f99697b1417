//! Container probes (`startupProbe`, `livenessProbe`, `readinessProbe`) as the kubelet runs
//! them, for `httpGet` and `tcpSocket` probes.
//!
//! Each probe of a container's run is a tokio task that waits `initialDelaySeconds`, then
//! checks every `periodSeconds` (each check bounded by `timeoutSeconds`) and sends every
//! result to the worker as a [`ProbeReport`]. The worker feeds them to the run's [`Probing`],
//! which counts consecutive results against `successThreshold` and `failureThreshold`:
//! - startup: until it succeeds the other probes do not run and the container is neither
//!   started nor ready; once it succeeds it stops; failing kills the container.
//! - liveness: failing kills the container (restarted under the pod's `restartPolicy`).
//! - readiness: decides whether the container is ready (not ready until it first succeeds).
//!
//! `httpGet` succeeds on a status from 200 to 399 (redirects are not followed: a 3xx is a
//! success) and only speaks `HTTP`; `tcpSocket` succeeds when the connection is accepted.
//! `exec` and `grpc` probes cannot run (a wasm container has no processes to exec into and
//! no gRPC health service is served): such a probe, or one whose port cannot be found, is
//! never run and reported once as errored. An errored startup probe keeps the container from
//! ever being started, an errored readiness probe from ever being ready (it cannot succeed),
//! and an errored liveness probe never kills (it says nothing about liveness).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::MissedTickBehavior;
use wasmlet_pod::k8s_openapi::api::core::v1::{Container, HTTPGetAction, Probe};
use wasmlet_pod::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::net::{go_error, join_host_port};

/// The `User-Agent` of HTTP probes: the kubelet's, for the Kubernetes version whose API
/// wasmlet serves (applications match its `kube-probe/` prefix).
pub const PROBE_USER_AGENT: &str = "kube-probe/1.37";

/// Which probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProbeKind {
    Startup,
    Liveness,
    Readiness,
}

impl ProbeKind {
    const ALL: [ProbeKind; 3] = [
        ProbeKind::Startup,
        ProbeKind::Liveness,
        ProbeKind::Readiness,
    ];

    /// As the kubelet names it in messages: `Startup`, `Liveness`, `Readiness`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
        }
    }

    fn of(self, container: &Container) -> Option<&Probe> {
        match self {
            ProbeKind::Startup => container.startup_probe.as_ref(),
            ProbeKind::Liveness => container.liveness_probe.as_ref(),
            ProbeKind::Readiness => container.readiness_probe.as_ref(),
        }
    }
}

/// One check's result, sent by a probe task to the worker.
#[derive(Debug)]
pub(crate) struct ProbeReport {
    /// The container's record.
    pub(crate) index: usize,
    /// The container's run.
    pub(crate) run: u64,
    /// Which probe.
    pub(crate) kind: ProbeKind,
    /// Success, or the failure's output (e.g. `HTTP probe failed with statuscode: 500`).
    pub(crate) outcome: Result<(), String>,
}

/// What a probe checks.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Check {
    /// `GET http://host:port/path` with these headers.
    Http {
        host: String,
        port: u16,
        path: String,
        headers: Vec<(String, String)>,
    },
    /// A TCP connection to `host:port`.
    Tcp { host: String, port: u16 },
}

/// A runnable probe with the kubelet's defaults applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProbeSpec {
    check: Check,
    initial_delay: Duration,
    period: Duration,
    timeout: Duration,
    success_threshold: u32,
    failure_threshold: u32,
    /// The probe's `terminationGracePeriodSeconds`, for a kill it causes.
    grace: Option<i64>,
}

/// A probe planned from the container spec: runnable, or why it cannot run.
type Planned = Result<ProbeSpec, String>;

/// Plans a probe of `container`, whose pod's IP is `pod_ip`.
fn plan(probe: &Probe, container: &Container, pod_ip: &str) -> Planned {
    let seconds = |value: Option<i32>, default: u64| {
        let value = value.and_then(|v| u64::try_from(v).ok()).filter(|v| *v > 0);
        Duration::from_secs(value.unwrap_or(default))
    };
    let threshold = |value: Option<i32>, default: u32| {
        let value = value.and_then(|v| u32::try_from(v).ok()).filter(|v| *v > 0);
        value.unwrap_or(default)
    };
    Ok(ProbeSpec {
        check: check(probe, container, pod_ip)?,
        initial_delay: seconds(probe.initial_delay_seconds, 0),
        period: seconds(probe.period_seconds, 10),
        timeout: seconds(probe.timeout_seconds, 1),
        success_threshold: threshold(probe.success_threshold, 1),
        failure_threshold: threshold(probe.failure_threshold, 3),
        grace: probe.termination_grace_period_seconds,
    })
}

fn check(probe: &Probe, container: &Container, pod_ip: &str) -> Result<Check, String> {
    let host = |given: &Option<String>| {
        given
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| pod_ip.to_owned())
    };
    if let Some(get) = &probe.http_get {
        return http_check(get, container, host(&get.host));
    }
    if let Some(tcp) = &probe.tcp_socket {
        let port = port(&tcp.port, container)?;
        let host = host(&tcp.host);
        return Ok(Check::Tcp { host, port });
    }
    let kind = match (&probe.exec, &probe.grpc) {
        (Some(_), _) => "exec",
        (None, Some(_)) => "grpc",
        (None, None) => return Err("the probe has no handler (httpGet or tcpSocket)".into()),
    };
    Err(format!(
        "{kind} probes are not supported for wasm containers; use httpGet or tcpSocket"
    ))
}

fn http_check(get: &HTTPGetAction, container: &Container, host: String) -> Result<Check, String> {
    if let Some(scheme) = get
        .scheme
        .as_deref()
        .filter(|s| !s.eq_ignore_ascii_case("HTTP"))
    {
        return Err(format!(
            "httpGet scheme {scheme} is not supported: wasmlet probes speak plain HTTP"
        ));
    }
    let path = get.path.clone().unwrap_or_default();
    let path = match path.starts_with('/') {
        true => path,
        false => format!("/{path}"),
    };
    let headers = get.http_headers.iter().flatten();
    Ok(Check::Http {
        host,
        port: port(&get.port, container)?,
        path,
        headers: headers.map(|h| (h.name.clone(), h.value.clone())).collect(),
    })
}

/// A probe's port: a number, or the name of one of the container's ports.
fn port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    let number = match port {
        IntOrString::Int(number) => *number,
        IntOrString::String(name) => {
            let ports = container.ports.iter().flatten();
            let named = ports.into_iter().find(|p| p.name.as_deref() == Some(name));
            match (named, name.parse::<i32>()) {
                (Some(p), _) => p.container_port,
                (None, Ok(number)) => number,
                (None, Err(_)) => {
                    return Err(format!(
                        "couldn't find port \"{name}\" in the container's ports"
                    ));
                }
            }
        }
    };
    u16::try_from(number)
        .ok()
        .filter(|n| *n != 0)
        .ok_or_else(|| format!("invalid port number: {number}"))
}

impl Check {
    /// One check within `timeout`.
    async fn run(&self, timeout: Duration) -> Result<(), String> {
        let attempt = async {
            match self {
                Check::Http {
                    host,
                    port,
                    path,
                    headers,
                } => http_get(host, *port, path, headers).await,
                Check::Tcp { host, port } => tcp_connect(host, *port).await.map(drop),
            }
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(outcome) => outcome,
            Err(_) => Err(self.timed_out()),
        }
    }

    fn timed_out(&self) -> String {
        match self {
            Check::Http {
                host, port, path, ..
            } => format!(
                "Get \"{}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)",
                url(host, *port, path)
            ),
            Check::Tcp { host, port } => {
                format!("dial tcp {}: i/o timeout", join_host_port(host, *port))
            }
        }
    }
}

fn url(host: &str, port: u16, path: &str) -> String {
    format!("http://{}{path}", join_host_port(host, port))
}

async fn tcp_connect(host: &str, port: u16) -> Result<TcpStream, String> {
    TcpStream::connect((host, port)).await.map_err(|e| {
        let addr = join_host_port(host, port);
        format!("dial tcp {addr}: {}", go_error("connect", &e))
    })
}

/// `GET` over one HTTP/1.1 connection; success on 200..=399.
async fn http_get(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
) -> Result<(), String> {
    let failed = |detail: String| format!("Get \"{}\": {detail}", url(host, port, path));
    let stream = tcp_connect(host, port).await.map_err(failed)?;
    let request = request(path, &join_host_port(host, port), headers).map_err(failed)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| failed(e.to_string()))?;
    let exchange = async move {
        let response = sender.send_request(request).await;
        response.map(|r| r.status().as_u16())
    };
    let (status, _) = tokio::join!(exchange, conn);
    let status = status.map_err(|e| failed(e.to_string()))?;
    match status {
        200..=399 => Ok(()),
        _ => Err(format!("HTTP probe failed with statuscode: {status}")),
    }
}

/// The probe's request: the probe's headers, then the kubelet's defaults for those it does
/// not set (`Host`, `User-Agent`, `Accept: */*`), and `Connection: close`.
fn request(
    path: &str,
    authority: &str,
    headers: &[(String, String)],
) -> Result<hyper::Request<Empty<Bytes>>, String> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| format!("invalid header name {name:?}: {e}"))?;
        let value = HeaderValue::from_str(value)
            .map_err(|e| format!("invalid value of header {name}: {e}"))?;
        map.append(name, value);
    }
    let host = HeaderValue::from_str(authority).map_err(|e| e.to_string())?;
    map.entry(header::HOST).or_insert(host);
    let agent = HeaderValue::from_static(PROBE_USER_AGENT);
    map.entry(header::USER_AGENT).or_insert(agent);
    map.entry(header::ACCEPT)
        .or_insert(HeaderValue::from_static("*/*"));
    map.insert(header::CONNECTION, HeaderValue::from_static("close"));
    let mut request = hyper::Request::get(path)
        .body(Empty::new())
        .map_err(|e| format!("invalid path {path:?}: {e}"))?;
    *request.headers_mut() = map;
    Ok(request)
}

/// Consecutive results of one probe.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Tally {
    last: Option<bool>,
    run: u32,
}

impl Tally {
    /// Counts a result; the probe's result once its run reaches its threshold.
    fn observe(
        &mut self,
        ok: bool,
        success_threshold: u32,
        failure_threshold: u32,
    ) -> Option<bool> {
        if self.last == Some(ok) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(ok);
            self.run = 1;
        }
        let threshold = if ok {
            success_threshold
        } else {
            failure_threshold
        };
        (self.run >= threshold).then_some(ok)
    }
}

/// Where probe tasks send their reports, and what they are about.
#[derive(Clone)]
pub(crate) struct ReportTo {
    /// The worker's channel.
    pub(crate) reports: mpsc::UnboundedSender<ProbeReport>,
    /// The container's record.
    pub(crate) index: usize,
    /// The container's run.
    pub(crate) run: u64,
}

/// What a probe result asks of the worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing (the facts may have changed: ready, started).
    Keep,
    /// Kill the container: it failed this probe (liveness or startup).
    Kill,
}

/// The probing of one container run. Dropping it stops its probe tasks.
pub(crate) struct Probing {
    report_to: ReportTo,
    planned: [Option<Planned>; 3],
    tallies: [Tally; 3],
    started: bool,
    ready: bool,
    /// A kill was asked for: liveness and startup results no longer count.
    held: bool,
    tasks: Vec<(ProbeKind, AbortHandle)>,
}

impl Probing {
    /// Starts probing a run of `container`: its startup probe, else its other probes.
    pub(crate) fn start(container: &Container, pod_ip: &str, report_to: ReportTo) -> Probing {
        let planned = ProbeKind::ALL.map(|k| k.of(container).map(|p| plan(p, container, pod_ip)));
        let mut probing = Probing {
            report_to,
            started: planned[ProbeKind::Startup as usize].is_none(),
            ready: planned[ProbeKind::Readiness as usize].is_none(),
            planned,
            tallies: [Tally::default(); 3],
            held: false,
            tasks: Vec::new(),
        };
        match probing.started {
            true => probing.spawn_after_startup(),
            false => probing.spawn(ProbeKind::Startup),
        }
        probing
    }

    /// The probes that cannot run, with why.
    pub(crate) fn errors(&self) -> impl Iterator<Item = (ProbeKind, &str)> {
        ProbeKind::ALL
            .into_iter()
            .filter_map(|kind| match &self.planned[kind as usize] {
                Some(Err(error)) => Some((kind, error.as_str())),
                _ => None,
            })
    }

    /// Whether the container is ready: started, and its readiness probe (if any) succeeded.
    pub(crate) fn ready(&self) -> bool {
        self.started && self.ready
    }

    /// Whether it started: `None` without a startup probe.
    pub(crate) fn started(&self) -> Option<bool> {
        self.planned[ProbeKind::Startup as usize]
            .is_some()
            .then_some(self.started)
    }

    /// Whether a report of `kind` still counts (not a startup probe done with, nor a
    /// liveness or startup probe after the kill it asked for).
    pub(crate) fn expects(&self, kind: ProbeKind) -> bool {
        match kind {
            ProbeKind::Readiness => true,
            ProbeKind::Liveness => !self.held,
            ProbeKind::Startup => !self.held && !self.started,
        }
    }

    /// The probe's own grace period for the kill it asks for.
    pub(crate) fn grace(&self, kind: ProbeKind) -> Option<i64> {
        match &self.planned[kind as usize] {
            Some(Ok(spec)) => spec.grace,
            _ => None,
        }
    }

    /// Counts one result of a probe of `kind`.
    pub(crate) fn observe(&mut self, kind: ProbeKind, ok: bool) -> Verdict {
        let Some(Ok(spec)) = &self.planned[kind as usize] else {
            return Verdict::Keep;
        };
        if !self.expects(kind) {
            return Verdict::Keep;
        }
        let (success, failure) = (spec.success_threshold, spec.failure_threshold);
        match (
            kind,
            self.tallies[kind as usize].observe(ok, success, failure),
        ) {
            (_, None) | (ProbeKind::Liveness, Some(true)) => Verdict::Keep,
            (ProbeKind::Readiness, Some(ready)) => {
                self.ready = ready;
                Verdict::Keep
            }
            (ProbeKind::Startup, Some(true)) => {
                self.started = true;
                self.stop(ProbeKind::Startup);
                self.spawn_after_startup();
                Verdict::Keep
            }
            (ProbeKind::Liveness | ProbeKind::Startup, Some(false)) => {
                self.held = true;
                Verdict::Kill
            }
        }
    }

    fn spawn_after_startup(&mut self) {
        self.spawn(ProbeKind::Liveness);
        self.spawn(ProbeKind::Readiness);
    }

    fn spawn(&mut self, kind: ProbeKind) {
        if let Some(Ok(spec)) = &self.planned[kind as usize] {
            let task = tokio::spawn(probe_loop(spec.clone(), kind, self.report_to.clone()));
            self.tasks.push((kind, task.abort_handle()));
        }
    }

    fn stop(&mut self, kind: ProbeKind) {
        for (_, task) in self.tasks.iter().filter(|(k, _)| *k == kind) {
            task.abort();
        }
        self.tasks.retain(|(k, _)| *k != kind);
    }
}

impl Drop for Probing {
    fn drop(&mut self) {
        for (_, task) in &self.tasks {
            task.abort();
        }
    }
}

/// Checks after the initial delay, then every period, until the worker goes away.
async fn probe_loop(spec: ProbeSpec, kind: ProbeKind, to: ReportTo) {
    tokio::time::sleep(spec.initial_delay).await;
    let mut ticks = tokio::time::interval(spec.period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let outcome = spec.check.run(spec.timeout).await;
        let report = ProbeReport {
            index: to.index,
            run: to.run,
            kind,
            outcome,
        };
        if to.reports.send(report).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use wasmlet_pod::k8s_openapi::api::core::v1::ContainerPort;

    fn container(probe: Probe) -> Container {
        Container {
            name: "c".into(),
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..ContainerPort::default()
            }]),
            readiness_probe: Some(probe),
            ..Container::default()
        }
    }

    fn plan_of(yaml: &str) -> Planned {
        let probe: Probe = parse_probe(yaml);
        plan(&probe, &container(probe.clone()), "10.0.0.7")
    }

    /// Parses a readiness probe written in YAML flow style, through a pod manifest.
    fn parse_probe(json: &str) -> Probe {
        let manifest = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  containers:\n  - name: c\n    image: i\n    readinessProbe: {json}\n"
        );
        let manifest = wasmlet_pod::load_manifest(&manifest).unwrap();
        let spec = manifest.pod.spec.unwrap();
        spec.containers[0].readiness_probe.clone().unwrap()
    }

    #[test]
    fn plans_probes_with_the_kubelet_defaults() {
        let spec = plan_of("{httpGet: {port: http, path: healthz}}").unwrap();
        assert_eq!(
            spec.check,
            Check::Http {
                host: "10.0.0.7".into(),
                port: 8080,
                path: "/healthz".into(),
                headers: vec![],
            }
        );
        assert_eq!(
            (spec.initial_delay, spec.period, spec.timeout),
            (
                Duration::ZERO,
                Duration::from_secs(10),
                Duration::from_secs(1)
            )
        );
        assert_eq!((spec.success_threshold, spec.failure_threshold), (1, 3));
        let spec = plan_of(
            "{tcpSocket: {port: 9000, host: db}, periodSeconds: 2, failureThreshold: 1, initialDelaySeconds: 5}",
        )
        .unwrap();
        assert_eq!(
            spec.check,
            Check::Tcp {
                host: "db".into(),
                port: 9000
            }
        );
        assert_eq!(
            (spec.period, spec.failure_threshold),
            (Duration::from_secs(2), 1)
        );
        assert_eq!(spec.initial_delay, Duration::from_secs(5));
    }

    #[test]
    fn refuses_probes_it_cannot_run() {
        let cases = [
            (
                "{exec: {command: [cat, /tmp/ready]}}",
                "exec probes are not supported for wasm containers; use httpGet or tcpSocket",
            ),
            (
                "{grpc: {port: 9000}}",
                "grpc probes are not supported for wasm containers; use httpGet or tcpSocket",
            ),
            (
                "{httpGet: {port: admin}}",
                "couldn't find port \"admin\" in the container's ports",
            ),
            (
                "{httpGet: {port: 8080, scheme: HTTPS}}",
                "httpGet scheme HTTPS is not supported: wasmlet probes speak plain HTTP",
            ),
            ("{tcpSocket: {port: 0}}", "invalid port number: 0"),
        ];
        for (yaml, error) in cases {
            assert_eq!(plan_of(yaml), Err(error.to_owned()), "{yaml}");
        }
    }

    #[test]
    fn counts_thresholds() {
        let mut tally = Tally::default();
        let seen: Vec<_> = [false, false, true, false, false, false]
            .into_iter()
            .map(|ok| tally.observe(ok, 2, 3))
            .collect();
        assert_eq!(seen, [None, None, None, None, None, Some(false)]);
        let mut tally = Tally::default();
        assert_eq!(tally.observe(true, 2, 3), None);
        assert_eq!(tally.observe(true, 2, 3), Some(true));
        assert_eq!(tally.observe(true, 2, 3), Some(true));
    }

    /// A one-shot HTTP server answering `status` and returning the request it got.
    async fn answer_once(status: u16) -> (u16, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                let n = conn.read(&mut buf).await.unwrap();
                request.extend_from_slice(&buf[..n]);
            }
            let response = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
            conn.write_all(response.as_bytes()).await.unwrap();
            String::from_utf8(request).unwrap()
        });
        (port, server)
    }

    #[tokio::test]
    async fn http_probes_succeed_below_400() {
        let headers = vec![("X-Probe".to_owned(), "yes".to_owned())];
        let (port, server) = answer_once(302).await;
        assert_eq!(
            http_get("127.0.0.1", port, "/ready", &headers).await,
            Ok(())
        );
        let request = server.await.unwrap().to_ascii_lowercase();
        assert!(request.starts_with("get /ready http/1.1\r\n"), "{request}");
        for header in ["x-probe: yes", "user-agent: kube-probe/1.37", "accept: */*"] {
            assert!(request.contains(header), "{header}: {request}");
        }
        let (port, _) = answer_once(503).await;
        let failed = http_get("127.0.0.1", port, "/", &[]).await;
        assert_eq!(failed, Err("HTTP probe failed with statuscode: 503".into()));
    }

    #[tokio::test]
    async fn a_closed_port_fails_as_the_kubelet_says() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let tcp = Check::Tcp {
            host: "127.0.0.1".into(),
            port,
        };
        let refused = format!("dial tcp 127.0.0.1:{port}: connect: connection refused");
        assert_eq!(tcp.run(Duration::from_secs(5)).await, Err(refused.clone()));
        let failed = http_get("127.0.0.1", port, "/", &[]).await;
        let expected = format!("Get \"http://127.0.0.1:{port}/\": {refused}");
        assert_eq!(failed, Err(expected));
    }
}
