//! [`QueueRules`]: the one queue rulebook every backend but NATS runs.
//! Every queue's messages, leases and dedupe ids in memory, and the rules of
//! the semantics in one place ([`Queues`](crate::queues::Queues) puts them
//! behind a lock and adds the waiting); the NATS backend follows the same
//! rules on the server, and the conformance suite holds both to them.
//!
//! The in-process backend is the rules and nothing else. The embedded
//! backend is the rules with every change also written to its store: each
//! operation reports its [`Change`]s, which
//! [`Persist`](crate::persist::Persist) writes, either before the operation
//! answers (sends, receives: what must not be lost or repeated) or with the
//! next commit (completes, abandons, extends: losing one in a crash only
//! means a redelivery, which at-least-once allows). A message sent to a
//! durable backend becomes receivable only once it is on disk, so nothing is
//! ever delivered that a crash could take back; and a retried send that
//! names a dedupe id is answered only once the first send is on disk.
//!
//! Poison queues are held to the same limits as any queue: a message
//! delivered too often whose poison queue is full stays in its own queue,
//! hidden for [`POISON_RETRY`], and moves once there is room. It is kept,
//! not dropped: a poison queue exists so an operator can look at what
//! failed, and dropping the oldest would lose exactly that.
//!
//! Time is kept in milliseconds since the Unix epoch (it must mean the same
//! after a restart), read from a [`Clock`](crate::clock::Clock) that follows
//! `tokio::time`, so tests drive leases with a paused clock.

mod operator;
mod queue;

use crate::api::{Delivery, Peeked, SendOptions};
use crate::clock::millis;
use crate::error::BrokerError;
use crate::limits::{DEDUPE_WINDOW, POISON_RETRY, QueueSettings};
use crate::message::{Message, dedupe_message_id, poison_reason, random_message_id};
use crate::names::{POISON_SUFFIX, poison_queue};
use crate::persist::{Change, Changes};
use queue::{Dedupe, Entry, Queue};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Every queue, and the rules they follow. [`Queues`](crate::queues::Queues)
/// keeps it under a lock.
#[derive(Debug)]
pub(crate) struct QueueRules {
    settings: QueueSettings,
    queues: HashMap<String, Queue>,
}

/// What a send found.
pub(super) enum Prepared {
    /// A send with this dedupe id was made recently: the earlier message's
    /// id, and whether that send is on disk yet (if not, the retry waits
    /// for it, and looks again).
    Duplicate { id: String, committed: bool },
    /// A new message, held back until it is written.
    New { seq: u64, id: String },
}

/// What [`QueueRules::take`] leased.
#[derive(Debug, Default)]
pub(super) struct Taken {
    pub(super) deliveries: Vec<Delivery>,
    /// When nothing was delivered: when the next message becomes visible.
    pub(super) next_visible: Option<u64>,
    /// How to give the deliveries back ([`QueueRules::untake`]).
    pub(super) undo: Vec<Undo>,
}

/// A delivery's state before [`QueueRules::take`] leased it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Undo {
    seq: u64,
    token: u64,
    visible_at_ms: u64,
    dequeue_count: u32,
}

/// Room left in a queue, in messages and body bytes.
struct Room {
    messages: usize,
    bytes: usize,
}

impl Room {
    /// Takes room for one message of `bytes`, if there is.
    fn take(&mut self, bytes: usize) -> bool {
        if self.messages == 0 || bytes > self.bytes {
            return false;
        }
        self.messages -= 1;
        self.bytes -= bytes;
        true
    }
}

/// How a receipt's delivery is settled.
#[derive(Debug, Clone, Copy)]
pub(super) enum Settle {
    Complete,
    Abandon(Duration),
    Extend(Duration),
}

/// The receipt of delivery `token` of message `seq`.
fn receipt(seq: u64, token: u64) -> String {
    format!("{seq:x}.{token:016x}")
}

fn parse_receipt(receipt: &str) -> Option<(u64, u64)> {
    let (seq, token) = receipt.split_once('.')?;
    Some((
        u64::from_str_radix(seq, 16).ok()?,
        u64::from_str_radix(token, 16).ok()?,
    ))
}

fn stale() -> BrokerError {
    BrokerError::NotFound("no current delivery has this receipt".into())
}

impl QueueRules {
    pub(super) fn new(settings: QueueSettings) -> Self {
        Self {
            settings,
            queues: HashMap::new(),
        }
    }

    fn queue(&mut self, name: &str) -> &mut Queue {
        self.queues.entry(name.to_owned()).or_default()
    }

