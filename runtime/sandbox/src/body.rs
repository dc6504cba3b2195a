//! HTTP bodies held to a role's bytes rate, and counted.
//!
//! [`MeteredBody`] wraps a body and passes each data frame through the
//! role's bytes bucket for one interface (`http` for a web role's request
//! and response bodies, `egress` for its outgoing ones), counting the bytes
//! in the role's usage by direction. A frame over the
//! budget is held, and the stream pauses until the bucket's debt is paid:
//! backpressure, never buffering beyond the one frame in hand, and never
//! cutting the body. A frame larger than the whole bucket still passes (its
//! debt is waited out afterwards), so no body can stall forever.

use crate::rate_limit::{Interface, RoleLimiter, byte_count};
use crate::usage::{Flow, RoleUsage};
use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

/// A body whose data frames pass a role's bytes bucket.
pub(crate) struct MeteredBody<B> {
    inner: B,
    limiter: Arc<RoleLimiter>,
    usage: Arc<RoleUsage>,
    flow: Flow,
    /// A frame taken from `inner`, waiting out its pause.
    held: Option<Frame<Bytes>>,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B> MeteredBody<B> {
    /// Meters `inner`, flowing `flow`, through `limiter`'s bucket for that
    /// flow's interface, counting it in `usage`.
    pub(crate) fn new(
        inner: B,
        limiter: Arc<RoleLimiter>,
        usage: Arc<RoleUsage>,
        flow: Flow,
    ) -> Self {
        Self {
            inner,
            limiter,
            usage,
            flow,
            held: None,
            pause: None,
        }
    }
}

impl<B> Body for MeteredBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(pause) = &mut this.pause {
            ready!(pause.as_mut().poll(cx));
            this.pause = None;
            if let Some(frame) = this.held.take() {
                return Poll::Ready(Some(Ok(frame)));
            }
        }
        let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            other => return Poll::Ready(other),
        };
        let len = frame.data_ref().map_or(0, Bytes::len);
        if len == 0 {
            return Poll::Ready(Some(Ok(frame)));
        }
        let len = byte_count(len);
        this.usage.add_bytes(this.flow, len);
        let interface = match this.flow {
            Flow::HttpIn | Flow::HttpOut => Interface::Http,
            Flow::EgressIn | Flow::EgressOut => Interface::Egress,
        };
        let wait = this.limiter.take_bytes(interface, len);
        if wait.is_zero() {
            return Poll::Ready(Some(Ok(frame)));
        }
        let mut pause = Box::pin(tokio::time::sleep(wait));
        if pause.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Ok(frame)));
        }
        this.held = Some(frame);
        this.pause = Some(pause);
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let Some(held) = self.held.as_ref().and_then(Frame::data_ref) else {
            return inner;
        };
        // The held frame was taken from `inner`, so it counts on top of what
        // `inner` still has. A fresh hint, because `SizeHint` refuses (panics
        // on) a lower bound above the upper one at every step.
        let held = u64::try_from(held.len()).unwrap_or(u64::MAX);
        let mut hint = SizeHint::new();
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(held));
        }
        hint.set_lower(inner.lower().saturating_add(held));
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate_limit::{BucketConfig, InterfaceLimits, RateLimits};
    use http_body_util::BodyExt;
    use std::collections::VecDeque;
    use std::convert::Infallible;
    use std::time::Duration;

    /// A body of ready frames.
    struct Frames(VecDeque<Bytes>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.get_mut().0.pop_front().map(|b| Ok(Frame::data(b))))
        }

        fn size_hint(&self) -> SizeHint {
            let left = self.0.iter().map(Bytes::len).sum::<usize>();
            SizeHint::with_exact(u64::try_from(left).unwrap_or(u64::MAX))
        }
    }

    fn limiter(bytes_per_sec: Option<u64>) -> Arc<RoleLimiter> {
        Arc::new(RoleLimiter::new(&RateLimits::default().with(
            Interface::Http,
            InterfaceLimits {
                ops: None,
                bytes: bytes_per_sec.map(BucketConfig::per_second),
            },
        )))
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_is_held_to_the_bytes_rate_and_arrives_whole() {
        // 1 MiB in 16 KiB frames at 64 KiB/s: 15 s after the first 64 KiB.
        let frames = (0..64u8).map(|i| Bytes::from(vec![i; 16 * 1024])).collect();
        let usage = Arc::new(RoleUsage::default());
        let body = MeteredBody::new(
            Frames(frames),
            limiter(Some(64 * 1024)),
            usage.clone(),
            Flow::HttpOut,
        );
        let started = tokio::time::Instant::now();
        let bytes = body.collect().await.unwrap().to_bytes();
        let elapsed = started.elapsed();
        assert_eq!(bytes.len(), 1024 * 1024);
        assert_eq!(bytes[16 * 1024 * 63], 63);
        assert_eq!(usage.counters().bytes.http_out, 1024 * 1024);
        assert!(
            (Duration::from_millis(14_900)..=Duration::from_millis(15_100)).contains(&elapsed),
            "{elapsed:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_unlimited_body_passes_at_once() {
        let frames = (0..4).map(|_| Bytes::from(vec![0; 1 << 20])).collect();
        let usage = Arc::new(RoleUsage::default());
        let body = MeteredBody::new(Frames(frames), limiter(None), usage, Flow::HttpIn);
        let started = tokio::time::Instant::now();
        assert_eq!(body.collect().await.unwrap().to_bytes().len(), 4 << 20);
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    /// While a frame waits out its pause, the hint still counts it: the
    /// whole body's length, exact, with the lower bound never above the
    /// upper (which `SizeHint` panics on).
    #[tokio::test(start_paused = true)]
    async fn a_held_frame_counts_in_the_size_hint() {
        let frames = (0..3).map(|_| Bytes::from(vec![0; 64 * 1024])).collect();
        let usage = Arc::new(RoleUsage::default());
        let mut body = MeteredBody::new(
            Frames(frames),
            limiter(Some(64 * 1024)),
            usage,
            Flow::HttpIn,
        );
        assert_eq!(body.size_hint().exact(), Some(3 * 64 * 1024));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        // The first frame spends the whole bucket; the second is held.
        assert!(matches!(
            Pin::new(&mut body).poll_frame(&mut cx),
            Poll::Ready(Some(Ok(_)))
        ));
        assert!(Pin::new(&mut body).poll_frame(&mut cx).is_pending());
        assert!(body.held.is_some(), "the second frame waits");
        assert_eq!(body.size_hint().exact(), Some(2 * 64 * 1024));
        assert!(!body.is_end_stream());
    }
}
