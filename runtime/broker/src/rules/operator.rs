//! The operator's tools on the rules: purging a queue, and redriving its
//! poison queue's messages back to it. Their changes are written like any
//! other's; [`Queues`](crate::queues::Queues) waits for them to be on disk
//! before it answers.

use super::QueueRules;
use crate::names::poison_queue;
use crate::persist::{Change, Changes};
use std::collections::HashSet;

impl QueueRules {
    /// Deletes every message `name` holds: visible, delayed, leased (their
    /// receipts stop working), and sends still waiting for their commit
    /// (their senders are answered, as for a message completed at once).
    /// Dedupe ids stay: a retried send is still recognised. Returns how
    /// many were deleted.
    pub(crate) fn purge(&mut self, name: &str, changes: &mut Changes) -> u64 {
        let Some(queue) = self.queues.get_mut(name) else {
            return 0;
        };
        let seqs: Vec<u64> = queue.entries.keys().copied().collect();
        let mut purged = 0u64;
        for seq in seqs {
            if queue.remove(seq).is_some() {
                changes.push(|| Change::Delete {
                    queue: name.to_owned(),
                    seq,
                });
                purged += 1;
            }
        }
        purged
    }

    /// Moves the visible messages of `name`'s poison queue (those in `ids`,
    /// or all) back to `name`, oldest first: visible at once, dequeue
    /// count 0, poison reason gone, `traceparent` kept. A leased message is
    /// not visible, so it stays (as does one abandoned with a delay, until
    /// it is visible again). Stops at the first that `name` has no room
    /// for. Returns the ids moved.
    pub(crate) fn redrive(
        &mut self,
        name: &str,
        ids: Option<&[String]>,
        now: u64,
        changes: &mut Changes,
    ) -> Vec<String> {
        let poison_name = poison_queue(name);
        let mut room = self.room(name);
        let Some(poison) = self.queues.get_mut(&poison_name) else {
            return Vec::new();
        };
        let wanted: Option<HashSet<&str>> = ids.map(|ids| ids.iter().map(String::as_str).collect());
        let mut seqs: Vec<u64> = poison
            .entries
            .iter()
            .filter(|(_, entry)| entry.ready && entry.message.visible_at_ms <= now)
            .filter(|(_, entry)| {
                wanted
                    .as_ref()
                    .is_none_or(|w| w.contains(entry.message.id.as_str()))
            })
            .map(|(seq, _)| *seq)
            .collect();
        seqs.sort_unstable();
        let mut moving = Vec::new();
        for seq in seqs {
            let Some(bytes) = poison.entries.get(&seq).map(|e| e.message.body.len()) else {
                continue;
            };
            if !room.take(bytes) {
                tracing::warn!(
                    queue = name,
                    "queue is full: redrive stopped before every message moved"
                );
                break;
            }
            if let Some(message) = poison.remove(seq) {
                changes.push(|| Change::Delete {
                    queue: poison_name.clone(),
                    seq,
                });
                moving.push(message);
            }
        }
        let queue = self.queue(name);
        let mut moved = Vec::with_capacity(moving.len());
        for mut message in moving {
            message.visible_at_ms = now;
            message.dequeue_count = 0;
            message.poison_reason = None;
            let seq = queue.next_seq;
            changes.push(|| Change::Put {
                queue: name.to_owned(),
                seq,
                message: message.clone(),
            });
            moved.push(message.id.clone());
            queue.insert_ready(seq, message);
        }
        if !moved.is_empty() {
            queue.arrivals.notify_waiters();
        }
        moved
    }
}
