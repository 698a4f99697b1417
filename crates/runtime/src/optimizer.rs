//! The threads Cranelift's optimising compiles run on: a pool of their own, at a lower CPU
//! priority than the process's other threads.
//!
//! A big program starts on baseline code, and Cranelift compiles it meanwhile (see
//! [`Compilers::Tiered`](crate::Compilers::Tiered)). On wasmtime's default thread pool that
//! compile takes every core just when the baseline code serves the program's first requests
//! (Cranelift starts once the baseline code is ready, so the very first answer does not wait
//! for it; the ones after it did). On this pool those requests get the cores first; the
//! compile takes what they leave (nice 10 weighs a tenth of a normal thread, so a busy
//! machine still finishes it).

use std::sync::OnceLock;

/// The niceness of the optimiser's threads (0 is the process's default, 19 the lowest).
const NICE: libc::c_int = 10;

/// The pool, made on the first optimising compile (`None`: it could not be made).
static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();

/// Runs `compile` on the optimiser's pool, its parallel parts included (wasmtime compiles
/// functions on the rayon pool of the thread that asks); on the calling thread if the pool
/// could not be made.
pub(crate) fn run<T: Send>(compile: impl FnOnce() -> T + Send) -> T {
    match POOL.get_or_init(build) {
        Some(pool) => pool.install(compile),
        None => compile(),
    }
}

fn build() -> Option<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("wasmlet-optimize-{i}"))
        .start_handler(|_| lower_priority())
        .build()
        .inspect_err(|err| tracing::warn!("optimising compiles on the default threads: {err}"))
        .ok()
}

/// Lowers the calling thread's CPU priority to [`NICE`], never raises it (on Linux a thread
/// id names one thread to `setpriority`). A refusal leaves it as it was, which is only
/// slower.
fn lower_priority() {
    // SAFETY: `gettid`, `getpriority` and `setpriority` take and return plain integers.
    let refused = unsafe {
        let tid = libc::gettid() as libc::id_t;
        let now = libc::getpriority(libc::PRIO_PROCESS, tid);
        libc::setpriority(libc::PRIO_PROCESS, tid, NICE.max(now)) != 0
    };
    if refused {
        let err = std::io::Error::last_os_error();
        tracing::debug!("the optimiser's thread keeps its priority: {err}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A compile on the pool runs at the lower priority, its parallel parts too.
    #[test]
    fn compiles_run_niced_on_every_thread_of_the_pool() {
        // SAFETY: as in `lower_priority`.
        let nice =
            || unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) };
        let before = nice();
        let (outer, inner) = run(|| {
            use rayon::prelude::*;
            let inner: Vec<i32> = (0..64).into_par_iter().map(|_| nice()).collect();
            (nice(), inner)
        });
        assert_eq!(outer, NICE.max(before));
        assert!(inner.iter().all(|n| *n == NICE.max(before)), "{inner:?}");
        assert_eq!(nice(), before, "the caller's priority is its own");
    }
}
