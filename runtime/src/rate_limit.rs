//! Token buckets for the VMBus: every host call a role makes passes an
//! operations bucket and a bytes bucket for its interface.
//!
//! Modelled on Firecracker's `rate_limiter`: a bucket holds up to `size`
//! tokens, refills `size` tokens every `refill_time`, and may start with a
//! one-time `burst` that is spent before the regular budget. Unlike
//! Firecracker's, a refused call consumes nothing (the burst is not touched
//! either), and a single request larger than the whole bucket is admitted
//! once the bucket is full, leaving a debt that later calls wait out — so it
//! neither waits forever (Firecracker issue #259) nor raises the long-run rate.
//!
//! The bucket takes the current time as an argument, so its arithmetic is
//! tested with a simulated clock; [`RoleLimiter::admit`] supplies real time
//! and does the waiting.

use serde::Deserialize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token bucket.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    size: u64,
    refill_nanos: u128,
    burst: u64,
    budget: u64,
    debt: u64,
    last_update: Instant,
}

impl TokenBucket {
    /// A full bucket of `size` tokens that refills `size` tokens per
    /// `refill_time`, plus a one-time `burst`. `None` when `size` or
    /// `refill_time` is zero, which means "unlimited".
    pub fn new(size: u64, refill_time: Duration, burst: u64, now: Instant) -> Option<Self> {
        if size == 0 || refill_time.is_zero() {
            return None;
        }
        Some(Self {
            size,
            refill_nanos: refill_time.as_nanos(),
            burst,
            budget: size,
            debt: 0,
            last_update: now,
        })
    }

    /// Tokens available now (not counting the burst).
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// What is left of the one-time burst.
    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// Adds the tokens earned since the last update, paying any debt first.
    fn replenish(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last_update).as_nanos();
        let earned = elapsed.saturating_mul(u128::from(self.size)) / self.refill_nanos;
        if earned == 0 {
            return;
        }
        // Advance only by the time those whole tokens took, so fractions of
        // a token are not lost between calls.
        let spent_nanos = earned.saturating_mul(self.refill_nanos) / u128::from(self.size);
        self.last_update += Duration::from_nanos(u64::try_from(spent_nanos).unwrap_or(u64::MAX));
        let mut earned = u64::try_from(earned).unwrap_or(u64::MAX);
        let repaid = earned.min(self.debt);
        self.debt -= repaid;
        earned -= repaid;
        self.budget = self.budget.saturating_add(earned).min(self.size);
        if self.budget == self.size {
            // A full bucket earns nothing more; waiting time does not bank.
            self.last_update = now;
        }
    }

    /// How long until `tokens` more are earned.
    fn time_to_earn(&self, tokens: u64) -> Duration {
        let nanos = u128::from(tokens)
            .saturating_mul(self.refill_nanos)
            .div_ceil(u128::from(self.size));
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Takes `tokens` whatever the budget, owing what it lacks.
    pub fn force(&mut self, tokens: u64, now: Instant) {
        self.replenish(now);
        let from_burst = tokens.min(self.burst);
        self.burst -= from_burst;
        let wanted = tokens - from_burst;
        let from_budget = wanted.min(self.budget);
        self.budget -= from_budget;
        self.debt = self.debt.saturating_add(wanted - from_budget);
    }

    /// Takes `tokens` if it can. Otherwise takes nothing and says how long
    /// to wait before the same request can succeed.
    pub fn reduce(&mut self, tokens: u64, now: Instant) -> Result<(), Duration> {
        self.replenish(now);
        let from_burst = tokens.min(self.burst);
        let wanted = tokens - from_burst;
        if wanted == 0 {
            self.burst -= from_burst;
            return Ok(());
        }
        if self.debt > 0 {
            return Err(self.time_to_earn(self.debt.saturating_add(wanted.min(self.size))));
        }
        if wanted <= self.budget {
            self.burst -= from_burst;
            self.budget -= wanted;
            return Ok(());
        }
        if wanted > self.size {
            // Larger than the bucket can ever hold: admit it once the bucket
            // is full, and owe the rest.
            if self.budget == self.size {
                self.burst -= from_burst;
                self.debt = wanted - self.size;
                self.budget = 0;
                return Ok(());
            }
            return Err(self.time_to_earn(self.size - self.budget));
        }
        Err(self.time_to_earn(wanted - self.budget))
    }
}

/// One bucket's settings, as written in a manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BucketConfig {
    /// Tokens the bucket holds when full; 0 means unlimited.
    pub size: u64,
    /// Milliseconds to refill `size` tokens from empty; 0 means unlimited.
    pub refill_ms: u64,
    /// A one-time extra allowance, spent first. Default 0.
    #[serde(default)]
    pub burst: u64,
}

