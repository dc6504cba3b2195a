//! Every limit the broker holds a caller to, and the checks every backend
//! makes before it stores anything: one place to read what a guest may
//! send, how much a queue or a bucket holds, and how long ids and poison
//! retries last. The VMBus checks a guest's arguments against the same
//! constants before it calls a backend.

use crate::api::SendOptions;
use crate::error::BrokerError;
use std::time::Duration;

/// The largest message body a queue accepts, in bytes (64 KiB).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// The most messages a single receive (or peek) returns.
pub const MAX_BATCH: u32 = 32;
/// The longest dedupe id a send may carry, in bytes.
pub const MAX_DEDUPE_ID_BYTES: usize = 128;
/// How long a dedupe id is remembered: a retried send within this time is
/// recognised. Ten minutes covers a client's retries across a host restart
/// (Azure Service Bus's default duplicate-detection window is the same).
pub const DEDUPE_WINDOW: Duration = Duration::from_secs(10 * 60);
/// How long a message delivered too often stays hidden in its own queue
/// when its poison queue is full, before it tries to move again: long
/// enough that a full poison queue costs little (a log line and a write per
/// message per try), short enough that one drained by an operator fills
/// again soon.
pub const POISON_RETRY: Duration = Duration::from_secs(30);
/// The most bytes (keys and values) one bucket holds (64 MiB): what a guest
/// stores is host memory or disk, so it is bounded like any host allocation
/// made on a guest's behalf.
pub const MAX_BUCKET_BYTES: usize = 64 * 1024 * 1024;
/// The longest `traceparent` a message may carry, in bytes (a W3C
/// version-00 `traceparent` is 55; later versions may append fields).
pub const MAX_TRACE_PARENT_BYTES: usize = 256;
/// The longest key a guest may use in a bucket, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// The largest value a guest may store in a bucket, in bytes (1 MiB):
/// values are copied through host memory, so their size is bounded like any
/// host allocation made on a guest's behalf.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// How many keys one [`KvStore::list_keys`](crate::KvStore::list_keys) page
/// holds, in every backend.
pub(crate) const KEY_PAGE: usize = 1000;

/// Settings a backend applies to every queue: the per-queue limits.
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

/// Checks what every backend checks before a send: the body size, the
/// dedupe id's length and the `traceparent`'s length and characters.
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
    if let Some(trace) = &options.trace_parent
        && (trace.is_empty()
            || trace.len() > MAX_TRACE_PARENT_BYTES
            || !trace.bytes().all(|b| b.is_ascii_graphic()))
    {
        // Printable ASCII with no spaces: what a W3C `traceparent` holds,
        // and what every backend can carry (NATS as a header value).
        return Err(BrokerError::Invalid(format!(
            "a traceparent must be 1 to {MAX_TRACE_PARENT_BYTES} bytes of printable ASCII"
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
