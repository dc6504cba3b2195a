//! Rate limits on the VMBus: every host call a role makes passes an
//! operations bucket and a bytes bucket for its interface, and so do a web
//! role's HTTP bodies and its outgoing requests.
//!
//! The buckets are [`TokenBucket`]s (after Firecracker's `rate_limiter`).
//! One [`RoleLimiter`] holds the buckets of one version of a role, shared
//! by all sandboxes of that version however many instances it runs, and
//! counts what each interface admitted, refused and waited, for the role's
//! usage. Bytes are counted as tokens one for one (`byte_count`).
//!
//! Three ways to pass a limiter, for three kinds of call:
//! - [`RoleLimiter::admit`]: a call waits for its tokens (backpressure) up
//!   to the role's `max-wait-ms`, then gets `rate-limited`; it never traps.
//! - [`RoleLimiter::try_admit`]: output that must never block (guest logs)
//!   is admitted now or dropped.
//! - [`RoleLimiter::take_bytes`] and [`RoleLimiter::charge`]: bytes already
//!   in hand (a body frame, a received message) are taken whatever the
//!   budget; the debt is waited out by the stream (body shaping) or by the
//!   role's next calls.
//!
//! The limits are data ([`RateLimits`], from the manifest's `rate-limits`
//! table, in `table.rs`) keyed by [`Interface`]: one table registers
//! every interface with its name and default buckets (`interface.rs`), so a
//! new host interface adds one entry there and names it in its own module.

mod bucket;
mod interface;
mod table;

pub use bucket::TokenBucket;
pub use interface::{BucketConfig, Interface, InterfaceLimits};
pub use table::{MAX_REFILL_MS, RateLimits};

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The call had to wait longer than allowed for its tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limited")]
pub struct RateLimited;

#[derive(Debug)]
struct Buckets {
    ops: Option<TokenBucket>,
    bytes: Option<TokenBucket>,
}

impl Buckets {
    fn new(limits: &InterfaceLimits, now: Instant) -> Self {
        Self {
            ops: limits.ops.and_then(|c| c.build(now)),
            bytes: limits.bytes.and_then(|c| c.build(now)),
        }
    }

    /// Takes one operation and `bytes` bytes, from both buckets or neither.
    /// A call carrying no bytes still waits while the bytes bucket is in
    /// debt, so bytes handed over by one call (a received batch's bodies)
    /// are paid for before the next call of any size.
    fn reduce(&mut self, bytes: u64, now: Instant) -> Result<(), Duration> {
        let before = self.ops.clone();
        if let Some(ops) = &mut self.ops {
            ops.reduce(1, now)?;
        }
        if let Some(bucket) = &mut self.bytes {
            let outcome = if bytes > 0 {
                bucket.reduce(bytes, now)
            } else {
                match bucket.time_to_clear(now) {
                    wait if wait.is_zero() => Ok(()),
                    wait => Err(wait),
                }
            };
            if let Err(wait) = outcome {
                self.ops = before;
                return Err(wait);
            }
        }
        Ok(())
    }
}

/// A length in bytes (of a body, a name, a value) as bucket tokens, one a
/// byte, and as usage counts bytes.
pub(crate) fn byte_count(len: usize) -> u64 {
    u64::try_from(len).unwrap_or(u64::MAX)
}

/// Now, on tokio's clock (so tests with a paused clock see time pass).
fn clock_now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// What one interface admitted, refused and waited.
#[derive(Debug, Default)]
struct Counters {
    admitted: AtomicU64,
    limited: AtomicU64,
    waited_ns: AtomicU64,
    bytes: AtomicU64,
}

/// A copy of one interface's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallStats {
    /// The interface.
    pub interface: Interface,
    /// Calls admitted (for guest output: lines written).
    pub admitted: u64,
    /// Calls refused as rate-limited (for guest output: lines dropped).
    pub limited: u64,
    /// Time calls spent waiting for tokens, body shaping included.
    pub waited: Duration,
    /// Payload bytes that passed.
    pub bytes: u64,
}

#[derive(Debug)]
struct Limited {
    buckets: Mutex<Buckets>,
    counters: Counters,
}

/// The buckets of one role, shared by all its instances.
#[derive(Debug)]
pub struct RoleLimiter {
    interfaces: [Limited; Interface::ALL.len()],
    max_wait: Duration,
}

impl RoleLimiter {
    /// Full buckets for `limits`.
    pub fn new(limits: &RateLimits) -> Self {
        let now = clock_now();
        Self {
            interfaces: Interface::ALL.map(|interface| Limited {
                buckets: Mutex::new(Buckets::new(&limits[interface], now)),
                counters: Counters::default(),
            }),
            max_wait: Duration::from_millis(limits.max_wait_ms),
        }
    }

    fn limited(&self, interface: Interface) -> &Limited {
        &self.interfaces[interface.index()]
    }

