//! The memory limit of a wasmer container, and its memory usage.
//!
//! wasmer's tunables belong to its engine, shared by every container, so the limit of one
//! run is read from the thread that runs it ([`enter`]): each linear memory made there is
//! wrapped so that growing past the limit is refused (the guest's `memory.grow` sees -1),
//! the container is stopped as `OOMKilled` and the refusal is its message, as wasmtime's
//! limiter does; every change of size is counted in the container's [`Meter`]. Tables are
//! not counted (wasmtime counts them at 8 bytes an element).

use std::cell::RefCell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmer::sys::vm::{
    ExpectedValue, LinearMemory, MemoryError, MemoryStyle, TableStyle, ThreadConditions, Trap,
    VMMemory, VMMemoryDefinition, VMSharedMemory, VMTable, VMTableDefinition, WaiterError,
};
use wasmer::sys::{BaseTunables, Tunables};
use wasmer::{MemoryType, Pages, TableType, WASM_PAGE_SIZE};

use crate::state::{Control, StopCause};
use crate::usage::Meter;

/// The memory of one run: its limit, its use, and why it was stopped, if it was.
pub(crate) struct RunMemory {
    limit: Option<u64>,
    used: AtomicU64,
    control: Arc<Control>,
    meter: Arc<Meter>,
    refusal: Mutex<Option<String>>,
}

impl RunMemory {
    pub(crate) fn new(limit: Option<u64>, control: Arc<Control>, meter: Arc<Meter>) -> Arc<Self> {
        meter.instance_created();
        Arc::new(RunMemory {
            limit,
            used: AtomicU64::new(0),
            control,
            meter,
            refusal: Mutex::new(None),
        })
    }

    /// The message of the refusal that stopped the run, if one did.
    pub(crate) fn refusal(&self) -> Option<String> {
        self.refusal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A memory goes from `from` to `to` bytes; false (and the run stopped) past the limit.
    fn resize(&self, from: u64, to: u64) -> bool {
        let used = self.used.load(Ordering::Relaxed);
        let wanted = used.saturating_sub(from).saturating_add(to);
        if let Some(limit) = self.limit.filter(|limit| wanted > *limit) {
            let message = format!("memory limit of {limit} bytes exceeded (wanted {wanted} bytes)");
            let mut refusal = self.refusal.lock().unwrap_or_else(|e| e.into_inner());
            refusal.get_or_insert(message);
            self.control.stop(StopCause::OutOfMemory);
            return false;
        }
        self.used.store(wanted, Ordering::Relaxed);
        self.meter.memory_changed(used, wanted);
        true
    }

    /// The run's store is gone: its memory is released.
    pub(crate) fn released(&self) {
        self.meter
            .instance_dropped(self.used.swap(0, Ordering::Relaxed));
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<RunMemory>>> = const { RefCell::new(None) };
}

/// Memories made on this thread from now on belong to `memory`'s run.
pub(crate) fn enter(memory: Arc<RunMemory>) {
    CURRENT.with(|c| *c.borrow_mut() = Some(memory));
}

fn current() -> Option<Arc<RunMemory>> {
    CURRENT.with(|c| c.borrow().clone())
}

fn bytes(pages: Pages) -> u64 {
    u64::from(pages.0) * u64::from(WASM_PAGE_SIZE as u32)
}

/// wasmer's own tunables, with every linear memory made on a run's thread limited.
pub(crate) struct LimitingTunables {
    base: BaseTunables,
}

impl LimitingTunables {
    pub(crate) fn new(base: BaseTunables) -> LimitingTunables {
        LimitingTunables { base }
    }

    fn limited(&self, run: Arc<RunMemory>, inner: VMMemory) -> Result<VMMemory, MemoryError> {
        let size = inner.size();
        if !run.resize(0, bytes(size)) {
            return Err(MemoryError::Generic(run.refusal().unwrap_or_default()));
        }
        Ok(VMMemory(Box::new(Limited { inner, run })))
    }
}

impl Tunables for LimitingTunables {
    fn memory_style(&self, memory: &MemoryType) -> MemoryStyle {
        self.base.memory_style(memory)
    }

    fn table_style(&self, table: &TableType) -> TableStyle {
        self.base.table_style(table)
    }

    fn create_host_memory(
        &self,
        ty: &MemoryType,
        style: &MemoryStyle,
    ) -> Result<VMMemory, MemoryError> {
        let inner = self.base.create_host_memory(ty, style)?;
        match current() {
            Some(run) => self.limited(run, inner),
            None => Ok(inner),
        }
    }

    unsafe fn create_vm_memory(
        &self,
        ty: &MemoryType,
        style: &MemoryStyle,
        definition: NonNull<VMMemoryDefinition>,
    ) -> Result<VMMemory, MemoryError> {
        // SAFETY: the caller's contract, passed on unchanged.
        let inner = unsafe { self.base.create_vm_memory(ty, style, definition)? };
        match current() {
            Some(run) => self.limited(run, inner),
            None => Ok(inner),
        }
    }

    fn create_host_table(&self, ty: &TableType, style: &TableStyle) -> Result<VMTable, String> {
        self.base.create_host_table(ty, style)
    }

    unsafe fn create_vm_table(
        &self,
        ty: &TableType,
        style: &TableStyle,
        definition: NonNull<VMTableDefinition>,
    ) -> Result<VMTable, String> {
        // SAFETY: the caller's contract, passed on unchanged.
        unsafe { self.base.create_vm_table(ty, style, definition) }
    }
}

/// A linear memory of a limited run.
#[derive(Debug)]
struct Limited {
    inner: VMMemory,
    run: Arc<RunMemory>,
}

impl std::fmt::Debug for RunMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunMemory")
            .field("limit", &self.limit)
            .field("used", &self.used)
            .finish()
    }
}

