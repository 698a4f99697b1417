//! What each store holds: WASI contexts, the memory limiter and the stop control.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Instant;

use tokio::sync::Notify;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::exit::ExitReason;
use crate::usage::Meter;

/// Bytes charged per table element (a pointer).
const TABLE_ELEMENT_BYTES: u64 = 8;

/// Asks a running guest to stop, from any thread; read by the epoch callback.
#[derive(Debug, Default)]
pub(crate) struct Control {
    /// 0 while running, else the `StopCause` that ended it (first one wins).
    cause: AtomicU8,
    notify: Notify,
    pub(crate) deadline: Option<Instant>,
    /// The descriptor budget, named in the trap when the guest uses it up.
    pub(crate) descriptors: u32,
}

/// Why the host ended a guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StopCause {
    Killed = 1,
    Deadline = 2,
    OutOfMemory = 3,
    /// A stop request a command could not observe (it ends as on SIGTERM).
    Terminated = 4,
}

impl Control {
    pub(crate) fn new(deadline: Option<Instant>, descriptors: u32) -> Control {
        Control {
            deadline,
            descriptors,
            ..Control::default()
        }
    }

    /// Records `cause` (unless another came first) and wakes the waiting task.
    pub(crate) fn stop(&self, cause: StopCause) {
        let _ = self
            .cause
            .compare_exchange(0, cause as u8, Ordering::SeqCst, Ordering::SeqCst);
        self.notify.notify_waiters();
        self.notify.notify_one();
    }

    pub(crate) fn cause(&self) -> Option<StopCause> {
        match self.cause.load(Ordering::SeqCst) {
            1 => Some(StopCause::Killed),
            2 => Some(StopCause::Deadline),
            3 => Some(StopCause::OutOfMemory),
            4 => Some(StopCause::Terminated),
            _ => None,
        }
    }

    /// Whether the guest must stop now (a stop was requested or the deadline passed).
    pub(crate) fn must_stop(&self) -> bool {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            self.stop(StopCause::Deadline);
        }
        self.cause().is_some()
    }

    /// Resolves once a stop was requested.
    pub(crate) async fn stopped(&self) {
        while self.cause().is_none() {
            self.notify.notified().await;
        }
    }
}

impl StopCause {
    pub(crate) fn reason(self) -> ExitReason {
        match self {
            StopCause::Killed => ExitReason::Killed,
            StopCause::Deadline => ExitReason::DeadlineExceeded,
            StopCause::OutOfMemory => ExitReason::OomKilled,
            StopCause::Terminated => ExitReason::Error,
        }
    }
}

/// Enforces the memory limit over all linear memories and tables of a store, and counts
/// them (and the store itself) in the container's [`Meter`] until the store is dropped.
pub(crate) struct MemoryLimiter {
    limit: Option<u64>,
    used: u64,
    control: Arc<Control>,
    meter: Arc<Meter>,
}

impl MemoryLimiter {
    pub(crate) fn new(limit: Option<u64>, control: Arc<Control>, meter: Arc<Meter>) -> Self {
        meter.instance_created();
        MemoryLimiter {
            limit,
            used: 0,
            control,
            meter,
        }
    }

    fn grow(&mut self, current: u64, desired: u64) -> wasmtime::Result<bool> {
        let used = self.used.saturating_sub(current).saturating_add(desired);
        if let Some(limit) = self.limit.filter(|limit| used > *limit) {
            self.control.stop(StopCause::OutOfMemory);
            wasmtime::bail!("memory limit of {limit} bytes exceeded (wanted {used} bytes)");
        }
        self.meter.memory_changed(self.used, used);
        self.used = used;
        Ok(true)
    }
}

impl Drop for MemoryLimiter {
    fn drop(&mut self) {
        self.meter.instance_dropped(self.used);
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow(current as u64, desired as u64)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow(
            current as u64 * TABLE_ELEMENT_BYTES,
            desired as u64 * TABLE_ELEMENT_BYTES,
        )
    }
}

/// Store data of a preview 1 module.
pub(crate) struct ModuleState {
    pub(crate) wasi: WasiP1Ctx,
    pub(crate) limiter: MemoryLimiter,
}

/// Store data of a component (`wasi:cli/run` or `wasi:http/incoming-handler`).
pub(crate) struct ComponentState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) http: WasiHttpCtx,
    pub(crate) hooks: PodHttpHooks,
    pub(crate) names: crate::lookup::NameLookup,
    pub(crate) limiter: MemoryLimiter,
}

