//! Request bodies that are read to the end even when nobody wants them.
//!
//! When a server answers before it has read the request body (a 413 for a
//! body over the limit, a 401, a 503, or a guest that never reads its body)
//! and then closes the connection with the client's bytes still unread, the
//! kernel answers the client with a reset. A client still sending its body
//! then sees "broken pipe" or "connection reset" instead of the answer
//! meant for it. [`LingeringBody`] does what nginx's lingering close does:
//! a body dropped unread is read and thrown away in the background, for a
//! bounded time and number of bytes, so the client finishes sending and
//! reads its answer.
//!
//! A body that comes too slowly is cut instead ([`MinRate`]): a client
//! trickling a few bytes a second must not hold a connection, and a
//! descriptor, for as long as it likes.

use bytes::{Buf as _, Bytes};
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// How long an unwanted body is read after its request was answered.
const LINGER_TIME: Duration = Duration::from_secs(5);

/// How many bytes of an unwanted body are read before the connection is
/// given up: the client's answer is worth that much of the host's bandwidth
/// and no more.
const LINGER_BYTES: u64 = 64 * 1024 * 1024;

/// The slowest a request body may come: after `grace`, `bytes_per_sec`
/// on average. Each byte received buys `1 / bytes_per_sec` seconds more,
/// as Apache's `mod_reqtimeout` `MinRate` does. Only the time the reader
/// spends waiting on the client counts, never the time the reader (a guest
/// busy elsewhere, a role held to its bytes rate) leaves the body unread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinRate {
    /// Bytes a second, on average, once the grace is spent (at least 1).
    pub bytes_per_sec: u64,
    /// How long a body may wait for its first bytes, and its credit.
    pub grace: Duration,
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// The connection failed or the client broke the protocol.
    #[error(transparent)]
    Client(#[from] hyper::Error),
    /// The body came slower than the minimum rate and was cut.
    #[error("the request body came slower than {} bytes/s", .0.bytes_per_sec)]
    TooSlow(MinRate),
}

impl From<BodyError> for wasmtime_wasi_http::Error {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::Client(e) => e.into(),
            // What a guest reading the body sees: the client stalled.
            BodyError::TooSlow(_) => Self::ConnectionReadTimeout,
        }
    }
}

/// A body's account against its [`MinRate`], on an injected clock.
#[derive(Debug)]
struct Pace {
    rate: MinRate,
    received: u64,
    /// Time spent waiting on the client, finished waits only.
    waited: Duration,
    /// When the wait under way began.
    waiting_since: Option<Instant>,
}

impl Pace {
    fn new(rate: MinRate) -> Self {
        Self {
            rate,
            received: 0,
            waited: Duration::ZERO,
            waiting_since: None,
        }
    }

    /// How long the client may have made the reader wait, in all, so far.
    fn allowance(&self) -> Duration {
        let per_sec = self.rate.bytes_per_sec.max(1);
        let earned = Duration::from_millis(self.received.saturating_mul(1000) / per_sec);
        self.rate.grace.saturating_add(earned)
    }

    /// The reader waits for the client from `now` (if not already): the
    /// moment the wait runs out of allowance.
    fn waiting(&mut self, now: Instant) -> Instant {
        let since = *self.waiting_since.get_or_insert(now);
        let left = self.allowance().saturating_sub(self.waited);
        since
            .checked_add(left)
            .unwrap_or(since + Duration::from_secs(86_400))
    }

    /// `len` bytes came at `now`, ending any wait.
    fn arrived(&mut self, len: u64, now: Instant) {
        if let Some(since) = self.waiting_since.take() {
            self.waited = self
                .waited
                .saturating_add(now.saturating_duration_since(since));
        }
        self.received = self.received.saturating_add(len);
    }
}

/// A request body that, dropped before its end, is drained in the
/// background (see the module docs), and that is cut if it comes slower
/// than its [`MinRate`].
pub struct LingeringBody {
    inner: Option<Incoming>,
    /// The client waits for `100 Continue` before it sends the body, and
    /// hyper sends that only once the body is first read: a body never read
    /// was never sent, so there is nothing to drain.
    awaits_continue: bool,
    polled: bool,
    pace: Option<Pace>,
    /// Wakes the reader when the wait under way runs out of allowance.
    timer: Option<Pin<Box<Sleep>>>,
}

