//! Container output on the terminal in Pod mode: each line prefixed with `[container] `.
//!
//! A line is emitted once it ends, or once it reaches [`MAX_LINE_BYTES`] without ending, as
//! the kubelet splits a long line into partial (`P`) log entries; so a guest writing without
//! newlines is shown in bounded chunks and each byte is looked at once.

use std::io::Write;
use std::sync::{Arc, Mutex};

use wasmlet_worker::{OutputFactory, Stream};

/// The longest piece of a line held before it is shown: 16 KiB, the kubelet's split for
/// partial log lines. Fixed.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// Output to the terminal, each line prefixed with `[container] `.
pub fn prefixed_output() -> OutputFactory {
    let lock = Arc::new(Mutex::new(()));
    Arc::new(move |name: &str, stream: Stream| {
        let writer = PrefixedLines {
            prefix: format!("[{name}] "),
            stream,
            lines: LineChunker::default(),
            lock: lock.clone(),
        };
        Some(Box::new(writer) as Box<dyn Write + Send + Sync>)
    })
}

/// Cuts a byte stream into lines of at most [`MAX_LINE_BYTES`] (a longer line into several
/// pieces), scanning each byte once.
#[derive(Debug, Default)]
struct LineChunker {
    /// The unfinished line, shorter than [`MAX_LINE_BYTES`].
    pending: Vec<u8>,
    /// Bytes looked at so far (for tests: the work is linear).
    scanned: usize,
}

impl LineChunker {
    /// Takes `bytes`; hands every finished line (with its `\n`) or full piece to `emit`.
    fn push(
        &mut self,
        mut bytes: &[u8],
        mut emit: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        while !bytes.is_empty() {
            let room = MAX_LINE_BYTES - self.pending.len();
            let window = &bytes[..bytes.len().min(room)];
            self.scanned += window.len();
            let take = match window.iter().position(|b| *b == b'\n') {
                Some(end) => end + 1,
                None if window.len() == room => room,
                None => {
                    self.pending.extend_from_slice(window);
                    return Ok(());
                }
            };
            self.pending.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            let result = emit(&self.pending);
            self.pending.clear();
            result?;
        }
        Ok(())
    }

    /// The unfinished line, taken.
    fn take_rest(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pending)
    }
}

/// Writes lines, prefixed, to stdout or stderr; an unfinished last line at the end.
struct PrefixedLines {
    prefix: String,
    stream: Stream,
    lines: LineChunker,
    lock: Arc<Mutex<()>>,
}

/// `line` with `prefix` before it and a `\n` after it unless it has one.
fn prefixed(prefix: &str, line: &[u8]) -> Vec<u8> {
    let mut text = Vec::with_capacity(prefix.len() + line.len() + 1);
    text.extend_from_slice(prefix.as_bytes());
    text.extend_from_slice(line);
    if text.last() != Some(&b'\n') {
        text.push(b'\n');
    }
    text
}

fn emit(prefix: &str, stream: &Stream, lock: &Mutex<()>, line: &[u8]) -> std::io::Result<()> {
    let text = prefixed(prefix, line);
    let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
    match stream {
        Stream::Stdout => std::io::stdout().lock().write_all(&text),
        Stream::Stderr => std::io::stderr().lock().write_all(&text),
    }
}

impl Write for PrefixedLines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let (prefix, stream, lock) = (&self.prefix, &self.stream, &self.lock);
        self.lines
            .push(bytes, |line| emit(prefix, stream, lock, line))?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for PrefixedLines {
    fn drop(&mut self) {
        let rest = self.lines.take_rest();
        if !rest.is_empty() {
            let _ = emit(&self.prefix, &self.stream, &self.lock, &rest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in `chunk`-byte writes; returns the pieces emitted and the chunker.
    fn chunk(input: &[u8], chunk: usize) -> (Vec<Vec<u8>>, LineChunker) {
        let mut chunker = LineChunker::default();
        let mut pieces = Vec::new();
        for part in input.chunks(chunk) {
            chunker
                .push(part, |line| {
                    pieces.push(line.to_vec());
                    Ok(())
                })
                .unwrap();
        }
        (pieces, chunker)
    }

    #[test]
    fn newline_free_output_is_split_at_16_kib_in_linear_work() {
        let input = vec![b'x'; 16 * 1024 * 1024];
        let (pieces, chunker) = chunk(&input, 7);
        assert_eq!(pieces.len(), 1024);
        assert!(pieces.iter().all(|p| p.len() == MAX_LINE_BYTES));
        assert!(chunker.pending.is_empty());
        // Each byte is looked at once, where rescanning the pending line costs
        // about len² / (2 × 7) byte looks.
        assert_eq!(chunker.scanned, input.len());
    }

    #[test]
    fn lines_are_kept_whole_and_the_rest_waits() {
        let (pieces, mut chunker) = chunk(b"one\ntwo\n\nthr", 2);
        assert_eq!(
            pieces,
            [b"one\n".to_vec(), b"two\n".to_vec(), b"\n".to_vec()]
        );
        assert_eq!(chunker.take_rest(), b"thr");
        let long = [vec![b'a'; MAX_LINE_BYTES + 3], b"\nb\n".to_vec()].concat();
        let (pieces, _) = chunk(&long, 1000);
        let lengths: Vec<usize> = pieces.iter().map(Vec::len).collect();
        assert_eq!(lengths, [MAX_LINE_BYTES, 4, 2]);
    }

    #[test]
    fn pieces_are_prefixed_and_ended() {
        assert_eq!(prefixed("[c] ", b"hi"), b"[c] hi\n");
        assert_eq!(prefixed("[c] ", b"hi\n"), b"[c] hi\n");
    }
}
