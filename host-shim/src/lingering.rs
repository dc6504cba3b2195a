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

use bytes::{Buf as _, Bytes};
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// How long an unwanted body is read after its request was answered.
const LINGER_TIME: Duration = Duration::from_secs(5);

/// How many bytes of an unwanted body are read before the connection is
/// given up: the client's answer is worth that much of the host's bandwidth
/// and no more.
const LINGER_BYTES: u64 = 64 * 1024 * 1024;

/// A request body that, dropped before its end, is drained in the
/// background (see the module docs).
pub struct LingeringBody {
    inner: Option<Incoming>,
    /// The client waits for `100 Continue` before it sends the body, and
    /// hyper sends that only once the body is first read: a body never read
    /// was never sent, so there is nothing to drain.
    awaits_continue: bool,
    polled: bool,
}

impl LingeringBody {
    /// Wraps `request`'s body.
    pub fn wrap(request: http::Request<Incoming>) -> http::Request<Self> {
        let awaits_continue = request
            .headers()
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        request.map(|inner| Self {
            inner: Some(inner),
            awaits_continue,
            polled: false,
        })
    }
}

impl Body for LingeringBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        self.polled = true;
        match self.inner.as_mut() {
            Some(inner) => Pin::new(inner).poll_frame(cx),
            None => Poll::Ready(None),
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
                let _unread = LingeringBody::wrap(request);
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
        // The whole body went out without an error on the connection.
        client.await.unwrap().unwrap();
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
}
