//! The conformance suite: one set of tests every backend must pass, so the
//! semantics in [`super`]'s docs hold whichever backend a host runs.
//!
//! Each backend's tests invoke [`conformance_tests!`] with a function that
//! makes a fresh backend with [`SETTINGS`]; the macro expands to one
//! `#[tokio::test]` per case below. The cases run in real time (the NATS
//! backend has a server's clock, not a test's), so they use short leases,
//! assert on states and counts, and bound every wait.

use super::{
    BrokerError, Delivery, KvStore, MAX_BATCH, QueueBroker, QueueSettings, ReceiveRequest,
    SendOptions,
};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

mod buckets;
mod limits;
mod operator;
pub(crate) use buckets::*;
pub(crate) use limits::*;
pub(crate) use operator::*;

/// Both halves of a backend.
pub(crate) trait Backend: QueueBroker + KvStore {}
impl<T: QueueBroker + KvStore> Backend for T {}

/// Whatever keeps a backend alive for one test (a temporary folder...).
pub(crate) type Guard = Box<dyn std::any::Any + Send>;

/// The settings every conformance backend is made with: few deliveries
/// before poisoning and a small queue, so those limits are quick to reach.
pub(crate) const SETTINGS: QueueSettings = QueueSettings {
    max_deliveries: 3,
    max_messages: 50,
    max_bytes: 256 * 1024 * 1024,
};

/// How long any single wait in the suite may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(20);

/// Expands to one test per conformance case, each on a backend made by
/// `$make` (an `async fn() -> (Arc<dyn Backend>, Guard)`).
macro_rules! conformance_tests {
    ($make:path) => {
        $crate::conformance::conformance_tests!(@cases $make;
            send_receive_complete,
            lapsed_lease_redelivers_and_refuses_the_old_receipt,
            abandon_returns_at_once_or_after_its_delay,
            extend_keeps_a_message_hidden_and_its_receipt_valid,
            delayed_send_stays_invisible_until_due,
            expired_messages_are_never_delivered,
            dedupe_id_stores_once_and_returns_the_first_id,
            a_dedupe_id_holds_across_delayed_and_immediate_sends,
            too_many_deliveries_move_to_poison_with_the_reason,
            a_full_poison_queue_keeps_the_message_in_its_queue,
            a_message_waiting_for_poison_room_moves_once_there_is_room,
            limits_are_checked,
            batches_are_bounded_and_fifo,
            len_and_peek_lease_nothing,
            a_long_poll_wakes_for_a_new_message,
            a_full_queue_refuses_sends,
            concurrent_receivers_never_share_a_lease,
            purge_empties_visible_delayed_and_leased_messages,
            redrive_moves_poison_messages_back_by_id_or_all,
            redrive_stops_when_the_queue_is_full,
            a_trace_parent_stays_with_its_message_through_poison_and_redrive,
            a_bad_trace_parent_is_refused,
            kv_sets_gets_deletes_and_pages_keys,
            a_bucket_entry_expires_after_its_ttl_and_a_rewrite_renews_it,
            a_full_bucket_answers_bucket_full_and_its_neighbour_takes_writes,
            purge_bucket_empties_it_and_counts_its_entries,
        );
    };
    (@cases $make:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (backend, _guard) = $make().await;
                let prefix = $crate::conformance::unique_prefix();
                $crate::conformance::$case(&*backend, &prefix).await;
            }
        )*
    };
}
pub(crate) use conformance_tests;

/// A queue-name prefix no other test (or earlier run against the same NATS
/// server) uses.
pub(crate) fn unique_prefix() -> String {
    format!("c{:012x}/", rand::random::<u64>() >> 16)
}

fn request(max: u32, visibility: Duration, wait: Duration) -> ReceiveRequest {
    ReceiveRequest {
        max_messages: max,
        visibility_timeout: visibility,
        wait,
    }
}

const LONG: Duration = Duration::from_secs(60);