impl BucketConfig {
    /// `size` tokens per second.
    pub const fn per_second(size: u64) -> Self {
        Self {
            size,
            refill_ms: 1000,
            burst: 0,
        }
    }

    fn build(&self, now: Instant) -> Option<TokenBucket> {
        TokenBucket::new(
            self.size,
            Duration::from_millis(self.refill_ms),
            self.burst,
            now,
        )
    }
}

/// The operations and bytes buckets of one VMBus interface (`None`:
/// unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterfaceLimits {
    /// Calls per refill period.
    pub ops: Option<BucketConfig>,
    /// Payload bytes (message bodies, keys and values) per refill period.
    pub bytes: Option<BucketConfig>,
}

/// A role's rate limits, per VMBus interface. Deserialized from a role's
/// `rate-limits` table, where each bucket given replaces its default and a
/// `size` of 0 removes the limit; every interface has a default, so a role
/// nobody configured cannot flood the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawRateLimits")]
pub struct RateLimits {
    /// `weft:vmbus/queue`. Default: 1,000 calls/s and 16 MiB/s — ample for
    /// a role's own traffic, a fraction of what one host core can serve.
    pub queue: InterfaceLimits,
    /// `wasi:keyvalue/store`. Default: 1,000 calls/s and 16 MiB/s.
    pub kv: InterfaceLimits,
    /// `wasi:config/store`. Default: 1,000 calls/s (settings are read at
    /// start, not per message).
    pub config: InterfaceLimits,
    /// The guest's stdout and stderr, in lines and bytes. Default: 1 MiB/s,
    /// no line limit. Output over the limit is dropped (a guest's `print`
    /// must not fail or block), and the log says how many lines were lost.
    pub log: InterfaceLimits,
    /// How long a call may wait for its tokens before it gets
    /// `rate-limited`, in milliseconds. Default 100: backpressure smooths
    /// bursts without holding a guest (and its deadline) for long.
    pub max_wait_ms: u64,
}

const MIB: u64 = 1024 * 1024;

/// The manifest's form: only what it overrides.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawRateLimits {
    #[serde(default)]
    queue: RawInterface,
    #[serde(default)]
    kv: RawInterface,
    #[serde(default)]
    config: RawInterface,
    #[serde(default)]
    log: RawInterface,
    max_wait_ms: Option<u64>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawInterface {
    ops: Option<BucketConfig>,
    bytes: Option<BucketConfig>,
}

impl RawInterface {
    fn over(self, default: InterfaceLimits) -> InterfaceLimits {
        let pick = |given: Option<BucketConfig>, default| match given {
            Some(config) if config.size == 0 || config.refill_ms == 0 => None,
            Some(config) => Some(config),
            None => default,
        };
        InterfaceLimits {
            ops: pick(self.ops, default.ops),
            bytes: pick(self.bytes, default.bytes),
        }
    }
}

impl TryFrom<RawRateLimits> for RateLimits {
    type Error = String;

    fn try_from(raw: RawRateLimits) -> Result<Self, String> {
        let default = RateLimits::default();
        let max_wait_ms = raw.max_wait_ms.unwrap_or(default.max_wait_ms);
        if max_wait_ms > 60_000 {
            return Err(format!(
                "max-wait-ms must be at most 60000, not {max_wait_ms}"
            ));
        }
        Ok(Self {
            queue: raw.queue.over(default.queue),
            kv: raw.kv.over(default.kv),
            config: raw.config.over(default.config),
            log: raw.log.over(default.log),
            max_wait_ms,
        })
    }
}

impl Default for RateLimits {
    fn default() -> Self {
        let call_rate = Some(BucketConfig::per_second(1000));
        let byte_rate = Some(BucketConfig::per_second(16 * MIB));
        Self {
            queue: InterfaceLimits {
                ops: call_rate,
                bytes: byte_rate,
            },
            kv: InterfaceLimits {
                ops: call_rate,
                bytes: byte_rate,
            },
            config: InterfaceLimits {
                ops: call_rate,
                bytes: None,
            },
            log: InterfaceLimits {
                ops: None,
                bytes: Some(BucketConfig::per_second(MIB)),
            },
            max_wait_ms: 100,
        }
    }
}

/// The VMBus interfaces that are rate limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interface {
    /// `weft:vmbus/queue`.
    Queue,
    /// `wasi:keyvalue/store`.
    Kv,
    /// `wasi:config/store`.
    Config,
    /// The guest's stdout and stderr.
    Log,
}

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
    fn reduce(&mut self, bytes: u64, now: Instant) -> Result<(), Duration> {
        let before = self.ops.clone();
        if let Some(ops) = &mut self.ops {
            ops.reduce(1, now)?;
        }
        if let Some(bucket) = &mut self.bytes
            && bytes > 0
            && let Err(wait) = bucket.reduce(bytes, now)
        {
            self.ops = before;
            return Err(wait);
        }
        Ok(())
    }
}

