//! The threads Cranelift's optimising compiles run on: a pool of their own, at a lower CPU
//! priority than the process's other threads for the first seconds of each compile.
//!
//! A big program starts on baseline code, and Cranelift compiles it meanwhile (see
//! [`Compilers::Tiered`](crate::Compilers::Tiered)). On wasmtime's default thread pool that
//! compile takes every core just when the baseline code serves the program's first requests
//! (Cranelift starts once the baseline code is ready, so the very first answer does not wait
//! for it; the ones after it did). On this pool those requests get the cores first for
//! [`NICED_FOR`] (nice 10 weighs a tenth of a normal thread); then the compile's threads go
//! back to the process's priority. Niced for good, a compile starved under sustained load:
//! a Python component served under `wrk -c16` on 2 cores still ran on baseline code after
//! 30 s (250 req/s), where at the process's priority its optimised code took over after 17 s
//! (455 req/s from then on).
//!
//! Going back up needs `CAP_SYS_NICE` (a process may always lower its threads' priority, not
//! raise it again); without it the compiles are never niced: a compile that cannot finish
//! under load costs more than its first seconds' competition.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// The niceness of the optimiser's threads at the start of a compile (0 is the process's
/// default, 19 the lowest).
const NICE: libc::c_int = 10;

/// How long a compile runs at [`NICE`] before its threads go back to the process's priority.
const NICED_FOR: Duration = Duration::from_secs(2);

/// The pool, made on the first optimising compile (`None`: it could not be made).
static POOL: OnceLock<Option<Pool>> = OnceLock::new();

struct Pool {
    threads: rayon::ThreadPool,
    priority: Arc<Priority>,
    /// Whether the threads may go back up after being niced (see the module's doc).
    restorable: bool,
}

/// The priority the pool's threads run at, and their ids (on Linux a thread id names one
/// thread to `setpriority`).
struct Priority {
    state: Mutex<PriorityState>,
    /// The process's priority: what the threads go back to.
    base: libc::c_int,
}

struct PriorityState {
    tids: Vec<libc::id_t>,
    nice: libc::c_int,
    /// Compiles in flight: the pool is niced again only when none is.
    compiles: usize,
}

impl Priority {
    /// Registers the calling thread (a new thread of the pool) and gives it the pool's
    /// current priority.
    fn join(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let tid = gettid();
        state.tids.push(tid);
        set_nice(tid, state.nice);
    }

    /// Gives every thread of the pool `nice`.
    fn set(&self, state: &mut PriorityState, nice: libc::c_int) {
        state.nice = nice;
        for tid in &state.tids {
            set_nice(*tid, nice);
        }
    }
}

/// Runs `compile` on the optimiser's pool, its parallel parts included (wasmtime compiles
/// functions on the rayon pool of the thread that asks): niced for [`NICED_FOR`], then at
/// the process's priority. On the calling thread if the pool could not be made.
pub(crate) fn run<T: Send>(compile: impl FnOnce() -> T + Send) -> T {
    let Some(pool) = POOL.get_or_init(build) else {
        return compile();
    };
    if !pool.restorable {
        return pool.threads.install(compile);
    }
    let (done, finished) = mpsc::channel::<()>();
    let priority = pool.priority.clone();
    start_compile(&priority);
    let timer = std::thread::Builder::new()
        .name("wasmlet-optimize-timer".into())
        .spawn(move || {
            if let Err(RecvTimeoutError::Timeout) = finished.recv_timeout(NICED_FOR) {
                let mut state = priority.state.lock().unwrap_or_else(|e| e.into_inner());
                priority.set(&mut state, priority.base);
            }
        });
    if let Err(err) = &timer {
        tracing::debug!("the optimiser's threads stay niced for this compile: {err}");
    }
    let compiled = pool.threads.install(compile);
    drop(done);
    end_compile(&pool.priority);
    compiled
}

fn start_compile(priority: &Priority) {
    let mut state = priority.state.lock().unwrap_or_else(|e| e.into_inner());
    if state.compiles == 0 {
        priority.set(&mut state, NICE.max(priority.base));
    }
    state.compiles += 1;
}

fn end_compile(priority: &Priority) {
    let mut state = priority.state.lock().unwrap_or_else(|e| e.into_inner());
    state.compiles -= 1;
}

fn build() -> Option<Pool> {
    let base = get_nice(gettid());
    let restorable = can_restore(base);
    let priority = Arc::new(Priority {
        state: Mutex::new(PriorityState {
            tids: Vec::new(),
            nice: base,
            compiles: 0,
        }),
        base,
    });
    let joining = priority.clone();
    let threads = rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("wasmlet-optimize-{i}"))
        .start_handler(move |_| joining.join())
        .build()
        .inspect_err(|err| tracing::warn!("optimising compiles on the default threads: {err}"))
        .ok()?;
    if !restorable {
        tracing::info!(
            "optimising compiles run at the process's priority: without CAP_SYS_NICE their \
             threads could not go back up after being niced"
        );
    }
    Some(Pool {
        threads,
        priority,
        restorable,
    })
}

/// Whether a thread of this process may be niced and then given `base` back: tried on a
/// thread of its own.
fn can_restore(base: libc::c_int) -> bool {
    std::thread::spawn(move || {
        let tid = gettid();
        set_nice(tid, NICE.max(base)) && set_nice(tid, base)
    })
    .join()
    .unwrap_or(false)
}

fn gettid() -> libc::id_t {
    // SAFETY: `gettid` takes nothing and returns the calling thread's id.
    unsafe { libc::gettid() as libc::id_t }
}

fn get_nice(tid: libc::id_t) -> libc::c_int {
    // SAFETY: `getpriority` takes and returns plain integers.
    unsafe { libc::getpriority(libc::PRIO_PROCESS, tid) }
}

/// Sets thread `tid`'s niceness; a refusal leaves it as it was (which is only slower) and
/// returns `false`.
fn set_nice(tid: libc::id_t, nice: libc::c_int) -> bool {
    // SAFETY: `setpriority` takes and returns plain integers.
    let refused = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) != 0 };
    if refused {
        let err = std::io::Error::last_os_error();
        tracing::debug!(
            tid,
            nice,
            "cannot set an optimiser thread's priority: {err}"
        );
    }
    !refused
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nice() -> libc::c_int {
        get_nice(gettid())
    }

    /// What a compile's threads run at while niced: [`NICE`], or the process's priority
    /// where they could not go back up.
    fn niced(base: libc::c_int) -> libc::c_int {
        let restorable = POOL
            .get_or_init(build)
            .as_ref()
            .is_some_and(|p| p.restorable);
        if restorable { NICE.max(base) } else { base }
    }

    /// A compile on the pool starts at the lower priority, its parallel parts too, and
    /// goes back to the process's after `NICED_FOR`; the next compile starts niced again.
    #[test]
    fn compiles_start_niced_on_every_thread_then_go_back_to_the_process_priority() {
        let before = nice();
        let (outer, inner, later) = run(|| {
            use rayon::prelude::*;
            let inner: Vec<i32> = (0..64).into_par_iter().map(|_| nice()).collect();
            let outer = nice();
            std::thread::sleep(NICED_FOR + Duration::from_secs(1));
            (outer, inner, nice())
        });
        assert_eq!(outer, niced(before));
        assert!(inner.iter().all(|n| *n == niced(before)), "{inner:?}");
        assert_eq!(
            later, before,
            "after {NICED_FOR:?} the compile runs at full priority"
        );
        assert_eq!(nice(), before, "the caller's priority is its own");
        assert_eq!(run(nice), niced(before), "the next compile starts niced");
    }
}
