//! The conformance cases about an operator's tools and what a message
//! carries for them: purge, redrive, and the sender's `traceparent`.

use super::{
    Backend, LONG, PATIENCE, SETTINGS, is_not_found, nothing_visible, receive_n, receive_one,
    request, send,
};
use crate::{BrokerError, MAX_BATCH, MAX_TRACE_PARENT_BYTES, SendOptions};
use std::collections::HashSet;
use std::time::Duration;

const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn traced(trace: &str) -> SendOptions {
    SendOptions {
        trace_parent: Some(trace.to_owned()),
        ..SendOptions::default()
    }
}

/// Delivers and abandons what `q` holds until `n` messages are in its
/// poison queue.
async fn poison_until(backend: &dyn Backend, q: &str, n: usize) {
    let poison = format!("{q}-poison");
    let give_up = tokio::time::Instant::now() + PATIENCE;
    while backend.len(&poison).await.unwrap() < n {
        assert!(tokio::time::Instant::now() < give_up, "never poisoned");
        let got = backend
            .receive(q, request(MAX_BATCH, LONG, Duration::from_millis(100)))
            .await
            .unwrap();
        for delivery in got {
            backend
                .abandon(q, &delivery.receipt, Duration::ZERO)
                .await
                .unwrap();
        }
    }
}

fn set(ids: &[String]) -> HashSet<String> {
    ids.iter().cloned().collect()
}

pub(crate) async fn purge_empties_visible_delayed_and_leased_messages(
    backend: &dyn Backend,
    prefix: &str,
) {
    let q = format!("{prefix}q");
    let (other, poison) = (format!("{prefix}other"), format!("{q}-poison"));
    assert_eq!(backend.purge(&q).await.unwrap(), 0, "an empty queue");
    send(backend, &q, b"leased").await;
    send(backend, &q, b"visible").await;
    backend
        .send(&q, b"delayed".to_vec(), SendOptions::delayed(LONG))
        .await
        .unwrap();
    let neighbour = send(backend, &other, b"neighbour").await;
    send(backend, &poison, b"poison").await;
    let leased = receive_one(backend, &q, LONG).await;
    assert_eq!(leased.body, b"leased");
    assert_eq!(backend.purge(&q).await.unwrap(), 3);
    assert_eq!(backend.len(&q).await.unwrap(), 0);
    assert!(nothing_visible(backend, &q).await);
    assert!(is_not_found(&backend.complete(&q, &leased.receipt).await));
    assert!(is_not_found(
        &backend.abandon(&q, &leased.receipt, Duration::ZERO).await
    ));
    // The neighbours, its own poison queue included, did not notice.
    assert_eq!(backend.len(&poison).await.unwrap(), 1);
    let got = receive_one(backend, &other, LONG).await;
    assert_eq!(got.id, neighbour);
    backend.complete(&other, &got.receipt).await.unwrap();
    // The queue works on.
    let after = send(backend, &q, b"after").await;
    let got = receive_one(backend, &q, LONG).await;
    assert_eq!((got.id, got.dequeue_count), (after, 1));
}

