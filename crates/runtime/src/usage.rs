//! What a container uses: the CPU time its guest has run and the memory its instances hold,
//! kept in atomics that its stores update and anyone may read at any time.
//!
//! - CPU: the calling thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`) measured around every
//!   poll of an instance's future. wasmtime runs an async guest on a fiber resumed inside
//!   that poll, so this is the time spent in wasm code and in the host calls it makes on that
//!   thread (WASI, instantiation), and not the time the thread was preempted or the guest was
//!   waiting (sleeping, blocked on I/O). Work WASI hands to tokio's blocking pool (file
//!   reads and writes) is not counted. Two clock reads per poll: polls come at each epoch
//!   tick of a busy guest and at each wake-up of a waiting one.
//! - Memory: the bytes of every linear memory and table (8 bytes an element) of the live
//!   instances, as the memory limit counts them; an instance's bytes are released when its
//!   store is dropped; and, apart, the container's share of its program's compiled code (the
//!   code's size divided by the containers running it), which it holds while it runs, idle
//!   or not. Other host-side memory (stacks, WASI buffers) is not included.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

/// A container's resource usage at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// The CPU time its guest has used since the container started, summed over all its
    /// instances (every request of a `wasi:http` container).
    pub cpu: Duration,
    /// The bytes the live instances hold now: linear memories plus tables. 0 once a command
    /// has ended, and for a `wasi:http` container serving no request.
    pub memory_bytes: u64,
    /// Instances alive now: 1 for a running command, the requests in flight for `wasi:http`.
    pub instances: u64,
    /// While the container runs, its share of its program's compiled code: the code's size
    /// divided by the containers running that program now. An idle `wasi:http` container
    /// holds this and no instance memory; 0 once the container has ended.
    pub code_bytes: u64,
}

impl Usage {
    /// The memory the container holds: its instances' and its share of the code.
    pub fn working_set_bytes(&self) -> u64 {
        self.memory_bytes.saturating_add(self.code_bytes)
    }
}

/// The shared counters of one container, updated by its stores and read by
/// [`Meter::usage`].
#[derive(Debug, Default)]
pub(crate) struct Meter {
    cpu_nanos: AtomicU64,
    memory_bytes: AtomicU64,
    instances: AtomicU64,
    /// The CPU clock of a thread running the guest now, if one does (wasmer's guests run on
    /// a thread of their own): its time so far is added to `cpu_nanos` when read.
    running: std::sync::Mutex<Option<libc::clockid_t>>,
}

impl Meter {
    /// The usage now.
    pub(crate) fn usage(&self) -> Usage {
        let running = *self.running.lock().unwrap_or_else(|e| e.into_inner());
        let live = running.map_or(Duration::ZERO, clock_time);
        Usage {
            cpu: Duration::from_nanos(self.cpu_nanos.load(Ordering::Relaxed)) + live,
            memory_bytes: self.memory_bytes.load(Ordering::Relaxed),
            instances: self.instances.load(Ordering::Relaxed),
            code_bytes: 0,
        }
    }