    /// What a long-poll on `name` waits on.
    pub(super) fn arrivals(&mut self, name: &str) -> Arc<Notify> {
        self.queue(name).arrivals.clone()
    }

    /// How many receivable messages `name` holds.
    pub(super) fn len(&self, name: &str) -> usize {
        self.queues.get(name).map_or(0, |q| q.ready)
    }

    /// Puts back a message read from the store at start.
    #[cfg(feature = "embedded")]
    pub(super) fn restore(&mut self, name: &str, seq: u64, message: Message) {
        self.queue(name).insert_ready(seq, message);
    }

    /// Puts back a dedupe id read from the store at start.
    #[cfg(feature = "embedded")]
    pub(super) fn restore_dedupe(
        &mut self,
        name: &str,
        key: String,
        id: String,
        expires_at_ms: u64,
    ) {
        let queue = self.queue(name);
        queue.dedupe_order.push_back((expires_at_ms, key.clone()));
        queue.dedupe.insert(
            key,
            Dedupe {
                id,
                expires_at_ms,
                committed: true,
            },
        );
    }

    /// Orders restored dedupe ids by expiry, once all are restored.
    #[cfg(feature = "embedded")]
    pub(super) fn restored(&mut self) {
        for queue in self.queues.values_mut() {
            queue.dedupe_order.make_contiguous().sort();
        }
    }

    /// Checks a send against the queue's dedupe ids and limits, and holds a
    /// new message back until [`QueueRules::finish_send`]. `body` is taken only
    /// for a new message (a retry that must wait still has it).
    pub(super) fn prepare_send(
        &mut self,
        name: &str,
        body: &mut Vec<u8>,
        options: &SendOptions,
        now: u64,
        changes: &mut Changes,
    ) -> Result<Prepared, BrokerError> {
        let QueueSettings {
            max_messages,
            max_bytes,
            ..
        } = self.settings;
        let queue = self.queue(name);
        queue.prune_dedupe(name, now, max_messages, changes);
        if let Some(key) = &options.dedupe_id
            && let Some(earlier) = queue.dedupe.get(key)
        {
            return Ok(Prepared::Duplicate {
                id: earlier.id.clone(),
                committed: earlier.committed,
            });
        }
        if queue.entries.len() >= max_messages || queue.bytes + body.len() > max_bytes {
            return Err(BrokerError::Unavailable(format!(
                "queue is full ({} messages, {} bytes; the limits are {max_messages} and {max_bytes})",
                queue.entries.len(),
                queue.bytes
            )));
        }
        let id = match &options.dedupe_id {
            Some(key) => {
                let id = dedupe_message_id(name, key);
                let expires_at_ms = now.saturating_add(millis(DEDUPE_WINDOW));
                queue.dedupe.insert(
                    key.clone(),
                    Dedupe {
                        id: id.clone(),
                        expires_at_ms,
                        committed: false,
                    },
                );
                queue.dedupe_order.push_back((expires_at_ms, key.clone()));
                changes.push(|| Change::Dedupe {
                    queue: name.to_owned(),
                    key: key.clone(),
                    id: id.clone(),
                    expires_at_ms,
                });
                id
            }
            None => random_message_id(),
        };
        let seq = queue.next_seq;
        queue.next_seq += 1;
        queue.bytes += body.len();
        let message = Message {
            id: id.clone(),
            body: std::mem::take(body),
            inserted_at_ms: now,
            expires_at_ms: options.ttl.map(|ttl| now.saturating_add(millis(ttl))),
            visible_at_ms: now.saturating_add(millis(options.delay)),
            dequeue_count: 0,
            poison_reason: None,
            trace_parent: options.trace_parent.clone(),
        };
        changes.push(|| Change::Put {
            queue: name.to_owned(),
            seq,
            message: message.clone(),
        });
        queue.entries.insert(
            seq,
            Entry {
                message,
                lease: None,
                ready: false,
            },
        );
        Ok(Prepared::New { seq, id })
    }

    /// Makes a prepared send receivable (`written`), or forgets it.
    pub(super) fn finish_send(
        &mut self,
        name: &str,
        seq: u64,
        dedupe: Option<&str>,
        written: bool,
    ) {
        let queue = self.queue(name);
        let earlier = dedupe.and_then(|key| Some((key, queue.dedupe.get_mut(key)?)));
        if written {
            if let Some((_, earlier)) = earlier {
                earlier.committed = true;
            }
            queue.make_ready(seq);
            queue.arrivals.notify_waiters();
        } else {
            // The dedupe id goes with the message, so a retry stores anew;
            // unless a committed send holds it (it was forgotten and used
            // again meanwhile), which stays.
            if let Some((key, earlier)) = earlier
                && !earlier.committed
            {
                queue.dedupe.remove(key);
            }
            queue.remove(seq);
        }
    }