pub(crate) async fn redrive_moves_poison_messages_back_by_id_or_all(
    backend: &dyn Backend,
    prefix: &str,
) {
    let q = format!("{prefix}q");
    let poison = format!("{q}-poison");
    let (other, other_poison) = (format!("{prefix}other"), format!("{prefix}other-poison"));
    let mut ids = Vec::new();
    for body in [b"m1", b"m2", b"m3"] {
        ids.push(send(backend, &q, body).await);
    }
    let stranger = send(backend, &other_poison, b"stranger").await;
    send(backend, &other, b"other").await;
    poison_until(backend, &q, 3).await;
    assert_eq!(
        backend.redrive(&q, Some(&[])).await.unwrap(),
        Vec::<String>::new()
    );

    // By id: unknown ids, and ids of other queues' poison messages, are skipped.
    let wanted = [ids[1].clone(), "no-such-id".to_owned(), stranger.clone()];
    assert_eq!(
        backend.redrive(&q, Some(&wanted)).await.unwrap(),
        [ids[1].clone()]
    );
    assert_eq!(backend.len(&poison).await.unwrap(), 2);
    let peeked = backend.peek(&q, MAX_BATCH).await.unwrap();
    assert_eq!(peeked.len(), 1);
    assert_eq!(
        (
            peeked[0].id.as_str(),
            peeked[0].dequeue_count,
            peeked[0].poison_reason.as_deref()
        ),
        (ids[1].as_str(), 0, None)
    );
    let got = receive_one(backend, &q, LONG).await;
    assert_eq!(
        (
            got.id.as_str(),
            got.body.as_slice(),
            got.dequeue_count,
            got.poison_reason.as_deref()
        ),
        (ids[1].as_str(), &b"m2"[..], 1, None)
    );
    backend.complete(&q, &got.receipt).await.unwrap();

    // All: a poison message leased at the time stays.
    let leased = receive_one(backend, &poison, LONG).await;
    let rest: Vec<String> = [&ids[0], &ids[2]]
        .into_iter()
        .filter(|id| **id != leased.id)
        .cloned()
        .collect();
    assert_eq!(rest.len(), 1);
    assert_eq!(backend.redrive(&q, None).await.unwrap(), rest);
    assert_eq!(backend.len(&poison).await.unwrap(), 1);
    // Once given back, it moves too.
    backend
        .abandon(&poison, &leased.receipt, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(
        backend.redrive(&q, None).await.unwrap(),
        [leased.id.as_str()]
    );
    assert_eq!(backend.len(&poison).await.unwrap(), 0);
    let got = receive_n(backend, &q, 2, LONG).await;
    let mut expected = set(&rest);
    expected.insert(leased.id);
    assert_eq!(
        got.iter().map(|d| d.id.clone()).collect::<HashSet<_>>(),
        expected
    );
    assert!(
        got.iter()
            .all(|d| d.dequeue_count == 1 && d.poison_reason.is_none())
    );
    // The neighbours did not notice.
    assert_eq!(backend.len(&other_poison).await.unwrap(), 1);
    assert_eq!(backend.len(&other).await.unwrap(), 1);
    assert_eq!(
        backend.redrive(&q, None).await.unwrap(),
        Vec::<String>::new()
    );
}

pub(crate) async fn redrive_stops_when_the_queue_is_full(backend: &dyn Backend, prefix: &str) {
    let q = format!("{prefix}q");
    let poison = format!("{q}-poison");
    let mut waiting = Vec::new();
    for body in [b"p1", b"p2"] {
        waiting.push(send(backend, &poison, body).await);
    }
    for i in 0..SETTINGS.max_messages - 1 {
        send(backend, &q, format!("{i}").as_bytes()).await;
    }
    let moved = backend.redrive(&q, None).await.unwrap();
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert!(waiting.contains(&moved[0]));
    assert_eq!(backend.len(&q).await.unwrap(), SETTINGS.max_messages);
    assert_eq!(backend.len(&poison).await.unwrap(), 1, "a message was lost");
    let full = backend.send(&q, b"x".to_vec(), SendOptions::now()).await;
    assert!(matches!(full, Err(BrokerError::Unavailable(_))), "{full:?}");
    // Room again: the rest moves.
    let got = receive_one(backend, &q, LONG).await;
    backend.complete(&q, &got.receipt).await.unwrap();
    let rest = backend.redrive(&q, None).await.unwrap();
    assert_eq!(set(&[moved, rest].concat()), set(&waiting));
    assert_eq!(backend.len(&poison).await.unwrap(), 0);
}

pub(crate) async fn a_trace_parent_stays_with_its_message_through_poison_and_redrive(
    backend: &dyn Backend,
    prefix: &str,
) {
    let q = format!("{prefix}q");
    let poison = format!("{q}-poison");
    let id = backend
        .send(&q, b"traced".to_vec(), traced(TRACE))
        .await
        .unwrap();
    let plain = send(backend, &q, b"plain").await;
    let peeked = backend.peek(&q, MAX_BATCH).await.unwrap();
    let trace_of = |id: &str| {
        peeked
            .iter()
            .find(|p| p.id == id)
            .map(|p| p.trace_parent.clone())
    };
    assert_eq!(trace_of(&id), Some(Some(TRACE.to_owned())));
    assert_eq!(trace_of(&plain), Some(None));
    // Through every delivery and abandon.
    for n in 1..=SETTINGS.max_deliveries {
        let got = receive_n(backend, &q, 2, LONG).await;
        for delivery in &got {
            assert_eq!(delivery.dequeue_count, n);
            let expected = (delivery.id == id).then_some(TRACE);
            assert_eq!(delivery.trace_parent.as_deref(), expected);
            backend
                .abandon(&q, &delivery.receipt, Duration::ZERO)
                .await
                .unwrap();
        }
    }
    poison_until(backend, &q, 2).await;
    // In the poison queue.
    let peeked = backend.peek(&poison, MAX_BATCH).await.unwrap();
    let traced_poison = peeked.iter().find(|p| p.id == id).expect("poisoned");
    assert_eq!(traced_poison.trace_parent.as_deref(), Some(TRACE));
    assert!(traced_poison.poison_reason.is_some());
    // And back.
    assert_eq!(
        backend
            .redrive(&q, Some(std::slice::from_ref(&id)))
            .await
            .unwrap(),
        [id.as_str()]
    );
    let peeked = backend.peek(&q, MAX_BATCH).await.unwrap();
    assert_eq!(peeked.len(), 1);
    assert_eq!(peeked[0].trace_parent.as_deref(), Some(TRACE));
    let got = receive_one(backend, &q, LONG).await;
    assert_eq!(
        (
            got.id.as_str(),
            got.dequeue_count,
            got.trace_parent.as_deref()
        ),
        (id.as_str(), 1, Some(TRACE))
    );
    let plain_poison = receive_one(backend, &poison, LONG).await;
    assert_eq!((plain_poison.id, plain_poison.trace_parent), (plain, None));
}

pub(crate) async fn a_bad_trace_parent_is_refused(backend: &dyn Backend, prefix: &str) {
    let q = format!("{prefix}q");
    let longest = "a".repeat(MAX_TRACE_PARENT_BYTES);
    let id = backend
        .send(&q, b"x".to_vec(), traced(&longest))
        .await
        .unwrap();
    for bad in [
        "a".repeat(MAX_TRACE_PARENT_BYTES + 1),
        String::new(),
        "00-with space".to_owned(),
        "00-line\r\nbreak".to_owned(),
        "00-café".to_owned(),
    ] {
        let refused = backend.send(&q, b"y".to_vec(), traced(&bad)).await;
        assert!(
            matches!(refused, Err(BrokerError::Invalid(_))),
            "{bad:?}: {refused:?}"
        );
    }
    // Nothing of the refused sends was stored; the good one arrives whole.
    assert_eq!(backend.len(&q).await.unwrap(), 1);
    let got = receive_one(backend, &q, LONG).await;
    assert_eq!(got.id, id);
    assert_eq!(got.trace_parent, Some(longest));
}
