//! `wasi:sockets/ip-name-lookup` answered by the pod's resolver ([`crate::dns`]): a guest's
//! name lookup resolves as a container of its pod would (cluster DNS, search domains, hosts
//! entries), from inside the pod's network namespace. Without a pod resolver (`wasmlet run`)
//! the host's resolver answers, as wasmtime's own implementation does.
//!
//! The interface is defined over wasmtime-wasi's (the linker's shadowing): the same
//! `network` capability and error codes; a component importing any 0.2 version of it is
//! linked to this one.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use wasmtime::component::{Linker, Resource, ResourceType};
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, IpAddress};
use wasmtime_wasi::p2::{DynPollable, Pollable, subscribe};

use crate::dns::{LookupError, PodResolver};
use crate::state::ComponentState;

/// The interface as wasmtime-wasi 48 defines it (`wasi:sockets@0.2.12`).
const INTERFACE: &str = "wasi:sockets/ip-name-lookup@0.2.12";

/// How a component's names are resolved.
#[derive(Clone, Default)]
pub(crate) struct NameLookup {
    /// Whether the component was given a network (else every lookup fails, as wasmtime's).
    pub(crate) allowed: bool,
    /// The pod's resolver; `None`: the host's.
    pub(crate) resolver: Option<Arc<PodResolver>>,
}

type Answer = Result<Vec<IpAddr>, ErrorCode>;

/// A lookup under way or answered: the `resolve-address-stream` resource.
pub(crate) enum ResolveStream {
    Waiting(tokio::task::JoinHandle<Answer>),
    Done(Result<std::vec::IntoIter<IpAddr>, ErrorCode>),
}

impl ResolveStream {
    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let ResolveStream::Waiting(task) = self else {
            return Poll::Ready(());
        };
        let joined = match std::pin::Pin::new(task).poll(cx) {
            Poll::Ready(joined) => joined,
            Poll::Pending => return Poll::Pending,
        };
        let answer = joined.unwrap_or(Err(ErrorCode::PermanentResolverFailure));
        *self = ResolveStream::Done(answer.map(Vec::into_iter));
        Poll::Ready(())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for ResolveStream {
    async fn ready(&mut self) {
        std::future::poll_fn(|cx| self.poll_answer(cx)).await
    }
}

/// Replaces wasmtime-wasi's `ip-name-lookup` in `linker` (which already holds WASI 0.2).
pub(crate) fn add_to_linker(linker: &mut Linker<ComponentState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut instance = linker.instance(INTERFACE)?;
    instance.resource(
        "resolve-address-stream",
        ResourceType::host::<ResolveStream>(),
        |mut store, rep| {
            let stream = Resource::<ResolveStream>::new_own(rep);
            store.data_mut().table.delete(stream)?;
            Ok(())
        },
    )?;
    instance.func_wrap(
        "resolve-addresses",
        |mut store, (network, name): (Resource<wasmtime_wasi::p2::Network>, String)| {
            let state: &mut ComponentState = store.data_mut();
            state.table.get(&network)?;
            let stream = start(&state.names, name);
            Ok((match stream {
                Ok(stream) => Ok(state.table.push(stream)?),
                Err(code) => Err(code),
            },))
        },
    )?;
    instance.func_wrap(
        "[method]resolve-address-stream.resolve-next-address",
        |mut store, (stream,): (Resource<ResolveStream>,)| {
            let stream = store.data_mut().table.get_mut(&stream)?;
            Ok((next_address(stream),))
        },
    )?;
    instance.func_wrap(
        "[method]resolve-address-stream.subscribe",
        |mut store, (stream,): (Resource<ResolveStream>,)| {
            let pollable: Resource<DynPollable> = subscribe(&mut store.data_mut().table, stream)?;
            Ok((pollable,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

fn next_address(stream: &mut ResolveStream) -> Result<Option<IpAddress>, ErrorCode> {
    let waker = std::task::Waker::noop();
    if stream
        .poll_answer(&mut Context::from_waker(waker))
        .is_pending()
    {
        return Err(ErrorCode::WouldBlock);
    }
    match stream {
        ResolveStream::Done(Ok(ips)) => Ok(ips.next().map(IpAddress::from)),
        ResolveStream::Done(Err(code)) => Err(*code),
        ResolveStream::Waiting(_) => Err(ErrorCode::WouldBlock),
    }
}

/// Starts resolving `name`: answered at once when it is an address (or invalid), else by a
/// task of its own.
fn start(names: &NameLookup, name: String) -> Result<ResolveStream, ErrorCode> {
    if !names.allowed {
        return Err(ErrorCode::PermanentResolverFailure);
    }
    if let Ok(ip) = name
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Ok(ResolveStream::Done(Ok(vec![ip].into_iter())));
    }
    if url::Host::parse(&name).is_err() {
        return Err(ErrorCode::InvalidArgument);
    }
    let task = match names.resolver.clone() {
        Some(resolver) => tokio::spawn(async move { pod_lookup(&resolver, &name).await }),
        None => tokio::spawn(host_lookup(name)),
    };
    Ok(ResolveStream::Waiting(task))
}

async fn pod_lookup(resolver: &PodResolver, name: &str) -> Answer {
    resolver.lookup(name).await.map_err(|err| {
        tracing::debug!("a guest's name lookup failed: {err}");
        match err {
            LookupError::InvalidName(_) => ErrorCode::InvalidArgument,
            LookupError::NotFound(_) => ErrorCode::NameUnresolvable,
            LookupError::Unavailable { .. } => ErrorCode::TemporaryResolverFailure,
            LookupError::Failed { .. } => ErrorCode::PermanentResolverFailure,
        }
    })
}

/// The host's resolver (the C library's), for components outside a pod.
async fn host_lookup(name: String) -> Answer {
    let domain = match url::Host::parse(&name) {
        Ok(url::Host::Domain(domain)) => domain,
        Ok(url::Host::Ipv4(ip)) => return Ok(vec![ip.into()]),
        Ok(url::Host::Ipv6(ip)) => return Ok(vec![ip.into()]),
        Err(_) => return Err(ErrorCode::InvalidArgument),
    };
    match tokio::net::lookup_host((domain.as_str(), 0)).await {
        Ok(addrs) => Ok(addrs.map(|a| a.ip().to_canonical()).collect()),
        Err(err) => {
            tracing::debug!("resolving {domain} with the host's resolver: {err}");
            Err(ErrorCode::NameUnresolvable)
        }
    }
}
