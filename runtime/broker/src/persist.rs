//! What the [`rules`](crate::rules) hand to a durable backend: each
//! operation's [`Change`]s, and the [`Persist`] trait that writes them.
//!
//! The one rule that makes a durable backend correct: changes reach the
//! store in the order the rules made them. So they are submitted while the
//! rules' lock is still held (submitting never blocks: it queues the changes
//! for the store's writer thread, which commits in FIFO order), and only the
//! wait for the commit happens outside the lock. An abandon's row can then
//! never land after a later delivery's or completion's, which would
//! resurrect a completed message after a restart.

use crate::error::BrokerError;
use crate::message::Message;

/// One change to the queues, for a durable backend to write.
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

/// Called once submitted changes are on disk (`Ok`) or failed to get there.
/// It runs on the store's writer thread, after every earlier submission's,
/// so it may take the rules' lock but must not wait for anything else.
pub(crate) type Done = Box<dyn FnOnce(Result<(), BrokerError>) + Send>;

/// Where the rules' changes go.
pub(crate) trait Persist: Send + Sync + 'static {
    /// Whether changes are wanted at all (the in-process backend keeps none,
    /// and is never submitted to).
    const DURABLE: bool;
    /// Queues `changes` to be written after everything submitted before,
    /// and calls `done` (if any) once they are written or failed. Never
    /// blocks, so callers submit while holding the rules' lock. On `Err`
    /// (the store is closed) nothing is written and `done` is dropped
    /// uncalled: the caller, still holding the lock, handles the failure.
    fn submit(&self, changes: Vec<Change>, done: Option<Done>) -> Result<(), BrokerError>;
}

/// No persistence: the in-process backend.
pub(crate) struct Volatile;

impl Persist for Volatile {
    const DURABLE: bool = false;
    fn submit(&self, _: Vec<Change>, _: Option<Done>) -> Result<(), BrokerError> {
        // Never reached: volatile rules collect no changes, and its
        // sends are receivable at once (see `Queues`).
        Ok(())
    }
}

/// Changes collected by one operation (none for volatile rules).
pub(crate) struct Changes(Option<Vec<Change>>);

impl Changes {
    pub(crate) fn new(durable: bool) -> Self {
        Self(durable.then(Vec::new))
    }
    pub(crate) fn push(&mut self, change: impl FnOnce() -> Change) {
        if let Some(changes) = &mut self.0 {
            changes.push(change());
        }
    }
    pub(crate) fn take(self) -> Vec<Change> {
        self.0.unwrap_or_default()
    }
}
