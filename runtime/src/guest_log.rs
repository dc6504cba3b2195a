//! A guest's stdout and stderr, captured line by line into the host's
//! structured log (`tracing`), tagged with service, role and instance.
//!
//! A guest never writes to the host's own stdout or stderr: what it prints
//! becomes `tracing` events on the `weft::guest` target, so operators filter
//! and ship it like any other host log. Lines longer than [`MAX_LINE`] bytes
//! are split, so a guest that never prints a newline cannot grow host memory.

use crate::rate_limit::{Interface, RoleLimiter};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// The longest line kept whole; longer output is logged in pieces this size.
pub const MAX_LINE: usize = 4096;

/// Which of a guest's output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The guest's stdout.
    Stdout,
    /// The guest's stderr.
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Who is writing: the tags every captured line carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestTags {
    /// The service's name.
    pub service: String,
    /// The role's name.
    pub role: String,
    /// The instance: a worker's index, or a web request's sequence number.
    pub instance: String,
}

/// A WASI output stream that turns a guest's output into log events,
/// within the role's log rate limit.
#[derive(Debug, Clone)]
pub struct GuestLog {
    tags: Arc<GuestTags>,
    stream: Stream,
    limiter: Arc<RoleLimiter>,
    /// Lines dropped by the rate limit and not yet reported.
    dropped: Arc<DroppedLines>,
}

/// A count of dropped lines, reported when the next line gets through or,
/// at the latest, when the guest's stream goes away.
#[derive(Debug)]
struct DroppedLines {
    count: AtomicU64,
    tags: Arc<GuestTags>,
    stream: Stream,
}

impl DroppedLines {
    fn report(&self) {
        let dropped = self.count.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let tags = &self.tags;
            tracing::warn!(
                target: "weft::guest",
                service = %tags.service,
                role = %tags.role,
                instance = %tags.instance,
                stream = self.stream.name(),
                dropped,
                "guest output over its rate limit: {dropped} lines dropped"
            );
        }
    }
}

impl Drop for DroppedLines {
    fn drop(&mut self) {
        self.report();
    }
}

impl GuestLog {
    /// A stream logging under `tags`, limited by the role's `limiter`.
    pub fn new(tags: Arc<GuestTags>, stream: Stream, limiter: Arc<RoleLimiter>) -> Self {
        let dropped = Arc::new(DroppedLines {
            count: AtomicU64::new(0),
            tags: tags.clone(),
            stream,
        });
        Self {
            tags,
            stream,
            limiter,
            dropped,
        }
    }
}

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        let log = self.clone();
        Box::new(LineWriter::new(move |line| log.emit(line)))
    }
}

impl GuestLog {
    fn emit(&self, line: &str) {
        let tags = &self.tags;
        let bytes = u64::try_from(line.len())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        if self.limiter.try_admit(Interface::Log, bytes).is_err() {
            self.dropped.count.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.dropped.report();
        tracing::info!(
            target: "weft::guest",
            service = %tags.service,
            role = %tags.role,
            instance = %tags.instance,
            stream = self.stream.name(),
            "{line}"
        );
    }
}

type Emit = Box<dyn Fn(&str) + Send + Sync>;

/// Buffers a partial line until its newline arrives (or it grows too long).
struct LineWriter {
    emit: Emit,
    pending: Vec<u8>,
}

impl LineWriter {
    fn new(emit: impl Fn(&str) + Send + Sync + 'static) -> Self {
        Self {
            emit: Box::new(emit),
            pending: Vec::new(),
        }
    }

    fn flush_line(&mut self) {
        let line = std::mem::take(&mut self.pending);
        let line = String::from_utf8_lossy(&line);
        (self.emit)(line.trim_end_matches('\r'));
    }

    fn absorb(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match bytes.iter().position(|&b| b == b'\n') {
                Some(end) if self.pending.len() + end <= MAX_LINE => {
                    self.pending.extend_from_slice(&bytes[..end]);
                    self.flush_line();
                    bytes = &bytes[end + 1..];
                }
                _ => {
                    let take = (MAX_LINE - self.pending.len()).min(bytes.len());
                    self.pending.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    if self.pending.len() == MAX_LINE {
                        self.flush_line();
                    }
                }
            }
        }
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.absorb(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.pending.is_empty() {
            self.flush_line();
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            self.flush_line();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn lines_of(chunks: &[&[u8]]) -> Vec<String> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let mut writer = LineWriter::new(move |line| sink.lock().unwrap().push(line.to_owned()));
        for chunk in chunks {
            writer.absorb(chunk);
        }
        drop(writer);
        Arc::try_unwrap(seen).unwrap().into_inner().unwrap()
    }

    #[test]
    fn lines_are_split_on_newlines_across_writes() {
        assert_eq!(
            lines_of(&[b"hel", b"lo\r\nwor", b"ld\n"]),
            vec!["hello", "world"]
        );
    }

    #[test]
    fn partial_line_is_flushed_on_drop() {
        assert_eq!(lines_of(&[b"no newline"]), vec!["no newline"]);
    }

    #[test]
    fn output_without_newlines_is_cut_into_bounded_lines() {
        let big = vec![b'x'; MAX_LINE * 2 + 10];
        let lines = lines_of(&[&big]);
        assert_eq!(
            lines.iter().map(String::len).collect::<Vec<_>>(),
            vec![MAX_LINE, MAX_LINE, 10]
        );
    }
}
