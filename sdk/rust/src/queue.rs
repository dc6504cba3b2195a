//! Weft's queues: at-least-once delivery with leases.
//!
//! [`send`] puts a message on a queue ([`send_with`] also delays it, gives it
//! a time to live, or a dedupe id that makes retrying the send safe).
//! [`receive`] takes up to a batch of visible messages and hides each from
//! other receivers for its *visibility timeout* (its lease). Settle each
//! delivery before the lease lapses: [`complete`] deletes the message
//! ([`complete_batch`] deletes several in one call),
//! [`abandon`] makes it visible again at once ([`abandon_after`], after a
//! delay), and [`extend`] keeps it for longer. A message whose lease lapses
//! unsettled comes back too, with its [`dequeue_count`](Message::dequeue_count)
//! one higher; after the host's maximum number of deliveries it moves to the
//! queue `<queue>-poison`, where [`Message::poison_reason`] says why.
//! [`length`] and [`peek`] look at a queue without receiving from it.
//!
//! Because a message may be delivered more than once, handle it idempotently.
//! Most worker roles should not call these functions directly but use
//! [`Worker`](crate::worker::Worker), which runs the receive/settle loop.
//!
//! A role may only use the queues its manifest lists; any other name fails
//! with [`Error::Denied`].

use std::str::Utf8Error;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::bindings::weft::vmbus::queue as wit;
use crate::error::Error;
use crate::error::Result;

/// The largest message body the host accepts, in bytes (64 KiB).
pub const MAX_BODY_BYTES: usize = 65_536;

/// The largest batch one [`receive`] may return.
pub const MAX_BATCH: u32 = 32;

/// One delivery of a message, as returned by [`receive`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub(crate) id: String,
    pub(crate) body: Vec<u8>,
    pub(crate) dequeue_count: u32,
    pub(crate) inserted_at_ms: u64,
    pub(crate) receipt: String,
    pub(crate) poison_reason: Option<String>,
}

impl Message {
    /// The message's id, stable across deliveries (the one [`send`] returned).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The bytes that were sent.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body as UTF-8 text, or why it is not.
    pub fn body_str(&self) -> Result<&str, Utf8Error> {
        std::str::from_utf8(&self.body)
    }

    /// Takes the body, dropping the rest of the message.
    pub fn into_body(self) -> Vec<u8> {
        self.body
    }

    /// How many times the message has been delivered, this delivery included
    /// (1 on the first).
    pub fn dequeue_count(&self) -> u32 {
        self.dequeue_count
    }

    /// When the message was sent, in milliseconds since the Unix epoch.
    pub fn inserted_at_ms(&self) -> u64 {
        self.inserted_at_ms
    }

    /// When the message was sent (`None` if the time is beyond what
    /// [`SystemTime`] can represent).
    pub fn inserted_at(&self) -> Option<SystemTime> {
        UNIX_EPOCH.checked_add(Duration::from_millis(self.inserted_at_ms))
    }

    /// Proof of this delivery, used by [`complete`] and [`abandon`]; valid
    /// only until this delivery's visibility timeout lapses.
    pub fn receipt(&self) -> &str {
        &self.receipt
    }

    /// Why the host moved this message to this poison queue (`None` on an
    /// ordinary queue).
    pub fn poison_reason(&self) -> Option<&str> {
        self.poison_reason.as_deref()
    }
}

impl From<wit::Message> for Message {
    fn from(m: wit::Message) -> Self {
        Message {
            id: m.id,
            body: m.body,
            dequeue_count: m.dequeue_count,
            inserted_at_ms: m.inserted_at_ms,
            receipt: m.receipt,
            poison_reason: m.poison_reason,
        }
    }
}

/// A message seen by [`peek`], which does not receive it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peeked {
    /// The message's id.
    pub id: String,
    /// The bytes that were sent.
    pub body: Vec<u8>,
    /// Deliveries so far, where the host's backend knows it (else 0).
    pub dequeue_count: u32,
    /// When the message was sent, in milliseconds since the Unix epoch.
    pub inserted_at_ms: u64,
    /// Why the message was moved to this poison queue, if it was.
    pub poison_reason: Option<String>,
}

/// How [`send_with`] stores a message. Durations cross the VMBus in whole
/// milliseconds, saturating at `u32::MAX` (about 49 days).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendOptions {
    /// How long the message stays invisible (at most 7 days). Default: none.
    pub delay: Duration,
    /// How long the message may wait to be received before the host drops
    /// it. Default: `None`, it never expires.
    pub time_to_live: Option<Duration>,
    /// An id of your choosing (1 to 128 bytes), the same on every retry of
    /// one send: a send with the id of one made to the same queue within the
    /// last 10 minutes stores nothing and returns the first message's id.
    pub dedupe_id: Option<String>,
}