/// Receives until `n` messages came or [`PATIENCE`] ran out.
async fn receive_n(
    backend: &dyn Backend,
    queue: &str,
    n: usize,
    visibility: Duration,
) -> Vec<Delivery> {
    let give_up = tokio::time::Instant::now() + PATIENCE;
    let mut got = Vec::new();
    while got.len() < n && tokio::time::Instant::now() < give_up {
        let max = u32::try_from(n - got.len())
            .unwrap_or(MAX_BATCH)
            .min(MAX_BATCH);
        let wait = give_up.saturating_duration_since(tokio::time::Instant::now());
        got.extend(
            backend
                .receive(
                    queue,
                    request(max, visibility, wait.min(Duration::from_secs(5))),
                )
                .await
                .unwrap(),
        );
    }
    assert_eq!(got.len(), n, "expected {n} messages from {queue}");
    got
}

async fn receive_one(backend: &dyn Backend, queue: &str, visibility: Duration) -> Delivery {
    receive_n(backend, queue, 1, visibility).await.remove(0)
}

async fn nothing_visible(backend: &dyn Backend, queue: &str) -> bool {
    backend
        .receive(queue, request(MAX_BATCH, LONG, Duration::ZERO))
        .await
        .unwrap()
        .is_empty()
}

async fn send(backend: &dyn Backend, queue: &str, body: &[u8]) -> String {
    backend
        .send(queue, body.to_vec(), SendOptions::now())
        .await
        .unwrap()
}

fn is_not_found<T: std::fmt::Debug>(result: &Result<T, BrokerError>) -> bool {
    matches!(result, Err(BrokerError::NotFound(_)))
}

pub(crate) async fn send_receive_complete(backend: &dyn Backend, prefix: &str) {
    let q = format!("{prefix}q");
    let before = crate::clock::unix_millis();
    let id = send(backend, &q, b"hello").await;
    let got = receive_one(backend, &q, LONG).await;
    assert_eq!(got.id, id);
    assert_eq!(got.body, b"hello");
    assert_eq!(got.dequeue_count, 1);
    assert_eq!(got.poison_reason, None);
    assert!(
        got.inserted_at_ms + 5_000 >= before
            && got.inserted_at_ms <= crate::clock::unix_millis() + 5_000,
        "inserted at {} (sent at about {before})",
        got.inserted_at_ms
    );
    backend.complete(&q, &got.receipt).await.unwrap();
    assert_eq!(backend.len(&q).await.unwrap(), 0);
    assert!(is_not_found(&backend.complete(&q, &got.receipt).await));
    assert!(nothing_visible(backend, &q).await);
}

pub(crate) async fn lapsed_lease_redelivers_and_refuses_the_old_receipt(
    backend: &dyn Backend,
    prefix: &str,
) {
    let q = format!("{prefix}q");
    // Leases in this suite last seconds, so a stalled machine cannot make
    // the "hidden" checks race a lapse.
    let id = send(backend, &q, b"x").await;
    let first = receive_one(backend, &q, Duration::from_secs(2)).await;
    assert!(
        nothing_visible(backend, &q).await,
        "a leased message is hidden"
    );
    let second = receive_one(backend, &q, LONG).await;
    assert_eq!((second.id.as_str(), second.dequeue_count), (id.as_str(), 2));
    assert_ne!(second.receipt, first.receipt);
    assert!(is_not_found(&backend.complete(&q, &first.receipt).await));
    assert!(is_not_found(
        &backend.abandon(&q, &first.receipt, Duration::ZERO).await
    ));
    assert!(is_not_found(
        &backend.extend(&q, &first.receipt, LONG).await
    ));
    backend.complete(&q, &second.receipt).await.unwrap();
    assert_eq!(backend.len(&q).await.unwrap(), 0);
}