impl LingeringBody {
    /// Wraps `request`'s body, held to `min_rate` if given.
    pub fn wrap(
        request: http::Request<Incoming>,
        min_rate: Option<MinRate>,
    ) -> http::Request<Self> {
        let awaits_continue = request
            .headers()
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        request.map(|inner| Self {
            inner: Some(inner),
            awaits_continue,
            polled: false,
            pace: min_rate.map(Pace::new),
            timer: None,
        })
    }

    /// Whether the wait under way has run out of allowance (arming the
    /// timer to wake the reader when it will).
    fn too_slow(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(pace) = self.pace.as_mut() else {
            return false;
        };
        let deadline = pace.waiting(Instant::now());
        let timer = match &mut self.timer {
            Some(timer) => {
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                timer
            }
            None => self
                .timer
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        timer.as_mut().poll(cx).is_ready()
    }
}

impl Body for LingeringBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.polled = true;
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(pace) = self.pace.as_mut() {
                    let len = frame.data_ref().map_or(0, Bytes::len);
                    pace.arrived(u64::try_from(len).unwrap_or(u64::MAX), Instant::now());
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(other) => Poll::Ready(other.map(|r| r.map_err(BodyError::from))),
            Poll::Pending => {
                if !self.too_slow(cx) {
                    return Poll::Pending;
                }
                // Cut: dropped here, not drained (the client is the problem),
                // so hyper closes the connection once the answer is out.
                self.inner = None;
                self.timer = None;
                let rate = self.pace.as_ref().map(|p| p.rate);
                tracing::debug!(?rate, "request body too slow; cut");
                Poll::Ready(rate.map(|rate| Err(BodyError::TooSlow(rate))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for LingeringBody {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        if inner.is_end_stream() || (self.awaits_continue && !self.polled) {
            return;
        }
        // Outside a runtime (never, in the host) the body is simply dropped.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(discard(inner, LINGER_TIME, LINGER_BYTES));
        }
    }
}

/// Reads `body` to its end, or until `max_time` passes or more than
/// `max_bytes` have come, and throws it away. Returns the bytes read.
async fn discard<B>(mut body: B, max_time: Duration, max_bytes: u64) -> u64
where
    B: Body + Unpin,
{
    let mut read = 0u64;
    let read_to_end = async {
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                read = read.saturating_add(data.remaining() as u64);
                if read > max_bytes {
                    return;
                }
            }
        }
    };
    let _ = tokio::time::timeout(max_time, read_to_end).await;
    read
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Full, StreamBody};
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use std::convert::Infallible;

