//! One queue as the rules keep it: its messages, the index that finds the
//! next one to deliver, its byte count and its dedupe ids.

use crate::message::Message;
use crate::persist::{Change, Changes};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use tokio::sync::Notify;

/// A message the queue holds.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) message: Message,
    /// The token of the current delivery's receipt.
    pub(super) lease: Option<u64>,
    /// Whether the message is on disk and may be delivered.
    pub(super) ready: bool,
}

/// A dedupe id in use.
#[derive(Debug)]
pub(super) struct Dedupe {
    pub(super) id: String,
    pub(super) expires_at_ms: u64,
    /// Whether the send that used it is on disk: a retry is answered only
    /// then, so no client holds an acknowledgement a crash could take back.
    pub(super) committed: bool,
}

/// One queue.
#[derive(Debug, Default)]
pub(super) struct Queue {
    pub(super) entries: HashMap<u64, Entry>,
    /// Ready messages by (visible at, seq): the next to deliver first.
    pub(super) by_visibility: BTreeSet<(u64, u64)>,
    pub(super) next_seq: u64,
    /// Ready messages (entries also holds sends waiting for their commit).
    pub(super) ready: usize,
    /// Body bytes held, pending sends included.
    pub(super) bytes: usize,
    pub(super) dedupe: HashMap<String, Dedupe>,
    /// Dedupe ids in the order they were used (and so expire).
    pub(super) dedupe_order: VecDeque<(u64, String)>,
    /// Woken when a message may have become visible early (a send, an
    /// abandon, a move to this poison queue), so long-polls look again.
    pub(super) arrivals: Arc<Notify>,
}

impl Queue {
    pub(super) fn make_ready(&mut self, seq: u64) {
        if let Some(entry) = self.entries.get_mut(&seq)
            && !entry.ready
        {
            entry.ready = true;
            self.ready += 1;
            self.by_visibility
                .insert((entry.message.visible_at_ms, seq));
        }
    }

    /// Inserts a message that needs no commit first (restored from the
    /// store, or moved here as poison). It checks no limit: a caller adding
    /// one on a guest's behalf checks the queue's room first.
    pub(super) fn insert_ready(&mut self, seq: u64, message: Message) {
        self.next_seq = self.next_seq.max(seq.saturating_add(1));
        self.bytes += message.body.len();
        self.entries.insert(
            seq,
            Entry {
                message,
                lease: None,
                ready: false,
            },
        );
        self.make_ready(seq);
    }

    pub(super) fn remove(&mut self, seq: u64) -> Option<Message> {
        let entry = self.entries.remove(&seq)?;
        self.bytes -= entry.message.body.len();
        if entry.ready {
            self.ready -= 1;
            self.by_visibility
                .remove(&(entry.message.visible_at_ms, seq));
        }
        Some(entry.message)
    }

    pub(super) fn set_visible_at(&mut self, seq: u64, visible_at_ms: u64) {
        if let Some(entry) = self.entries.get_mut(&seq) {
            if entry.ready {
                self.by_visibility
                    .remove(&(entry.message.visible_at_ms, seq));
                self.by_visibility.insert((visible_at_ms, seq));
            }
            entry.message.visible_at_ms = visible_at_ms;
        }
    }

    /// Forgets dedupe ids that have expired, or that are over `cap`.
    pub(super) fn prune_dedupe(
        &mut self,
        queue: &str,
        now: u64,
        cap: usize,
        changes: &mut Changes,
    ) {
        while let Some((expires, _)) = self.dedupe_order.front() {
            if *expires > now && self.dedupe_order.len() <= cap {
                break;
            }
            let Some((expires, key)) = self.dedupe_order.pop_front() else {
                break;
            };
            if self
                .dedupe
                .get(&key)
                .is_some_and(|d| d.expires_at_ms == expires)
            {
                self.dedupe.remove(&key);
                changes.push(|| Change::DedupeGone {
                    queue: queue.to_owned(),
                    key,
                });
            }
        }
    }
}
