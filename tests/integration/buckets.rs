//! Buckets that do not fill up for good, through the real `weft` binary and
//! a real guest (the probe): a guest that fills a bucket gets the distinct
//! full-bucket error (the SDK's `kv::Error::BucketFull`, which the probe
//! answers 507) while its other buckets and another role's keep working;
//! and a `[buckets.NAME] ttl-seconds` table makes what a guest wrote expire.

use crate::support::{Weft, http, up};
use std::time::Duration;
use weft_test_artifacts::PROBE;

/// A service of two probe roles: `web` granted `big` (no table), `small`
/// and `brief` (a 1 s time to live), `other` granted `other`. The web
/// role's key-value bytes are not rate-limited, so filling 64 MiB takes
/// one request.
fn start() -> (tempfile::TempDir, Weft) {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("weft.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"[service]
name = "buckets"

[roles.web]
kind = "web"
component = {PROBE:?}
listen = "127.0.0.1:0"
buckets = ["big", "small", "brief"]
[roles.web.limits]
deadline-ms = 60000
[roles.web.rate-limits]
kv.bytes = {{ size = 0, refill-ms = 1000 }}

[roles.other]
kind = "web"
component = {PROBE:?}
listen = "127.0.0.1:0"
buckets = ["other"]

[buckets.brief]
ttl-seconds = 1
"#
        ),
    )
    .unwrap();
    let weft = up(&manifest);
    (dir, weft)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_filling_a_bucket_gets_bucket_full_and_its_neighbours_keep_working() {
    let (_dir, weft) = start();
    let web = weft.url("web");
    // 1 MiB values until one is refused: 63 fit under 64 MiB with their keys.
    let fill = http("POST", &format!("{web}/kv-fill/big/k?kib=1024&n=100"), "")
        .await
        .unwrap();
    assert_eq!(fill.status, 507, "{}", fill.body);
    assert!(
        fill.body
            .starts_with("stored=63 error: key-value bucket full: ")
            && fill.body.contains("67108864"),
        "{}",
        fill.body
    );
    // Still full for the next value of that size; what it holds is intact.
    let again = http("POST", &format!("{web}/kv-fill/big/more?kib=1024&n=1"), "")
        .await
        .unwrap();
    assert_eq!(again.status, 507, "{}", again.body);
    assert!(
        again
            .body
            .starts_with("stored=0 error: key-value bucket full")
    );
    let first = http("GET", &format!("{web}/kv/big/k0"), "").await.unwrap();
    assert_eq!((first.status, first.body.len()), (200, 1024 * 1024));
    // The same role's other bucket, and another role's, take writes.
    for (url, bucket) in [(&web, "small"), (&weft.url("other"), "other")] {
        let put = http("PUT", &format!("{url}/kv/{bucket}/k"), "fine")
            .await
            .unwrap();
        assert_eq!(put.status, 204, "{bucket}: {}", put.body);
        let got = http("GET", &format!("{url}/kv/{bucket}/k"), "")
            .await
            .unwrap();
        assert_eq!((got.status, got.body.as_str()), (200, "fine"), "{bucket}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_in_a_bucket_with_a_ttl_is_gone_after_it() {
    let (_dir, weft) = start();
    let web = weft.url("web");
    for bucket in ["brief", "small"] {
        let put = http("PUT", &format!("{web}/kv/{bucket}/k"), "v")
            .await
            .unwrap();
        assert_eq!(put.status, 204, "{bucket}: {}", put.body);
    }
    let got = http("GET", &format!("{web}/kv/brief/k"), "").await.unwrap();
    assert_eq!((got.status, got.body.as_str()), (200, "v"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let gone = http("GET", &format!("{web}/kv/brief/k"), "").await.unwrap();
    assert_eq!(gone.status, 404, "{}", gone.body);
    // A bucket without a table keeps its entries.
    let kept = http("GET", &format!("{web}/kv/small/k"), "").await.unwrap();
    assert_eq!((kept.status, kept.body.as_str()), (200, "v"));
}
