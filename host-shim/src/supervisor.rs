//! Keeps a worker role's instances running: each instance slot restarts its
//! guest when it returns or fails, with exponential backoff so a guest that
//! fails at once does not burn the host's CPU.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use weft_runtime::{WorkerExit, WorkerRole};

/// The first restart delay.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// The longest restart delay.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// An instance that ran this long before failing is considered healthy:
/// its next failure restarts it after the shortest delay again.
const HEALTHY_RUN: Duration = Duration::from_secs(30);

/// The delay before the next restart, given the last one and how long the
/// instance ran.
pub fn next_backoff(previous: Option<Duration>, ran_for: Duration) -> Duration {
    match previous {
        _ if ran_for >= HEALTHY_RUN => BACKOFF_START,
        None => BACKOFF_START,
        Some(delay) => (delay * 2).min(BACKOFF_MAX),
    }
}

/// Runs instance slot `slot` of `role` until `stop` turns true.
pub async fn run_slot(
    role: Arc<WorkerRole>,
    role_name: String,
    slot: u32,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = None;
    loop {
        if *stop.borrow() {
            return;
        }
        let started = Instant::now();
        let stop_signal = {
            let mut stop = stop.clone();
            async move {
                let _ = stop.wait_for(|stopping| *stopping).await;
            }
        };
        let result = role.run_instance(slot, stop_signal).await;
        let ran_for = started.elapsed();
        match result {
            Ok(WorkerExit::Stopped) => return,
            Ok(WorkerExit::Returned) => {
                tracing::info!(role = %role_name, instance = slot, "worker returned; restarting it");
            }
            Err(failure) => {
                tracing::warn!(role = %role_name, instance = slot, %failure, "worker failed; restarting it");
            }
        }
        let delay = next_backoff(backoff, ran_for);
        backoff = Some(delay);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|stopping| *stopping) => return,
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
}
