//! Serving a `wasi:http/incoming-handler` component over HTTP/1.1: one instance per request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use wasmtime::PoolConcurrencyLimitError;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::{Proxy, ProxyPre};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::log::{OutputSink, SharedSink, Stream};
use crate::program::{Pre, Program, ProgramKind};
use crate::runtime::{Error, Result, describe};
use crate::sockets::Network;
use crate::spec::{ContainerSpec, Limits};
use crate::state::{ComponentState, Control, MemoryLimiter};
use crate::usage::{Meter, Metered};
use crate::wasmtime_engine::Wasmtime;

/// What every request's instance gets: the spec (minus stdio, shared by all) and the program.
pub(crate) struct Handler {
    runtime: Wasmtime,
    /// The program (wasmtime's): each request is made from its current tier's code.
    program: Program,
    spec: ContainerSpec,
    sink: SharedSink,
    /// The usage of all requests' instances.
    meter: Arc<Meter>,
    /// The pod's network namespace each request's instance is polled in: only when the
    /// component imports `wasi:sockets` (see [`makes_sockets`]).
    namespace: Option<Arc<wasmlet_netns::NetNs>>,
}

/// Whether a component can make sockets of its own: it imports a `wasi:sockets` interface.
/// One that does not can only reach the network through outgoing `wasi:http`, whose requests
/// enter the pod's namespace by themselves ([`crate::state::PodHttpHooks`]), so its instances
/// need not be polled inside the namespace: two `setns` calls fewer per poll.
fn makes_sockets(component: &wasmtime::component::Component) -> bool {
    crate::program::imports_from(component, &["wasi:sockets/"])
}

impl Wasmtime {
    /// Serves `program` (a `wasi:http/incoming-handler` component) on `listener` until
    /// `shutdown` is cancelled. Each request gets a fresh instance built from `spec` (args,
    /// env, preopens, limits; `limits.timeout` bounds each request); the instances' stdout and
    /// stderr all go to `spec.stdio`. See [`Wasmtime::start_http`] for the same as a
    /// [`Container`](crate::Container).
    pub(crate) async fn serve_http(
        &self,
        program: &Program,
        spec: ContainerSpec,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<()> {
        let handler = self.http_handler(program, spec)?;
        let served = serve(handler.clone(), vec![listener], shutdown).await;
        handler.finish_log();
        served
    }

    /// The request handler of an HTTP program; refuses any other kind of program.
    pub(crate) fn http_handler(
        &self,
        program: &Program,
        mut spec: ContainerSpec,
    ) -> Result<Arc<Handler>> {
        if program.kind() != ProgramKind::HttpComponent {
            return Err(Error::NoEntryPoint(
                "the program does not export `wasi:http/incoming-handler`, so it cannot serve HTTP"
                    .into(),
            ));
        }
        let sockets = match &*self.linked(program)?.current() {
            Pre::Http(pre) => makes_sockets(pre.instance_pre().component()),
            _ => true,
        };
        // Checked once here rather than at every request's WASI context.
        crate::container::check_preopens(&spec)?;
        let namespace = spec.network.as_ref().and_then(|n| n.namespace.clone());
        let sink = SharedSink::new(OutputSink::new(std::mem::take(&mut spec.stdio))?);
        Ok(Arc::new(Handler {
            runtime: self.clone(),
            program: program.clone(),
            spec,
            sink,
            meter: Arc::default(),
            namespace: namespace.filter(|_| sockets),
        }))
    }
}

/// Accepts connections on every listener until `shutdown` is cancelled; an accept error on
/// one listener ends them all. Open connections finish their requests and close.
pub(crate) async fn serve(
    handler: Arc<Handler>,
    listeners: Vec<TcpListener>,
    shutdown: CancellationToken,
) -> Result<()> {
    let stop = shutdown.child_token();
    let mut loops = tokio::task::JoinSet::new();
    for listener in listeners {
        loops.spawn(accept(handler.clone(), listener, stop.clone()));
    }
    let mut result = Ok(());
    while let Some(joined) = loops.join_next().await {
        if let Ok(Err(err)) = joined {
            stop.cancel();
            result = result.and(Err(err));
        }
    }
    result
}

async fn accept(
    handler: Arc<Handler>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<()> {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => return Ok(()),
        };
        let addr = listener
            .local_addr()
            .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into());
        let (stream, _) = accepted.map_err(|source| Error::Serve { addr, source })?;
        // A response's head is written before its body (the guest streams the body after
        // setting the response): with Nagle's algorithm the body then waits for the client's
        // delayed ACK of the head, up to 40 ms.
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY on a connection: {err}");
        }
        tokio::spawn(serve_connection(handler.clone(), stream, shutdown.clone()));
    }
}