/// Now, on tokio's clock (so tests with a paused clock see time pass).
fn clock_now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// The buckets of one role, shared by all its instances (a role is one
/// tenant, however many sandboxes it runs in).
#[derive(Debug)]
pub struct RoleLimiter {
    queue: Mutex<Buckets>,
    kv: Mutex<Buckets>,
    config: Mutex<Buckets>,
    log: Mutex<Buckets>,
    max_wait: Duration,
}

impl RoleLimiter {
    /// Full buckets for `limits`.
    pub fn new(limits: &RateLimits) -> Self {
        let now = clock_now();
        Self {
            queue: Mutex::new(Buckets::new(&limits.queue, now)),
            kv: Mutex::new(Buckets::new(&limits.kv, now)),
            config: Mutex::new(Buckets::new(&limits.config, now)),
            log: Mutex::new(Buckets::new(&limits.log, now)),
            max_wait: Duration::from_millis(limits.max_wait_ms),
        }
    }

    fn buckets(&self, interface: Interface) -> &Mutex<Buckets> {
        match interface {
            Interface::Queue => &self.queue,
            Interface::Kv => &self.kv,
            Interface::Config => &self.config,
            Interface::Log => &self.log,
        }
    }

    /// Admits one call carrying `bytes` if its tokens are there now; never
    /// waits (for output, which must not block the guest).
    pub fn try_admit(&self, interface: Interface, bytes: u64) -> Result<(), Duration> {
        let mut buckets = self
            .buckets(interface)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        buckets.reduce(bytes, clock_now())
    }

    /// Charges `bytes` already handed over (a received message's body, a
    /// value read): never refused, but a debt later calls wait out.
    pub fn charge(&self, interface: Interface, bytes: u64) {
        let mut buckets = self
            .buckets(interface)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(bucket) = &mut buckets.bytes {
            bucket.force(bytes, clock_now());
        }
    }