    /// Leases up to `max` visible messages, dropping expired ones and moving
    /// those delivered too often to the poison queue (while it has room).
    pub(super) fn take(
        &mut self,
        name: &str,
        max: u32,
        visibility: Duration,
        now: u64,
        changes: &mut Changes,
    ) -> Taken {
        let max_deliveries = self.settings.max_deliveries;
        let mut taken = Taken::default();
        let mut poisoned = Vec::new();
        let mut held_back = 0usize;
        let poison_name = poison_queue(name);
        // A poison queue never poisons: its messages come back however often.
        let mut room = (!name.ends_with(POISON_SUFFIX)).then(|| self.room(&poison_name));
        let queue = self.queue(name);
        let max = usize::try_from(max).unwrap_or(usize::MAX);
        while taken.deliveries.len() < max {
            let Some(&(visible_at, seq)) = queue.by_visibility.first() else {
                break;
            };
            if visible_at > now {
                break;
            }
            let Some(entry) = queue.entries.get(&seq) else {
                queue.by_visibility.remove(&(visible_at, seq));
                continue;
            };
            let expired = entry.message.expires_at_ms.is_some_and(|at| at <= now);
            let exhausted = entry.message.dequeue_count >= max_deliveries;
            let bytes = entry.message.body.len();
            if expired {
                if let Some(message) = queue.remove(seq) {
                    changes.push(|| Change::Delete {
                        queue: name.to_owned(),
                        seq,
                    });
                    tracing::debug!(queue = name, message = %message.id, "message expired unreceived");
                }
                continue;
            }
            if exhausted && let Some(room) = &mut room {
                if room.take(bytes) {
                    if let Some(message) = queue.remove(seq) {
                        changes.push(|| Change::Delete {
                            queue: name.to_owned(),
                            seq,
                        });
                        poisoned.push(message);
                    }
                } else {
                    // No room: stay here, undelivered, and try again later.
                    queue.set_visible_at(seq, now.saturating_add(millis(POISON_RETRY)));
                    if let Some(entry) = queue.entries.get_mut(&seq) {
                        // A lapsed receipt must not settle it while hidden.
                        entry.lease = None;
                        let message = &entry.message;
                        changes.push(|| Change::Put {
                            queue: name.to_owned(),
                            seq,
                            message: message.clone(),
                        });
                    }
                    held_back += 1;
                }
                continue;
            }
            let token: u64 = rand::random();
            queue.set_visible_at(seq, now.saturating_add(millis(visibility)));
            let Some(entry) = queue.entries.get_mut(&seq) else {
                break;
            };
            taken.undo.push(Undo {
                seq,
                token,
                visible_at_ms: visible_at,
                dequeue_count: entry.message.dequeue_count,
            });
            entry.lease = Some(token);
            entry.message.dequeue_count = entry.message.dequeue_count.saturating_add(1);
            let message = &entry.message;
            changes.push(|| Change::Put {
                queue: name.to_owned(),
                seq,
                message: message.clone(),
            });
            taken.deliveries.push(Delivery {
                id: message.id.clone(),
                body: message.body.clone(),
                dequeue_count: message.dequeue_count,
                inserted_at_ms: message.inserted_at_ms,
                receipt: receipt(seq, token),
                poison_reason: message.poison_reason.clone(),
                trace_parent: message.trace_parent.clone(),
            });
        }
        if taken.deliveries.is_empty() {
            taken.next_visible = queue.by_visibility.first().map(|(at, _)| *at);
        }
        if held_back > 0 {
            tracing::warn!(
                queue = name,
                messages = held_back,
                retry_in_secs = POISON_RETRY.as_secs(),
                "poison queue is full: messages delivered too often stay hidden in their queue until it has room"
            );
        }
        if !poisoned.is_empty() {
            let poison = self.queue(&poison_name);
            for mut message in poisoned {
                tracing::warn!(queue = name, message = %message.id, deliveries = message.dequeue_count, "message moved to poison queue");
                message.poison_reason = Some(poison_reason(message.dequeue_count, max_deliveries));
                message.visible_at_ms = now;
                message.dequeue_count = 0;
                let seq = poison.next_seq;
                changes.push(|| Change::Put {
                    queue: poison_name.clone(),
                    seq,
                    message: message.clone(),
                });
                poison.insert_ready(seq, message);
            }
            poison.arrivals.notify_waiters();
        }
        taken
    }

