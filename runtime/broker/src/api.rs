//! The two traits every backend implements, [`QueueBroker`] and
//! [`KvStore`], and the values that cross them. The semantics they promise
//! are in the crate's docs; the limits on their arguments in `limits.rs`.

use crate::error::BrokerError;
use async_trait::async_trait;
use std::time::Duration;

/// How a message is sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendOptions {
    /// How long the message stays invisible after the send (zero: visible at once).
    pub delay: Duration,
    /// How long the message may wait to be received; a message older than
    /// this is dropped instead of delivered. `None`: it never expires.
    pub ttl: Option<Duration>,
    /// A client-chosen id (at most [`MAX_DEDUPE_ID_BYTES`](crate::MAX_DEDUPE_ID_BYTES)): a send with the
    /// id of a send made within [`DEDUPE_WINDOW`](crate::DEDUPE_WINDOW) stores nothing and returns
    /// the earlier message's id.
    pub dedupe_id: Option<String>,
    /// The W3C `traceparent` of the span that sent the message (at most
    /// [`MAX_TRACE_PARENT_BYTES`](crate::MAX_TRACE_PARENT_BYTES)); handed back with every delivery and
    /// peek, so the worker's handling joins the sender's trace.
    pub trace_parent: Option<String>,
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
    /// The sender's `traceparent`, if it sent one.
    pub trace_parent: Option<String>,
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
    /// The sender's `traceparent`, if it sent one.
    pub trace_parent: Option<String>,
}

/// A request to receive messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiveRequest {
    /// At most this many messages (1 to [`MAX_BATCH`](crate::MAX_BATCH)).
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
    /// Up to `max` (1 to [`MAX_BATCH`](crate::MAX_BATCH)) of the next visible messages, in the
    /// order they would be received, without leasing them.
    async fn peek(&self, queue: &str, max: u32) -> Result<Vec<Peeked>, BrokerError>;
    /// Deletes every message the queue holds (visible, delayed or leased;
    /// the leases' receipts stop working) and returns how many. An
    /// operator's tool: guests cannot call it.
    async fn purge(&self, queue: &str) -> Result<u64, BrokerError>;
    /// Moves messages from `queue`'s poison queue back to `queue`, visible
    /// at once, their dequeue count back to 0 and their poison reason gone:
    /// those with the given ids (ids not found there are skipped), or all
    /// of them when `ids` is `None`. A poison message leased at the time is
    /// not moved. Returns the ids moved. An operator's tool.
    async fn redrive(
        &self,
        queue: &str,
        ids: Option<&[String]>,
    ) -> Result<Vec<String>, BrokerError>;
}

/// How a bucket keeps its entries, set by the host when it opens a
/// service's backends (the manifest's `[buckets.NAME]` table).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BucketSettings {
    /// How long an entry lives after its last write; an expired entry reads
    /// as missing and its bytes are freed. `None`: entries live until deleted.
    pub ttl: Option<Duration>,
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
    /// Applies `settings` to `bucket` from now on (creating it if the
    /// backend needs to). The in-process and embedded backends give each
    /// entry its deadline when it is written, so entries written before
    /// keep theirs until rewritten. NATS applies the new time to live to
    /// every entry at once (it is the stream's `max_age`, counted from each
    /// entry's last write): shortening it there expires the older entries
    /// now past it at once.
    async fn configure_bucket(
        &self,
        bucket: &str,
        settings: BucketSettings,
    ) -> Result<(), BrokerError>;
    /// Deletes every entry of `bucket` and returns how many. An operator's
    /// tool: guests cannot call it.
    async fn purge_bucket(&self, bucket: &str) -> Result<u64, BrokerError>;
}