pub(crate) async fn abandon_returns_at_once_or_after_its_delay(
    backend: &dyn Backend,
    prefix: &str,
) {
    let q = format!("{prefix}q");
    send(backend, &q, b"x").await;
    let first = receive_one(backend, &q, LONG).await;
    backend
        .abandon(&q, &first.receipt, Duration::ZERO)
        .await
        .unwrap();
    let second = receive_one(backend, &q, LONG).await;
    assert_eq!(second.dequeue_count, 2);
    assert!(is_not_found(
        &backend.abandon(&q, &first.receipt, Duration::ZERO).await
    ));
    backend
        .abandon(&q, &second.receipt, Duration::from_secs(3))
        .await
        .unwrap();
    assert!(nothing_visible(backend, &q).await, "abandoned with a delay");
    let third = receive_one(backend, &q, LONG).await;
    assert_eq!(third.dequeue_count, 3);
    backend.complete(&q, &third.receipt).await.unwrap();
}

pub(crate) async fn extend_keeps_a_message_hidden_and_its_receipt_valid(
    backend: &dyn Backend,
    prefix: &str,
) {
    let q = format!("{prefix}q");
    send(backend, &q, b"x").await;
    let got = receive_one(backend, &q, Duration::from_secs(4)).await;
    backend.extend(&q, &got.receipt, LONG).await.unwrap();
    // Past the first lease: still hidden, and the receipt still holds.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert!(
        nothing_visible(backend, &q).await,
        "the extended lease lapsed"
    );
    backend.complete(&q, &got.receipt).await.unwrap();
    assert_eq!(backend.len(&q).await.unwrap(), 0);
}

pub(crate) async fn delayed_send_stays_invisible_until_due(backend: &dyn Backend, prefix: &str) {
    let q = format!("{prefix}q");
    let id = backend
        .send(
            &q,
            b"later".to_vec(),
            SendOptions::delayed(Duration::from_secs(3)),
        )
        .await
        .unwrap();
    assert!(
        nothing_visible(backend, &q).await,
        "delayed message visible at once"
    );
    assert_eq!(
        backend.len(&q).await.unwrap(),
        1,
        "a delayed message counts"
    );
    let got = receive_one(backend, &q, LONG).await;
    assert_eq!((got.id.as_str(), got.dequeue_count), (id.as_str(), 1));
    backend.complete(&q, &got.receipt).await.unwrap();
}

pub(crate) async fn expired_messages_are_never_delivered(backend: &dyn Backend, prefix: &str) {
    let q = format!("{prefix}q");
    let short = SendOptions {
        ttl: Some(Duration::from_millis(300)),
        ..SendOptions::default()
    };
    backend.send(&q, b"stale".to_vec(), short).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let fresh = SendOptions {
        ttl: Some(LONG),
        ..SendOptions::default()
    };
    backend.send(&q, b"fresh".to_vec(), fresh).await.unwrap();
    let got = receive_one(backend, &q, LONG).await;
    assert_eq!(got.body, b"fresh");
    backend.complete(&q, &got.receipt).await.unwrap();
    assert!(nothing_visible(backend, &q).await);
}

pub(crate) async fn dedupe_id_stores_once_and_returns_the_first_id(
    backend: &dyn Backend,
    prefix: &str,
) {
    let q = format!("{prefix}q");
    let with = |id: &str| SendOptions {
        dedupe_id: Some(id.to_owned()),
        ..SendOptions::default()
    };
    let first = backend
        .send(&q, b"a".to_vec(), with("order-1"))
        .await
        .unwrap();
    let retry = backend
        .send(&q, b"a".to_vec(), with("order-1"))
        .await
        .unwrap();
    assert_eq!(first, retry);
    let other = backend
        .send(&q, b"b".to_vec(), with("order-2"))
        .await
        .unwrap();
    assert_ne!(first, other);
    let elsewhere = backend
        .send(&format!("{prefix}other"), b"a".to_vec(), with("order-1"))
        .await
        .unwrap();
    assert_ne!(first, elsewhere, "dedupe ids are per queue");
    let got = receive_n(backend, &q, 2, LONG).await;
    let ids: HashSet<&str> = got.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, HashSet::from([first.as_str(), other.as_str()]));
    assert!(
        nothing_visible(backend, &q).await,
        "the retried send was stored"
    );
    // Still recognised after the first message was completed.
    for d in &got {
        backend.complete(&q, &d.receipt).await.unwrap();
    }
    let again = backend
        .send(&q, b"a".to_vec(), with("order-1"))
        .await
        .unwrap();
    assert_eq!(again, first);
    assert_eq!(backend.len(&q).await.unwrap(), 0);
}