impl LinearMemory for Limited {
    fn ty(&self) -> MemoryType {
        self.inner.ty()
    }

    fn size(&self) -> Pages {
        self.inner.size()
    }

    fn style(&self) -> MemoryStyle {
        self.inner.style()
    }

    fn grow(&mut self, delta: Pages) -> Result<Pages, MemoryError> {
        let current = self.inner.size();
        let wanted = u64::from(current.0).saturating_add(u64::from(delta.0));
        let wanted_bytes = wanted.saturating_mul(u64::from(WASM_PAGE_SIZE as u32));
        if !self.run.resize(bytes(current), wanted_bytes) {
            return Err(MemoryError::CouldNotGrow {
                current,
                attempted_delta: delta,
            });
        }
        let grown = self.inner.grow(delta);
        if grown.is_err() {
            self.run.resize(wanted_bytes, bytes(current));
        }
        grown
    }

    fn grow_at_least(&mut self, min_size: u64) -> Result<(), MemoryError> {
        let current = bytes(self.inner.size());
        if min_size > current && !self.run.resize(current, min_size) {
            return Err(MemoryError::CouldNotGrow {
                current: self.inner.size(),
                attempted_delta: Pages(0),
            });
        }
        self.inner.grow_at_least(min_size)
    }

    fn reset(&mut self) -> Result<(), MemoryError> {
        self.inner.reset()
    }

    fn vmmemory(&self) -> NonNull<VMMemoryDefinition> {
        self.inner.vmmemory()
    }

    fn try_clone(&self) -> Result<Box<dyn LinearMemory + Send + Sync + 'static>, MemoryError> {
        Err(MemoryError::Generic(
            "a limited memory cannot be cloned".into(),
        ))
    }

    unsafe fn initialize_with_data(&self, start: usize, data: &[u8]) -> Result<(), Trap> {
        // SAFETY: the caller's contract, passed on unchanged.
        unsafe { self.inner.initialize_with_data(start, data) }
    }

    fn copy(&self) -> Result<Box<dyn LinearMemory + Send + Sync + 'static>, MemoryError> {
        Err(MemoryError::Generic(
            "a limited memory cannot be copied".into(),
        ))
    }

    fn as_shared(&self) -> Result<VMSharedMemory, MemoryError> {
        self.inner.as_shared()
    }

    unsafe fn do_wait(
        &mut self,
        dst: u32,
        expected: ExpectedValue,
        timeout: Option<Duration>,
    ) -> Result<u32, WaiterError> {
        // SAFETY: the caller's contract, passed on unchanged.
        unsafe { self.inner.do_wait(dst, expected, timeout) }
    }

    fn do_notify(&mut self, dst: u32, count: u32) -> u32 {
        self.inner.do_notify(dst, count)
    }

    fn thread_conditions(&self) -> Option<&ThreadConditions> {
        self.inner.thread_conditions()
    }
}