    /// A client sending a body far larger than the socket buffers to a
    /// server that answers without reading it gets the answer, not a reset.
    #[tokio::test]
    async fn a_body_answered_unread_is_drained_so_the_client_gets_its_answer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let service = service_fn(|request| async move {
                let _unread = LingeringBody::wrap(request, None);
                let mut refused = http::Response::new(Full::new(Bytes::from_static(b"no")));
                *refused.status_mut() = http::StatusCode::PAYLOAD_TOO_LARGE;
                Ok::<_, Infallible>(refused)
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        let stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        let client = tokio::spawn(connection);
        let body = Full::new(Bytes::from(vec![b'x'; 16 * 1024 * 1024]));
        let request = http::Request::post("/")
            .header("host", "test")
            .body(body)
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), http::StatusCode::PAYLOAD_TOO_LARGE);
        let answer = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&answer[..], b"no");
        drop(sender);
        // The whole body went out without an error on the connection: a
        // reset would end it at once with an error. Now and then (about
        // one run in ten) hyper 1.12's server never reports the end of a
        // body it answered early, although every byte was read: once the
        // answer is out and the last byte in, its dispatcher goes back to
        // waiting for the next request head before it drops the body's
        // sender (`h1/dispatch.rs` `poll_read` checks `can_read_head`
        // first). The connection then idles, waiting for a next request,
        // which the host's idle timeout (`connections.rs`) closes; this
        // bare server has none. So an open connection after the wait counts
        // as no reset too.
        match tokio::time::timeout(Duration::from_secs(10), client).await {
            Ok(ended) => ended.unwrap().unwrap(),
            Err(_still_open) => {}
        }
    }

    #[tokio::test]
    async fn draining_stops_past_its_byte_bound() {
        const MIB: usize = 1024 * 1024;
        let endless = futures::stream::repeat_with(|| {
            Ok::<_, Infallible>(Frame::data(Bytes::from(vec![0u8; MIB])))
        });
        let read = discard(
            StreamBody::new(endless),
            Duration::from_secs(60),
            8 * MIB as u64,
        )
        .await;
        assert_eq!(read, 9 * MIB as u64);
    }

    #[tokio::test]
    async fn draining_stops_past_its_time_bound() {
        let silent = futures::stream::pending::<Result<Frame<Bytes>, Infallible>>();
        let drained = tokio::time::timeout(
            Duration::from_secs(30),
            discard(StreamBody::new(silent), Duration::from_millis(50), u64::MAX),
        )
        .await;
        assert_eq!(drained, Ok(0));
    }

    fn pace(bytes_per_sec: u64, grace_ms: u64) -> Pace {
        Pace::new(MinRate {
            bytes_per_sec,
            grace: Duration::from_millis(grace_ms),
        })
    }

    #[test]
    fn each_byte_buys_time_and_only_waits_on_the_client_count() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut pace = pace(100, 1000);
        assert_eq!(pace.waiting(t0), ms(1000), "the grace, to begin with");
        // 100 bytes after 500 ms of waiting: one second more.
        pace.arrived(100, ms(500));
        assert_eq!(pace.allowance(), Duration::from_millis(2000));
        // The reader comes back only at 10 s (a busy guest): the client is
        // not charged for that.
        assert_eq!(pace.waiting(ms(10_000)), ms(10_000 + 1500));
        // Asking again during the same wait gives the same deadline.
        assert_eq!(pace.waiting(ms(10_400)), ms(11_500));
    }

    #[test]
    fn a_client_at_the_minimum_rate_is_never_out_of_time() {
        for (rate, step_ms) in [(100u64, 100u64), (1024, 1000), (1, 1000), (50_000, 1)] {
            let mut pace = pace(rate, 1000);
            let mut now = Instant::now();
            for _ in 0..1000 {
                let deadline = pace.waiting(now);
                now += Duration::from_millis(step_ms);
                assert!(now <= deadline, "{rate} B/s cut at its own pace");
                pace.arrived(rate * step_ms / 1000, now);
            }
        }
    }

    #[test]
    fn a_trickle_runs_out_of_time() {
        // 1 byte every 100 ms against 100 B/s: each byte buys 10 ms, so
        // after n bytes the reader may have waited 1000 + 10n ms in all,
        // and the 12th byte (at 1200 ms, past 1110) comes too late.
        let mut pace = pace(100, 1000);
        let mut now = Instant::now();
        let mut bytes = 0;
        loop {
            let deadline = pace.waiting(now);
            let next = now + Duration::from_millis(100);
            if next > deadline {
                break;
            }
            now = next;
            pace.arrived(1, now);
            bytes += 1;
        }
        assert_eq!(bytes, 11);
    }

    /// Over a real socket: a body trickled far below the minimum rate is
    /// cut, and its connection closed; the same body sent at once is read.
    #[tokio::test]
    async fn a_trickled_body_is_cut_and_its_connection_closed() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let rate = MinRate {
            bytes_per_sec: 1000,
            grace: Duration::from_millis(300),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (outcomes, mut seen) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let outcomes = outcomes.clone();
                let service = service_fn(move |request| {
                    let outcomes = outcomes.clone();
                    async move {
                        let body = LingeringBody::wrap(request, Some(rate)).into_body();
                        let read = body.collect().await.map(|c| c.to_bytes().len());
                        let slow = matches!(read, Err(BodyError::TooSlow(_)));
                        let _ = outcomes.send(read.map_err(|_| slow));
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::new())))
                    }
                });
                tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
            }
        });
        let head = b"POST / HTTP/1.1\r\nhost: test\r\ncontent-length: 100\r\n\r\n";

        let mut fast = tokio::net::TcpStream::connect(address).await.unwrap();
        fast.write_all(head).await.unwrap();
        fast.write_all(&[b'x'; 100]).await.unwrap();
        assert_eq!(seen.recv().await.unwrap(), Ok(100));

        let mut slow = tokio::net::TcpStream::connect(address).await.unwrap();
        slow.write_all(head).await.unwrap();
        let trickle = async {
            for _ in 0..100 {
                if slow.write_all(b"x").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        let outcome = tokio::select! {
            outcome = seen.recv() => outcome.unwrap(),
            () = trickle => panic!("a 10 B/s body against 1000 B/s was read to its end"),
        };
        assert_eq!(outcome, Err(true), "cut as too slow");
        // The server answers and closes: the client reads the answer, then
        // the end of the stream.
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut answer));
        let _ = read.await.expect("the connection was closed");
        assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
    }
}
