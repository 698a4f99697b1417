//! Guest stdout/stderr: CRI-format log files with rotation, plus an optional raw tee.
//!
//! Each line is `<RFC3339Nano> <stdout|stderr> <F|P> <text>`: `F` for a full line (its
//! newline removed), `P` for a piece of a longer line cut at [`LogConfig::max_line`] bytes or
//! a last unterminated piece flushed at exit. When the file would grow past
//! [`LogConfig::max_size`] it is rotated: `x.log` becomes `x.log.1`, `x.log.1` becomes
//! `x.log.2`, and so on, keeping [`LogConfig::max_files`] files in all (like the kubelet's
//! `containerLogMaxSize` / `containerLogMaxFiles`).
//!
//! A log file is closed once its container has written nothing for [`IDLE_CLOSE`] and opened
//! again (appending) at the next write, so an idle container holds no descriptor for its log:
//! a node of thousands of quiet pods would otherwise run out of open files for logs alone. One
//! thread, started with the first log, closes the idle ones.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

use crate::spec::Stdio;
use crate::tee::Tee;

/// Errors of the log writer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The log file or its directory could not be created or written.
    #[error(
        "cannot write container log {path}: {source} (check that the directory exists and is writable)"
    )]
    Io {
        /// The log file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

/// Where and how big the CRI log of one container is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// The current log file (e.g. `/var/log/pods/<ns>_<pod>_<uid>/<container>/0.log`).
    pub path: PathBuf,
    /// Rotate when the file would grow past this many bytes (default 10 MiB, the kubelet's).
    pub max_size: u64,
    /// Files to keep, the current one included (default 5, the kubelet's). At least 1.
    pub max_files: usize,
    /// Longest line written as one entry; longer lines are cut into `P` pieces (16 KiB).
    pub max_line: usize,
}

impl LogConfig {
    /// A log at `path` with the kubelet's defaults: 10 MiB, 5 files, 16 KiB lines.
    pub fn new(path: impl Into<PathBuf>) -> LogConfig {
        LogConfig {
            path: path.into(),
            max_size: 10 << 20,
            max_files: 5,
            max_line: 16 << 10,
        }
    }
}

/// Which guest stream bytes came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// stdout
    Stdout,
    /// stderr
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How long a log file stays open without a write.
pub const IDLE_CLOSE: Duration = Duration::from_secs(5);

/// A CRI-format log file with rotation, open while it is being written.
pub struct CriLog {
    config: LogConfig,
    file: Option<File>,
    size: u64,
    last_write: Instant,
}

impl CriLog {
    /// Opens (appends to) the log file, creating its directory.
    pub fn open(config: LogConfig) -> Result<CriLog, Error> {
        let io_err = |source| Error::Io {
            path: config.path.clone(),
            source,
        };
        if let Some(dir) = config.path.parent() {
            std::fs::create_dir_all(dir).map_err(io_err)?;
        }
        let file = append(&config.path).map_err(io_err)?;
        let size = file.metadata().map_err(io_err)?.len();
        Ok(CriLog {
            config,
            file: Some(file),
            size,
            last_write: Instant::now(),
        })
    }

    /// Closes the file if nothing was written for `idle` (the next write opens it again).
    pub fn close_if_idle(&mut self, idle: Duration) {
        if self.file.is_some() && self.last_write.elapsed() >= idle {
            self.file = None;
        }
    }

    /// Whether the file is open now.
    pub fn is_open(&self) -> bool {
        self.file.is_some()
    }

    /// The open file, opened again (appending) if it was closed while idle.
    fn file(&mut self) -> io::Result<&mut File> {
        let file = match self.file.take() {
            Some(file) => file,
            None => append(&self.config.path)?,
        };
        self.last_write = Instant::now();
        Ok(self.file.insert(file))
    }

