//! The data routes' checks, bounds and counts, without a server: bodies,
//! keys and queries refused in one line; reads bounded and naming their
//! backend; changes run to their end; deletes of keys counted honestly.

use super::*;
use crate::backends::Backends;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[test]
fn keys_are_percent_decoded_into_utf8_or_refused() {
    assert_eq!(percent_decode("seen%2Fabc").unwrap(), "seen/abc");
    assert_eq!(percent_decode("a+b%20c").unwrap(), "a+b c");
    assert_eq!(percent_decode("%E2%9C%93").unwrap(), "\u{2713}");
    // A `%` without two hex digits is kept as it is.
    assert_eq!(percent_decode("100%").unwrap(), "100%");
    assert_eq!(percent_decode("%zz%4").unwrap(), "%zz%4");
    for bad in ["%FF", "%C3", "ok%C3%28"] {
        let e = percent_decode(bad).unwrap_err().to_string();
        assert!(
            e.contains("percent-encoded") && !e.contains('\n'),
            "{bad}: {e}"
        );
    }
}

#[test]
fn a_message_is_text_or_base64_and_at_most_the_message_limit() {
    let text = |body: &str| SendRequest {
        body: Some(body.into()),
        ..SendRequest::default()
    };
    let encoded = |bytes: &[u8]| SendRequest {
        body_base64: Some(BASE64.encode(bytes)),
        ..SendRequest::default()
    };
    assert_eq!(message_body(&text("hello")).unwrap(), b"hello");
    assert_eq!(message_body(&encoded(&[0, 255, 7])).unwrap(), [0, 255, 7]);
    // The limit bites at one byte over, as text or as base64...
    let at = vec![b'x'; MAX_MESSAGE_BYTES];
    assert_eq!(
        message_body(&encoded(&at)).unwrap().len(),
        MAX_MESSAGE_BYTES
    );
    let over = "x".repeat(MAX_MESSAGE_BYTES + 1);
    assert!(matches!(
        message_body(&text(&over)),
        Err(ApiError::TooLarge(MAX_MESSAGE_BYTES))
    ));
    assert!(matches!(
        message_body(&encoded(over.as_bytes())),
        Err(ApiError::TooLarge(MAX_MESSAGE_BYTES))
    ));
    // ...and a bad request is one line naming what is wrong.
    let bad = SendRequest {
        body_base64: Some("not base64!".into()),
        ..SendRequest::default()
    };
    let e = message_body(&bad).unwrap_err().to_string();
    assert!(
        e.starts_with("body_base64 is not valid base64") && !e.contains('\n'),
        "{e}"
    );
    let both = SendRequest {
        body: Some("a".into()),
        body_base64: Some("YQ==".into()),
        delay_ms: None,
    };
    for neither_or_both in [both, SendRequest::default()] {
        let refused = message_body(&neither_or_both).unwrap_err();
        assert_eq!(
            super::super::api_error(&refused).status(),
            StatusCode::BAD_REQUEST
        );
    }
    let over = message_body(&text(&over)).unwrap_err();
    assert_eq!(
        super::super::api_error(&over).status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert!(serde_json::from_str::<SendRequest>(r#"{"body":"a","extra":1}"#).is_err());
}

#[test]
fn keys_are_checked_like_a_guest_s_and_a_delete_names_at_most_its_limit() {
    assert!(check_key("k").is_ok());
    assert!(check_key(&"k".repeat(MAX_KEY_BYTES)).is_ok());
    assert!(check_key("").is_err());
    assert!(check_key(&"k".repeat(MAX_KEY_BYTES + 1)).is_err());
    let keys = |n: usize| (0..n).map(|i| format!("k{i}")).collect::<Vec<_>>();
    assert!(check_keys(&keys(MAX_DELETE_KEYS)).is_ok());
    let e = check_keys(&keys(MAX_DELETE_KEYS + 1))
        .unwrap_err()
        .to_string();
    assert_eq!(e, "at most 1000 keys at a time, not 1001");
    // One bad key refuses the whole delete: nothing is half done.
    let mut one_bad = keys(3);
    one_bad.push(String::new());
    assert!(check_keys(&one_bad).is_err());
}

#[test]
fn a_peek_shows_one_to_a_batch_and_a_delay_is_at_most_a_guest_s() {
    assert_eq!(peek_max("").unwrap(), DEFAULT_PEEK);
    assert_eq!(peek_max("max=1").unwrap(), 1);
    assert_eq!(peek_max("max=32").unwrap(), MAX_BATCH);
    for refused in [
        "max=0",
        "max=33",
        "max=-1",
        "max=ten",
        "max=",
        "max=4294967296",
    ] {
        let e = peek_max(refused).unwrap_err().to_string();
        assert!(e.starts_with("max must be 1 to 32"), "{refused}: {e}");
    }
    assert_eq!(send_delay(None).unwrap(), Duration::ZERO);
    let most = u64::from(MAX_DELAY_MS);
    assert_eq!(send_delay(Some(most)).unwrap(), Duration::from_millis(most));
    assert!(send_delay(Some(most + 1)).is_err());
    assert!(send_delay(Some(u64::MAX)).is_err());
}

/// A read that does not answer is 503 after [`READ_TIMEOUT`], naming the
/// backend it waited for; one that answers in time is its answer.
#[tokio::test(start_paused = true)]
async fn a_read_is_bounded_and_its_timeout_names_the_backend() {
    for (backend, name) in [(Backend::Queue, "queue"), (Backend::Bucket, "bucket")] {
        let never = std::future::pending::<Result<(), BrokerError>>();
        let e = read(backend, never).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("the {name} backend did not answer in 10 s")
        );
        assert_eq!(
            super::super::api_error(&e).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    let in_time = async {
        tokio::time::sleep(READ_TIMEOUT - Duration::from_millis(1)).await;
        Ok::<_, BrokerError>(7)
    };
    assert_eq!(read(Backend::Queue, in_time).await.unwrap(), 7);
}

/// A change is not cut at [`READ_TIMEOUT`], nor when the request that
/// made it goes away: it runs to its end, and answers what it did.
#[tokio::test(start_paused = true)]
async fn a_change_runs_to_its_end_past_the_read_bound_and_past_its_client() {
    let slow = async {
        tokio::time::sleep(READ_TIMEOUT * 3).await;
        Ok::<_, BrokerError>(42)
    };
    assert_eq!(change(slow).await.unwrap(), 42);

    let done = Arc::new(AtomicBool::new(false));
    let marks = done.clone();
    let client = tokio::spawn(change(async move {
        tokio::time::sleep(READ_TIMEOUT * 2).await;
        marks.store(true, Ordering::SeqCst);
        Ok::<_, BrokerError>(())
    }));
    tokio::time::sleep(Duration::from_secs(1)).await;
    client.abort();
    assert!(!done.load(Ordering::SeqCst));
    tokio::time::sleep(READ_TIMEOUT * 3).await;
    assert!(done.load(Ordering::SeqCst), "the change ran to its end");

    let refused = change(async { Err::<(), _>(BrokerError::NotFound("gone".into())) });
    let e = refused.await.unwrap_err();
    assert_eq!(super::super::api_error(&e).status(), StatusCode::NOT_FOUND);
}

fn names(keys: &[&str]) -> Vec<String> {
    keys.iter().map(|k| (*k).to_owned()).collect()
}

/// A delete counts the keys that existed, skips the missing ones, and the
/// bucket's other keys and the neighbour bucket's are kept.
#[tokio::test]
async fn a_delete_of_keys_counts_those_that_existed_and_keeps_the_rest() {
    let backends = Backends::memory();
    let kv = backends.kv.as_ref();
    for (bucket, key) in [
        ("shop/r", "a"),
        ("shop/r", "b"),
        ("shop/r", "kept"),
        ("shop/other", "a"),
    ] {
        kv.set(bucket, key, b"1".to_vec()).await.unwrap();
    }
    let done = delete_each(
        kv,
        "shop/r",
        &names(&["a", "missing", "b", "a"]),
        DELETE_KEYS_TIMEOUT,
    )
    .await;
    assert_eq!((done.deleted, done.tried), (2, 4));
    assert_eq!(done.answer(4).unwrap(), 2);
    assert!(!kv.exists("shop/r", "a").await.unwrap());
    assert!(!kv.exists("shop/r", "b").await.unwrap());
    assert!(kv.exists("shop/r", "kept").await.unwrap());
    assert!(kv.exists("shop/other", "a").await.unwrap());
}

/// Past the request's one bound no key is started, and the 503 says how
/// many were deleted: no key is deleted unreported.
#[tokio::test]
async fn a_delete_of_keys_past_its_bound_stops_and_says_what_it_did() {
    let backends = Backends::memory();
    let kv = backends.kv.as_ref();
    kv.set("shop/r", "a", b"1".to_vec()).await.unwrap();
    let done = delete_each(kv, "shop/r", &names(&["a"]), Duration::ZERO).await;
    assert_eq!((done.deleted, done.tried), (0, 0));
    let e = done.answer(1).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the bucket backend took over 10 s: deleted 0 of the 1 keys (the first 0 were tried); send the rest again"
    );
    assert_eq!(
        super::super::api_error(&e).status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert!(
        kv.exists("shop/r", "a").await.unwrap(),
        "nothing was deleted"
    );

    let failed = Deleted {
        deleted: 3,
        tried: 5,
        stopped: Some(Stopped::Failed(BrokerError::Unavailable(
            "NATS is down".into(),
        ))),
    };
    let e = failed.answer(9).unwrap_err().to_string();
    assert!(
        e.starts_with("deleted 3 of the 9 keys (the first 5 were tried), then: ")
            && e.contains("NATS is down"),
        "{e}"
    );
}
