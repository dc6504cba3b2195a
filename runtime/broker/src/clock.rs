//! Time as the queue rules keep it: milliseconds since the Unix epoch (a
//! visibility or an expiry must mean the same after a restart), read from a
//! [`Clock`] that follows `tokio::time`, so tests drive leases with a
//! paused clock instead of sleeping.

use std::time::Duration;

/// Wall-clock milliseconds that advance with `tokio::time` (so a paused
/// test clock pauses them too) and never go backwards within a process.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    base_ms: u64,
    start: tokio::time::Instant,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Self {
            base_ms: unix_millis(),
            start: tokio::time::Instant::now(),
        }
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.base_ms.saturating_add(millis(self.start.elapsed()))
    }
}

/// Milliseconds since the Unix epoch, by the wall clock.
pub(crate) fn unix_millis() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A duration in whole milliseconds, saturating.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
