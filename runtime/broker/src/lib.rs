//! The storage behind the VMBus: queues and key-value buckets.
//!
//! Guests never see these traits: the sandbox's VMBus (`weft-sandbox`'s
//! `vmbus`) checks a guest's grants and limits, then calls a backend
//! through [`QueueBroker`] and [`KvStore`]. Three backends implement them,
//! and one conformance suite (`conformance.rs`, run against each) holds them
//! to the same semantics:
//!
//! - [`MemoryBroker`]: in this process's memory; nothing survives a restart
//!   (`weft serve`, tests);
//! - `EmbeddedBroker` (cargo feature `embedded`): the default of `weft up`,
//!   durable in one [redb](https://www.redb.org) file under the service's
//!   state folder; a send or a key-value write that returned `Ok` is on disk
//!   (fsynced), and concurrent operations share one commit (group commit);
//! - `NatsBroker` (cargo feature `nats`): NATS JetStream, for several hosts
//!   sharing queues.
//!
//! Both features are on by default. The sandbox, which runs hostile guests,
//! depends on this crate without them: it needs the traits and the memory
//! backend only, and so links neither redb nor async-nats.
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
//!
//! # The modules, and which way they depend
//!
//! Each module uses only those above it in this list (no import loops):
//!
//! - `error`: [`BrokerError`], what a call answers when it fails;
//! - `api`: the two traits and the values that cross them;
//! - `limits`: every limit ([`MAX_MESSAGE_BYTES`], [`MAX_BATCH`],
//!   [`QueueSettings`], ...) and the checks every backend makes;
//! - `names`: [`scoped`] (a service's queue or bucket as the backend names
//!   it) and the poison queue's name;
//! - `clock`, `message`: time in epoch milliseconds, and a message as the
//!   rules keep it, with its id and poison reason;
//! - `expiry`: each bucket's [`BucketSettings`] (its entries' time to live)
//!   and when the memory and embedded backends sweep expired entries;
//! - `persist`: the changes a durable backend writes, and the `Persist`
//!   trait that writes them in order;
//! - `rules`: `QueueRules`, the one queue rulebook (leases, receipts,
//!   dedupe, poison moves, limits) the memory and embedded backends share;
//! - `queues`: the rules behind a lock, with the long poll and the waits for
//!   commits;
//! - `backend`: [`QueuesConfig`], the manifest's `[queues]` table, and
//!   [`BackendKind`];
//! - `memory`, `embedded` (with its redb `store`), `nats`: the backends;
//! - `open`: [`OpenError`], why a backend could not be opened, classified
//!   for the caller ([`OpenErrorKind`]).

mod api;
mod backend;
mod clock;
#[cfg(test)]
mod conformance;
#[cfg(feature = "embedded")]
mod embedded;
mod error;
mod expiry;
mod limits;
mod memory;
mod message;
mod names;
#[cfg(feature = "nats")]
mod nats;
mod open;
mod persist;
mod queues;
mod rules;
#[cfg(feature = "embedded")]
mod store;

pub use api::{
    BucketSettings, Delivery, KeyPage, KvStore, Peeked, QueueBroker, ReceiveRequest, SendOptions,
};
pub use backend::{BackendKind, QueuesConfig, QueuesConfigError, redact_url};
#[cfg(feature = "embedded")]
pub use embedded::EmbeddedBroker;
pub use error::{BrokerError, OpenErrorKind};
pub use limits::{
    DEDUPE_WINDOW, MAX_BATCH, MAX_BUCKET_BYTES, MAX_DEDUPE_ID_BYTES, MAX_KEY_BYTES,
    MAX_MESSAGE_BYTES, MAX_TRACE_PARENT_BYTES, MAX_VALUE_BYTES, POISON_RETRY, QueueSettings,
    check_batch,
};
pub use memory::MemoryBroker;
pub use names::{POISON_SUFFIX, poison_queue, scoped};
#[cfg(feature = "nats")]
pub use nats::{NatsBroker, NatsError, open_or_create_kv};
pub use open::OpenError;
#[cfg(feature = "embedded")]
pub use store::{StoreError, StoreHealth};