    fn reduce(&self, interface: Interface, bytes: u64) -> Result<(), Duration> {
        self.limited(interface)
            .buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .reduce(bytes, clock_now())
    }

    fn count(&self, interface: Interface, admitted: bool, bytes: u64, waited: Duration) {
        let counters = &self.limited(interface).counters;
        if admitted {
            counters.admitted.fetch_add(1, Ordering::Relaxed);
            counters.bytes.fetch_add(bytes, Ordering::Relaxed);
        } else {
            counters.limited.fetch_add(1, Ordering::Relaxed);
        }
        if !waited.is_zero() {
            counters
                .waited_ns
                .fetch_add(nanos(waited), Ordering::Relaxed);
        }
    }

    /// Admits one call carrying `bytes` if its tokens are there now; never
    /// waits (for output, which must not block the guest).
    pub fn try_admit(&self, interface: Interface, bytes: u64) -> Result<(), Duration> {
        let outcome = self.reduce(interface, bytes);
        self.count(interface, outcome.is_ok(), bytes, Duration::ZERO);
        outcome
    }

    /// Counts `calls` refused without asking the buckets: guest output
    /// dropped in bulk once a line of its write was refused.
    pub fn count_refused(&self, interface: Interface, calls: u64) {
        let counters = &self.limited(interface).counters;
        counters.limited.fetch_add(calls, Ordering::Relaxed);
    }