    /// Writes one entry; `full` says whether it ends a line (`F`) or not (`P`).
    pub fn write_entry(&mut self, stream: Stream, full: bool, text: &[u8]) -> io::Result<()> {
        let now = Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true);
        let tag = if full { "F" } else { "P" };
        let mut entry = format!("{now} {} {tag} ", stream.name()).into_bytes();
        entry.extend_from_slice(text);
        entry.push(b'\n');
        if self.size > 0 && self.size + entry.len() as u64 > self.config.max_size {
            self.rotate()?;
        }
        self.file()?.write_all(&entry)?;
        self.size += entry.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let keep = self.config.max_files.max(1);
        let _ = std::fs::remove_file(rotated(&self.config.path, keep - 1));
        for n in (1..keep.saturating_sub(1)).rev() {
            let from = rotated(&self.config.path, n);
            if from.exists() {
                std::fs::rename(&from, rotated(&self.config.path, n + 1))?;
            }
        }
        if keep > 1 {
            std::fs::rename(&self.config.path, rotated(&self.config.path, 1))?;
        }
        self.file = Some(File::create(&self.config.path)?);
        self.size = 0;
        Ok(())
    }
}

fn append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// `x.log` rotated `n` times: `x.log.n`.
pub fn rotated(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Splits guest output into CRI entries and copies it to the tees.
pub(crate) struct OutputSink {
    log: Option<CriLog>,
    max_line: usize,
    pending: [Vec<u8>; 2],
    tees: [Option<Tee>; 2],
    /// Whether the last byte written to each stream was not a newline.
    line_open: [bool; 2],
}

impl OutputSink {
    pub(crate) fn new(stdio: Stdio) -> Result<OutputSink, Error> {
        let max_line = stdio.log.as_ref().map_or(16 << 10, |c| c.max_line.max(1));
        let log = stdio.log.map(CriLog::open).transpose()?;
        let tees = [stdio.stdout_tee, stdio.stderr_tee].map(|t| t.map(Tee::start));
        Ok(OutputSink {
            log,
            max_line,
            pending: [Vec::new(), Vec::new()],
            tees,
            line_open: [false; 2],
        })
    }

    /// Takes bytes the guest wrote to `stream`.
    pub(crate) fn write(&mut self, stream: Stream, bytes: &[u8]) -> io::Result<()> {
        if let Some(last) = bytes.last() {
            self.line_open[stream.index()] = *last != b'\n';
        }
        if let Some(tee) = &self.tees[stream.index()] {
            tee.write(bytes)?;
        }
        let Some(log) = &mut self.log else {
            return Ok(());
        };
        let pending = &mut self.pending[stream.index()];
        pending.extend_from_slice(bytes);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            write_line(log, stream, &line[..end], self.max_line)?;
        }
        while pending.len() >= self.max_line {
            let piece: Vec<u8> = pending.drain(..self.max_line).collect();
            log.write_entry(stream, false, &piece)?;
        }
        Ok(())
    }

    /// Ready when `stream`'s tee has room for a write (or there is no tee).
    fn poll_room(&self, stream: Stream, cx: &mut Context<'_>) -> Poll<()> {
        match &self.tees[stream.index()] {
            Some(tee) => tee.poll_room(cx),
            None => Poll::Ready(()),
        }
    }

    /// Ready once both tees have written everything queued.
    pub(crate) fn poll_drained(&self, cx: &mut Context<'_>) -> Poll<()> {
        for tee in self.tees.iter().flatten() {
            if tee.poll_drained(cx).is_pending() {
                return Poll::Pending;
            }
        }
        Poll::Ready(())
    }

    /// Whether a tee holds bytes it has not started to write.
    fn has_queued(&self) -> bool {
        self.tees.iter().flatten().any(Tee::has_queued)
    }

    /// Drops the output queued for the tees and not yet written (the container was killed).
    pub(crate) fn discard(&self) {
        for tee in self.tees.iter().flatten() {
            tee.discard();
        }
    }

    /// Ends `stream`'s unterminated line, if any, with a newline (to the tee and the log).
    pub(crate) fn end_line(&mut self, stream: Stream) -> io::Result<()> {
        if self.line_open[stream.index()] {
            self.write(stream, b"\n")?;
        }
        Ok(())
    }

    /// Flushes unterminated output as `P` entries (at exit).
    pub(crate) fn finish(&mut self) -> io::Result<()> {
        let Some(log) = &mut self.log else {
            return Ok(());
        };
        for stream in [Stream::Stdout, Stream::Stderr] {
            let rest = std::mem::take(&mut self.pending[stream.index()]);
            if !rest.is_empty() {
                log.write_entry(stream, false, &rest)?;
            }
        }
        match &mut log.file {
            Some(file) => file.flush(),
            None => Ok(()),
        }
    }

    /// Closes the log file if it has been idle for `idle`.
    fn close_if_idle(&mut self, idle: Duration) {
        if let Some(log) = &mut self.log {
            log.close_if_idle(idle);
        }
    }
}

