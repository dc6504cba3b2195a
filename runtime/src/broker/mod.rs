//! The storage behind the VMBus: queues and key-value buckets.
//!
//! Guests never see these traits; the VMBus host functions in
//! [`crate::vmbus`] check a guest's grants and limits, then call a backend
//! through [`QueueBroker`] and [`KvStore`]. This crate ships the in-process
//! backend ([`MemoryBroker`]); durable and distributed backends implement the
//! same traits and must keep the same semantics:
//!
//! - at-least-once delivery: a received message is leased for its visibility
//!   timeout; completing it by its receipt deletes it; abandoning it, or letting
//!   the lease lapse, makes it visible again;
//! - every delivery carries a fresh receipt, and only the receipt of the
//!   current delivery completes or abandons the message;
//! - the dequeue count grows by one per delivery; a message that would be
//!   delivered more than [`QueueSettings::max_deliveries`] times moves instead to
//!   the queue `<queue>-poison`;
//! - best-effort FIFO.

mod memory;

pub use memory::MemoryBroker;

use async_trait::async_trait;
use std::time::Duration;

/// The largest message body a queue accepts, in bytes (64 KiB).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// The most messages a single receive returns.
pub const MAX_BATCH: u32 = 32;
/// The suffix of the queue that takes messages delivered too often.
pub const POISON_SUFFIX: &str = "-poison";

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
    /// Names this delivery; completes or abandons it while its lease lasts.
    pub receipt: String,
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
    /// Stores a message, invisible for `delay`, and returns its id.
    async fn send(
        &self,
        queue: &str,
        body: Vec<u8>,
        delay: Duration,
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
    /// Makes the message the receipt delivered visible again at once.
    async fn abandon(&self, queue: &str, receipt: &str) -> Result<(), BrokerError>;
    /// How many messages the queue holds, visible or leased.
    async fn len(&self, queue: &str) -> Result<usize, BrokerError>;
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