/// Outgoing `wasi:http` requests of a pod: with a pod resolver, its host resolved by it and
/// the connection made inside the pod's namespace ([`crate::outgoing`]); without one, as
/// wasmtime sends them, dialled from inside the pod's network namespace when it has one (the
/// request's future, which connects, is polled there; the connection then serves from any
/// thread).
#[derive(Default)]
pub(crate) struct PodHttpHooks {
    pub(crate) namespace: Option<Arc<wasmlet_netns::NetNs>>,
    pub(crate) resolver: Option<Arc<crate::dns::PodResolver>>,
}

type SentResponse = wasmtime_wasi_http::Result<(
    hyper::Response<wasmtime_wasi_http::WasiBody>,
    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
)>;

impl wasmtime_wasi_http::WasiHttpHooks for PodHttpHooks {
    fn send_request(
        &mut self,
        request: hyper::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<dyn Future<Output = SentResponse> + Send> {
        if let Some(resolver) = self.resolver.clone() {
            let namespace = self.namespace.clone();
            return Box::new(crate::outgoing::send(request, options, resolver, namespace));
        }
        let sent =
            Pin::from(wasmtime_wasi_http::default_hooks().send_request(request, options, fut));
        let Some(ns) = self.namespace.clone() else {
            return Box::new(sent);
        };
        Box::new(async move {
            match wasmlet_netns::InNamespace::new(ns, sent).await {
                Ok(sent) => sent,
                Err(err) => Err(wasmtime_wasi_http::Error::Connect(std::io::Error::other(
                    err.to_string(),
                ))),
            }
        })
    }
}

impl WasiView for ComponentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for ComponentState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One HTTP answer from a server made inside `ns` on 127.0.0.1 (which the host's
    /// loopback does not share); returns its port.
    fn serve_once_inside(ns: &wasmlet_netns::NetNs) -> u16 {
        use std::io::{Read, Write};
        let listener = ns.bind_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
        });
        port
    }

    async fn get(hooks: &mut PodHttpHooks, port: u16) -> Result<u16, String> {
        use http_body_util::BodyExt;
        let body = http_body_util::Empty::<bytes::Bytes>::new()
            .map_err(|_| unreachable!())
            .boxed_unsync();
        let request = hyper::Request::builder()
            .uri(format!("http://127.0.0.1:{port}/"))
            .header("host", format!("127.0.0.1:{port}"))
            .body(body)
            .unwrap();
        let sent = wasmtime_wasi_http::WasiHttpHooks::send_request(
            hooks,
            request,
            None,
            Box::new(async { Ok(()) }),
        );
        let (response, io) = Pin::from(sent).await.map_err(|e| format!("{e:?}"))?;
        tokio::spawn(Pin::from(io));
        Ok(response.status().as_u16())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn outgoing_requests_dial_from_the_pods_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let pin = dir.path().join("pod");
        let ns = wasmlet_netns::NetNs::create(&pin).expect("a namespace (needs root)");
        ns.set_loopback_up().unwrap();
        let ns = Arc::new(ns);
        let port = serve_once_inside(&ns);
        let mut on_host = PodHttpHooks::default();
        assert!(
            get(&mut on_host, port).await.is_err(),
            "the host's 127.0.0.1:{port} is not the pod's"
        );
        let mut in_pod = PodHttpHooks {
            namespace: Some(ns.clone()),
            resolver: None,
        };
        assert_eq!(get(&mut in_pod, port).await, Ok(200));
        drop((in_pod, ns));
        wasmlet_netns::remove(&pin).unwrap();
    }

    #[test]
    fn limiter_counts_memories_and_tables_together() {
        let control = Arc::new(Control::default());
        let meter = Arc::new(Meter::default());
        let mut limiter = MemoryLimiter::new(Some(1000), control.clone(), meter.clone());
        assert!(limiter.memory_growing(0, 800, None).unwrap());
        assert!(limiter.table_growing(0, 25, None).unwrap());
        assert!(control.cause().is_none());
        assert!(limiter.table_growing(25, 26, None).is_err());
        assert_eq!(control.cause(), Some(StopCause::OutOfMemory));
        assert_eq!(meter.usage().memory_bytes, 1000);
        drop(limiter);
        assert_eq!(meter.usage().memory_bytes, 0);
        assert_eq!(meter.usage().instances, 0);
    }

    #[test]
    fn first_stop_cause_wins() {
        let control = Control::new(None, 0);
        control.stop(StopCause::Deadline);
        control.stop(StopCause::Killed);
        assert_eq!(control.cause(), Some(StopCause::Deadline));
        assert!(control.must_stop());
    }
}