    /// Admits one call carrying `bytes`, waiting for tokens (backpressure)
    /// up to the role's maximum wait; past that, `RateLimited`. A call that
    /// cannot be admitted within the wait returns at once, without sleeping.
    pub async fn admit(&self, interface: Interface, bytes: u64) -> Result<(), RateLimited> {
        let give_up = tokio::time::Instant::now() + self.max_wait;
        loop {
            match self.try_admit(interface, bytes) {
                Ok(()) => return Ok(()),
                Err(wait) => {
                    let retry_at = tokio::time::Instant::now() + wait;
                    if retry_at > give_up {
                        return Err(RateLimited);
                    }
                    tokio::time::sleep_until(retry_at).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    #[test]
    fn zero_size_or_refill_means_unlimited() {
        let now = Instant::now();
        assert!(TokenBucket::new(0, Duration::from_secs(1), 0, now).is_none());
        assert!(TokenBucket::new(10, Duration::ZERO, 0, now).is_none());
    }

    #[test]
    fn refills_at_its_rate_and_never_past_its_size() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(100, Duration::from_secs(1), 0, t0).unwrap();
        assert!(bucket.reduce(100, t0).is_ok());
        assert_eq!(bucket.reduce(1, t0), Err(Duration::from_millis(10)));
        assert!(bucket.reduce(50, at(t0, 500)).is_ok());
        assert!(bucket.reduce(1, at(t0, 500)).is_err());
        // A long idle spell fills the bucket, no further.
        bucket.replenish(at(t0, 60_000));
        assert_eq!(bucket.budget(), 100);
    }

    #[test]
    fn the_burst_is_spent_first_and_once() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10, Duration::from_secs(1), 25, t0).unwrap();
        assert!(bucket.reduce(20, t0).is_ok());
        assert_eq!((bucket.burst(), bucket.budget()), (5, 10));
        assert!(bucket.reduce(12, t0).is_ok());
        assert_eq!((bucket.burst(), bucket.budget()), (0, 3));
    }

    #[test]
    fn a_refused_call_consumes_nothing() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10, Duration::from_secs(1), 3, t0).unwrap();
        assert!(bucket.reduce(9, t0).is_ok()); // 3 from the burst, 6 from the budget
        let before = (bucket.burst(), bucket.budget());
        assert!(bucket.reduce(8, t0).is_err());
        assert_eq!((bucket.burst(), bucket.budget()), before);
    }

    #[test]
    fn a_request_larger_than_the_bucket_is_admitted_when_full_and_repaid() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10, Duration::from_secs(1), 0, t0).unwrap();
        assert!(bucket.reduce(5, t0).is_ok());
        // Not full: wait until it is (500 ms), not forever.
        assert_eq!(bucket.reduce(25, t0), Err(Duration::from_millis(500)));
        assert!(bucket.reduce(25, at(t0, 500)).is_ok());
        // 15 tokens owed: nothing more until they are repaid (1.5 s) and a
        // token earned on top.
        assert!(bucket.reduce(1, at(t0, 1900)).is_err());
        assert!(bucket.reduce(1, at(t0, 2100)).is_ok());
    }

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

    /// Property: whatever the request sizes and timing, the budget never
    /// exceeds the size, and over a long run the tokens taken stay within
    /// 10% of the configured rate (plus what the bucket and burst start with).
    #[test]
    fn long_run_rate_and_budget_hold_for_random_traffic() {
        for seed in 0..200u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let size = rng.random_range(1..=10_000u64);
            let refill_ms = rng.random_range(1..=5_000u64);
            let burst = if rng.random_bool(0.3) {
                rng.random_range(0..=size * 2)
            } else {
                0
            };
            let t0 = Instant::now();
            let mut bucket =
                TokenBucket::new(size, Duration::from_millis(refill_ms), burst, t0).unwrap();
            let horizon = Duration::from_millis(refill_ms * 200);
            let mut now = t0;
            let mut taken: u128 = 0;
            while now < t0 + horizon {
                // Mostly requests that fit, sometimes larger than the bucket.
                let tokens = if rng.random_bool(0.05) {
                    rng.random_range(size..=size * 3)
                } else {
                    rng.random_range(1..=size)
                };
                match bucket.reduce(tokens, now) {
                    Ok(()) => taken += u128::from(tokens),
                    // A greedy client retries exactly when told.
                    Err(wait) => now += wait.max(Duration::from_nanos(1)),
                }
                assert!(bucket.budget() <= size, "seed {seed}: budget over size");
            }
            let elapsed = now.duration_since(t0).as_nanos();
            let allowed = elapsed * u128::from(size) / Duration::from_millis(refill_ms).as_nanos()
                + u128::from(size)
                + u128::from(burst);
            // Oversized requests may overshoot by one request until repaid.
            let allowed_max = allowed + u128::from(size) * 3;
            assert!(
                taken <= allowed_max * 11 / 10,
                "seed {seed}: took {taken}, allowed {allowed}"
            );
            assert!(
                taken * 10 >= allowed * 9 - u128::from(size) * 30,
                "seed {seed}: took {taken}, allowed {allowed}"
            );
        }
    }

    #[test]
    fn manifest_overrides_replace_single_buckets() {
        let limits: RateLimits = toml::from_str(
            "max-wait-ms = 5\n[queue]\nops = { size = 50, refill-ms = 1000 }\n[kv]\nbytes = { size = 0, refill-ms = 1 }\n",
        )
        .unwrap();
        let default = RateLimits::default();
        assert_eq!(limits.queue.ops, Some(BucketConfig::per_second(50)));
        assert_eq!(
            limits.queue.bytes, default.queue.bytes,
            "an unnamed bucket keeps its default"
        );
        assert_eq!(limits.kv.bytes, None, "size 0 removes the limit");
        assert_eq!(limits.kv.ops, default.kv.ops);
        assert_eq!(limits.max_wait_ms, 5);
        assert!(toml::from_str::<RateLimits>("[queue]\nopps = 1\n").is_err());
    }

    #[test]
    fn a_forced_charge_becomes_a_debt() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10, Duration::from_secs(1), 0, t0).unwrap();
        bucket.force(15, t0);
        assert_eq!(bucket.budget(), 0);
        assert!(bucket.reduce(1, at(t0, 400)).is_err());
        assert!(bucket.reduce(1, at(t0, 600)).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn admit_waits_within_the_bound_then_refuses() {
        let limits = RateLimits {
            queue: InterfaceLimits {
                ops: Some(BucketConfig::per_second(10)),
                bytes: None,
            },
            max_wait_ms: 150,
            ..RateLimits::default()
        };
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
        let limited = RoleLimiter::new(&RateLimits {
            queue: InterfaceLimits {
                ops: None,
                bytes: Some(BucketConfig::per_second(10)),
            },
            max_wait_ms: 150,
            ..RateLimits::default()
        });
        limited.admit(Interface::Queue, 10).await.unwrap();
        let started = tokio::time::Instant::now();
        assert_eq!(limited.admit(Interface::Queue, 2).await, Err(RateLimited));
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
