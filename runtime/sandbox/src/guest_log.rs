//! A guest's stdout and stderr, captured line by line into the host's
//! structured log (`tracing`), tagged with service, role and instance.
//!
//! A guest never writes to the host's own stdout or stderr: what it prints
//! becomes `tracing` events on the [`GUEST_LOG_TARGET`] target, so operators filter
//! and ship it like any other host log. Lines longer than [`MAX_LINE`] bytes
//! are split, so a guest that never prints a newline cannot grow host memory.
//!
//! Each line passes the role's `log` buckets: one operation and its bytes.
//! A line over the limit is dropped and counted, and so is the rest of the
//! write it came in, in bulk: a guest flooding newlines then costs the host
//! a scan of its bytes per write, not an event (nor a bucket check) per line.

use crate::rate_limit::{Interface, RoleLimiter, byte_count};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// The `tracing` target of every line a guest prints (and of the counts of
/// lines dropped): the one name the host's log filter and its store of
/// recent guest output select guest output by.
pub const GUEST_LOG_TARGET: &str = "weft::guest";

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
                target: GUEST_LOG_TARGET,
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
        Box::new(LineWriter::new(self.clone()))
    }
}

impl LineSink for GuestLog {
    fn line(&self, line: &str) -> bool {
        let tags = &self.tags;
        let bytes = byte_count(line.len()).saturating_add(1);
        if self.limiter.try_admit(Interface::Log, bytes).is_err() {
            self.dropped.count.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.dropped.report();
        tracing::info!(
            target: GUEST_LOG_TARGET,
            service = %tags.service,
            role = %tags.role,
            instance = %tags.instance,
            stream = self.stream.name(),
            "{line}"
        );
        true
    }

    fn dropped(&self, lines: u64) {
        self.dropped.count.fetch_add(lines, Ordering::Relaxed);
        self.limiter.count_refused(Interface::Log, lines);
    }
}

/// Where a [`LineWriter`] sends complete lines.
trait LineSink: Send + Sync + Unpin {
    /// Takes one line (without its newline); false if it was refused.
    fn line(&self, line: &str) -> bool;
    /// Counts `lines` dropped unread after a refusal.
    fn dropped(&self, lines: u64);
}

/// Buffers a partial line until its newline arrives (or it grows too long).
struct LineWriter<S: LineSink> {
    sink: S,
    pending: Vec<u8>,
}

impl<S: LineSink> LineWriter<S> {
    fn new(sink: S) -> Self {
        Self {
            sink,
            pending: Vec::new(),
        }
    }

    /// Sends the pending line; whether the sink took it.
    fn flush_line(&mut self) -> bool {
        let line = std::mem::take(&mut self.pending);
        let line = String::from_utf8_lossy(&line);
        self.sink.line(line.trim_end_matches('\r'))
    }

    fn absorb(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let taken = match bytes.iter().position(|&b| b == b'\n') {
                Some(end) if self.pending.len() + end <= MAX_LINE => {
                    self.pending.extend_from_slice(&bytes[..end]);
                    bytes = &bytes[end + 1..];
                    self.flush_line()
                }
                _ => {
                    let take = (MAX_LINE - self.pending.len()).min(bytes.len());
                    self.pending.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    self.pending.len() < MAX_LINE || self.flush_line()
                }
            };
            if !taken {
                bytes = self.drop_whole_lines(bytes);
            }
        }
    }

    /// After a refusal, drops the complete lines left in this write unread
    /// and counts them (a line over [`MAX_LINE`] counts once): the buckets
    /// will not refill within one write, and assembling lines only to
    /// refuse them would cost the host per line what the guest pays per
    /// byte. Returns the partial line after the last newline.
    fn drop_whole_lines<'a>(&self, bytes: &'a [u8]) -> &'a [u8] {
        let Some(last) = bytes.iter().rposition(|&b| b == b'\n') else {
            return bytes;
        };
        let (whole, rest) = bytes.split_at(last + 1);
        let lines = whole.iter().filter(|&&b| b == b'\n').count();
        self.sink.dropped(u64::try_from(lines).unwrap_or(u64::MAX));
        rest
    }
}

impl<S: LineSink> AsyncWrite for LineWriter<S> {
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

impl<S: LineSink> Drop for LineWriter<S> {
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

    /// Takes the first `room` lines, then refuses; counts what it was asked.
    #[derive(Default)]
    struct Sink {
        room: usize,
        taken: Mutex<Vec<String>>,
        asked: AtomicU64,
        dropped: AtomicU64,
    }

    impl LineSink for Arc<Sink> {
        fn line(&self, line: &str) -> bool {
            self.asked.fetch_add(1, Ordering::Relaxed);
            let mut taken = self.taken.lock().unwrap();
            if taken.len() < self.room {
                taken.push(line.to_owned());
                true
            } else {
                false
            }
        }

        fn dropped(&self, lines: u64) {
            self.dropped.fetch_add(lines, Ordering::Relaxed);
        }
    }

    fn sink_after(room: usize, chunks: &[&[u8]]) -> Arc<Sink> {
        let sink = Arc::new(Sink {
            room,
            ..Sink::default()
        });
        let mut writer = LineWriter::new(sink.clone());
        for chunk in chunks {
            writer.absorb(chunk);
        }
        drop(writer);
        sink
    }

    fn lines_of(chunks: &[&[u8]]) -> Vec<String> {
        sink_after(usize::MAX, chunks).taken.lock().unwrap().clone()
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

    #[test]
    fn a_refused_line_drops_the_rest_of_its_write_unread_and_counted() {
        // 10,000 bare newlines in one write, then a partial line.
        let mut flood = vec![b'\n'; 10_000];
        flood.extend_from_slice(b"tail");
        let sink = sink_after(3, &[&flood, b" end\n", b"next\n"]);
        assert_eq!(*sink.taken.lock().unwrap(), vec!["", "", ""]);
        // The sink was asked about the three it took and the first it
        // refused; the other 9,996 of that write were dropped in bulk.
        let asked = sink.asked.load(Ordering::Relaxed);
        let dropped = sink.dropped.load(Ordering::Relaxed);
        assert_eq!(dropped, 9_996);
        // The partial line was kept whole across writes, and each later
        // write's first line is offered again (and refused).
        assert_eq!(asked, 4 + 2, "{asked} lines offered");
        // Every one of the 10,002 lines is accounted for.
        assert_eq!(3 + (asked - 3) + dropped, 10_002);
    }
}
