//! The conformance cases about limits: sizes and batches, full queues, and
//! poison queues (which are held to the same limits as any queue).

use super::{
    Backend, LONG, PATIENCE, SETTINGS, is_not_found, nothing_visible, receive_n, receive_one,
    request, send,
};
use crate::{
    BrokerError, Delivery, MAX_BATCH, MAX_DEDUPE_ID_BYTES, MAX_MESSAGE_BYTES, POISON_RETRY,
    SendOptions,
};
use std::time::Duration;

pub(crate) async fn too_many_deliveries_move_to_poison_with_the_reason(
    backend: &dyn Backend,
    prefix: &str,
) {
    let q = format!("{prefix}q");
    let poison = format!("{q}-poison");
    let id = send(backend, &q, b"bad").await;
    for n in 1..=SETTINGS.max_deliveries {
        let got = receive_one(backend, &q, LONG).await;
        assert_eq!(got.dequeue_count, n);
        backend
            .abandon(&q, &got.receipt, Duration::ZERO)
            .await
            .unwrap();
    }
    // The next receive moves it instead of delivering it a fourth time.
    let give_up = tokio::time::Instant::now() + PATIENCE;
    while backend.len(&poison).await.unwrap() == 0 {
        assert!(
            nothing_visible(backend, &q).await,
            "delivered past the maximum"
        );
        assert!(tokio::time::Instant::now() < give_up, "never poisoned");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(backend.len(&q).await.unwrap(), 0);
    let peeked = backend.peek(&poison, 1).await.unwrap();
    assert_eq!(peeked.len(), 1);
    assert_eq!(peeked[0].id, id);
    let got = receive_one(backend, &poison, LONG).await;
    assert_eq!(
        (got.id.as_str(), got.body.as_slice()),
        (id.as_str(), &b"bad"[..])
    );
    let reason = got.poison_reason.clone().unwrap_or_default();
    assert!(reason.contains("3 times"), "{reason:?}");
    assert_eq!(peeked[0].poison_reason.as_deref(), Some(reason.as_str()));
    // A poison queue never poisons: its messages come back however often.
    backend
        .abandon(&poison, &got.receipt, Duration::ZERO)
        .await
        .unwrap();
    backend
        .complete(&poison, &receive_one(backend, &poison, LONG).await.receipt)
        .await
        .unwrap();
}

pub(crate) async fn a_full_poison_queue_keeps_the_message_in_its_queue(
    backend: &dyn Backend,
    prefix: &str,
) {
    let q = format!("{prefix}q");
    let poison = format!("{q}-poison");
    for i in 0..SETTINGS.max_messages {
        backend
            .send(&poison, format!("{i}").into_bytes(), SendOptions::now())
            .await
            .unwrap();
    }
    let id = send(backend, &q, b"bad").await;
    for _ in 0..SETTINGS.max_deliveries {
        let got = receive_one(backend, &q, LONG).await;
        backend
            .abandon(&q, &got.receipt, Duration::ZERO)
            .await
            .unwrap();
    }
    // The next receives would move it, but its poison queue has no room: it
    // stays in its queue, hidden, neither delivered again nor dropped.
    for _ in 0..10 {
        assert!(
            nothing_visible(backend, &q).await,
            "delivered past the maximum"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(backend.len(&q).await.unwrap(), 1, "the message was dropped");
    assert_eq!(
        backend.len(&poison).await.unwrap(),
        SETTINGS.max_messages,
        "the poison queue grew past its limit"
    );
    let peeked = backend.peek(&poison, MAX_BATCH).await.unwrap();
    assert!(peeked.iter().all(|p| p.id != id));
}

pub(crate) async fn a_message_waiting_for_poison_room_moves_once_there_is_room(
    backend: &dyn Backend,
    prefix: &str,
) {
    let q = format!("{prefix}q");
    let poison = format!("{q}-poison");
    for i in 0..SETTINGS.max_messages {
        send(backend, &poison, format!("{i}").as_bytes()).await;
    }
    let id = send(backend, &q, b"bad").await;
    for _ in 0..SETTINGS.max_deliveries {
        let got = receive_one(backend, &q, LONG).await;
        backend
            .abandon(&q, &got.receipt, Duration::ZERO)
            .await
            .unwrap();
    }
    let good = send(backend, &q, b"good").await;
    // The receive that finds no room for the bad message hands out the
    // rest of its batch.
    let got = backend
        .receive(&q, request(MAX_BATCH, LONG, Duration::from_secs(5)))
        .await
        .unwrap();
    let ids: Vec<&str> = got.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, [good.as_str()], "the batch behind the stuck message");
    backend.complete(&q, &got[0].receipt).await.unwrap();
    // An operator makes room: the bad message moves at its next try, within
    // POISON_RETRY, and is never delivered from its own queue meanwhile.
    let drained = receive_one(backend, &poison, LONG).await;
    backend.complete(&poison, &drained.receipt).await.unwrap();
    let give_up = tokio::time::Instant::now() + POISON_RETRY + PATIENCE;
    while backend.len(&q).await.unwrap() > 0 {
        assert!(
            nothing_visible(backend, &q).await,
            "delivered past the maximum"
        );
        assert!(
            tokio::time::Instant::now() < give_up,
            "never moved once its poison queue had room"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let poisoned = receive_n(backend, &poison, SETTINGS.max_messages, LONG).await;
    let moved: Vec<&Delivery> = poisoned.iter().filter(|d| d.id == id).collect();
    assert_eq!(moved.len(), 1, "the moved message is in its poison queue");
    assert!(moved[0].poison_reason.is_some());
}

pub(crate) async fn limits_are_checked(backend: &dyn Backend, prefix: &str) {
    let q = format!("{prefix}q");
    let big = vec![0; MAX_MESSAGE_BYTES + 1];
    assert!(matches!(
        backend.send(&q, big, SendOptions::now()).await,
        Err(BrokerError::TooLarge(_))
    ));
    let largest = backend
        .send(&q, vec![7; MAX_MESSAGE_BYTES], SendOptions::now())
        .await
        .unwrap();
    let got = receive_one(backend, &q, LONG).await;
    assert_eq!((got.id, got.body.len()), (largest, MAX_MESSAGE_BYTES));
    for max in [0, MAX_BATCH + 1] {
        assert!(matches!(
            backend
                .receive(&q, request(max, LONG, Duration::ZERO))
                .await,
            Err(BrokerError::Invalid(_))
        ));
        assert!(matches!(
            backend.peek(&q, max).await,
            Err(BrokerError::Invalid(_))
        ));
    }
    for receipt in ["", "garbage", "1.2", &"f".repeat(300)] {
        assert!(
            is_not_found(&backend.complete(&q, receipt).await),
            "{receipt}"
        );
    }
    let long_id = SendOptions {
        dedupe_id: Some("d".repeat(MAX_DEDUPE_ID_BYTES + 1)),
        ..SendOptions::default()
    };
    assert!(matches!(
        backend.send(&q, b"x".to_vec(), long_id).await,
        Err(BrokerError::Invalid(_))
    ));
}

pub(crate) async fn a_full_queue_refuses_sends(backend: &dyn Backend, prefix: &str) {
    let q = format!("{prefix}q");
    for i in 0..SETTINGS.max_messages {
        backend
            .send(&q, format!("{i}").into_bytes(), SendOptions::now())
            .await
            .unwrap();
    }
    let full = backend
        .send(&q, b"one more".to_vec(), SendOptions::now())
        .await;
    assert!(
        matches!(full, Err(BrokerError::Unavailable(ref why)) if why.contains("full")),
        "{full:?}"
    );
    // Other queues are not affected; a completed message makes room.
    send(backend, &format!("{prefix}other"), b"x").await;
    let got = receive_one(backend, &q, LONG).await;
    backend.complete(&q, &got.receipt).await.unwrap();
    send(backend, &q, b"fits again").await;
}