pub(crate) async fn a_dedupe_id_holds_across_delayed_and_immediate_sends(
    backend: &dyn Backend,
    prefix: &str,
) {
    let q = format!("{prefix}q");
    let with = |id: &str, delay: Duration| SendOptions {
        delay,
        dedupe_id: Some(id.to_owned()),
        ..SendOptions::default()
    };
    let later = Duration::from_secs(2);
    let delayed = backend
        .send(&q, b"a".to_vec(), with("d-1", later))
        .await
        .unwrap();
    let retry = backend
        .send(&q, b"a".to_vec(), with("d-1", Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(delayed, retry);
    let at_once = backend
        .send(&q, b"b".to_vec(), with("d-2", Duration::ZERO))
        .await
        .unwrap();
    let retry = backend
        .send(&q, b"b".to_vec(), with("d-2", later))
        .await
        .unwrap();
    assert_eq!(at_once, retry);
    assert_eq!(backend.len(&q).await.unwrap(), 2, "a retry was stored");
    let got = receive_n(backend, &q, 2, LONG).await;
    let ids: HashSet<&str> = got.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, HashSet::from([delayed.as_str(), at_once.as_str()]));
    tokio::time::sleep(later).await;
    assert!(nothing_visible(backend, &q).await, "a retry was delivered");
}

pub(crate) async fn batches_are_bounded_and_fifo(backend: &dyn Backend, prefix: &str) {
    let q = format!("{prefix}q");
    for i in 0..40u8 {
        send(backend, &q, &[i]).await;
    }
    let first = backend
        .receive(&q, request(MAX_BATCH, LONG, Duration::from_secs(5)))
        .await
        .unwrap();
    assert!(!first.is_empty() && first.len() <= 32, "{}", first.len());
    let rest = receive_n(backend, &q, 40 - first.len(), LONG).await;
    let order: Vec<u8> = first.iter().chain(&rest).map(|d| d.body[0]).collect();
    assert_eq!(order, (0..40).collect::<Vec<u8>>());
}

pub(crate) async fn len_and_peek_lease_nothing(backend: &dyn Backend, prefix: &str) {
    let q = format!("{prefix}q");
    let ids = [
        send(backend, &q, b"1").await,
        send(backend, &q, b"2").await,
        send(backend, &q, b"3").await,
    ];
    assert_eq!(backend.len(&q).await.unwrap(), 3);
    let peeked = backend.peek(&q, 2).await.unwrap();
    let seen: Vec<(&str, &[u8])> = peeked
        .iter()
        .map(|p| (p.id.as_str(), p.body.as_slice()))
        .collect();
    assert_eq!(
        seen,
        [(ids[0].as_str(), &b"1"[..]), (ids[1].as_str(), &b"2"[..])]
    );
    let got = receive_n(backend, &q, 3, LONG).await;
    assert!(
        got.iter().all(|d| d.dequeue_count == 1),
        "peek counted as a delivery"
    );
    assert!(
        backend.peek(&q, MAX_BATCH).await.unwrap().is_empty(),
        "leased messages peeked"
    );
    assert_eq!(backend.len(&q).await.unwrap(), 3, "leased messages count");
}

pub(crate) async fn a_long_poll_wakes_for_a_new_message(backend: &dyn Backend, prefix: &str) {
    let q = format!("{prefix}q");
    let receive = async {
        let received = backend.receive(&q, request(1, LONG, PATIENCE)).await;
        (received, std::time::Instant::now())
    };
    let got = tokio::join!(receive, async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let sending = std::time::Instant::now();
        (send(backend, &q, b"now").await, sending)
    });
    let ((received, woke), (id, sending)) = got;
    let received = received.unwrap();
    assert_eq!(received.len(), 1, "the long poll returned empty");
    assert_eq!(received[0].id, id);
    // It woke when the message came, not when its wait ran out (a receive
    // that only looked again at the end of its wait would also get it).
    let after = woke.saturating_duration_since(sending);
    assert!(
        after < PATIENCE / 10,
        "the receive returned {after:?} after the send, of a {PATIENCE:?} wait"
    );
}