impl SendOptions {
    /// Options that dedupe retries of a send by `id`.
    pub fn dedupe(id: impl Into<String>) -> Self {
        SendOptions {
            dedupe_id: Some(id.into()),
            ..SendOptions::default()
        }
    }

    fn to_wire(&self) -> wit::SendOptions {
        wit::SendOptions {
            initial_invisibility_ms: millis_u32(self.delay),
            // Zero means "never expires" on the wire; a time to live that
            // rounds to zero means "at once", so it becomes 1 ms.
            time_to_live_ms: self.time_to_live.map_or(0, |ttl| millis_u32(ttl).max(1)),
            dedupe_id: self.dedupe_id.clone(),
        }
    }
}

/// How [`receive`] takes a batch. Durations are sent to the host in whole
/// milliseconds, saturating at `u32::MAX` (about 49 days); the host applies
/// its own bounds and refuses values outside them with [`Error::Invalid`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiveOptions {
    /// The most messages to take at once, clamped to `1..=`[`MAX_BATCH`].
    /// Default: 8.
    pub max_messages: u32,
    /// How long each received message stays hidden from other receivers
    /// (its lease). Settle it within this time or it is delivered again.
    /// Default: 30 s.
    pub visibility_timeout: Duration,
    /// How long to wait for a message when none is visible (the host caps
    /// it); `receive` may return an empty batch after this. Default: 20 s.
    pub wait: Duration,
}

impl Default for ReceiveOptions {
    fn default() -> Self {
        ReceiveOptions {
            max_messages: 8,
            visibility_timeout: Duration::from_secs(30),
            wait: Duration::from_secs(20),
        }
    }
}

/// The `receive` arguments as they cross the VMBus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WireReceive {
    pub(crate) max_messages: u32,
    pub(crate) visibility_timeout_ms: u32,
    pub(crate) wait_ms: u32,
}

impl ReceiveOptions {
    pub(crate) fn to_wire(&self) -> WireReceive {
        WireReceive {
            max_messages: self.max_messages.clamp(1, MAX_BATCH),
            visibility_timeout_ms: millis_u32(self.visibility_timeout),
            wait_ms: millis_u32(self.wait),
        }
    }
}

