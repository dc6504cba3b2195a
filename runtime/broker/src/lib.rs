//! The storage behind the VMBus: queues and key-value buckets.
//!
//! Guests never see these traits; the VMBus host functions in
//! the VMBus (`weft-sandbox`'s `vmbus`) check a guest's grants and limits, then call a backend
//! through [`QueueBroker`] and [`KvStore`]. Three backends implement them,
//! and one conformance suite (`conformance.rs`, run against each) holds them
//! to the same semantics:
//!
//! - [`MemoryBroker`]: in this process's memory; nothing survives a restart
//!   (`weft serve`, tests);
//! - [`EmbeddedBroker`]: the default of `weft up`, durable in one
//!   [redb](https://www.redb.org) file under the service's state folder; a
//!   send or a key-value write that returned `Ok` is on disk (fsynced), and
//!   concurrent operations share one commit (group commit);
//! - [`NatsBroker`]: NATS JetStream, for several hosts sharing queues.
//!
//! The semantics, after the classic fabric's queue service:
//!
//! - at-least-once delivery: a received message is leased for its visibility
//!   timeout; completing it by its receipt deletes it; abandoning it, or
//!   letting the lease lapse, makes it visible again (abandon may ask for a
//!   delay first); [`QueueBroker::extend`] lengthens a lease;
//! - every delivery carries a fresh receipt, and only the receipt of the
//!   current delivery completes, abandons or extends the message;
//! - the dequeue count grows by one per delivery; a message that would be
//!   delivered more than [`QueueSettings::max_deliveries`] times moves instead to
//!   the queue `<queue>-poison`, with the reason; a poison queue has the same
//!   limits as any queue, and while it is full such a message stays in its
//!   own queue, hidden, and tries again every [`POISON_RETRY`];
//! - a send may be invisible at first ([`SendOptions::delay`]), may expire
//!   unreceived ([`SendOptions::ttl`]), and may carry a client-chosen
//!   [`SendOptions::dedupe_id`]: a retried send with the same id within
//!   [`DEDUPE_WINDOW`] stores nothing new and returns the first send's id;
//! - best-effort FIFO; [`QueueBroker::len`] and [`QueueBroker::peek`] let
//!   operators look without receiving.

mod book;
mod config;
#[cfg(test)]
mod conformance;
mod embedded;
mod memory;
mod nats;
mod persist;
mod queues;
mod store;

pub use config::{BackendKind, QueuesConfig, QueuesConfigError, redact_url};
pub use embedded::{EmbeddedBroker, StoreError, StoreHealth};
pub use memory::MemoryBroker;
pub use nats::{NatsBroker, NatsError};

use async_trait::async_trait;
use std::time::Duration;

/// The largest message body a queue accepts, in bytes (64 KiB).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// The most messages a single receive (or peek) returns.
pub const MAX_BATCH: u32 = 32;
/// The suffix of the queue that takes messages delivered too often.
pub const POISON_SUFFIX: &str = "-poison";
/// How long a message delivered too often stays hidden in its own queue
/// when its poison queue is full, before it tries to move again: long
/// enough that a full poison queue costs little (a log line and a write per
/// message per try), short enough that one drained by an operator fills
/// again soon.
pub const POISON_RETRY: Duration = Duration::from_secs(30);
/// The longest dedupe id a send may carry, in bytes.
pub const MAX_DEDUPE_ID_BYTES: usize = 128;
/// How long a dedupe id is remembered: a retried send within this time is
/// recognised. Ten minutes covers a client's retries across a host restart
/// (Azure Service Bus's default duplicate-detection window is the same).
pub const DEDUPE_WINDOW: Duration = Duration::from_secs(10 * 60);

/// Why a backend call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// A body or batch over its limit.
    #[error("too large: {0}")]
    TooLarge(String),
    /// No such receipt (unknown, completed, or from an earlier delivery).
    #[error("not found: {0}")]
    NotFound(String),
    /// A malformed argument.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The backend cannot serve the call now; it may later.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// Settings a backend applies to every queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSettings {
    /// Deliveries after which a message moves to `<queue>-poison` (default 5,
    /// as the classic fabric's queues: enough for transient faults, few enough
    /// that a poison message stops burning worker time quickly).
    pub max_deliveries: u32,
    /// Messages one queue may hold (default 100,000); a send to a full queue
    /// gets `unavailable`, so a flooding guest cannot exhaust the host.
    pub max_messages: usize,
    /// Body bytes one queue may hold (default 256 MiB).
    pub max_bytes: usize,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            max_deliveries: 5,
            max_messages: 100_000,
            max_bytes: 256 * 1024 * 1024,
        }
    }
}

/// How a message is sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendOptions {
    /// How long the message stays invisible after the send (zero: visible at once).
    pub delay: Duration,
    /// How long the message may wait to be received; a message older than
    /// this is dropped instead of delivered. `None`: it never expires.
    pub ttl: Option<Duration>,
    /// A client-chosen id (at most [`MAX_DEDUPE_ID_BYTES`]): a send with the
    /// id of a send made within [`DEDUPE_WINDOW`] stores nothing and returns
    /// the earlier message's id.
    pub dedupe_id: Option<String>,
}

impl SendOptions {
    /// Visible at once, never expiring, no dedupe id.
    pub fn now() -> Self {
        Self::default()
    }

    /// Invisible for `delay`.
    pub fn delayed(delay: Duration) -> Self {
        Self {
            delay,
            ..Self::default()
        }
    }
}

