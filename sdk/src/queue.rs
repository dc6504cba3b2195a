//! Weft's queues: at-least-once delivery with leases.
//!
//! [`send`] puts a message on a queue. [`receive`] takes up to a batch of
//! visible messages and hides each from other receivers for its *visibility
//! timeout* (its lease). Settle each delivery before the lease lapses:
//! [`complete`] deletes the message, [`abandon`] makes it visible again at
//! once. A message whose lease lapses unsettled comes back too, with its
//! [`dequeue_count`](Message::dequeue_count) one higher; after the host's
//! maximum number of deliveries it moves to the queue `<queue>-poison`.
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
#[cfg(doc)]
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
}

impl From<wit::Message> for Message {
    fn from(m: wit::Message) -> Self {
        Message {
            id: m.id,
            body: m.body,
            dequeue_count: m.dequeue_count,
            inserted_at_ms: m.inserted_at_ms,
            receipt: m.receipt,
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
    Ok(wit::send(queue, body.as_ref(), millis_u32(delay))?)
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

/// Gives `message` back to `queue`, visible again at once.
pub fn abandon(queue: &str, message: &Message) -> Result<()> {
    Ok(wit::abandon(queue, &message.receipt)?)
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
    fn message_accessors() {
        let m = Message {
            id: "m1".into(),
            body: b"hi".to_vec(),
            dequeue_count: 2,
            inserted_at_ms: 1_500,
            receipt: "r".into(),
        };
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
