//! Opening a JetStream key-value bucket, making it first if it is not
//! there, on every server this project supports: the client's own
//! `create_key_value` first reads the account's info, which it cannot parse
//! from a 2.9 server (the Debian package's words it without
//! `reserved_memory`), so the bucket's stream is made by hand, as that call
//! would make it, and the bucket opened over it. The broker's buckets
//! ([`super::bucket`]) and the fabric's state both open theirs here.

use async_nats::jetstream::{self, kv};

/// Most values a bucket may keep per key (the server's own bound).
const MAX_HISTORY: i64 = 64;

/// Opens bucket `config.bucket`, making its stream from `config` if it is
/// not there. One another process made meanwhile, or earlier with another
/// config, is opened as it is (its config is not changed). Mirrored and
/// sourced buckets are not made here. The error is one line, for the
/// caller to wrap.
pub async fn open_or_create_kv(
    js: &jetstream::Context,
    config: kv::Config,
) -> Result<kv::Store, String> {
    if config.mirror.is_some() || config.sources.is_some() {
        return Err(format!(
            "bucket {}: mirrored or sourced buckets are not made here",
            config.bucket
        ));
    }
    if config.history > MAX_HISTORY {
        return Err(format!(
            "bucket {}: a history of {} is over the server's {MAX_HISTORY}",
            config.bucket, config.history
        ));
    }
    let bucket = config.bucket.clone();
    let stream = jetstream::stream::Config {
        name: format!("KV_{bucket}"),
        description: (!config.description.is_empty()).then_some(config.description),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: config.history.max(1),
        max_bytes: config.max_bytes,
        max_age: config.max_age,
        max_message_size: config.max_value_size,
        storage: config.storage,
        republish: config.republish,
        allow_rollup: true,
        deny_delete: true,
        deny_purge: false,
        allow_direct: true,
        num_replicas: config.num_replicas.max(1),
        discard: jetstream::stream::DiscardPolicy::New,
        placement: config.placement,
        ..jetstream::stream::Config::default()
    };
    let created = js.get_or_create_stream(stream).await;
    js.get_key_value(bucket.as_str())
        .await
        .map_err(|opened| match created {
            // Why the stream could not be made says more than that the
            // bucket is not there.
            Err(created) => one_line(&created),
            Ok(_) => one_line(&opened),
        })
}

fn one_line(error: &dyn std::fmt::Display) -> String {
    error.to_string().replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made once, opened again as it is; its stream has the config's
    /// bounds. Fails, never skips, when no server runs (see `.ci/run`).
    #[tokio::test]
    async fn a_bucket_is_made_once_and_then_opened() {
        let url = super::super::test_url();
        let client = async_nats::connect(url.as_str())
            .await
            .unwrap_or_else(|e| panic!("{e}: this test needs a NATS server at {url}"));
        let js = jetstream::new(client);
        let bucket = format!("open_kv_test_{}", std::process::id());
        let config = || kv::Config {
            bucket: bucket.clone(),
            history: 3,
            max_bytes: 1024 * 1024,
            max_value_size: 4096,
            ..kv::Config::default()
        };
        let store = open_or_create_kv(&js, config()).await.unwrap();
        store.put("k", "one".into()).await.unwrap();
        let again = open_or_create_kv(&js, config()).await.unwrap();
        assert_eq!(again.get("k").await.unwrap().unwrap(), "one");
        let mut stream = js.get_stream(format!("KV_{bucket}")).await.unwrap();
        let info = stream.info().await.unwrap();
        assert_eq!(info.config.max_messages_per_subject, 3);
        assert_eq!(info.config.max_bytes, 1024 * 1024);
        assert_eq!(info.config.max_message_size, 4096);
        js.delete_stream(format!("KV_{bucket}")).await.unwrap();

        let too_long = kv::Config {
            history: 65,
            ..config()
        };
        let err = open_or_create_kv(&js, too_long).await.unwrap_err();
        assert!(err.contains("history of 65"), "{err}");
    }
}
