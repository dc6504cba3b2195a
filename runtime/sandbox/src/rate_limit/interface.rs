//! The rate-limited interfaces, registered in one table: each [`Interface`]
//! knows its name (in the manifest's `rate-limits` table, in metrics and in
//! logs) and its default buckets ([`Interface::default_limits`]: an
//! [`InterfaceLimits`], two [`BucketConfig`]s).
//!
//! Adding a host interface adds one entry to the `interfaces!` list below;
//! the manifest's form, the [`RateLimits`](super::RateLimits) it fills, the
//! [`RoleLimiter`](super::RoleLimiter)'s buckets and the usage counters
//! follow from it. The interface's own module (in [`crate::vmbus`]) names
//! the entry it draws on.

use super::bucket::TokenBucket;
use serde::Deserialize;
use std::time::{Duration, Instant};

const MIB: u64 = 1024 * 1024;

/// What a role's VMBus calls may do by default: 50,000 calls/s, about what
/// one core serves of the dearest call. A durable write (a queue `send`, a
/// key-value `set` on the embedded store) costs the host about 14 µs of CPU,
/// so one core serves about 70,000 a second (`weft-bench host-calls`); the
/// guest spends some of its own core on each call too. So the limit binds
/// only once a role's host calls would take about a whole core, past its
/// fair share of a two-core host, and never before the cores bind a role
/// doing real work per call. Reads, completions and the memory backend cost
/// 0.2–2 µs a call: a role at this rate of those takes a tenth of a core.
/// (It was 1,000: the pipeline example, two calls a job, was refused at 573
/// jobs/s with the cores half idle.)
const CALLS: Option<BucketConfig> = Some(BucketConfig::per_second(50_000));
/// What a role's queue and key-value payloads may carry by default: 128
/// MiB/s. One core writes 64 KiB values durably at about 1.2 GiB/s of CPU,
/// but the store's disk is shared: here its group commits carried 426 MiB/s
/// of them (`weft-bench host-calls`), so a role past 128 MiB/s takes more
/// than its share of the store with two or three roles beside it.
const BYTES: Option<BucketConfig> = Some(BucketConfig::per_second(128 * MIB));

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

    pub(super) fn build(&self, now: Instant) -> Option<TokenBucket> {
        TokenBucket::new(
            self.size,
            Duration::from_millis(self.refill_ms),
            self.burst,
            now,
        )
    }
}

/// The operations and bytes buckets of one interface (`None`: unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterfaceLimits {
    /// Calls per refill period.
    pub ops: Option<BucketConfig>,
    /// Payload bytes (message bodies, keys and values, HTTP bodies) per
    /// refill period.
    pub bytes: Option<BucketConfig>,
}

/// Declares [`Interface`] from one table of `variant = "name", default`.
macro_rules! interfaces {
    ($($(#[$doc:meta])* $variant:ident = $name:literal, $default:expr;)+) => {
        /// The interfaces that are rate limited, each with its own buckets.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Interface {
            $($(#[$doc])* $variant,)+
        }

        impl Interface {
            /// Every interface, in a fixed order (the order of the usage
            /// counters and of the metrics).
            pub const ALL: [Interface; [$(Interface::$variant),+].len()] =
                [$(Interface::$variant),+];

            /// Its name: its table in the manifest's `rate-limits`, and its
            /// label in metrics and logs.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Interface::$variant => $name,)+
                }
            }

            /// Its buckets when the manifest names none.
            pub const fn default_limits(self) -> InterfaceLimits {
                match self {
                    $(Interface::$variant => $default,)+
                }
            }
        }
    };
}

interfaces! {
    /// `weft:vmbus/queue`. Default: 50,000 calls/s and 128 MiB/s (a batch
    /// `complete-batch` is one call).
    Queue = "queue", InterfaceLimits { ops: CALLS, bytes: BYTES };
    /// `wasi:keyvalue/store`. Default: 50,000 calls/s and 128 MiB/s
    /// (opening a bucket is not a call: it reaches no backend).
    Kv = "kv", InterfaceLimits { ops: CALLS, bytes: BYTES };
    /// `wasi:config/store`. Default: 50,000 calls/s, as every VMBus call (a
    /// setting is a read from memory, about a microsecond: reading one per
    /// request costs the host next to nothing).
    Config = "config", InterfaceLimits { ops: CALLS, bytes: None };
    /// The guest's stdout and stderr: `ops` counts lines, `bytes` their
    /// bytes. Default: 500 lines/s after a one-time burst of 1,000 (a
    /// start-up banner passes whole), and 1 MiB/s. Each line costs the host
    /// a log event whatever its length, so lines are limited as well as
    /// bytes: a guest printing bare newlines would otherwise make the host
    /// emit a million events a second. Output over the limit is dropped (a
    /// guest's `print` must not fail or block), and the log says how many
    /// lines were lost.
    Log = "log", InterfaceLimits {
        ops: Some(BucketConfig { size: 500, refill_ms: 1000, burst: 1000 }),
        bytes: Some(BucketConfig::per_second(MIB)),
    };
    /// A web role's incoming HTTP: `ops` counts requests (over the limit:
    /// 429 with `Retry-After`), `bytes` the request and response bodies
    /// (over the limit: the body is slowed, never cut). Default: no request
    /// limit (`max-in-flight` bounds concurrency) and 64 MiB/s of bodies.
    Http = "http", InterfaceLimits {
        ops: None,
        bytes: Some(BucketConfig::per_second(64 * MIB)),
    };
    /// A web role's outgoing HTTP (see [`crate::egress`]): `ops` counts
    /// requests, `bytes` the bodies sent and received. Default: 100
    /// requests/s and 16 MiB/s: an API client's traffic, not a crawler's.
    /// Sized for the hosts it reaches, not for this host's cores.
    Egress = "egress", InterfaceLimits {
        ops: Some(BucketConfig::per_second(100)),
        bytes: Some(BucketConfig::per_second(16 * MIB)),
    };
    /// `weft:vmbus/usage`. Default: 50,000 calls/s, as every VMBus call.
    Usage = "usage", InterfaceLimits { ops: CALLS, bytes: None };
}

impl Interface {
    /// Its position in [`Interface::ALL`], to index per-interface arrays.
    pub(super) const fn index(self) -> usize {
        self as usize
    }

    /// The interface the manifest names `name`.
    pub fn named(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|i| i.name() == name)
    }

    /// Whether it is a call a guest makes over the VMBus (or out over
    /// HTTP), which `weft:vmbus/usage` counts as a call; the guest's output
    /// and its incoming requests are not.
    pub const fn is_guest_call(self) -> bool {
        !matches!(self, Interface::Log | Interface::Http)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_index_the_table() {
        for (index, interface) in Interface::ALL.into_iter().enumerate() {
            assert_eq!(interface.index(), index);
            assert_eq!(Interface::named(interface.name()), Some(interface));
        }
        assert_eq!(Interface::named("max-wait-ms"), None);
    }
}
