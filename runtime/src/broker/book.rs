//! The queue book: every queue's messages, leases and dedupe ids in memory,
//! and the rules of the semantics in one place ([`super::queues`] puts it
//! behind a lock and adds the waiting).
//!
//! The in-process backend is a book and nothing else. The embedded backend
//! is a book whose every change is also written to its store: each
//! operation on the book reports its [`Change`]s, which [`Persist`] writes,
//! either before the operation answers (sends, receives: what must not be
//! lost or repeated) or with the next commit (completes, abandons, extends:
//! losing one in a crash only means a redelivery, which at-least-once
//! allows). A message sent to a durable book becomes receivable only once it
//! is on disk, so nothing is ever delivered that a crash could take back.
//!
//! Time is kept in milliseconds since the Unix epoch (it must mean the same
//! after a restart), read from a [`Clock`] that follows `tokio::time`, so
//! tests drive leases with a paused clock.

use super::{
    BrokerError, DEDUPE_WINDOW, Delivery, POISON_SUFFIX, Peeked, QueueSettings, SendOptions,
    dedupe_message_id, millis, poison_reason, random_message_id, unix_millis,
};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Wall-clock milliseconds that advance with `tokio::time` (so a paused
/// test clock pauses them too) and never go backwards within a process.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    base_ms: u64,
    start: tokio::time::Instant,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Self {
            base_ms: unix_millis(),
            start: tokio::time::Instant::now(),
        }
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.base_ms.saturating_add(millis(self.start.elapsed()))
    }
}

/// A message as the book (and the embedded store) keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    pub(crate) id: String,
    pub(crate) body: Vec<u8>,
    pub(crate) inserted_at_ms: u64,
    /// When it is dropped unreceived; `None`: never.
    pub(crate) expires_at_ms: Option<u64>,
    pub(crate) visible_at_ms: u64,
    pub(crate) dequeue_count: u32,
    pub(crate) poison_reason: Option<String>,
}

/// One change to the book, for a durable backend to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// A message, new or changed (a delivery, an abandon or an extend
    /// changes its visibility and dequeue count). Written whole: one row
    /// per message keeps a message's life at three row writes (send,
    /// receive, complete), the store writer's main cost.
    Put {
        queue: String,
        seq: u64,
        message: Message,
    },
    /// A message is gone (completed, expired, moved to its poison queue).
    Delete { queue: String, seq: u64 },
    /// A dedupe id was used, by the message with this id.
    Dedupe {
        queue: String,
        key: String,
        id: String,
        expires_at_ms: u64,
    },
    /// A dedupe id was forgotten.
    DedupeGone { queue: String, key: String },
}

/// Where a book's changes go.
pub(crate) trait Persist: Send + Sync + 'static {
    /// Whether changes are wanted at all (the in-process backend keeps none).
    const DURABLE: bool;
    /// Writes `changes`, returning once they are on disk.
    fn durable(&self, changes: Vec<Change>)
    -> impl Future<Output = Result<(), BrokerError>> + Send;
    /// Writes `changes` with the next commit, without waiting for it.
    fn lazy(&self, changes: Vec<Change>);
}

/// No persistence: the in-process backend.
pub(crate) struct Volatile;

impl Persist for Volatile {
    const DURABLE: bool = false;
    async fn durable(&self, _: Vec<Change>) -> Result<(), BrokerError> {
        Ok(())
    }
    fn lazy(&self, _: Vec<Change>) {}
}

/// Changes collected by one operation (none for a volatile book).
pub(super) struct Changes(Option<Vec<Change>>);

impl Changes {
    pub(super) fn new(durable: bool) -> Self {
        Self(durable.then(Vec::new))
    }
    fn push(&mut self, change: impl FnOnce() -> Change) {
        if let Some(changes) = &mut self.0 {
            changes.push(change());
        }
    }
    pub(super) fn take(self) -> Vec<Change> {
        self.0.unwrap_or_default()
    }
}

#[derive(Debug)]
struct Entry {
    message: Message,
    /// The token of the current delivery's receipt.
    lease: Option<u64>,
    /// Whether the message is on disk and may be delivered.
    ready: bool,
}

#[derive(Debug)]
struct Dedupe {
    id: String,
    expires_at_ms: u64,
}

#[derive(Debug, Default)]
struct Queue {
    entries: HashMap<u64, Entry>,
    /// Ready messages by (visible at, seq): the next to deliver first.
    by_visibility: BTreeSet<(u64, u64)>,
    next_seq: u64,
    /// Ready messages (entries also holds sends waiting for their commit).
    ready: usize,
    /// Body bytes held, pending sends included.
    bytes: usize,
    dedupe: HashMap<String, Dedupe>,
    /// Dedupe ids in the order they were used (and so expire).
    dedupe_order: VecDeque<(u64, String)>,
    /// Woken when a message may have become visible early (a send, an
    /// abandon, a move to this poison queue), so long-polls look again.
    arrivals: Arc<Notify>,
}