/// Writes one complete line, cut into `P` pieces when longer than `max_line`.
fn write_line(log: &mut CriLog, stream: Stream, line: &[u8], max_line: usize) -> io::Result<()> {
    let mut rest = line;
    while rest.len() > max_line {
        log.write_entry(stream, false, &rest[..max_line])?;
        rest = &rest[max_line..];
    }
    log.write_entry(stream, true, rest)
}

/// How long a stopped container's last line may take to reach a slow tee reader.
const STOPPED_DRAIN: Duration = Duration::from_secs(1);

/// The sink shared by a container's stdout and stderr streams.
#[derive(Clone)]
pub(crate) struct SharedSink(Arc<Mutex<OutputSink>>);

impl SharedSink {
    pub(crate) fn new(sink: OutputSink) -> SharedSink {
        let has_log = sink.log.is_some();
        let shared = SharedSink(Arc::new(Mutex::new(sink)));
        if has_log {
            idle_closer().register(&shared.0);
        }
        shared
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, OutputSink> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits until the tees have written what is queued. A running container's wait ends at a
    /// stop of `control`; a stopped one's (whose guest output [`Self::discard_if_stopped`]
    /// dropped, so only wasmlet's own last line is left) after [`STOPPED_DRAIN`]. What is not
    /// written by then is dropped.
    pub(crate) async fn drain(&self, control: &crate::state::Control) {
        let drained = std::future::poll_fn(|cx| self.lock().poll_drained(cx));
        if control.cause().is_some() {
            if self.lock().has_queued() {
                let _ = tokio::time::timeout(STOPPED_DRAIN, drained).await;
            }
        } else {
            tokio::select! {
                () = drained => return,
                () = control.stopped() => {}
            }
        }
        self.lock().discard();
    }

    /// Drops the guest's output not yet written to the tees if the container was stopped (a
    /// killed process's unwritten output is lost too).
    pub(crate) fn discard_if_stopped(&self, control: &crate::state::Control) {
        if control.cause().is_some() {
            self.lock().discard();
        }
    }

    pub(crate) fn stream(&self, stream: Stream) -> GuestOutput {
        GuestOutput {
            sink: self.clone(),
            stream,
        }
    }
}

/// The sinks whose log files the idle closer looks after.
struct IdleCloser {
    sinks: Mutex<Vec<Weak<Mutex<OutputSink>>>>,
}

impl IdleCloser {
    fn register(&self, sink: &Arc<Mutex<OutputSink>>) {
        let mut sinks = self.sinks.lock().unwrap_or_else(|e| e.into_inner());
        sinks.push(Arc::downgrade(sink));
    }

    /// Forgets dropped sinks and closes the files idle for [`IDLE_CLOSE`]; a sink being
    /// written at this moment is left for the next sweep.
    fn sweep(&self) {
        let live: Vec<Arc<Mutex<OutputSink>>> = {
            let mut sinks = self.sinks.lock().unwrap_or_else(|e| e.into_inner());
            sinks.retain(|w| w.strong_count() > 0);
            sinks.iter().filter_map(Weak::upgrade).collect()
        };
        for sink in live {
            if let Ok(mut sink) = sink.try_lock() {
                sink.close_if_idle(IDLE_CLOSE);
            }
        }
    }
}

/// The process's idle closer, its thread started on first use.
fn idle_closer() -> &'static IdleCloser {
    static CLOSER: OnceLock<IdleCloser> = OnceLock::new();
    CLOSER.get_or_init(|| {
        let spawned = std::thread::Builder::new()
            .name("wasmlet-logs".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(IDLE_CLOSE / 2);
                    idle_closer().sweep();
                }
            });
        if let Err(err) = spawned {
            tracing::warn!(%err, "log files of idle containers stay open");
        }
        IdleCloser {
            sinks: Mutex::new(Vec::new()),
        }
    })
}

