//! What a guest writes to stdout and stderr, captured for the host's log: one stage's
//! output is cut into lines of at most [`MAX_LINE`] bytes and rate-limited to
//! [`LINES_PER_SECOND`] (with a burst of [`LINE_BURST`]); what does not fit is dropped
//! and counted. The raw tail of each call's output is kept apart, so the message of a
//! panic survives any amount of noise printed before it.

use bytes::Bytes;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Instant;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Longest line logged; the rest of a longer line is cut (and the cut counted).
pub const MAX_LINE: usize = 4 * 1024;
/// Lines per second one stage may log, sustained.
pub const LINES_PER_SECOND: f64 = 100.0;
/// Lines one stage may log in a burst.
pub const LINE_BURST: f64 = 1000.0;
/// Logged output kept between two drains (a drain follows every call).
const CAPACITY: usize = 256 * 1024;
/// Raw output of the current call kept for reading a panic message.
const TAIL: usize = 8 * 1024;

/// A stage's captured guest output. Cheap to clone; clones share the buffer.
#[derive(Clone)]
pub struct GuestLog {
    inner: Arc<Mutex<LogBuffer>>,
}

impl Default for GuestLog {
    fn default() -> Self {
        GuestLog {
            inner: Arc::new(Mutex::new(LogBuffer::new(Instant::now()))),
        }
    }
}

/// Which of the guest's streams: each assembles its own lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout = 0,
    Stderr = 1,
}

/// One stream of a [`GuestLog`], as WASI's stdout or stderr.
#[derive(Clone)]
pub struct GuestStream {
    log: GuestLog,
    stream: Stream,
}

/// What a drain took: lines to log, what was dropped since the last drain, and the raw
/// tail of the output (for a panic message).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Drained {
    pub lines: Vec<String>,
    /// Lines dropped by the rate limit or because the buffer was full.
    pub dropped_lines: u64,
    /// Bytes cut from lines longer than [`MAX_LINE`].
    pub cut_bytes: u64,
    pub tail: String,
}

/// The line a stream is writing.
#[derive(Default)]
struct OpenLine {
    /// Whether a line is open (bytes seen since the last newline).
    open: bool,
    /// Whether it is being kept (it got a token and room).
    kept: bool,
    /// Its kept bytes.
    bytes: Vec<u8>,
    /// Its bytes seen, kept or not.
    len: usize,
}

struct LogBuffer {
    /// Complete lines, newline-terminated, in the order they ended.
    complete: Vec<u8>,
    lines: [OpenLine; 2],
    dropped_lines: u64,
    cut_bytes: u64,
    tail: Vec<u8>,
    tokens: f64,
    refilled: Instant,
}

impl LogBuffer {
    fn new(now: Instant) -> Self {
        LogBuffer {
            complete: Vec::new(),
            lines: Default::default(),
            dropped_lines: 0,
            cut_bytes: 0,
            tail: Vec::new(),
            tokens: LINE_BURST,
            refilled: now,
        }
    }

    fn take_token(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * LINES_PER_SECOND).min(LINE_BURST);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn append(&mut self, stream: Stream, data: &[u8], now: Instant) {
        self.tail.extend_from_slice(data);
        if self.tail.len() > 2 * TAIL {
            let excess = self.tail.len() - TAIL;
            self.tail.drain(..excess);
        }
        let s = stream as usize;
        for piece in data.split_inclusive(|&b| b == b'\n') {
            let (content, newline) = match piece.split_last() {
                Some((b'\n', content)) => (content, true),
                _ => (piece, false),
            };
            if !self.lines[s].open {
                if content.is_empty() {
                    continue; // a blank line is not worth a token
                }
                let kept = self.complete.len() + MAX_LINE <= CAPACITY && self.take_token(now);
                if !kept {
                    self.dropped_lines += 1;
                }
                self.lines[s].open = true;
                self.lines[s].kept = kept;
            }
            let line = &mut self.lines[s];
            if line.kept {
                let room = MAX_LINE.saturating_sub(line.len);
                line.bytes
                    .extend_from_slice(&content[..content.len().min(room)]);
            }
            line.len += content.len();
            if newline {
                self.close_line(s);
            }
        }
    }

    fn close_line(&mut self, s: usize) {
        let line = std::mem::take(&mut self.lines[s]);
        if line.open && line.kept {
            self.complete.extend_from_slice(&line.bytes);
            let cut = line.len - line.bytes.len();
            if cut > 0 {
                self.complete
                    .extend_from_slice(format!(" [line cut: {cut} more bytes]").as_bytes());
                self.cut_bytes += cut as u64;
            }
            self.complete.push(b'\n');
        }
    }