/// Serves one connection; once `shutdown` is cancelled it finishes the request in flight and
/// closes.
async fn serve_connection(
    handler: Arc<Handler>,
    stream: tokio::net::TcpStream,
    shutdown: CancellationToken,
) {
    let service = hyper::service::service_fn(move |req| {
        let handler = handler.clone();
        async move { Ok::<_, std::convert::Infallible>(handler.handle(req).await) }
    });
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    let ended = tokio::select! {
        ended = conn.as_mut() => ended,
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(err) = ended {
        tracing::debug!("HTTP connection ended with an error: {err}");
    }
}

impl Handler {
    /// The counters every request's instance is charged to.
    pub(crate) fn meter(&self) -> Arc<Meter> {
        self.meter.clone()
    }

    /// Flushes the instances' unterminated output to the log (when serving ends).
    pub(crate) fn finish_log(&self) {
        if let Err(err) = self.sink.lock().finish() {
            tracing::warn!("cannot flush the container log: {err}");
        }
    }

    async fn handle(
        self: Arc<Self>,
        req: hyper::Request<Incoming>,
    ) -> hyper::Response<HyperOutgoingBody> {
        match self.instantiate_and_call(req).await {
            Ok(response) => response,
            Err(failure) => {
                tracing::warn!("wasi:http request failed: {}", failure.message);
                error_response(failure)
            }
        }
    }

    async fn instantiate_and_call(
        self: Arc<Self>,
        req: hyper::Request<Incoming>,
    ) -> Result<hyper::Response<HyperOutgoingBody>, Failure> {
        let linked = self
            .runtime
            .linked(&self.program)
            .map_err(|e| Failure::internal(e.to_string()))?;
        let Pre::Http(pre) = &*linked.current() else {
            return Err(Failure::internal(
                "the program's code is not a wasi:http component's".into(),
            ));
        };
        let pre = pre.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let handler = self.clone();
        let call = async move {
            let (mut store, proxy) = handler.instantiate(&pre).await?;
            let mut http = store.data_mut().http();
            let req = http.new_incoming_request(Scheme::Http, req)?;
            let out = http.new_response_outparam(tx)?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, req, out)
                .await
        };
        let call = Network::polled(self.namespace.clone(), call, |err| {
            Err(wasmtime::Error::msg(format!(
                "cannot run in the pod's network namespace: {err}"
            )))
        });
        let metered = Metered::new(call, self.meter.clone());
        let runtime = self.runtime.clone();
        let task = tokio::spawn(async move {
            let called = metered.await;
            // The store, and with it the instance's pool slots, was dropped with `call`.
            runtime.slot_freed();
            called
        });
        match rx.await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(code)) => Err(Failure::internal(format!(
                "the component answered with an error: {code:?}"
            ))),
            Err(_) => Err(match task.await {
                Ok(Ok(())) => {
                    Failure::internal("the component returned without setting a response".into())
                }
                Ok(Err(err)) if pool_full(&err) => Failure::busy(&err, &self.runtime),
                Ok(Err(err)) => Failure::internal(crate::budget::describe_trap(
                    &err,
                    crate::budget::of(&self.spec.limits),
                )),
                Err(err) => Failure::internal(format!("the request's task failed: {err}")),
            }),
        }
    }

    /// A new instance of `pre` in a store of its own. While the instance pool has no room
    /// (every slot held by requests in flight), the request waits for one to be freed, up to
    /// the runtime's `pool_wait`, rather than failing at once.
    async fn instantiate(
        &self,
        pre: &ProxyPre<ComponentState>,
    ) -> wasmtime::Result<(wasmtime::Store<ComponentState>, Proxy)> {
        let deadline = Instant::now() + self.runtime.inner.config.pool_wait;
        let mut pause = Duration::from_millis(1);
        loop {
            let mut store = self.new_store(pre.engine())?;
            match pre.instantiate_async(&mut store).await {
                Ok(proxy) => return Ok((store, proxy)),
                Err(err) if pool_full(&err) && Instant::now() < deadline => {
                    // Dropping the store gives back what the failed instantiation took.
                    drop(store);
                    self.runtime.slot_wait(pause).await;
                    pause = (pause * 2).min(MAX_POOL_PAUSE);
                }
                Err(err) => return Err(err),
            }
        }
    }

    fn new_store(&self, engine: &wasmtime::Engine) -> Result<wasmtime::Store<ComponentState>> {
        let limits: &Limits = &self.spec.limits;
        let budget = crate::budget::of(limits);
        let control = Arc::new(Control::new(
            limits.timeout.map(|t| Instant::now() + t),
            budget,
        ));
        let mut builder = crate::container::wasi_builder_checked(&self.spec)?;
        builder
            .stdout(self.sink.stream(Stream::Stdout))
            .stderr(self.sink.stream(Stream::Stderr));
        if let Some(network) = self.spec.network.clone() {
            network.grant(&mut builder, self.sink.clone());
        }
        let limiter = MemoryLimiter::new(limits.memory_bytes, control.clone(), self.meter.clone());
        let mut state = self
            .runtime
            .component_state(builder, limiter, self.spec.network.as_ref());
        crate::budget::apply(&mut state.table, budget);
        let mut store = self.runtime.new_store(engine, state, limits, &control)?;
        store.limiter(|s| &mut s.limiter);
        Ok(store)
    }
}