impl Queue {
    fn make_ready(&mut self, seq: u64) {
        if let Some(entry) = self.entries.get_mut(&seq)
            && !entry.ready
        {
            entry.ready = true;
            self.ready += 1;
            self.by_visibility
                .insert((entry.message.visible_at_ms, seq));
        }
    }

    fn insert_ready(&mut self, seq: u64, message: Message) {
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

    fn remove(&mut self, seq: u64) -> Option<Message> {
        let entry = self.entries.remove(&seq)?;
        self.bytes -= entry.message.body.len();
        if entry.ready {
            self.ready -= 1;
            self.by_visibility
                .remove(&(entry.message.visible_at_ms, seq));
        }
        Some(entry.message)
    }

    fn set_visible_at(&mut self, seq: u64, visible_at_ms: u64) {
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
    fn prune_dedupe(&mut self, queue: &str, now: u64, cap: usize, changes: &mut Changes) {
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

/// Every queue. [`super::queues::Queues`] keeps it under a lock.
#[derive(Debug)]
pub(crate) struct Book {
    settings: QueueSettings,
    queues: HashMap<String, Queue>,
}

/// What a send found.
pub(super) enum Prepared {
    /// A send with this dedupe id was made recently: the earlier message's id.
    Duplicate(String),
    /// A new message, held back until it is written.
    New { seq: u64, id: String },
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

impl Book {
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
    pub(super) fn restore(&mut self, name: &str, seq: u64, message: Message) {
        self.queue(name).insert_ready(seq, message);
    }

    /// Puts back a dedupe id read from the store at start.
    pub(super) fn restore_dedupe(
        &mut self,
        name: &str,
        key: String,
        id: String,
        expires_at_ms: u64,
    ) {
        let queue = self.queue(name);
        queue.dedupe_order.push_back((expires_at_ms, key.clone()));
        queue.dedupe.insert(key, Dedupe { id, expires_at_ms });
    }

    /// Orders restored dedupe ids by expiry, once all are restored.
    pub(super) fn restored(&mut self) {
        for queue in self.queues.values_mut() {
            queue.dedupe_order.make_contiguous().sort();
        }
    }

    pub(super) fn prepare_send(
        &mut self,
        name: &str,
        body: Vec<u8>,
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
            return Ok(Prepared::Duplicate(earlier.id.clone()));
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
            body,
            inserted_at_ms: now,
            expires_at_ms: options.ttl.map(|ttl| now.saturating_add(millis(ttl))),
            visible_at_ms: now.saturating_add(millis(options.delay)),
            dequeue_count: 0,
            poison_reason: None,
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
        if written {
            queue.make_ready(seq);
            queue.arrivals.notify_waiters();
        } else {
            queue.remove(seq);
            if let Some(key) = dedupe {
                queue.dedupe.remove(key);
            }
        }
    }

    /// Leases up to `max` visible messages, dropping expired ones and moving
    /// those delivered too often to the poison queue. Returns the deliveries
    /// and, when there were none, when the next message becomes visible.
    pub(super) fn take(
        &mut self,
        name: &str,
        max: u32,
        visibility: Duration,
        now: u64,
        changes: &mut Changes,
    ) -> (Vec<Delivery>, Option<u64>) {
        let max_deliveries = self.settings.max_deliveries;
        let mut deliveries = Vec::new();
        let mut poisoned = Vec::new();
        let is_poison_queue = name.ends_with(POISON_SUFFIX);
        let queue = self.queue(name);
        let max = usize::try_from(max).unwrap_or(usize::MAX);
        while deliveries.len() < max {
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
            if expired || (exhausted && !is_poison_queue) {
                if let Some(message) = queue.remove(seq) {
                    changes.push(|| Change::Delete {
                        queue: name.to_owned(),
                        seq,
                    });
                    if expired {
                        tracing::debug!(queue = name, message = %message.id, "message expired unreceived");
                    } else {
                        poisoned.push(message);
                    }
                }
                continue;
            }
            let token: u64 = rand::random();
            let visible_at_ms = now.saturating_add(millis(visibility));
            queue.set_visible_at(seq, visible_at_ms);
            let Some(entry) = queue.entries.get_mut(&seq) else {
                break;
            };
            entry.lease = Some(token);
            entry.message.dequeue_count = entry.message.dequeue_count.saturating_add(1);
            let message = &entry.message;
            changes.push(|| Change::Put {
                queue: name.to_owned(),
                seq,
                message: message.clone(),
            });
            deliveries.push(Delivery {
                id: message.id.clone(),
                body: message.body.clone(),
                dequeue_count: message.dequeue_count,
                inserted_at_ms: message.inserted_at_ms,
                receipt: receipt(seq, token),
                poison_reason: message.poison_reason.clone(),
            });
        }
        let next = if deliveries.is_empty() {
            queue.by_visibility.first().map(|(at, _)| *at)
        } else {
            None
        };
        if !poisoned.is_empty() {
            let poison_name = format!("{name}{POISON_SUFFIX}");
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
        (deliveries, next)
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
            })
            .collect()
    }
}
