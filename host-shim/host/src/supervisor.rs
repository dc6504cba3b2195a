//! The restart policy of worker instances: exponential backoff, so a guest
//! that fails at once does not burn the host's CPU, and crash-loop
//! detection, so an operator sees which instances keep failing.
//!
//! Pure functions of the times involved, tested without sleeping; the
//! instance slots that apply them are in [`crate::controller::workers`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The first restart delay.
pub const BACKOFF_START: Duration = Duration::from_millis(100);
/// The longest restart delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// An instance that ran this long before failing is considered healthy:
/// its next failure restarts it after the shortest delay again.
pub const HEALTHY_RUN: Duration = Duration::from_secs(30);
/// An instance that failed this many times within [`CRASH_LOOP_WINDOW`] is
/// crash-looping.
pub const CRASH_LOOP_FAILURES: usize = 5;
/// The window crash-loop detection counts failures in.
pub const CRASH_LOOP_WINDOW: Duration = Duration::from_secs(60);

/// The delay before the next restart, given the last one and how long the
/// instance ran.
pub fn next_backoff(previous: Option<Duration>, ran_for: Duration) -> Duration {
    match previous {
        _ if ran_for >= HEALTHY_RUN => BACKOFF_START,
        None => BACKOFF_START,
        Some(delay) => (delay * 2).min(BACKOFF_MAX),
    }
}

/// An instance's recent failures.
#[derive(Debug, Default, Clone)]
pub struct FailureWindow {
    times: VecDeque<Instant>,
}

impl FailureWindow {
    /// Records a failure at `now`.
    pub fn record(&mut self, now: Instant) {
        self.forget_before(now);
        self.times.push_back(now);
        // Only the last few matter.
        while self.times.len() > CRASH_LOOP_FAILURES {
            self.times.pop_front();
        }
    }

    /// Whether the instance failed [`CRASH_LOOP_FAILURES`] times within the
    /// last [`CRASH_LOOP_WINDOW`].
    pub fn crash_looping(&self, now: Instant) -> bool {
        self.times
            .iter()
            .filter(|at| now.saturating_duration_since(**at) < CRASH_LOOP_WINDOW)
            .count()
            >= CRASH_LOOP_FAILURES
    }

    fn forget_before(&mut self, now: Instant) {
        while self
            .times
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) >= CRASH_LOOP_WINDOW)
        {
            self.times.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap_and_resets_after_a_healthy_run() {
        let quick = Duration::from_millis(5);
        let mut delay = next_backoff(None, quick);
        assert_eq!(delay, BACKOFF_START);
        for _ in 0..20 {
            delay = next_backoff(Some(delay), quick);
        }
        assert_eq!(delay, BACKOFF_MAX);
        assert_eq!(next_backoff(Some(delay), HEALTHY_RUN), BACKOFF_START);
        assert_eq!(next_backoff(Some(BACKOFF_START), quick), BACKOFF_START * 2);
    }

    #[test]
    fn repeated_failures_within_the_window_are_a_crash_loop() {
        let start = Instant::now();
        let mut window = FailureWindow::default();
        for i in 0..4 {
            window.record(start + Duration::from_secs(i));
        }
        assert!(!window.crash_looping(start + Duration::from_secs(4)));
        window.record(start + Duration::from_secs(10));
        assert!(window.crash_looping(start + Duration::from_secs(10)));
        // Once the early failures leave the window, it is no longer looping.
        assert!(!window.crash_looping(start + Duration::from_secs(61)));
        // Failures spread wider than the window never are.
        let mut spread = FailureWindow::default();
        for i in 0..10 {
            spread.record(start + Duration::from_secs(i * 20));
        }
        assert!(!spread.crash_looping(start + Duration::from_secs(180)));
    }
}