    /// The room `name` has left under the queues' limits.
    fn room(&self, name: &str) -> Room {
        let QueueSettings {
            max_messages,
            max_bytes,
            ..
        } = self.settings;
        let (held, bytes) = self
            .queues
            .get(name)
            .map_or((0, 0), |q| (q.entries.len(), q.bytes));
        Room {
            messages: max_messages.saturating_sub(held),
            bytes: max_bytes.saturating_sub(bytes),
        }
    }

    /// Gives back deliveries [`QueueRules::take`] made that never reached their
    /// receiver: each is visible again where it was in the queue, its
    /// receipt refused. With `restore_counts` (the delivery's write failed,
    /// so the store never saw it) dequeue counts go back too and memory
    /// matches the store again; without (the write landed but the receiver
    /// was gone) they stay, as for a lapsed lease. Either way the store's
    /// row is at worst hidden longer, which only delays a redelivery after
    /// a crash.
    pub(super) fn untake(&mut self, name: &str, undo: &[Undo], restore_counts: bool) {
        let Some(queue) = self.queues.get_mut(name) else {
            return;
        };
        for undo in undo {
            // Only a delivery still current: its lease cannot have changed,
            // since its receipt was never handed out; but be sure.
            if queue
                .entries
                .get(&undo.seq)
                .is_none_or(|entry| entry.lease != Some(undo.token))
            {
                continue;
            }
            queue.set_visible_at(undo.seq, undo.visible_at_ms);
            if let Some(entry) = queue.entries.get_mut(&undo.seq) {
                entry.lease = None;
                if restore_counts {
                    entry.message.dequeue_count = undo.dequeue_count;
                }
            }
        }
        queue.arrivals.notify_waiters();
    }

    pub(super) fn settle(
        &mut self,
        name: &str,
        receipt: &str,
        how: Settle,
        now: u64,
        changes: &mut Changes,
    ) -> Result<(), BrokerError> {
        let (seq, token) = parse_receipt(receipt).ok_or_else(stale)?;
        let queue = self.queues.get_mut(name).ok_or_else(stale)?;
        let entry = queue.entries.get(&seq).ok_or_else(stale)?;
        if entry.lease != Some(token) || entry.message.visible_at_ms <= now {
            return Err(stale());
        }
        let visible_at_ms = match how {
            Settle::Complete => {
                queue.remove(seq);
                changes.push(|| Change::Delete {
                    queue: name.to_owned(),
                    seq,
                });
                return Ok(());
            }
            Settle::Abandon(delay) => now.saturating_add(millis(delay)),
            Settle::Extend(visibility) => now.saturating_add(millis(visibility)),
        };
        queue.set_visible_at(seq, visible_at_ms);
        if let Some(entry) = queue.entries.get_mut(&seq) {
            if let Settle::Abandon(_) = how {
                entry.lease = None;
                queue.arrivals.notify_waiters();
            }
            let message = &entry.message;
            changes.push(|| Change::Put {
                queue: name.to_owned(),
                seq,
                message: message.clone(),
            });
        }
        Ok(())
    }

    /// Every message `name` holds, as (id, dequeue count), for tests that
    /// compare the rules' view with the store.
    #[cfg(all(test, feature = "embedded"))]
    pub(super) fn contents(&self, name: &str) -> Vec<(String, u32)> {
        let mut all: Vec<(String, u32)> = self.queues.get(name).map_or_else(Vec::new, |q| {
            q.entries
                .values()
                .map(|e| (e.message.id.clone(), e.message.dequeue_count))
                .collect()
        });
        all.sort();
        all
    }

    pub(super) fn peek(&self, name: &str, max: u32, now: u64) -> Vec<Peeked> {
        let Some(queue) = self.queues.get(name) else {
            return Vec::new();
        };
        queue
            .by_visibility
            .iter()
            .take_while(|(visible_at, _)| *visible_at <= now)
            .filter_map(|(_, seq)| queue.entries.get(seq))
            .filter(|entry| entry.message.expires_at_ms.is_none_or(|at| at > now))
            .take(usize::try_from(max).unwrap_or(usize::MAX))
            .map(|entry| Peeked {
                id: entry.message.id.clone(),
                body: entry.message.body.clone(),
                dequeue_count: entry.message.dequeue_count,
                inserted_at_ms: entry.message.inserted_at_ms,
                poison_reason: entry.message.poison_reason.clone(),
                trace_parent: entry.message.trace_parent.clone(),
            })
            .collect()
    }
}
