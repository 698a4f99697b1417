//! Futures polled inside a namespace: what makes a guest's own sockets the pod's.

use std::fs::File;
use std::future::Future;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustix::thread::LinkNameSpaceType;

use crate::namespace::{Error, NetNs, Result};

thread_local! {
    /// The namespace this thread lives in, taken the first time it polls an
    /// [`InNamespace`]: where it goes back to after each poll.
    static HOME: std::io::Result<File> = File::open("/proc/thread-self/ns/net");
}

/// A future that is polled inside a network namespace: the polling thread enters the
/// namespace before each poll of the inner future and goes back to its own right after, so
/// every socket the future creates while it runs (a guest's `wasi:sockets` bind, connect or
/// UDP socket) is born in the namespace, and any thread of an async runtime can poll it.
///
/// Entering costs two `setns` calls per poll. Tasks the future spawns are not inside (they
/// are polled by themselves): wrap them too. A failed entry ends the future with the error;
/// a thread that cannot go back to its own namespace aborts the process, since sockets of
/// other pods would otherwise be made in this one.
pub struct InNamespace<F> {
    ns: Arc<NetNs>,
    inner: Pin<Box<F>>,
}

impl<F: Future> InNamespace<F> {
    /// `inner`, to be polled inside `ns`.
    pub fn new(ns: Arc<NetNs>, inner: F) -> InNamespace<F> {
        InNamespace {
            ns,
            inner: Box::pin(inner),
        }
    }
}

impl<F: Future> Future for InNamespace<F> {
    type Output = Result<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match this.ns.within(|| this.inner.as_mut().poll(cx)) {
            Ok(polled) => polled.map(Ok),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl NetNs {
    /// Runs `f` on the calling thread inside this namespace and moves the thread back to its
    /// own namespace right after: the sockets `f` creates are born in this namespace, at the
    /// cost of two `setns` calls and no thread of its own (what [`NetNs::run`] costs). A
    /// failed entry returns the error without running `f`; a thread that cannot go back
    /// aborts the process, since sockets of other pods would otherwise be made in this one.
    pub fn within<T>(&self, f: impl FnOnce() -> T) -> Result<T> {
        HOME.with(|home| {
            let home = home.as_ref().map_err(|e| Error::Enter {
                path: "/proc/thread-self/ns/net".into(),
                source: std::io::Error::new(e.kind(), e.to_string()),
            })?;
            self.enter()?;
            let output = f();
            if let Err(e) = rustix::thread::move_into_link_name_space(
                home.as_fd(),
                Some(LinkNameSpaceType::Network),
            ) {
                eprintln!(
                    "wasmlet: a thread cannot leave a pod's network namespace ({e}); aborting"
                );
                std::process::abort();
            }
            Ok(output)
        })
    }
}
