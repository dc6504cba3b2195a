//! The receipts an instance holds and has not yet completed or abandoned,
//! so that if the instance fails they go back to their queue at once
//! instead of after their visibility timeout.
//!
//! Every queue call a guest makes touches this map (a receive records its
//! receipts, a settle forgets one, an extend moves one's expiry), and a
//! guest may hold as many leases as its queues hold messages, so each
//! operation costs O(log n): a map by (queue, receipt), and the same leases
//! ordered by expiry, from whose front lapsed leases are dropped. Lapsed
//! leases are worthless (the backend refuses their receipts), so the map
//! holds only what the guest leased within its visibility timeouts.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

/// A lease's name: its queue and receipt.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Key {
    queue: String,
    receipt: String,
}

/// Receipts this instance holds and has not yet completed or abandoned.
#[derive(Debug, Default)]
pub struct Leases {
    /// Each lease's expiry.
    held: HashMap<Key, Instant>,
    /// The same leases, soonest expiry first.
    by_expiry: BTreeSet<(Instant, Key)>,
}

/// A message this instance holds by its receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The backend's (service-scoped) queue name.
    pub queue: String,
    /// The delivery's receipt.
    pub receipt: String,
    expires: Instant,
}

fn key(queue: &str, receipt: &str) -> Key {
    Key {
        queue: queue.to_owned(),
        receipt: receipt.to_owned(),
    }
}

impl Leases {
    /// Records a delivery, until `expires`.
    pub(crate) fn hold(&mut self, queue: &str, receipt: String, expires: Instant) {
        self.prune(Instant::now());
        let key = Key {
            queue: queue.to_owned(),
            receipt,
        };
        if let Some(old) = self.held.insert(key.clone(), expires) {
            self.by_expiry.remove(&(old, key.clone()));
        }
        self.by_expiry.insert((expires, key));
    }

    /// Whether the instance holds any lease still in force.
    pub(crate) fn holds_any(&mut self) -> bool {
        self.prune(Instant::now());
        !self.held.is_empty()
    }

    /// Moves a held lease's expiry (an extend); a receipt not held is
    /// ignored.
    pub(crate) fn extend(&mut self, queue: &str, receipt: &str, expires: Instant) {
        let key = key(queue, receipt);
        if let Some(at) = self.held.get_mut(&key) {
            let old = std::mem::replace(at, expires);
            self.by_expiry.remove(&(old, key.clone()));
            self.by_expiry.insert((expires, key));
        }
    }

    /// Forgets a lease (settled, or unknown to the backend).
    pub(crate) fn release(&mut self, queue: &str, receipt: &str) {
        let key = key(queue, receipt);
        if let Some(at) = self.held.remove(&key) {
            self.by_expiry.remove(&(at, key));
        }
    }

    /// Takes every lease still in force.
    pub fn take_live(&mut self) -> Vec<Lease> {
        self.prune(Instant::now());
        self.held.clear();
        std::mem::take(&mut self.by_expiry)
            .into_iter()
            .map(|(expires, key)| Lease {
                queue: key.queue,
                receipt: key.receipt,
                expires,
            })
            .collect()
    }

    /// How many leases are recorded, lapsed ones not yet dropped included.
    #[cfg(test)]
    fn recorded(&self) -> usize {
        debug_assert_eq!(self.held.len(), self.by_expiry.len());
        self.held.len()
    }

    /// Drops leases that have lapsed by `now`.
    fn prune(&mut self, now: Instant) {
        while let Some((at, _)) = self.by_expiry.first()
            && *at <= now
        {
            if let Some((_, key)) = self.by_expiry.pop_first() {
                self.held.remove(&key);
            }
        }
    }
}

impl Lease {
    /// When the lease lapses.
    pub fn expires(&self) -> Instant {
        self.expires
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn lapsed_leases_are_dropped_and_live_ones_returned() {
        let mut leases = Leases::default();
        let past = Instant::now().checked_sub(Duration::from_secs(1)).unwrap();
        let later = Instant::now() + Duration::from_secs(60);
        leases.hold("q", "old".into(), past);
        leases.hold("q", "live".into(), later);
        leases.hold("q", "settled".into(), later);
        leases.release("q", "settled");
        assert!(leases.holds_any());
        let live: Vec<String> = leases.take_live().into_iter().map(|l| l.receipt).collect();
        assert_eq!(live, vec!["live".to_owned()]);
        assert!(!leases.holds_any());
        assert_eq!(leases.recorded(), 0);
    }

    #[test]
    fn extend_moves_a_lease_and_unknown_receipts_change_nothing() {
        let mut leases = Leases::default();
        let now = Instant::now();
        let soon = now.checked_sub(Duration::from_millis(1)).unwrap();
        leases.hold("q", "a".into(), now + Duration::from_secs(60));
        leases.hold("q", "b".into(), now + Duration::from_secs(60));
        // Extending "a" into the past lapses it; "b" stays.
        leases.extend("q", "a", soon);
        // Receipts this instance never held, or held on another queue.
        leases.extend("q", "nope", now + Duration::from_secs(600));
        leases.release("other", "b");
        leases.release("q", "nope");
        assert_eq!(leases.recorded(), 2);
        let live: Vec<String> = leases.take_live().into_iter().map(|l| l.receipt).collect();
        assert_eq!(live, vec!["b".to_owned()]);
    }

    #[test]
    fn only_leases_in_force_are_kept_however_many_were_taken() {
        let mut leases = Leases::default();
        let past = Instant::now().checked_sub(Duration::from_secs(1)).unwrap();
        for i in 0..100_000 {
            leases.hold("q", format!("r{i}"), past);
        }
        // Each hold dropped the lapsed ones before it.
        assert!(leases.recorded() <= 1, "{}", leases.recorded());
        let later = Instant::now() + Duration::from_secs(60);
        for i in 0..1000 {
            leases.hold("q", format!("live{i}"), later);
        }
        // A flood of bogus settles costs a lookup each and changes nothing.
        for i in 0..100_000 {
            leases.release("q", &format!("bogus{i}"));
        }
        assert_eq!(leases.recorded(), 1000);
        assert!(leases.holds_any());
    }
}
