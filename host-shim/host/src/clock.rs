//! The wall clock, read once for the host and its fabric agent: the
//! milliseconds since the Unix epoch that queue history samples and
//! heartbeats carry.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now: 0 for a clock set before 1970,
/// `u64::MAX` past the year 584 million.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_is_in_milliseconds_after_2020() {
        let now = now_ms();
        // After 2020-01-01, and before 2100: milliseconds, not seconds or
        // nanoseconds.
        assert!(
            (1_577_836_800_000..4_102_444_800_000).contains(&now),
            "{now}"
        );
    }
}
