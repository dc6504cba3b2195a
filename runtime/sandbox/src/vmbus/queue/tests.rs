//! The queue interface's checks, called as the host functions call them
//! once a call is admitted (grants, scoping, argument ranges), without wasm.
//! `lift_tests` covers the way in from a real component.

use super::wire::send_options;
use super::*;
use crate::grants::Grants;
use std::sync::Arc;
use weft_broker::MemoryBroker;

/// An instance's queue state, its caller and its lifecycle, as a
/// [`QueueView`] borrows them.
struct Ctx {
    state: QueueState,
    caller: Caller,
    lifecycle: LifecycleState,
}

impl Ctx {
    fn view(&mut self) -> QueueView<'_> {
        QueueView {
            state: &mut self.state,
            caller: &self.caller,
            lifecycle: &self.lifecycle,
        }
    }
}

fn ctx(queues: &[&str]) -> Ctx {
    let broker = Arc::new(MemoryBroker::default());
    let grants = Grants {
        service: "svc".into(),
        role: "web".into(),
        queues: queues.iter().map(|q| (*q).to_owned()).collect(),
        ..Grants::default()
    };
    let limiter = Arc::new(crate::rate_limit::RoleLimiter::new(
        &crate::RateLimits::default(),
    ));
    Ctx {
        state: QueueState::new(broker),
        caller: Caller::new(Arc::new(grants), limiter),
        lifecycle: LifecycleState::default(),
    }
}

#[tokio::test]
async fn send_is_denied_for_ungranted_queues_and_scoped_for_granted_ones() {
    let mut ctx = ctx(&["jobs"]);
    let denied = send(&mut ctx.view(), "other", b"x".to_vec(), SendOptions::now()).await;
    assert!(
        matches!(denied, Err(WitError::Denied(ref why)) if why.contains("'other'")),
        "{denied:?}"
    );
    send(&mut ctx.view(), "jobs", b"x".to_vec(), SendOptions::now())
        .await
        .unwrap();
    assert_eq!(ctx.state.broker.len("svc/jobs").await.unwrap(), 1);
    assert_eq!(ctx.state.broker.len("jobs").await.unwrap(), 0);
}

#[tokio::test]
async fn hostile_arguments_get_errors_not_traps() {
    let mut ctx = ctx(&["jobs"]);
    let huge_name = "q".repeat(10_000);
    match send(&mut ctx.view(), &huge_name, vec![], SendOptions::now()).await {
        Err(WitError::Denied(why)) => assert!(why.len() < 200),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        send_options(u32::MAX, 0, None),
        Err(WitError::Invalid(_))
    ));
    assert!(matches!(
        send(
            &mut ctx.view(),
            "jobs",
            vec![0; 64 * 1024 + 1],
            SendOptions::now()
        )
        .await,
        Err(WitError::TooLarge(_))
    ));
    assert!(matches!(
        settle(&mut ctx.view(), "jobs", "nonsense", Settle::Complete, None).await,
        Err(WitError::NotFound(_))
    ));
    assert!(matches!(
        settle(
            &mut ctx.view(),
            "nope",
            "nonsense",
            Settle::Abandon { delay_ms: 0 },
            None
        )
        .await,
        Err(WitError::Denied(_))
    ));
    for how in [
        Settle::Abandon { delay_ms: u32::MAX },
        Settle::Extend { visibility_ms: 0 },
        Settle::Extend {
            visibility_ms: u32::MAX,
        },
    ] {
        assert!(
            matches!(
                settle(&mut ctx.view(), "jobs", "r", how, None).await,
                Err(WitError::Invalid(_))
            ),
            "{how:?}"
        );
    }
    for max in [0, 33, u32::MAX] {
        assert!(matches!(
            peek(&mut ctx.view(), "jobs", max).await,
            Err(WitError::Invalid(_))
        ));
    }
    assert!(matches!(
        length(&mut ctx.view(), "nope").await,
        Err(WitError::Denied(_))
    ));
    assert_eq!(length(&mut ctx.view(), "jobs").await.unwrap(), 0);
    let ttl = send_options(0, 5, Some("d".into())).unwrap();
    assert_eq!(ttl.ttl, Some(Duration::from_millis(5)));
    assert_eq!(send_options(0, 0, None).unwrap().ttl, None);
}