    /// The calling thread runs the guest from now until [`Meter::thread_ended`]: its CPU
    /// time counts as the guest's (the thread must have started for this guest).
    #[cfg(feature = "wasmer")]
    pub(crate) fn thread_started(&self) {
        let mut clock: libc::clockid_t = 0;
        // SAFETY: `clock` is a valid, writable clockid_t; pthread_self() is this thread.
        let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) };
        if rc == 0 {
            *self.running.lock().unwrap_or_else(|e| e.into_inner()) = Some(clock);
        }
    }

    /// The guest's thread ends: its whole CPU time is added for good.
    #[cfg(feature = "wasmer")]
    pub(crate) fn thread_ended(&self) {
        *self.running.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.add_cpu(thread_cpu_time());
    }

    pub(crate) fn add_cpu(&self, spent: Duration) {
        let nanos = u64::try_from(spent.as_nanos()).unwrap_or(u64::MAX);
        self.cpu_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// An instance's memory went from `from` to `to` bytes.
    pub(crate) fn memory_changed(&self, from: u64, to: u64) {
        if to >= from {
            self.memory_bytes.fetch_add(to - from, Ordering::Relaxed);
        } else {
            let less = from - to;
            let _ = self
                .memory_bytes
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |m| {
                    Some(m.saturating_sub(less))
                });
        }
    }

    /// An instance's store was created.
    pub(crate) fn instance_created(&self) {
        self.instances.fetch_add(1, Ordering::Relaxed);
    }

    /// An instance's store was dropped, releasing `memory_bytes`.
    pub(crate) fn instance_dropped(&self, memory_bytes: u64) {
        self.memory_changed(memory_bytes, 0);
        let _ = self
            .instances
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(1))
            });
    }
}

/// A future whose polls are charged to a [`Meter`] in thread CPU time.
pub(crate) struct Metered<F> {
    inner: Pin<Box<F>>,
    meter: std::sync::Arc<Meter>,
}

impl<F: Future> Metered<F> {
    pub(crate) fn new(inner: F, meter: std::sync::Arc<Meter>) -> Metered<F> {
        Metered {
            inner: Box::pin(inner),
            meter,
        }
    }
}

impl<F: Future> Future for Metered<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let before = thread_cpu_time();
        let polled = self.inner.as_mut().poll(cx);
        self.meter.add_cpu(thread_cpu_time().saturating_sub(before));
        polled
    }
}

/// The CPU time the calling thread has used.
#[cfg(unix)]
pub(crate) fn thread_cpu_time() -> Duration {
    clock_time(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// The time of `clock` now; zero if it cannot be read (e.g. its thread has ended).
#[cfg(unix)]
fn clock_time(clock: libc::clockid_t) -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec for the duration of the call, which only
    // writes it; a clock that is no longer valid makes the call fail, not misbehave.
    let rc = unsafe { libc::clock_gettime(clock, &mut now) };
    if rc != 0 {
        return Duration::ZERO;
    }
    let secs = u64::try_from(now.tv_sec).unwrap_or(0);
    let nanos = u32::try_from(now.tv_nsec).unwrap_or(0);
    Duration::new(secs, nanos)
}

/// Elsewhere: wall time since the first call (so a poll is charged its wall time).
#[cfg(not(unix))]
pub(crate) fn thread_cpu_time() -> Duration {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn memory_follows_growth_and_release() {
        let meter = Meter::default();
        meter.instance_created();
        meter.memory_changed(0, 65536);
        meter.memory_changed(65536, 131072);
        meter.instance_created();
        meter.memory_changed(0, 1000);
        assert_eq!(meter.usage().memory_bytes, 132072);
        assert_eq!(meter.usage().instances, 2);
        meter.instance_dropped(131072);
        assert_eq!(meter.usage().memory_bytes, 1000);
        assert_eq!(meter.usage().instances, 1);
        meter.instance_dropped(5000);
        assert_eq!(meter.usage(), Usage::default());
    }

    #[test]
    fn polls_are_charged_their_cpu_time() {
        let meter = Arc::new(Meter::default());
        // Spins until this thread has had 30 ms of CPU, however busy the machine is.
        let busy = async {
            let start = thread_cpu_time();
            let mut x = 0u64;
            while thread_cpu_time().saturating_sub(start) < Duration::from_millis(30) {
                x = std::hint::black_box(x.wrapping_add(1));
            }
            x
        };
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut metered = std::pin::pin!(Metered::new(busy, meter.clone()));
        assert!(metered.as_mut().poll(&mut cx).is_ready());
        let cpu = meter.usage().cpu;
        assert!(cpu >= Duration::from_millis(30), "{cpu:?}");
        assert!(cpu < Duration::from_secs(5), "{cpu:?}");
    }
}
