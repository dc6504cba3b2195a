//! Capped exponential backoff, used by [`Worker`](crate::worker::Worker)
//! when the host answers "rate limited" or "unavailable".

use std::time::Duration;

/// The first delay after a transient failure.
pub(crate) const INITIAL: Duration = Duration::from_millis(50);

/// The longest delay: a worker never sleeps longer than this between tries.
pub(crate) const MAX: Duration = Duration::from_secs(2);

/// Delays of 50 ms, 100 ms, 200 ms... doubling up to 2 s, until reset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Backoff { next: INITIAL }
    }

    /// The delay to wait now; the next call returns twice as much (capped).
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(MAX);
        delay
    }

    /// Starts again from the initial delay, after a success.
    pub(crate) fn reset(&mut self) {
        self.next = INITIAL;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_50_ms_up_to_2_s() {
        let mut backoff = Backoff::new();
        let delays: Vec<u128> = (0..9).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [50, 100, 200, 400, 800, 1600, 2000, 2000, 2000]);
    }

    #[test]
    fn reset_starts_over() {
        let mut backoff = Backoff::new();
        backoff.next_delay();
        backoff.next_delay();
        backoff.reset();
        assert_eq!(backoff.next_delay(), INITIAL);
    }
}