pub(crate) async fn concurrent_receivers_never_share_a_lease(backend: &dyn Backend, prefix: &str) {
    let q = format!("{prefix}q");
    let sent: HashSet<String> = {
        let sends = (0..45).map(|i| {
            let q = q.clone();
            async move { send(backend, &q, format!("{i}").as_bytes()).await }
        });
        futures::future::join_all(sends).await.into_iter().collect()
    };
    assert_eq!(sent.len(), 45);
    let done = Arc::new(std::sync::Mutex::new(Vec::new()));
    let receivers = (0..4).map(|_| {
        let q = q.clone();
        let done = done.clone();
        async move {
            let give_up = tokio::time::Instant::now() + PATIENCE;
            while done.lock().unwrap().len() < 45 && tokio::time::Instant::now() < give_up {
                let batch = backend
                    .receive(&q, request(5, LONG, Duration::from_millis(200)))
                    .await
                    .unwrap();
                for d in batch {
                    backend.complete(&q, &d.receipt).await.unwrap();
                    done.lock().unwrap().push((d.id, d.dequeue_count));
                }
            }
        }
    });
    futures::future::join_all(receivers).await;
    let done = done.lock().unwrap();
    assert_eq!(done.len(), 45, "a message was delivered twice or never");
    assert!(done.iter().all(|(_, n)| *n == 1));
    let ids: HashSet<String> = done.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(ids, sent);
}

pub(crate) async fn kv_sets_gets_deletes_and_pages_keys(backend: &dyn Backend, prefix: &str) {
    let b = format!("{prefix}b");
    assert_eq!(backend.get(&b, "k").await.unwrap(), None);
    backend.set(&b, "k", b"v1".to_vec()).await.unwrap();
    backend.set(&b, "k", b"v2".to_vec()).await.unwrap();
    assert_eq!(backend.get(&b, "k").await.unwrap(), Some(b"v2".to_vec()));
    assert!(backend.exists(&b, "k").await.unwrap());
    backend.delete(&b, "k").await.unwrap();
    backend.delete(&b, "k").await.unwrap();
    assert!(!backend.exists(&b, "k").await.unwrap());
    // Keys of every shape a guest may use come back as they went in.
    let odd = ["a.b", "seen/x y", "ünï", "_x_", "-", "a=b+c"];
    for key in odd {
        backend.set(&b, key, key.as_bytes().to_vec()).await.unwrap();
        assert_eq!(
            backend.get(&b, key).await.unwrap().as_deref(),
            Some(key.as_bytes())
        );
    }
    for key in odd {
        backend.delete(&b, key).await.unwrap();
    }
    let keys = 1500;
    let writes = (0..keys).map(|i| {
        let b = b.clone();
        async move { backend.set(&b, &format!("k{i:05}"), vec![1]).await }
    });
    for result in futures::future::join_all(writes).await {
        result.unwrap();
    }
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let page = backend.list_keys(&b, cursor).await.unwrap();
        assert!(page.keys.len() <= 1000);
        all.extend(page.keys);
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(all.len(), keys);
    assert!(all.windows(2).all(|w| w[0] < w[1]), "keys out of order");
    assert_eq!(
        backend
            .get(&format!("{prefix}other"), "k00001")
            .await
            .unwrap(),
        None
    );
}
