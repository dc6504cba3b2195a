//! The data routes' request and answer bodies, as JSON: the server
//! ([`super`]) writes and reads them, and so do the `weft queue` and `weft
//! bucket` commands.

use crate::queue_history::Sample;
use serde::{Deserialize, Serialize};

/// One queue, with its lengths now and over the last minutes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueueView {
    /// As the manifest names it.
    pub name: String,
    /// Messages it holds, if the backend answered.
    pub length: Option<u64>,
    /// Messages its poison queue holds (`None` for a poison queue).
    pub poison_length: Option<u64>,
    /// Samples every 5 s, oldest first, the last 10 minutes.
    pub history: Vec<Sample>,
}

/// What `POST .../messages` sends: the body as text or as base64 (one of
/// the two), invisible for `delay_ms` first.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// The body, as UTF-8 text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The body, any bytes, in standard base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
    /// How long it stays invisible (at most 7 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
}

/// A message sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sent {
    /// Its id.
    pub id: String,
}

/// A message seen by a peek.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeekedMessage {
    /// Its id.
    pub id: String,
    /// Its bytes, if they are UTF-8 text.
    pub body: Option<String>,
    /// Its bytes, in standard base64.
    pub body_base64: String,
    /// Deliveries so far.
    pub dequeue_count: u32,
    /// When it was sent, in milliseconds since the Unix epoch.
    pub inserted_at_ms: u64,
    /// Why it was moved to this poison queue, if it was.
    pub poison_reason: Option<String>,
    /// The sender's W3C `traceparent`, if it sent one.
    pub trace_parent: Option<String>,
}

/// What `POST .../redrive` moves: the poison messages with these ids, or
/// every one.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedriveRequest {
    /// The ids to move; absent: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ids: Option<Vec<String>>,
}

/// One page of a bucket's keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeysPage {
    /// Keys in ascending order.
    pub keys: Vec<String>,
    /// Where the next page starts; `None` on the last.
    pub cursor: Option<u64>,
}

/// What `POST .../keys/delete` deletes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteKeysRequest {
    /// The keys (at most [`MAX_DELETE_KEYS`](super::MAX_DELETE_KEYS));
    /// missing ones are skipped (and not counted).
    pub keys: Vec<String>,
}