/// `d` in whole milliseconds, saturating at `u32::MAX`.
pub(crate) fn millis_u32(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// Sends `body` to `queue`, visible at once, and returns the new message's id.
///
/// Fails with [`Error::TooLarge`] for a body over [`MAX_BODY_BYTES`] and
/// [`Error::Denied`] for a queue the manifest does not list.
pub fn send(queue: &str, body: impl AsRef<[u8]>) -> Result<String> {
    send_delayed(queue, body, Duration::ZERO)
}

/// Sends `body` to `queue`, invisible for `delay` (whole milliseconds,
/// saturating at `u32::MAX`), and returns the new message's id.
pub fn send_delayed(queue: &str, body: impl AsRef<[u8]>, delay: Duration) -> Result<String> {
    send_with(
        queue,
        body,
        &SendOptions {
            delay,
            ..SendOptions::default()
        },
    )
}

/// Sends `body` to `queue` with `options`, and returns the message's id (for
/// a send deduped by its id, the first send's).
pub fn send_with(queue: &str, body: impl AsRef<[u8]>, options: &SendOptions) -> Result<String> {
    Ok(wit::send(queue, body.as_ref(), &options.to_wire())?)
}

/// Receives up to `options.max_messages` visible messages from `queue`,
/// waiting up to `options.wait` when none is visible; the batch may be empty.
pub fn receive(queue: &str, options: &ReceiveOptions) -> Result<Vec<Message>> {
    let wire = options.to_wire();
    let batch = wit::receive(
        queue,
        wire.max_messages,
        wire.visibility_timeout_ms,
        wire.wait_ms,
    )?;
    Ok(batch.into_iter().map(Message::from).collect())
}

/// Deletes `message` from `queue`. Fails with [`Error::NotFound`] if its
/// lease has lapsed (the message will be, or has been, delivered again).
pub fn complete(queue: &str, message: &Message) -> Result<()> {
    Ok(wit::complete(queue, &message.receipt)?)
}

/// Deletes each of `messages` (1 to 32) from `queue` in one host call,
/// which the role's rate limit counts as one: what a worker does with the
/// batch it handled. Answers each message's outcome, in order
/// ([`Error::NotFound`] for one whose lease has lapsed); fails as a whole
/// only when the call cannot be made ([`Error::RateLimited`],
/// [`Error::Denied`], [`Error::Invalid`] for no messages or more than 32).
pub fn complete_batch(queue: &str, messages: &[&Message]) -> Result<Vec<Result<()>>> {
    let receipts: Vec<String> = messages.iter().map(|m| m.receipt.clone()).collect();
    let outcomes = wit::complete_batch(queue, &receipts)?;
    Ok(outcomes
        .into_iter()
        .map(|outcome| outcome.map_err(Error::from))
        .collect())
}

/// Gives `message` back to `queue`, visible again at once.
pub fn abandon(queue: &str, message: &Message) -> Result<()> {
    abandon_after(queue, message, Duration::ZERO)
}

/// Gives `message` back to `queue`, visible again after `delay` (at most 7
/// days): a retry with a pause.
pub fn abandon_after(queue: &str, message: &Message, delay: Duration) -> Result<()> {
    Ok(wit::abandon(queue, &message.receipt, millis_u32(delay))?)
}

/// Keeps `message` hidden for `visibility` from now, for a handler that
/// needs longer than its lease; the message's receipt stays valid.
pub fn extend(queue: &str, message: &Message, visibility: Duration) -> Result<()> {
    Ok(wit::extend(
        queue,
        &message.receipt,
        millis_u32(visibility),
    )?)
}

/// How many messages `queue` holds: visible, delayed or leased.
pub fn length(queue: &str) -> Result<u64> {
    Ok(wit::length(queue)?)
}

/// Up to `max` (clamped to `1..=`[`MAX_BATCH`]) of the next visible messages
/// of `queue`, without receiving them.
pub fn peek(queue: &str, max: u32) -> Result<Vec<Peeked>> {
    Ok(wit::peek(queue, max.clamp(1, MAX_BATCH))?
        .into_iter()
        .map(|p| Peeked {
            id: p.id,
            body: p.body,
            dequeue_count: p.dequeue_count,
            inserted_at_ms: p.inserted_at_ms,
            poison_reason: p.poison_reason,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_options_match_the_docs() {
        let wire = ReceiveOptions::default().to_wire();
        assert_eq!(
            wire,
            WireReceive {
                max_messages: 8,
                visibility_timeout_ms: 30_000,
                wait_ms: 20_000,
            }
        );
    }

    #[test]
    fn batch_size_is_clamped_to_the_hosts_range() {
        let mut options = ReceiveOptions {
            max_messages: 0,
            ..ReceiveOptions::default()
        };
        assert_eq!(options.to_wire().max_messages, 1);
        options.max_messages = 1_000;
        assert_eq!(options.to_wire().max_messages, MAX_BATCH);
        options.max_messages = 5;
        assert_eq!(options.to_wire().max_messages, 5);
    }

    #[test]
    fn durations_become_whole_saturating_milliseconds() {
        assert_eq!(millis_u32(Duration::ZERO), 0);
        assert_eq!(millis_u32(Duration::from_micros(1_999)), 1);
        assert_eq!(millis_u32(Duration::from_secs(30)), 30_000);
        assert_eq!(
            millis_u32(Duration::from_millis(u64::from(u32::MAX))),
            u32::MAX
        );
        assert_eq!(
            millis_u32(Duration::from_millis(u64::from(u32::MAX) + 1)),
            u32::MAX
        );
        assert_eq!(millis_u32(Duration::MAX), u32::MAX);
    }

    #[test]
    fn send_options_cross_as_milliseconds_with_zero_for_never() {
        let wire = SendOptions::default().to_wire();
        assert_eq!(
            (
                wire.initial_invisibility_ms,
                wire.time_to_live_ms,
                wire.dedupe_id
            ),
            (0, 0, None)
        );
        let wire = SendOptions {
            delay: Duration::from_secs(2),
            time_to_live: Some(Duration::from_micros(10)),
            dedupe_id: Some("order-7".into()),
        }
        .to_wire();
        assert_eq!(wire.initial_invisibility_ms, 2000);
        assert_eq!(wire.time_to_live_ms, 1, "a tiny TTL must not mean never");
        assert_eq!(SendOptions::dedupe("x").dedupe_id.as_deref(), Some("x"));
    }

    #[test]
    fn message_accessors() {
        let m = Message {
            id: "m1".into(),
            body: b"hi".to_vec(),
            dequeue_count: 2,
            inserted_at_ms: 1_500,
            receipt: "r".into(),
            poison_reason: Some("why".into()),
        };
        assert_eq!(m.poison_reason(), Some("why"));
        assert_eq!(m.id(), "m1");
        assert_eq!(m.body_str(), Ok("hi"));
        assert_eq!(m.dequeue_count(), 2);
        assert_eq!(m.receipt(), "r");
        assert_eq!(
            m.inserted_at(),
            Some(UNIX_EPOCH + Duration::from_millis(1_500))
        );
        let bad = Message {
            body: vec![0xff],
            ..m.clone()
        };
        assert!(bad.body_str().is_err());
        assert_eq!(m.into_body(), b"hi");
    }
}