/// One delivery of a message, as a backend hands it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The message's id, stable across deliveries.
    pub id: String,
    /// The message's bytes.
    pub body: Vec<u8>,
    /// Deliveries so far, this one included.
    pub dequeue_count: u32,
    /// When the message was sent, in milliseconds since the Unix epoch.
    pub inserted_at_ms: u64,
    /// Names this delivery; settles or extends it while its lease lasts.
    pub receipt: String,
    /// Why the message was moved to this (poison) queue, if it was.
    pub poison_reason: Option<String>,
}

/// A message seen by [`QueueBroker::peek`], which leases nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peeked {
    /// The message's id.
    pub id: String,
    /// The message's bytes.
    pub body: Vec<u8>,
    /// Deliveries so far (the NATS backend does not know it for a message
    /// still waiting in its queue, and reports 0).
    pub dequeue_count: u32,
    /// When the message was sent, in milliseconds since the Unix epoch.
    pub inserted_at_ms: u64,
    /// Why the message was moved to this (poison) queue, if it was.
    pub poison_reason: Option<String>,
}

/// A request to receive messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiveRequest {
    /// At most this many messages (1 to [`MAX_BATCH`]).
    pub max_messages: u32,
    /// How long each received message stays hidden from other receivers.
    pub visibility_timeout: Duration,
    /// How long to wait for a message when none is visible.
    pub wait: Duration,
}

/// Queues with leases. Queue names are scoped by the caller (the VMBus
/// prefixes them with the service name), so backends see plain strings.
#[async_trait]
pub trait QueueBroker: Send + Sync + 'static {
    /// Stores a message and returns its id. Once this returns `Ok` the
    /// message is as durable as the backend makes anything.
    async fn send(
        &self,
        queue: &str,
        body: Vec<u8>,
        options: SendOptions,
    ) -> Result<String, BrokerError>;
    /// Leases up to `request.max_messages` visible messages, waiting up to
    /// `request.wait` for the first one.
    async fn receive(
        &self,
        queue: &str,
        request: ReceiveRequest,
    ) -> Result<Vec<Delivery>, BrokerError>;
    /// Deletes the message the receipt delivered.
    async fn complete(&self, queue: &str, receipt: &str) -> Result<(), BrokerError>;
    /// Gives the message the receipt delivered back to its queue, visible
    /// again after `delay` (zero: at once).
    async fn abandon(&self, queue: &str, receipt: &str, delay: Duration)
    -> Result<(), BrokerError>;
    /// Keeps the message the receipt delivered hidden for `visibility` from
    /// now; the receipt stays valid.
    async fn extend(
        &self,
        queue: &str,
        receipt: &str,
        visibility: Duration,
    ) -> Result<(), BrokerError>;
    /// How many messages the queue holds, visible, delayed or leased.
    async fn len(&self, queue: &str) -> Result<usize, BrokerError>;
    /// Up to `max` (1 to [`MAX_BATCH`]) of the next visible messages, in the
    /// order they would be received, without leasing them.
    async fn peek(&self, queue: &str, max: u32) -> Result<Vec<Peeked>, BrokerError>;
}

/// Checks what every backend checks before a send: the body size and the
/// dedupe id's length.
pub(crate) fn check_send(body: &[u8], options: &SendOptions) -> Result<(), BrokerError> {
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(BrokerError::TooLarge(format!(
            "message body is {} bytes; the limit is {MAX_MESSAGE_BYTES}",
            body.len()
        )));
    }
    if let Some(dedupe) = &options.dedupe_id
        && (dedupe.is_empty() || dedupe.len() > MAX_DEDUPE_ID_BYTES)
    {
        return Err(BrokerError::Invalid(format!(
            "a dedupe id must be 1 to {MAX_DEDUPE_ID_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Checks a batch size for receive and peek.
pub fn check_batch(max: u32) -> Result<(), BrokerError> {
    if max == 0 || max > MAX_BATCH {
        return Err(BrokerError::Invalid(format!(
            "max-messages must be 1 to {MAX_BATCH}, not {max}"
        )));
    }
    Ok(())
}

/// The id of a message sent with a dedupe id: derived from it, so that every
/// backend (and every host) answers a retried send with the same id without
/// looking the first one up.
pub(crate) fn dedupe_message_id(queue: &str, dedupe_id: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(queue.as_bytes())
        .chain_update([0])
        .chain_update(dedupe_id.as_bytes())
        .finalize();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh random message id (128 bits, hex).
pub(crate) fn random_message_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The reason recorded on a message moved to its poison queue.
pub(crate) fn poison_reason(deliveries: u32, max: u32) -> String {
    let times = if deliveries == 1 { "time" } else { "times" };
    format!("delivered {deliveries} {times} without being completed (max-deliveries is {max})")
}

/// Milliseconds since the Unix epoch, by the wall clock.
pub(crate) fn unix_millis() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A duration in whole milliseconds, saturating.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One page of keys from [`KvStore::list_keys`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyPage {
    /// Keys in ascending order.
    pub keys: Vec<String>,
    /// Where the next page starts; `None` on the last page.
    pub cursor: Option<u64>,
}

/// Key-value buckets. Bucket names are scoped by the caller.
#[async_trait]
pub trait KvStore: Send + Sync + 'static {
    /// The value under `key`, if any.
    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, BrokerError>;
    /// Stores `value` under `key`, replacing any value there.
    async fn set(&self, bucket: &str, key: &str, value: Vec<u8>) -> Result<(), BrokerError>;
    /// Removes `key`; removing a missing key is not an error.
    async fn delete(&self, bucket: &str, key: &str) -> Result<(), BrokerError>;
    /// Whether `key` holds a value.
    async fn exists(&self, bucket: &str, key: &str) -> Result<bool, BrokerError>;
    /// One page of keys in ascending order, starting at `cursor`.
    async fn list_keys(&self, bucket: &str, cursor: Option<u64>) -> Result<KeyPage, BrokerError>;
}