    /// Charges `bytes` already handed over (a received message's body, a
    /// value read): never refused, but a debt later calls wait out.
    pub fn charge(&self, interface: Interface, bytes: u64) {
        let limited = self.limited(interface);
        limited.counters.bytes.fetch_add(bytes, Ordering::Relaxed);
        let mut buckets = limited.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bucket) = &mut buckets.bytes {
            bucket.force(bytes, clock_now());
        }
    }

    /// Takes `bytes` of a stream (a body frame in hand) whatever the budget,
    /// and says how long the stream must pause before its next frame so
    /// that it keeps to the bytes rate (zero when it is within it).
    pub fn take_bytes(&self, interface: Interface, bytes: u64) -> Duration {
        let limited = self.limited(interface);
        limited.counters.bytes.fetch_add(bytes, Ordering::Relaxed);
        let mut buckets = limited.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let Some(bucket) = &mut buckets.bytes else {
            return Duration::ZERO;
        };
        let now = clock_now();
        bucket.force(bytes, now);
        let pause = bucket.time_to_clear(now);
        drop(buckets);
        if !pause.is_zero() {
            limited
                .counters
                .waited_ns
                .fetch_add(nanos(pause), Ordering::Relaxed);
        }
        pause
    }

    /// Admits one call carrying `bytes`, waiting for tokens (backpressure)
    /// up to the role's maximum wait; past that, `RateLimited`. A call that
    /// cannot be admitted within the wait returns at once, without sleeping.
    pub async fn admit(&self, interface: Interface, bytes: u64) -> Result<(), RateLimited> {
        let started = tokio::time::Instant::now();
        let give_up = started + self.max_wait;
        loop {
            match self.reduce(interface, bytes) {
                Ok(()) => {
                    self.count(interface, true, bytes, started.elapsed());
                    return Ok(());
                }
                Err(wait) => {
                    let retry_at = tokio::time::Instant::now() + wait;
                    if retry_at > give_up {
                        self.count(interface, false, 0, started.elapsed());
                        return Err(RateLimited);
                    }
                    tokio::time::sleep_until(retry_at).await;
                }
            }
        }
    }

    /// The counters of every interface.
    pub fn stats(&self) -> Vec<CallStats> {
        Interface::ALL
            .iter()
            .map(|&interface| {
                let counters = &self.limited(interface).counters;
                CallStats {
                    interface,
                    admitted: counters.admitted.load(Ordering::Relaxed),
                    limited: counters.limited.load(Ordering::Relaxed),
                    waited: Duration::from_nanos(counters.waited_ns.load(Ordering::Relaxed)),
                    bytes: counters.bytes.load(Ordering::Relaxed),
                }
            })
            .collect()
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_buckets_or_neither() {
        let t0 = Instant::now();
        let limits = InterfaceLimits {
            ops: Some(BucketConfig::per_second(10)),
            bytes: Some(BucketConfig::per_second(100)),
        };
        let mut buckets = Buckets::new(&limits, t0);
        assert!(buckets.reduce(90, t0).is_ok());
        assert!(buckets.reduce(20, t0).is_err());
        assert_eq!(
            buckets.ops.as_ref().map(TokenBucket::budget),
            Some(9),
            "the refused call took no op"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn guest_lines_are_limited_by_default_not_only_their_bytes() {
        let limits = RateLimits::default();
        let ops = limits[Interface::Log].ops.expect("a default line rate");
        let limiter = RoleLimiter::new(&limits);
        // Bare newlines (one byte each): far within the bytes rate, so only
        // the line rate can hold them.
        let passed = (0..100_000)
            .filter(|_| limiter.try_admit(Interface::Log, 1).is_ok())
            .count();
        assert_eq!(passed, usize::try_from(ops.size + ops.burst).unwrap());
        // A second later, one second's lines more, and no more.
        tokio::time::advance(Duration::from_secs(1)).await;
        let passed = (0..100_000)
            .filter(|_| limiter.try_admit(Interface::Log, 1).is_ok())
            .count();
        assert_eq!(passed, usize::try_from(ops.size).unwrap());
        // Refusals are counted, those dropped in bulk too.
        limiter.count_refused(Interface::Log, 7);
        let log = limiter.stats()[Interface::Log.index()];
        assert_eq!(log.admitted, ops.size * 2 + ops.burst);
        assert_eq!(log.limited, 200_000 - log.admitted + 7);
    }

    #[tokio::test(start_paused = true)]
    async fn admit_waits_within_the_bound_then_refuses() {
        let limits = RateLimits::default()
            .with(
                Interface::Queue,
                InterfaceLimits {
                    ops: Some(BucketConfig::per_second(10)),
                    bytes: None,
                },
            )
            .with_max_wait_ms(150);
        let limiter = RoleLimiter::new(&limits);
        for _ in 0..10 {
            limiter.admit(Interface::Queue, 0).await.unwrap();
        }
        // The next token is 100 ms away: within the 150 ms wait.
        let started = tokio::time::Instant::now();
        limiter.admit(Interface::Queue, 0).await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(90));
        // Other interfaces have their own buckets.
        limiter.admit(Interface::Kv, 10).await.unwrap();
        // Two tokens at once would take 200 ms: refused at once.
        let limited = RoleLimiter::new(
            &RateLimits::default()
                .with(
                    Interface::Queue,
                    InterfaceLimits {
                        ops: None,
                        bytes: Some(BucketConfig::per_second(10)),
                    },
                )
                .with_max_wait_ms(150),
        );
        limited.admit(Interface::Queue, 10).await.unwrap();
        let started = tokio::time::Instant::now();
        assert_eq!(limited.admit(Interface::Queue, 2).await, Err(RateLimited));
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn counters_record_what_passed_and_what_was_refused() {
        let limiter = RoleLimiter::new(
            &RateLimits::default()
                .with(
                    Interface::Queue,
                    InterfaceLimits {
                        ops: Some(BucketConfig::per_second(2)),
                        bytes: None,
                    },
                )
                .with_max_wait_ms(0),
        );
        for _ in 0..3 {
            let _ = limiter.admit(Interface::Queue, 5).await;
        }
        assert!(limiter.try_admit(Interface::Queue, 1).is_err());
        let queue = limiter.stats()[0];
        assert_eq!(queue.interface, Interface::Queue);
        assert_eq!((queue.admitted, queue.limited, queue.bytes), (2, 2, 10));
        assert!(limiter.stats()[1..].iter().all(|s| s.admitted == 0));
    }

    #[tokio::test(start_paused = true)]
    async fn take_bytes_paces_a_stream_to_the_bytes_rate() {
        let limiter = RoleLimiter::new(&RateLimits::default().with(
            Interface::Http,
            InterfaceLimits {
                ops: None,
                bytes: Some(BucketConfig::per_second(1000)),
            },
        ));
        let started = tokio::time::Instant::now();
        for _ in 0..100 {
            let pause = limiter.take_bytes(Interface::Http, 100);
            tokio::time::sleep(pause).await;
        }
        // 10,000 bytes at 1,000/s, the first 1,000 from the full bucket.
        let elapsed = started.elapsed();
        assert!(
            (Duration::from_millis(8900)..=Duration::from_millis(9100)).contains(&elapsed),
            "{elapsed:?}"
        );
        let http = limiter.stats()[Interface::Http.index()];
        assert_eq!(http.bytes, 10_000);
        assert!(http.waited >= Duration::from_millis(8900));
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_handed_over_are_paid_for_before_the_next_call_of_any_size() {
        let limiter = RoleLimiter::new(
            &RateLimits::default()
                .with(
                    Interface::Queue,
                    InterfaceLimits {
                        ops: None,
                        bytes: Some(BucketConfig::per_second(1000)),
                    },
                )
                .with_max_wait_ms(100),
        );
        // A receive handed over 3,000 bytes of bodies: 2,000 owed, 2 s.
        limiter.admit(Interface::Queue, 0).await.unwrap();
        limiter.charge(Interface::Queue, 3000);
        // The next receive (no bytes of its own) cannot wait that long.
        assert_eq!(limiter.admit(Interface::Queue, 0).await, Err(RateLimited));
        tokio::time::advance(Duration::from_millis(1950)).await;
        // 50 ms of debt left: within the wait.
        let started = tokio::time::Instant::now();
        limiter.admit(Interface::Queue, 0).await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(49));
    }
}
