//! A message as the queue rules and the embedded store keep it, and what
//! every backend derives for one: its id and the reason recorded when it
//! moves to its poison queue (the NATS backend derives them the same way,
//! so hosts sharing a server agree).

/// A message as the rules (and the embedded store) keep it.
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
    /// The sender's W3C `traceparent`, kept through every delivery, poison
    /// move and redrive.
    pub(crate) trace_parent: Option<String>,
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