/// The longest pause between two tries at a full pool (each freed slot also wakes a waiter).
const MAX_POOL_PAUSE: Duration = Duration::from_millis(50);

/// Whether instantiation failed because the pooling allocator had no free slot of some kind.
fn pool_full(err: &wasmtime::Error) -> bool {
    err.chain()
        .any(|cause| cause.downcast_ref::<PoolConcurrencyLimitError>().is_some())
}

/// Why a request got no answer from its instance: the status and message it is answered with.
struct Failure {
    status: hyper::StatusCode,
    message: String,
}

impl Failure {
    fn internal(message: String) -> Failure {
        Failure {
            status: hyper::StatusCode::INTERNAL_SERVER_ERROR,
            message,
        }
    }

    /// The instance pool stayed full for the runtime's `pool_wait`: the server is
    /// overloaded, not broken.
    fn busy(err: &wasmtime::Error, runtime: &Wasmtime) -> Failure {
        Failure {
            status: hyper::StatusCode::SERVICE_UNAVAILABLE,
            message: format!(
                "no room for the request's instance after waiting {:?} ({}): every slot of \
                 the instance pool ({} instances) is held by requests in flight; retry later",
                runtime.inner.config.pool_wait,
                describe(err),
                runtime.inner.config.max_instances,
            ),
        }
    }
}

fn error_response(failure: Failure) -> hyper::Response<HyperOutgoingBody> {
    let body = Full::new(Bytes::from(failure.message + "\n")).map_err(|never| match never {});
    let mut response = hyper::Response::new(body.boxed_unsync());
    *response.status_mut() = failure.status;
    if failure.status == hyper::StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(
            hyper::header::RETRY_AFTER,
            hyper::header::HeaderValue::from_static("1"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn component(wasm: &[u8]) -> wasmtime::component::Component {
        let engine = wasmtime::Engine::default();
        wasmtime::component::Component::new(&engine, wasm).unwrap()
    }

    #[test]
    fn only_a_component_importing_wasi_sockets_makes_sockets() {
        assert!(!makes_sockets(&component(wasmlet_fixtures::http_hello())));
        assert!(!makes_sockets(&component(wasmlet_fixtures::http_fetch())));
        assert!(makes_sockets(&component(wasmlet_fixtures::tcp_hello())));
    }
}
