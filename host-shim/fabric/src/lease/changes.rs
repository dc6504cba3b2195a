//! [`ChangeWatch`]: a loop's watch on one bucket's changes that cannot make
//! the loop spin. A wake is debounced (a watch that keeps yielding, errors
//! included, wakes its loop at most every [`DEBOUNCE`]), and a watch that
//! ends or cannot be made is made again only after a backoff that doubles
//! up to [`LONGEST_BACKOFF`]; meanwhile the loop keeps its own tick.

use crate::store::{Bucket, FabricStore};
use futures::{FutureExt, Stream, StreamExt};
use std::pin::Pin;
use std::time::Duration;
use tokio::time::Instant;

/// How long a loop waits after a change for more before it acts.
pub(crate) const DEBOUNCE: Duration = Duration::from_millis(100);
/// The first wait before a watch that ended is made again.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait before a watch that ended is made again.
const LONGEST_BACKOFF: Duration = Duration::from_secs(5);
/// The most changes one drain takes.
const MAX_DRAINED: usize = 4096;

type Changes = Pin<Box<dyn Stream<Item = ()> + Send>>;

/// A watch on one bucket's changes, made again with backoff when it ends.
pub(crate) struct ChangeWatch {
    bucket: Bucket,
    stream: Option<Changes>,
    /// No new watch is made before then.
    rewatch_at: Instant,
    /// The wait after the next end.
    backoff: Duration,
}

impl ChangeWatch {
    /// No watch yet: the first [`ChangeWatch::ensure`] makes one.
    pub(crate) fn new(bucket: Bucket) -> Self {
        Self {
            bucket,
            stream: None,
            rewatch_at: Instant::now(),
            backoff: FIRST_BACKOFF,
        }
    }

    /// Makes the watch if there is none and its backoff is over.
    pub(crate) async fn ensure(&mut self, store: &FabricStore) {
        if self.stream.is_some() || Instant::now() < self.rewatch_at {
            return;
        }
        match store.changes(self.bucket).await {
            Ok(stream) => self.stream = Some(Box::pin(stream)),
            Err(e) => {
                tracing::debug!(error = %e, "cannot watch the fabric's store");
                self.ended();
            }
        }
    }

    /// Waits for the next change, then [`DEBOUNCE`] more, and takes every
    /// change come meanwhile: true. False if the watch ended (made again
    /// after a backoff). Never returns without a watch.
    pub(crate) async fn changed(&mut self) -> bool {
        let Some(stream) = self.stream.as_mut() else {
            return std::future::pending().await;
        };
        if stream.next().await.is_none() {
            self.ended();
            return false;
        }
        // It works: the next end waits the shortest backoff again.
        self.backoff = FIRST_BACKOFF;
        tokio::time::sleep(DEBOUNCE).await;
        self.drain();
        true
    }

    /// Takes the changes already waiting (at most [`MAX_DRAINED`]: a
    /// stream always ready must not hold the loop), so one look answers
    /// them all.
    pub(crate) fn drain(&mut self) {
        if let Some(stream) = self.stream.as_mut() {
            for _ in 0..MAX_DRAINED {
                if !matches!(stream.next().now_or_never(), Some(Some(()))) {
                    break;
                }
            }
        }
    }

    fn ended(&mut self) {
        self.stream = None;
        self.rewatch_at = Instant::now() + self.backoff;
        self.backoff = next_backoff(self.backoff);
    }
}

/// The backoff after `backoff`: doubled, at most [`LONGEST_BACKOFF`].
fn next_backoff(backoff: Duration) -> Duration {
    backoff.saturating_mul(2).min(LONGEST_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::NatsServer;

    #[test]
    fn the_backoff_doubles_up_to_a_limit() {
        let mut backoff = FIRST_BACKOFF;
        let mut waits = Vec::new();
        for _ in 0..8 {
            waits.push(backoff.as_millis());
            backoff = next_backoff(backoff);
        }
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_watch_that_ends_is_made_again_only_after_a_backoff() {
        let server = NatsServer::start();
        let store = server.store().await;
        let mut watch = ChangeWatch::new(Bucket::State);
        watch.ensure(&store).await;
        assert!(watch.stream.is_some());
        // A stream that ends at once, as a watch does when the server goes.
        watch.stream = Some(Box::pin(futures::stream::empty()));
        assert!(!watch.changed().await);
        assert!(watch.stream.is_none());
        watch.ensure(&store).await;
        assert!(watch.stream.is_none(), "not before the backoff");
        // Meanwhile a wait for a change waits (the loop's tick wakes it).
        let waited = tokio::time::timeout(Duration::from_millis(50), watch.changed()).await;
        assert!(waited.is_err());
        tokio::time::sleep(FIRST_BACKOFF).await;
        watch.ensure(&store).await;
        assert!(watch.stream.is_some(), "made again after it");
        // A stream that keeps yielding (errors too) wakes at most every DEBOUNCE.
        watch.stream = Some(Box::pin(futures::stream::repeat(())));
        let started = Instant::now();
        for _ in 0..3 {
            assert!(watch.changed().await);
        }
        assert!(started.elapsed() >= DEBOUNCE * 3, "{:?}", started.elapsed());
    }
}
