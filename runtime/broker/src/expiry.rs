//! Bucket entries' time to live as the in-process and embedded backends
//! keep it: each bucket's [`BucketSettings`] (set by the host from the
//! manifest's `[buckets.NAME]` tables), the deadline a write gives its
//! entry, and when expired entries are swept.
//!
//! An entry written to a bucket with a TTL expires `ttl` after that write;
//! a rewrite renews it. From its deadline on it reads as missing (`get`,
//! `exists`, `list_keys` skip it), whether or not it has been swept yet.
//! Its bytes are freed by a sweep: whenever a write would otherwise find its
//! bucket full (so a bucket of expired entries never refuses a write), and
//! at the first write after [`SWEEP_EVERY`] since the last sweep (so the
//! bytes of expired entries do not sit in memory or on disk for long), at
//! most [`MAX_SWEEP`] entries at a time. Time
//! is the backends' [`Clock`](crate::clock), which follows `tokio::time`,
//! so tests drive expiry with a paused clock instead of sleeping. The NATS
//! backend does none of this: its buckets' streams expire entries by
//! themselves (`max_age`).

use crate::api::BucketSettings;
use crate::clock::millis;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How often expired entries are swept when no bucket is full: often
/// enough that what a steady writer's expired entries hold stays a small
/// part of a bucket, seldom enough that sweeping costs little.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// The most expired entries one sweep frees: a sweep runs while a write
/// waits (on the store's writer thread, or under the memory backend's
/// lock), so it stays as short as a commit of
/// [`MAX_JOBS_PER_COMMIT`](crate::store) jobs. A sweep that frees this many
/// leaves the next one due at once (see [`Expiry::sweep_soon`]), so a
/// backlog (what expired while the host was down) goes a slice per write.
pub(crate) const MAX_SWEEP: usize = 4096;

/// Each bucket's settings, and when the next periodic sweep is due.
#[derive(Debug, Default)]
pub(crate) struct Expiry {
    settings: Mutex<HashMap<String, BucketSettings>>,
    next_sweep_ms: AtomicU64,
}

impl Expiry {
    /// Applies `settings` to `bucket` from now on.
    pub(crate) fn configure(&self, bucket: &str, settings: BucketSettings) {
        let mut all = self.settings.lock().unwrap_or_else(|p| p.into_inner());
        if settings == BucketSettings::default() {
            all.remove(bucket);
        } else {
            all.insert(bucket.to_owned(), settings);
        }
    }

    /// The deadline (milliseconds since the Unix epoch) of an entry written
    /// to `bucket` at `now_ms`, or `None` if it never expires.
    pub(crate) fn deadline(&self, bucket: &str, now_ms: u64) -> Option<u64> {
        let all = self.settings.lock().unwrap_or_else(|p| p.into_inner());
        let ttl = all.get(bucket)?.ttl?;
        Some(now_ms.saturating_add(millis(ttl)))
    }

    /// Whether a periodic sweep is due at `now_ms`; `true` at most once per
    /// [`SWEEP_EVERY`], to the one caller that claims it.
    pub(crate) fn sweep_due(&self, now_ms: u64) -> bool {
        let due = self.next_sweep_ms.load(Ordering::Relaxed);
        now_ms >= due
            && self
                .next_sweep_ms
                .compare_exchange(
                    due,
                    now_ms.saturating_add(millis(SWEEP_EVERY)),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    /// Makes the next sweep due at once: the last one stopped at
    /// [`MAX_SWEEP`] (or failed) with expired entries left.
    pub(crate) fn sweep_soon(&self) {
        self.next_sweep_ms.store(0, Ordering::Relaxed);
    }
}

/// Whether an entry with `deadline` has expired at `now_ms`.
pub(crate) fn expired(deadline: Option<u64>, now_ms: u64) -> bool {
    deadline.is_some_and(|at| at <= now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_is_the_ttl_after_the_write_and_only_with_a_ttl() {
        let expiry = Expiry::default();
        assert_eq!(expiry.deadline("b", 1_000), None);
        let ttl = Some(Duration::from_secs(2));
        expiry.configure("b", BucketSettings { ttl });
        assert_eq!(expiry.deadline("b", 1_000), Some(3_000));
        assert_eq!(expiry.deadline("other", 1_000), None);
        assert_eq!(expiry.deadline("b", u64::MAX), Some(u64::MAX));
        expiry.configure("b", BucketSettings::default());
        assert_eq!(expiry.deadline("b", 1_000), None);
        assert!(!expired(None, u64::MAX));
        assert!(!expired(Some(5), 4));
        assert!(expired(Some(5), 5));
    }

    #[test]
    fn a_sweep_is_due_once_per_period() {
        let expiry = Expiry::default();
        let every = millis(SWEEP_EVERY);
        assert!(expiry.sweep_due(100));
        assert!(!expiry.sweep_due(100));
        assert!(!expiry.sweep_due(100 + every - 1));
        assert!(expiry.sweep_due(100 + every));
        assert!(!expiry.sweep_due(100 + every));
        expiry.sweep_soon();
        assert!(expiry.sweep_due(100 + every));
        assert!(!expiry.sweep_due(100 + every));
    }
}
