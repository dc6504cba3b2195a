//! The NATS JetStream backend: queues and buckets on a NATS server that
//! several hosts share, so a web role on one host enqueues and worker
//! instances on others drain.
//!
//! - A queue is a work-queue stream (`WEFT_<queue>`, file storage) with two
//!   subjects: `weft.q.<queue>` for visible messages, taken by one durable
//!   pull consumer (`weft`) that every host shares, and `weft.d.<queue>` for
//!   delayed ones (consumer `weft-delayed`). Limits are the stream's
//!   (`max_msgs`, discard new: a full queue refuses sends; delayed messages
//!   count too); dedupe ids are JetStream's `Nats-Msg-Id` within a 10-minute
//!   duplicate window, one window for the whole stream, so a delayed and an
//!   immediate send with the same dedupe id store one message.
//! - A receive is a pull: what is available at once, else a long poll for
//!   one message. The server's delivery count is the dequeue count; a message
//!   delivered `max-deliveries` times is copied to `<queue>-poison` (with its
//!   reason, deduped by its id) and then acknowledged, on its next delivery:
//!   the server's own `max_deliver` only stops delivering and leaves the
//!   message stranded in a work-queue stream, so Weft counts instead. A
//!   poison queue's stream has the queue limits too; while it is full (or
//!   the copy fails) the message is given back to its queue with a delay of
//!   [`POISON_RETRY`](crate::POISON_RETRY), and the rest of the
//!   batch is handed out.
//! - Leases: the consumer's ack wait (the `[queues] ack-wait-ms`) is how long
//!   a message stays hidden when the host holding it vanishes. While the
//!   host lives, [`leases`] keeps each lease to its own visibility timeout:
//!   it sends "in progress" to hold a message longer than the ack wait, and a
//!   negative acknowledgement to let it go when the lease lapses. Receipts
//!   are known only to the host that issued them, so a stale receipt, or one
//!   from another host, is refused.
//! - A message's `traceparent` is its `traceparent` header, copied with it
//!   to the visible subject and to its poison queue.
//! - A purge purges the queue's stream (visible and delayed messages) and
//!   drops this host's leases of it. A redrive moves poison messages no one
//!   holds a lease on back to the queue as new messages (see `poison.rs`).
//! - A delayed send goes to the delayed subject; a receive moves the
//!   messages that are due to the visible one (at most every 250 ms per
//!   queue and host), so delays are honoured to about a second while a
//!   receiver polls. A time to live is a header; an expired message is
//!   acknowledged instead of delivered.
//! - A bucket is a JetStream key-value bucket (`weft_<bucket>`, history 1,
//!   64 MiB, file storage); keys are escaped to NATS's key alphabet. It is
//!   opened, or made, by [`open_or_create_kv`], which works on a 2.9 server
//!   too (and serves other users of JetStream buckets, the fabric's state).
//!
//! When the server cannot be reached every call answers `unavailable`, and
//! the client reconnects by itself; guests keep running. See ARCHITECTURE.md
//! for what durability the server gives.

mod broker;
mod bucket;
mod escape;
mod failure;
mod handles;
mod leases;
mod open_kv;
mod poison;
mod queue;

pub use broker::{NatsBroker, NatsError};
pub use open_kv::open_or_create_kv;

/// The NATS server the tests use: `WEFT_TEST_NATS_URL`, or the one `.ci/run`
/// starts on this machine's default port.
#[cfg(test)]
pub(crate) fn test_url() -> String {
    std::env::var("WEFT_TEST_NATS_URL").unwrap_or_else(|_| crate::backend::DEFAULT_NATS_URL.into())
}

#[cfg(test)]
mod conformance {
    use crate::conformance::{Backend, Guard, SETTINGS, conformance_tests};
    use crate::{BackendKind, QueuesConfig};
    use std::sync::Arc;

    /// A backend on the test server. These tests fail, never skip, when no
    /// server runs: start one with `nats-server --jetstream` (as `.ci/run` does).
    async fn nats() -> (Arc<dyn Backend>, Guard) {
        let config = QueuesConfig {
            backend: Some(BackendKind::Nats),
            url: Some(super::test_url()),
            max_deliveries: SETTINGS.max_deliveries,
            max_messages: u32::try_from(SETTINGS.max_messages).unwrap_or(u32::MAX),
            connect_timeout_secs: 5,
            ..QueuesConfig::default()
        };
        let broker = super::NatsBroker::connect(&config)
            .await
            .unwrap_or_else(|e| {
                panic!("{e}: these tests need a NATS server with JetStream (see .ci/run)")
            });
        (Arc::new(broker), Box::new(()))
    }

    conformance_tests!(nats);
}

#[cfg(test)]
mod tests {
    use crate::{BackendKind, NatsBroker, QueuesConfig};

    /// A server that cannot be reached is named without its password.
    #[tokio::test]
    async fn an_unreachable_server_is_named_without_its_credentials() {
        let config = QueuesConfig {
            backend: Some(BackendKind::Nats),
            url: Some("nats://weft:hunter2@127.0.0.1:1".into()),
            connect_timeout_secs: 0,
            ..QueuesConfig::default()
        };
        let error = NatsBroker::connect(&config)
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(
            error.contains("nats://weft:***@127.0.0.1:1") && !error.contains("hunter2"),
            "{error}"
        );
    }

    /// A listener that accepts connections and then never speaks (not a
    /// NATS server, or a stuck one), or closes them at once, is retried
    /// and then refused within the connect budget: it never holds the
    /// host's start for good.
    #[tokio::test]
    async fn a_server_that_accepts_and_never_answers_is_refused_within_the_budget() {
        for close_at_once in [false, true] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let accepting = tokio::spawn(async move {
                let mut held = Vec::new();
                while let Ok((stream, _)) = listener.accept().await {
                    if !close_at_once {
                        held.push(stream);
                    }
                }
            });
            let config = QueuesConfig {
                backend: Some(BackendKind::Nats),
                url: Some(format!("nats://127.0.0.1:{port}")),
                connect_timeout_secs: 2,
                ..QueuesConfig::default()
            };
            // The budget, plus one attempt's bound, plus slack for a
            // loaded machine: a hang would take forever.
            let outcome = tokio::time::timeout(
                std::time::Duration::from_secs(30),
                NatsBroker::connect(&config),
            )
            .await
            .expect("the connect gave up within its budget");
            let error = outcome.err().unwrap().to_string();
            assert!(
                error.contains(&format!("nats://127.0.0.1:{port}")),
                "{error}"
            );
            accepting.abort();
        }
    }
}
