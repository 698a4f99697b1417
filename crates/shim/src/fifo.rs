//! The output FIFOs of a task (wasm or native), watched so that its exit is reported only
//! once their readers have taken what it wrote.
//!
//! containerd's clients (`ctr`, the CRI plugin) open their ends of a task's FIFOs on
//! goroutines of their own and, once the task has exited, cancel the opens that have not
//! finished before they wait for the output. The kernel may already have opened such an end
//! while its goroutine has not run since: cancelled then, the end is closed unread and the
//! whole stream is lost. A task that ends within milliseconds of its start meets this on a
//! busy machine (3 of 150 `ctr run` of hello lost stdout or stderr beside three busy loops on
//! 2 cores). The shim holds a second handle of each FIFO and, when the task has ended, waits
//! until the pipe is empty (`FIONREAD`), or [`READ_OUT`] at most when nobody reads it (the
//! client of a detached `ctr run` has gone).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::time::{Duration, Instant};

/// How long a task's end waits for the readers of its FIFOs.
pub const READ_OUT: Duration = Duration::from_secs(1);

/// The first pause between two looks at FIFOs that hold output.
const FIRST_PAUSE: Duration = Duration::from_micros(50);

/// The longest pause between two looks at the FIFOs.
const LONGEST_PAUSE: Duration = Duration::from_millis(16);

/// Handles of a task's output FIFOs, beside the ones its output is written through.
#[derive(Default)]
pub struct Outputs {
    fifos: Vec<File>,
}

impl Outputs {
    /// Watches the FIFO `file` is open on (through a handle of its own). An output that is
    /// not a FIFO (a regular file, `/dev/null`) has no reader to wait for and is not watched.
    pub fn watch(&mut self, file: &File) -> io::Result<()> {
        if file.metadata()?.file_type().is_fifo() {
            self.fifos.push(file.try_clone()?);
        }
        Ok(())
    }

    /// Waits until every FIFO is empty, at most `limit`; then closes the handles. Most
    /// often they are empty at once; otherwise their readers take the output within a
    /// millisecond or two, finer than the async timer's millisecond ticks: the wait is on a
    /// blocking thread, its pauses starting at [`FIRST_PAUSE`].
    pub async fn read_out(self, limit: Duration) {
        if !self.any_unread() {
            return;
        }
        let _ = tokio::task::spawn_blocking(move || self.wait_empty(limit)).await;
    }

    fn any_unread(&self) -> bool {
        self.fifos.iter().any(|f| unread(f).unwrap_or(0) > 0)
    }

    fn wait_empty(&self, limit: Duration) {
        let start = Instant::now();
        let mut pause = FIRST_PAUSE;
        while self.any_unread() {
            if start.elapsed() >= limit {
                log::warn!("the task's output was not read within {limit:?}; its exit is reported");
                return;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(LONGEST_PAUSE);
        }
    }
}

/// The bytes written into the pipe `file` is open on and not read yet.
fn unread(file: &File) -> io::Result<usize> {
    let mut bytes: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer, which points at `bytes`.
    let result = unsafe { libc::ioctl(file.as_raw_fd(), libc::FIONREAD, &mut bytes) };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(bytes).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A FIFO made in `dir`, the shim's read-write end of it, and that end watched.
    fn watched_fifo(dir: &std::path::Path) -> (std::path::PathBuf, File, Outputs) {
        let path = dir.join("out");
        let name = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: makes a FIFO at a path of the test's own directory.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        let writer = File::options().read(true).write(true).open(&path).unwrap();
        let mut outputs = Outputs::default();
        outputs.watch(&writer).unwrap();
        (path, writer, outputs)
    }

    #[tokio::test]
    async fn the_end_waits_until_a_late_reader_has_taken_the_output() {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut writer, outputs) = watched_fifo(dir.path());
        writer.write_all(b"hello from stderr!\n").unwrap();
        assert_eq!(unread(&writer).unwrap(), 19);
        let reader = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            let mut reader = File::open(path).unwrap();
            let mut line = [0u8; 19];
            reader.read_exact(&mut line).unwrap();
            line
        });
        let start = Instant::now();
        outputs.read_out(Duration::from_secs(10)).await;
        assert!(start.elapsed() >= Duration::from_millis(100));
        assert_eq!(unread(&writer).unwrap(), 0);
        assert_eq!(&reader.join().unwrap(), b"hello from stderr!\n");
    }

    #[tokio::test]
    async fn output_nobody_reads_holds_the_end_only_until_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let (_path, mut writer, outputs) = watched_fifo(dir.path());
        writer.write_all(b"nobody reads this\n").unwrap();
        let start = Instant::now();
        outputs.read_out(Duration::from_millis(200)).await;
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(200), "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
    }

    #[tokio::test]
    async fn empty_fifos_do_not_wait() {
        let dir = tempfile::tempdir().unwrap();
        let (_path, _writer, outputs) = watched_fifo(dir.path());
        let start = Instant::now();
        outputs.read_out(Duration::from_secs(10)).await;
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn an_output_that_is_a_regular_file_does_not_hold_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stdout");
        std::fs::write(&path, "written before the task\n").unwrap();
        let file = File::options().read(true).write(true).open(&path).unwrap();
        assert!(
            unread(&file).unwrap() > 0,
            "FIONREAD counts the file's unread bytes"
        );
        let mut outputs = Outputs::default();
        outputs.watch(&file).unwrap();
        let start = Instant::now();
        outputs.read_out(Duration::from_secs(10)).await;
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