/// One guest output stream (stdout or stderr), as WASI sees it.
#[derive(Clone)]
pub(crate) struct GuestOutput {
    sink: SharedSink,
    stream: Stream,
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut sink = self.sink.lock();
        if sink.poll_room(self.stream, cx).is_pending() {
            return Poll::Pending;
        }
        Poll::Ready(sink.write(self.stream, buf).map(|()| buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(dir: &Path, max_line: usize) -> OutputSink {
        let mut config = LogConfig::new(dir.join("0.log"));
        config.max_line = max_line;
        OutputSink::new(Stdio {
            log: Some(config),
            ..Stdio::default()
        })
        .unwrap()
    }

    fn entries(path: &Path) -> Vec<(String, String, String)> {
        let text = std::fs::read_to_string(path).unwrap();
        text.lines()
            .map(|l| {
                let mut p = l.splitn(4, ' ');
                let ts = p.next().unwrap();
                assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{ts}");
                let s = p.next().unwrap().to_owned();
                (
                    s,
                    p.next().unwrap().to_owned(),
                    p.next().unwrap_or("").to_owned(),
                )
            })
            .collect()
    }

    fn e(s: &str, t: &str, x: &str) -> (String, String, String) {
        (s.into(), t.into(), x.into())
    }

    #[test]
    fn full_partial_and_long_lines() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = sink(dir.path(), 4);
        sink.write(Stream::Stdout, b"ab").unwrap();
        sink.write(Stream::Stderr, b"err\n").unwrap();
        sink.write(Stream::Stdout, b"c\n\nabcdefghij\nxy").unwrap();
        sink.finish().unwrap();
        assert_eq!(
            entries(&dir.path().join("0.log")),
            vec![
                e("stderr", "F", "err"),
                e("stdout", "F", "abc"),
                e("stdout", "F", ""),
                e("stdout", "P", "abcd"),
                e("stdout", "P", "efgh"),
                e("stdout", "F", "ij"),
                e("stdout", "P", "xy"),
            ]
        );
    }

    #[test]
    fn an_idle_log_is_closed_and_opened_again_by_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut log = CriLog::open(LogConfig::new(&path)).unwrap();
        log.write_entry(Stream::Stdout, true, b"before").unwrap();
        log.close_if_idle(Duration::from_secs(3600));
        assert!(log.is_open(), "written just now");
        log.close_if_idle(Duration::ZERO);
        assert!(!log.is_open());
        log.write_entry(Stream::Stderr, true, b"after").unwrap();
        assert!(log.is_open());
        assert_eq!(
            entries(&path),
            vec![e("stdout", "F", "before"), e("stderr", "F", "after")]
        );
    }

    #[test]
    fn the_idle_closer_closes_quiet_sinks_and_forgets_dropped_ones() {
        let dir = tempfile::tempdir().unwrap();
        let closer = IdleCloser {
            sinks: Mutex::new(Vec::new()),
        };
        let quiet = Arc::new(Mutex::new(sink(dir.path(), 16)));
        let gone = Arc::new(Mutex::new(sink(&dir.path().join("x"), 16)));
        closer.register(&quiet);
        closer.register(&gone);
        drop(gone);
        quiet.lock().unwrap().log.as_mut().unwrap().last_write -= IDLE_CLOSE;
        closer.sweep();
        assert!(!quiet.lock().unwrap().log.as_ref().unwrap().is_open());
        assert_eq!(closer.sinks.lock().unwrap().len(), 1);
    }

    #[test]
    fn rotates_keeping_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let config = LogConfig {
            max_size: 100,
            max_files: 3,
            ..LogConfig::new(&path)
        };
        let mut log = CriLog::open(config).unwrap();
        for i in 0..20 {
            log.write_entry(Stream::Stdout, true, format!("line {i}").as_bytes())
                .unwrap();
        }
        assert!(rotated(&path, 1).exists() && rotated(&path, 2).exists());
        assert!(!rotated(&path, 3).exists());
        assert!(std::fs::metadata(&path).unwrap().len() <= 100);
        let last = entries(&path).pop().unwrap();
        assert_eq!(last, e("stdout", "F", "line 19"));
    }
}
