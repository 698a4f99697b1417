//! A container's raw output copy (a terminal, a pipe, a containerd FIFO), written by a thread
//! of its own so that a reader that stops reading never blocks the runtime.
//!
//! The guest's writes are queued up to [`TEE_BUFFER`] bytes, as a pipe buffers them; past that
//! the guest waits for room as an asynchronous wait, which a stop, a kill or a deadline ends at
//! once. A write into the destination that blocks forever blocks only the tee's thread; what
//! is still queued when the container is killed is dropped, as a killed process's unwritten
//! output is.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// The bytes a tee holds before the guest waits for its reader (a pipe's default capacity).
pub const TEE_BUFFER: usize = 64 << 10;

#[derive(Default)]
struct State {
    queue: VecDeque<Vec<u8>>,
    /// Bytes queued or being written.
    queued: usize,
    /// The destination refused a write: later writes fail with this kind.
    failed: Option<io::ErrorKind>,
    /// No more bytes will come: the thread ends once the queue is written.
    closed: bool,
    wakers: Vec<Waker>,
}

struct Shared {
    state: Mutex<State>,
    more: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The writing end of one tee.
pub(crate) struct Tee {
    shared: Arc<Shared>,
}

impl Tee {
    /// Starts the thread that writes into `out`; if no thread can start, writes fail.
    pub(crate) fn start(out: Box<dyn Write + Send + Sync>) -> Tee {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            more: Condvar::new(),
        });
        let writer = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("wasmlet-tee".into())
            .spawn(move || write_out(&writer, out));
        if let Err(err) = spawned {
            tracing::warn!(%err, "cannot start the output copy's thread");
            shared.lock().failed = Some(io::ErrorKind::OutOfMemory);
        }
        Tee { shared }
    }

    /// Ready when the queue has room for the guest's next write (or the tee failed, so the
    /// write reports it); else wakes `cx` when it has.
    pub(crate) fn poll_room(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.poll_below(cx, TEE_BUFFER)
    }

    /// Ready once everything queued is written (or the tee failed).
    pub(crate) fn poll_drained(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.poll_below(cx, 1)
    }

    fn poll_below(&self, cx: &mut Context<'_>, limit: usize) -> Poll<()> {
        let mut state = self.shared.lock();
        if state.queued < limit || state.failed.is_some() {
            return Poll::Ready(());
        }
        if !state.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            state.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Queues `bytes` (whatever the queue holds: the caller waits for room first).
    pub(crate) fn write(&self, bytes: &[u8]) -> io::Result<()> {
        let mut state = self.shared.lock();
        if let Some(kind) = state.failed {
            return Err(io::Error::new(kind, "the output's reader is gone"));
        }
        if !bytes.is_empty() {
            state.queued += bytes.len();
            state.queue.push_back(bytes.to_vec());
            self.shared.more.notify_one();
        }
        Ok(())
    }

    /// Whether bytes are queued that the thread has not started to write.
    pub(crate) fn has_queued(&self) -> bool {
        !self.shared.lock().queue.is_empty()
    }

    /// Drops what is queued and not yet being written (the container was killed).
    pub(crate) fn discard(&self) {
        let mut state = self.shared.lock();
        let dropped: usize = state.queue.drain(..).map(|c| c.len()).sum();
        state.queued -= dropped;
        wake_all(&mut state);
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.more.notify_one();
    }
}

fn wake_all(state: &mut State) {
    for waker in state.wakers.drain(..) {
        waker.wake();
    }
}

/// The tee's thread: writes each queued chunk, until closed and empty or the output fails.
fn write_out(shared: &Shared, mut out: Box<dyn Write + Send + Sync>) {
    loop {
        let chunk = {
            let mut state = shared.lock();
            loop {
                if let Some(chunk) = state.queue.pop_front() {
                    break chunk;
                }
                if state.closed || state.failed.is_some() {
                    return;
                }
                state = shared.more.wait(state).unwrap_or_else(|p| p.into_inner());
            }
        };
        let result = out.write_all(&chunk).and_then(|()| out.flush());
        let mut state = shared.lock();
        state.queued -= chunk.len();
        if let Err(err) = result {
            state.failed = Some(err.kind());
            state.queue.clear();
            state.queued = 0;
        }
        wake_all(&mut state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// A destination that blocks every write until the test lets it go.
    struct Stuck(Mutex<mpsc::Receiver<()>>, Arc<Mutex<Vec<u8>>>);

    impl Write for Stuck {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .unwrap()
                .recv()
                .map_err(|_| io::ErrorKind::BrokenPipe)?;
            self.1.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn poll(f: impl Fn(&mut Context<'_>) -> Poll<()>) -> Poll<()> {
        f(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn a_stuck_reader_makes_the_writer_wait_not_block() {
        let (go, gate) = mpsc::channel();
        let written = Arc::new(Mutex::new(Vec::new()));
        let tee = Tee::start(Box::new(Stuck(Mutex::new(gate), written.clone())));
        let chunk = vec![b'y'; 4096];
        let mut queued = 0;
        while poll(|cx| tee.poll_room(cx)).is_ready() {
            tee.write(&chunk).unwrap();
            queued += chunk.len();
            assert!(queued <= TEE_BUFFER + chunk.len(), "no bound on the queue");
        }
        assert!(
            queued >= TEE_BUFFER,
            "waited before the buffer was full: {queued}"
        );
        assert!(poll(|cx| tee.poll_drained(cx)).is_pending());
        for _ in 0..queued / chunk.len() {
            go.send(()).unwrap();
        }
        for _ in 0..500 {
            if poll(|cx| tee.poll_drained(cx)).is_ready() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(poll(|cx| tee.poll_drained(cx)).is_ready());
        assert_eq!(written.lock().unwrap().len(), queued);
    }

    #[test]
    fn a_gone_reader_fails_the_next_write_and_discard_frees_the_queue() {
        let (go, gate) = mpsc::channel::<()>();
        let tee = Tee::start(Box::new(Stuck(Mutex::new(gate), Arc::default())));
        tee.write(b"first").unwrap();
        tee.write(b"second").unwrap();
        tee.discard();
        drop(go);
        for _ in 0..500 {
            if tee.write(b"x").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("a write into a closed output kept succeeding");
    }
}
