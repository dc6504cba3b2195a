//! What the apply loop tells the beat loop: the `svc.<name>` revision each
//! service runs here, the services refused and why, a nudge to beat at
//! once after a local change, and how many of its rounds read the fabric
//! (so that a host back after a long silence beats only once it has
//! applied what the fabric wants now). Kept in memory: a restarted host
//! learns it again in its first round.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::{Notify, watch};

#[derive(Default)]
struct Known {
    applied: BTreeMap<String, u64>,
    refused: BTreeMap<String, String>,
    retrying: BTreeMap<String, String>,
}

/// The apply loop's rounds, numbered from 1 as they begin.
#[derive(Debug, Default, Clone, Copy)]
struct Rounds {
    /// The number of the last round begun.
    begun: u64,
    /// The number of the last round that read the fabric's state and ran
    /// to its end.
    done: u64,
    /// How many rounds read the fabric's state and ran to their end.
    finished: u64,
}

/// Shared by the agent's two loops.
#[derive(Default)]
pub(super) struct Memory {
    known: Mutex<Known>,
    changed: Notify,
    rounds: watch::Sender<Rounds>,
}

impl Memory {
    fn known(&self) -> MutexGuard<'_, Known> {
        // A panic elsewhere cannot leave two maps of plain values half changed.
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The revision service `name` runs here, if known.
    pub(super) fn applied(&self, name: &str) -> Option<u64> {
        self.known().applied.get(name).copied()
    }

    /// Service `name` runs `revision` here, as wanted.
    pub(super) fn set_applied(&self, name: &str, revision: u64) {
        let mut known = self.known();
        known.refused.remove(name);
        known.retrying.remove(name);
        if known.applied.insert(name.to_owned(), revision) != Some(revision) {
            drop(known);
            self.changed.notify_one();
        }
    }

    /// Service `name` no longer runs here.
    pub(super) fn forget(&self, name: &str) {
        let mut known = self.known();
        known.applied.remove(name);
        known.refused.remove(name);
        known.retrying.remove(name);
    }

    /// Service `name` was refused, for `reason`: for good (`passing`
    /// false: the revision cannot run here) or for a reason that may pass
    /// (reported apart, so that it rolls no fabric-wide rollout back).
    pub(super) fn refuse(&self, name: &str, reason: &str, passing: bool) {
        let changed = {
            let mut guard = self.known();
            let known: &mut Known = &mut guard;
            let (kept, other) = if passing {
                (&mut known.retrying, &mut known.refused)
            } else {
                (&mut known.refused, &mut known.retrying)
            };
            let moved = other.remove(name).is_some();
            let new = kept.get(name).map(String::as_str) != Some(reason);
            if new {
                kept.insert(name.to_owned(), reason.to_owned());
            }
            moved || new
        };
        if changed {
            self.changed.notify_one();
        }
    }

    /// Service `name` is no longer refused (its revision changed).
    pub(super) fn unrefuse(&self, name: &str) {
        let mut known = self.known();
        known.refused.remove(name);
        known.retrying.remove(name);
    }

    /// The services refused for good, and why.
    pub(super) fn refused(&self) -> BTreeMap<String, String> {
        self.known().refused.clone()
    }

    /// The services whose last step failed for a reason that may pass, and why.
    pub(super) fn retrying(&self) -> BTreeMap<String, String> {
        self.known().retrying.clone()
    }

    /// How many apply rounds read the fabric's state and applied it.
    pub(super) fn apply_rounds(&self) -> u64 {
        self.rounds.borrow().finished
    }

    /// Something changed here: beat soon.
    pub(super) fn nudge(&self) {
        self.changed.notify_one();
    }

    /// Waits for a nudge.
    pub(super) async fn nudged(&self) {
        self.changed.notified().await;
    }

    /// The apply loop begins a round: its number.
    pub(super) fn round_begins(&self) -> u64 {
        let mut number = 0;
        self.rounds.send_modify(|rounds| {
            rounds.begun = rounds.begun.saturating_add(1);
            number = rounds.begun;
        });
        number
    }

    /// Round `number` ended; it counts if it read the fabric's state in
    /// full and applied it (a round that could not read it, found no
    /// leader, or met assignments of another term applied nothing).
    pub(super) fn round_ends(&self, number: u64, applied: bool) {
        if applied {
            self.rounds.send_modify(|rounds| {
                rounds.done = rounds.done.max(number);
                rounds.finished = rounds.finished.saturating_add(1);
            });
        }
    }

    /// Waits until a round that begins after now has read the fabric and
    /// ended, for at most `within`: whether one did.
    pub(super) async fn fresh_round(&self, within: Duration) -> bool {
        let mut rounds = self.rounds.subscribe();
        let wanted = rounds.borrow_and_update().begun.saturating_add(1);
        let ended = rounds.wait_for(|rounds| rounds.done >= wanted);
        matches!(tokio::time::timeout(within, ended).await, Ok(Ok(_)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_a_revision_clears_its_refusal() {
        let memory = Memory::default();
        memory.refuse("shop", "svc.shop: signature does not verify", false);
        assert_eq!(memory.refused().len(), 1);
        memory.set_applied("shop", 4);
        assert_eq!(memory.applied("shop"), Some(4));
        assert!(memory.refused().is_empty());
        memory.refuse("shop", "revision 5: the store is unreachable", true);
        assert!(
            memory.refused().is_empty(),
            "a passing failure is no refusal"
        );
        assert_eq!(memory.retrying().len(), 1);
        memory.refuse("shop", "revision 5: rolled back", false);
        assert!(memory.retrying().is_empty(), "one reason at a time");
        assert_eq!(memory.refused().len(), 1);
        memory.set_applied("shop", 5);
        assert!(memory.refused().is_empty() && memory.retrying().is_empty());
        memory.forget("shop");
        assert_eq!(memory.applied("shop"), None);
    }

    #[tokio::test]
    async fn only_a_round_begun_later_that_read_the_fabric_is_fresh() {
        let memory = std::sync::Arc::new(Memory::default());
        let wait = Duration::from_millis(50);
        // A round under way when the wait starts is not fresh.
        let under_way = memory.round_begins();
        let waiting = {
            let memory = memory.clone();
            tokio::spawn(async move { memory.fresh_round(Duration::from_secs(10)).await })
        };
        tokio::task::yield_now().await;
        memory.round_ends(under_way, true);
        // Nor one that could not read the fabric.
        let unread = memory.round_begins();
        memory.round_ends(unread, false);
        tokio::time::sleep(wait).await;
        assert!(!waiting.is_finished());
        let read = memory.round_begins();
        memory.round_ends(read, true);
        assert!(waiting.await.unwrap());
        assert_eq!(memory.apply_rounds(), 2, "the rounds that applied");
        // Bounded: no round at all.
        assert!(!memory.fresh_round(wait).await);
    }
}