    fn drain(&mut self, all: bool) -> Drained {
        if all {
            self.close_line(Stream::Stdout as usize);
            self.close_line(Stream::Stderr as usize);
        }
        let taken = std::mem::take(&mut self.complete);
        let tail = std::mem::take(&mut self.tail);
        Drained {
            lines: String::from_utf8_lossy(&taken)
                .lines()
                .filter(|line| !line.trim().is_empty())
                .map(str::to_owned)
                .collect(),
            dropped_lines: std::mem::take(&mut self.dropped_lines),
            cut_bytes: std::mem::take(&mut self.cut_bytes),
            tail: String::from_utf8_lossy(&tail).into_owned(),
        }
    }
}

impl GuestLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, LogBuffer> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The guest's `stream`, writing into this log.
    pub fn stream(&self, stream: Stream) -> GuestStream {
        GuestStream {
            log: self.clone(),
            stream,
        }
    }

    /// Takes the complete lines captured (and the open lines too when `all`, at the end of
    /// a failed call), the drop counts since the last drain, and the call's raw tail.
    pub fn drain(&self, all: bool) -> Drained {
        self.lock().drain(all)
    }
}

impl GuestStream {
    fn append(&self, data: &[u8]) {
        self.log.lock().append(self.stream, data, Instant::now());
    }
}

impl IsTerminal for GuestStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for GuestStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(CAPACITY)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestStream {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_long_line_without_newline_is_cut_and_later_lines_still_log() {
        let now = Instant::now();
        let mut buf = LogBuffer::new(now);
        buf.append(Stream::Stderr, &vec![b'x'; 70 * 1024], now);
        buf.append(Stream::Stderr, b"\nnext line\n", now);
        let drained = buf.drain(false);
        assert_eq!(drained.lines.len(), 2, "{:?}", drained.lines.len());
        assert_eq!(
            drained.lines[0],
            format!(
                "{} [line cut: {} more bytes]",
                "x".repeat(MAX_LINE),
                70 * 1024 - MAX_LINE
            )
        );
        assert_eq!(drained.lines[1], "next line");
        assert_eq!(drained.cut_bytes, (70 * 1024 - MAX_LINE) as u64);
        assert_eq!(drained.dropped_lines, 0);
    }

    #[test]
    fn an_open_long_line_does_not_block_the_next_call() {
        let now = Instant::now();
        let mut buf = LogBuffer::new(now);
        buf.append(Stream::Stderr, &vec![b'y'; 70 * 1024], now);
        assert!(buf.drain(false).lines.is_empty(), "the line is still open");
        buf.append(Stream::Stderr, b" end\nafter\n", now);
        let drained = buf.drain(false);
        assert_eq!(drained.lines.len(), 2);
        assert!(drained.lines[0].starts_with("yyyy"));
        assert_eq!(drained.lines[1], "after");
    }

    #[test]
    fn lines_past_the_burst_are_dropped_and_counted_then_the_rate_refills() {
        let now = Instant::now();
        let mut buf = LogBuffer::new(now);
        let burst = LINE_BURST as u64;
        for i in 0..burst + 250 {
            buf.append(Stream::Stderr, format!("line {i}\n").as_bytes(), now);
        }
        let drained = buf.drain(false);
        assert_eq!(drained.lines.len() as u64, burst);
        assert_eq!(drained.dropped_lines, 250);
        assert_eq!(drained.lines.last().map(String::as_str), Some("line 999"));
        // One second later, LINES_PER_SECOND more lines are allowed.
        let later = now + Duration::from_secs(1);
        for i in 0..200 {
            buf.append(Stream::Stderr, format!("later {i}\n").as_bytes(), later);
        }
        let drained = buf.drain(false);
        assert_eq!(drained.lines.len() as u64, LINES_PER_SECOND as u64);
        assert_eq!(drained.dropped_lines, 200 - LINES_PER_SECOND as u64);
    }

    #[test]
    fn stdout_and_stderr_assemble_their_own_lines() {
        let now = Instant::now();
        let mut buf = LogBuffer::new(now);
        buf.append(Stream::Stderr, b"err part 1, ", now);
        buf.append(Stream::Stdout, b"out line\n", now);
        buf.append(Stream::Stderr, b"err part 2\n", now);
        let drained = buf.drain(false);
        assert_eq!(drained.lines, ["out line", "err part 1, err part 2"]);
    }

    #[test]
    fn the_tail_keeps_the_last_output_even_when_lines_are_dropped() {
        let now = Instant::now();
        let mut buf = LogBuffer::new(now);
        for i in 0..5000 {
            buf.append(Stream::Stderr, format!("noise {i}\n").as_bytes(), now);
        }
        buf.append(
            Stream::Stderr,
            b"thread '<unnamed>' panicked at src/lib.rs:1:1:\nboom\n",
            now,
        );
        let drained = buf.drain(true);
        assert!(
            drained
                .tail
                .ends_with("panicked at src/lib.rs:1:1:\nboom\n")
        );
        assert!(drained.tail.len() <= 2 * TAIL);
        assert_eq!(drained.dropped_lines, 5000 + 2 - LINE_BURST as u64);
    }
}
