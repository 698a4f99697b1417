//! What each store holds: WASI contexts, the memory limiter and the stop control.

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
}

/// Why the host ended a guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StopCause {
    Killed = 1,
    Deadline = 2,
    OutOfMemory = 3,
}

impl Control {
    pub(crate) fn new(deadline: Option<Instant>) -> Control {
        Control {
            deadline,
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
    pub(crate) limiter: MemoryLimiter,
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
            hooks: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let control = Control::new(None);
        control.stop(StopCause::Deadline);
        control.stop(StopCause::Killed);
        assert_eq!(control.cause(), Some(StopCause::Deadline));
        assert!(control.must_stop());
    }
}
