//! The conformance cases about buckets' bounds: a time to live per bucket,
//! a full bucket's distinct error, and an operator's purge. They run in
//! real time like the rest of the suite (the NATS server expires entries by
//! its own clock), so they wait for expiry by polling, bounded by
//! `PATIENCE`; the memory and embedded backends' own tests drive the same
//! rules with a paused clock.

use super::{Backend, PATIENCE};
use crate::{BrokerError, BucketSettings, MAX_BUCKET_BYTES, MAX_VALUE_BYTES};
use std::time::Duration;

/// Polls until `key` reads as missing in every way a guest can look.
async fn wait_until_gone(backend: &dyn Backend, bucket: &str, key: &str) {
    let give_up = tokio::time::Instant::now() + PATIENCE;
    while backend.get(bucket, key).await.unwrap().is_some() {
        assert!(tokio::time::Instant::now() < give_up, "{key} never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!backend.exists(bucket, key).await.unwrap());
    let keys = backend.list_keys(bucket, None).await.unwrap().keys;
    assert!(!keys.iter().any(|k| k == key), "{keys:?}");
}

pub(crate) async fn a_bucket_entry_expires_after_its_ttl_and_a_rewrite_renews_it(
    backend: &dyn Backend,
    prefix: &str,
) {
    let b = format!("{prefix}ttl");
    let neighbour = format!("{prefix}kept");
    let ttl = Duration::from_secs(2);
    backend
        .configure_bucket(&b, BucketSettings { ttl: Some(ttl) })
        .await
        .unwrap();
    backend
        .configure_bucket(&neighbour, BucketSettings::default())
        .await
        .unwrap();
    let start = tokio::time::Instant::now();
    backend.set(&b, "once", b"1".to_vec()).await.unwrap();
    backend.set(&b, "renewed", b"1".to_vec()).await.unwrap();
    backend.set(&neighbour, "k", b"v".to_vec()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    backend.set(&b, "renewed", b"2".to_vec()).await.unwrap();
    // Past the first write's deadline, well before the rewrite's.
    tokio::time::sleep_until(start + ttl + Duration::from_millis(300)).await;
    assert_eq!(
        backend.get(&b, "renewed").await.unwrap(),
        Some(b"2".to_vec()),
        "a rewrite did not renew its entry"
    );
    wait_until_gone(backend, &b, "once").await;
    wait_until_gone(backend, &b, "renewed").await;
    // A bucket without a time to live keeps its entries.
    assert_eq!(
        backend.get(&neighbour, "k").await.unwrap(),
        Some(b"v".to_vec())
    );
    // Configuring again (as a host does at each start) is harmless, and an
    // entry written after that lives again.
    backend
        .configure_bucket(&b, BucketSettings { ttl: Some(ttl) })
        .await
        .unwrap();
    backend.set(&b, "once", b"3".to_vec()).await.unwrap();
    assert_eq!(backend.get(&b, "once").await.unwrap(), Some(b"3".to_vec()));
}

pub(crate) async fn a_full_bucket_answers_bucket_full_and_its_neighbour_takes_writes(
    backend: &dyn Backend,
    prefix: &str,
) {
    let b = format!("{prefix}full");
    let neighbour = format!("{prefix}next");
    let value = vec![7u8; MAX_VALUE_BYTES];
    let most = MAX_BUCKET_BYTES / MAX_VALUE_BYTES;
    let mut stored = 0;
    let refused = loop {
        assert!(stored <= most, "a bucket took more than its limit");
        match backend
            .set(&b, &format!("k{stored:03}"), value.clone())
            .await
        {
            Ok(()) => stored += 1,
            Err(e) => break e,
        }
    };
    assert!(
        matches!(refused, BrokerError::BucketFull(ref why) if !why.is_empty()),
        "{refused:?}"
    );
    // The limit bites near where it says (the NATS backend counts its own
    // headers too), not early.
    assert!(
        stored + 2 >= most,
        "refused after {stored} of {most} values"
    );
    // Still full for the next write, and what it held is intact.
    assert!(matches!(
        backend.set(&b, "more", value.clone()).await,
        Err(BrokerError::BucketFull(_))
    ));
    assert_eq!(backend.get(&b, "k000").await.unwrap(), Some(value.clone()));
    // The neighbour did not notice.
    backend.set(&neighbour, "k", value.clone()).await.unwrap();
    assert_eq!(
        backend.get(&neighbour, "k").await.unwrap(),
        Some(value.clone())
    );
    // Deleting makes room again.
    backend.delete(&b, "k000").await.unwrap();
    backend.delete(&b, "k001").await.unwrap();
    backend.set(&b, "after", value).await.unwrap();
    let purged = backend.purge_bucket(&b).await.unwrap();
    assert_eq!(purged, u64::try_from(stored - 1).unwrap());
}

pub(crate) async fn purge_bucket_empties_it_and_counts_its_entries(
    backend: &dyn Backend,
    prefix: &str,
) {
    let b = format!("{prefix}purged");
    let neighbour = format!("{prefix}untouched");
    for key in ["a", "b", "c"] {
        backend.set(&b, key, key.as_bytes().to_vec()).await.unwrap();
    }
    backend.set(&b, "gone", b"x".to_vec()).await.unwrap();
    backend.delete(&b, "gone").await.unwrap();
    backend
        .set(&neighbour, "a", b"kept".to_vec())
        .await
        .unwrap();
    assert_eq!(backend.purge_bucket(&b).await.unwrap(), 3);
    for key in ["a", "b", "c"] {
        assert_eq!(backend.get(&b, key).await.unwrap(), None);
        assert!(!backend.exists(&b, key).await.unwrap());
    }
    assert!(backend.list_keys(&b, None).await.unwrap().keys.is_empty());
    assert_eq!(backend.purge_bucket(&b).await.unwrap(), 0);
    assert_eq!(
        backend.get(&neighbour, "a").await.unwrap(),
        Some(b"kept".to_vec())
    );
    // An emptied bucket takes writes as before.
    backend.set(&b, "a", b"again".to_vec()).await.unwrap();
    assert_eq!(backend.get(&b, "a").await.unwrap(), Some(b"again".to_vec()));
    // A bucket never written is empty, not an error.
    assert_eq!(
        backend
            .purge_bucket(&format!("{prefix}never"))
            .await
            .unwrap(),
        0
    );
}