#[test]
fn receive_arguments_are_checked_and_the_wait_clamped() {
    for (max, visibility) in [
        (0, 1000),
        (33, 1000),
        (u32::MAX, 1000),
        (1, 0),
        (1, u32::MAX),
    ] {
        assert!(
            matches!(
                receive_request(max, visibility, 0),
                Err(WitError::Invalid(_))
            ),
            "{max} {visibility}"
        );
    }
    let ok = receive_request(32, MAX_VISIBILITY_MS, u32::MAX).unwrap();
    assert_eq!(ok.max_messages, 32);
    assert_eq!(ok.wait, MAX_WAIT);
    assert_eq!(
        receive_request(1, 1, 5).unwrap().wait,
        Duration::from_millis(5)
    );
}

/// `complete-batch` completes each receipt it can, answers each receipt's
/// outcome in order (an unreadable or stale one is `not-found`, the others
/// unaffected), releases the leases it settled, and is denied as a whole
/// for a queue the role is not granted.
#[tokio::test]
async fn a_batch_completes_each_receipt_and_answers_each_outcome() {
    let mut ctx = ctx(&["jobs"]);
    for body in ["a", "b", "c"] {
        send(&mut ctx.view(), "jobs", body.into(), SendOptions::now())
            .await
            .unwrap();
    }
    let request = receive_request(3, 60_000, 0).unwrap();
    let delivered = ctx.state.broker.receive("svc/jobs", request).await.unwrap();
    let expires = Instant::now() + Duration::from_secs(60);
    for d in &delivered {
        ctx.state
            .leases
            .hold("svc/jobs", d.receipt.clone(), expires);
    }
    let receipts = vec![
        Ok(delivered[0].receipt.clone()),
        Err(WitError::NotFound("unreadable".into())),
        Ok("stale".to_owned()),
        Ok(delivered[2].receipt.clone()),
    ];
    let denied = complete_batch(&mut ctx.view(), "other", receipts.clone(), None).await;
    assert!(matches!(denied, Err(WitError::Denied(_))), "{denied:?}");
    assert_eq!(ctx.state.broker.len("svc/jobs").await.unwrap(), 3);

    let outcomes = complete_batch(&mut ctx.view(), "jobs", receipts, None)
        .await
        .unwrap();
    assert!(matches!(
        outcomes.as_slice(),
        [
            Ok(()),
            Err(WitError::NotFound(_)),
            Err(WitError::NotFound(_)),
            Ok(())
        ]
    ));
    // Only the middle message is left, and only its lease is held.
    assert_eq!(ctx.state.broker.len("svc/jobs").await.unwrap(), 1);
    assert!(ctx.state.leases.holds_any());
    let rest = vec![Ok(delivered[1].receipt.clone())];
    let outcomes = complete_batch(&mut ctx.view(), "jobs", rest, None)
        .await
        .unwrap();
    assert!(matches!(outcomes.as_slice(), [Ok(())]));
    assert!(!ctx.state.leases.holds_any());
    assert_eq!(ctx.state.broker.len("svc/jobs").await.unwrap(), 0);
}

/// `complete-batch` takes from one receipt to as many as a `receive` hands
/// out; none, or one more, is refused as a whole.
#[test]
fn a_batch_of_no_receipts_or_more_than_a_receive_hands_out_is_refused() {
    for count in [0, MAX_BATCH as usize + 1, usize::MAX] {
        assert!(
            matches!(check_receipt_count(count), Err(WitError::Invalid(_))),
            "{count}"
        );
    }
    for count in [1, MAX_BATCH as usize] {
        assert!(check_receipt_count(count).is_ok(), "{count}");
    }
}
