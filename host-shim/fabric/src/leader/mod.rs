//! The leader's loop: while this host holds the lease (see
//! [`crate::lease`]), judge the members, place the services and heal what
//! failed, writing `hstate.<id>` and `assign.<name>`.
//!
//! A round runs on every change in either bucket (debounced, so a burst of
//! beats makes one round) and every second, so silence is noticed without
//! any change to wake on. Each term starts afresh: a new leader has seen no
//! beat yet, so every member gets a full `down_after` before it can be
//! judged down, and every assignment is re-stamped with the new term.
//!
//! - `health`: the members' states, from when their beats last changed.
//! - `reconcile`: one round; each service on its own, so one that fails
//!   never stops the others (`failures`: how loudly each is logged).
//! - `assignment`: the assignment the plan gives a service.
//! - `rollout`: an upgrade moving across the fabric one host at a time.

mod assignment;
mod failures;
mod health;
#[cfg(test)]
mod isolation_tests;
mod reconcile;
mod rollout;
#[cfg(test)]
mod tests;

use crate::lease::ChangeWatch;
use crate::signing::TrustedKeys;
use crate::store::{Bucket, FabricStore};
use health::Thresholds;
use reconcile::{Memory, Round};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often a leader reconciles when nothing changes.
const TICK: Duration = Duration::from_secs(1);
/// The longest one round may take: a store read that hangs must fail the
/// round (logged, retried) rather than stop the leader's rounds silently.
const ROUND_LIMIT: Duration = Duration::from_secs(30);

/// When the leader judges a member suspect or down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderSettings {
    /// A member whose beat has not changed for this long is down: its
    /// instances are placed elsewhere (`--fabric-down-after`).
    pub down_after: Duration,
    /// A member whose beat has not changed for this long is suspect: it
    /// keeps what it runs but gets nothing new.
    pub suspect_after: Duration,
}

/// Runs the leader's rounds whenever `leadership` reads `Some(term)`, until
/// `shutdown` turns true (or its sender goes).
pub fn spawn_leader(
    store: FabricStore,
    trust: Arc<TrustedKeys>,
    leadership: watch::Receiver<Option<u64>>,
    settings: LeaderSettings,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let leader = Leader {
        store,
        trust,
        leadership,
        thresholds: Thresholds {
            suspect_after: settings.suspect_after,
            down_after: settings.down_after,
        },
        shutdown,
        state_changes: ChangeWatch::new(Bucket::State),
        beat_changes: ChangeWatch::new(Bucket::Beats),
    };
    tokio::spawn(leader.run())
}

struct Leader {
    store: FabricStore,
    trust: Arc<TrustedKeys>,
    leadership: watch::Receiver<Option<u64>>,
    thresholds: Thresholds,
    shutdown: watch::Receiver<bool>,
    state_changes: ChangeWatch,
    beat_changes: ChangeWatch,
}

impl Leader {
    async fn run(mut self) {
        loop {
            let leadership = &mut self.leadership;
            let term = tokio::select! {
                term = leadership.wait_for(Option::is_some) => match term {
                    Ok(term) => *term,
                    // The elector is gone: nobody will lead from here.
                    Err(_) => return,
                },
                _ = self.shutdown.wait_for(|stop| *stop) => return,
            };
            let Some(term) = term else { continue };
            if !self.lead(term).await {
                return;
            }
        }
    }

    /// Reconciles for `term` while this host leads it; false on shutdown.
    async fn lead(&mut self, term: u64) -> bool {
        tracing::info!(term, "leading the fabric: placing and healing");
        let mut memory = Memory::default();
        let mut last_error = None;
        loop {
            if *self.leadership.borrow() != Some(term) {
                tracing::info!(term, "no longer leading the fabric");
                return true;
            }
            let round = Round {
                store: &self.store,
                trust: &self.trust,
                leadership: &self.leadership,
                term,
                thresholds: self.thresholds,
            };
            let outcome = tokio::time::timeout(ROUND_LIMIT, round.run(&mut memory))
                .await
                .unwrap_or_else(|_| {
                    Err(crate::FabricError::Store(format!(
                        "the round did not finish within {} s",
                        ROUND_LIMIT.as_secs()
                    )))
                });
            match outcome {
                Ok(()) => last_error = None,
                Err(crate::FabricError::Conflict(reason)) => {
                    tracing::debug!(%reason, "a reconcile round stopped on a concurrent change");
                }
                Err(e) => {
                    // Logged once while it lasts, not every second.
                    let message = e.to_string();
                    if last_error.as_ref() != Some(&message) {
                        tracing::warn!(error = %message, "a reconcile round failed; retrying");
                    }
                    last_error = Some(message);
                }
            }
            if !self.wait().await {
                return false;
            }
        }
    }

    /// Waits for a change (debounced, see [`ChangeWatch`]), a tick or a
    /// change of leadership; false on shutdown or once the elector is gone.
    async fn wait(&mut self) -> bool {
        // Without a watch the tick still drives the rounds.
        self.state_changes.ensure(&self.store).await;
        self.beat_changes.ensure(&self.store).await;
        let shutdown = &mut self.shutdown;
        let leadership = &mut self.leadership;
        let (state, beats) = (&mut self.state_changes, &mut self.beat_changes);
        let woke = tokio::select! {
            () = tokio::time::sleep(TICK) => false,
            changed = state.changed() => changed,
            changed = beats.changed() => changed,
            changed = leadership.changed() => match changed {
                Ok(()) => false,
                // The elector is gone: nobody will lead from here.
                Err(_) => return false,
            },
            _ = shutdown.wait_for(|stop| *stop) => return false,
        };
        if woke {
            // One round answers the changes in both buckets.
            self.state_changes.drain();
            self.beat_changes.drain();
        }
        !*self.shutdown.borrow()
    }
}
