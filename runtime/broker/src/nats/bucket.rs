//! Key-value buckets on JetStream: a bucket is a JetStream key-value bucket
//! (`weft_<bucket>`, history 1, 64 MiB, file storage); keys are escaped to
//! NATS's key alphabet ([`names`](super::escape)).
//!
//! A bucket's time to live is its stream's `max_age`: with history 1 a
//! rewrite replaces the entry's message, so an entry expires `ttl` after
//! its last write, and the server frees its bytes by itself. A changed
//! `max_age` applies to every entry stored, not only to later writes (as
//! the other backends do): a shortened one expires at once the entries now
//! past it, so that change is logged as a warning. A write the stream's
//! `max_bytes` refuses is [`BrokerError::BucketFull`].

use super::escape::{guest_key, kv_key, token};
use super::failure::{check_connected, lock, unavailable};
use super::open_kv::open_or_create_kv;
use crate::api::{BucketSettings, KeyPage, KvStore};
use crate::error::BrokerError;
use crate::limits::{KEY_PAGE, MAX_BUCKET_BYTES, MAX_VALUE_BYTES};
use async_nats::jetstream::{self, kv, stream::StorageType};
use async_trait::async_trait;
use futures::TryStreamExt;
use std::collections::HashMap;
use std::sync::Mutex;

/// The largest message a bucket's stream takes: the largest value
/// ([`MAX_VALUE_BYTES`]), with room for NATS's own headers.
const MAX_STORED_BYTES: usize = MAX_VALUE_BYTES + 4096;

/// A service's buckets on the server, each opened (or made) on first use.
pub(super) struct NatsBuckets {
    pub(super) client: async_nats::Client,
    pub(super) js: jetstream::Context,
    /// Copies the server keeps of each bucket.
    pub(super) replicas: usize,
    pub(super) buckets: Mutex<HashMap<String, kv::Store>>,
    /// Each configured bucket's settings, for the bucket's first open.
    pub(super) settings: Mutex<HashMap<String, BucketSettings>>,
}

impl NatsBuckets {
    /// The key-value bucket `name`, created on first use.
    async fn bucket(&self, name: &str) -> Result<kv::Store, BrokerError> {
        check_connected(&self.client)?;
        if let Some(store) = lock(&self.buckets).get(name) {
            return Ok(store.clone());
        }
        let bucket = format!("weft_{}", token(name));
        let ttl = lock(&self.settings)
            .get(name)
            .and_then(|s| s.ttl)
            .unwrap_or_default();
        let config = kv::Config {
            bucket,
            history: 1,
            // The same bound as the other backends'.
            max_bytes: i64::try_from(MAX_BUCKET_BYTES).unwrap_or(i64::MAX),
            max_value_size: i32::try_from(MAX_STORED_BYTES).unwrap_or(i32::MAX),
            storage: StorageType::File,
            num_replicas: self.replicas,
            max_age: ttl,
            ..kv::Config::default()
        };
        // Made by another host meanwhile, the bucket is opened as it is.
        let store = open_or_create_kv(&self.js, config)
            .await
            .map_err(|e| unavailable("open a bucket", &e))?;
        lock(&self.buckets).insert(name.to_owned(), store.clone());
        Ok(store)
    }
}

#[async_trait]
impl KvStore for NatsBuckets {
    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, BrokerError> {
        let store = self.bucket(bucket).await?;
        let value = store
            .get(kv_key(key))
            .await
            .map_err(|e| unavailable("read a bucket", &e))?;
        Ok(value.map(|v| v.to_vec()))
    }

    async fn set(&self, bucket: &str, key: &str, value: Vec<u8>) -> Result<(), BrokerError> {
        let store = self.bucket(bucket).await?;
        match store.put(kv_key(key), value.into()).await {
            Ok(_) => Ok(()),
            // The server's words for a stream at its `max_bytes` (error 10047
            // when it is the account's storage instead, which is not the guest's).
            Err(e) if e.to_string().contains("maximum bytes") => Err(BrokerError::BucketFull(
                format!("the bucket holds its limit of {MAX_BUCKET_BYTES} bytes"),
            )),
            Err(e) => Err(unavailable("write a bucket", &e)),
        }
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), BrokerError> {
        let store = self.bucket(bucket).await?;
        store
            .purge(kv_key(key))
            .await
            .map_err(|e| unavailable("write a bucket", &e))
    }

    async fn exists(&self, bucket: &str, key: &str) -> Result<bool, BrokerError> {
        Ok(self.get(bucket, key).await?.is_some())
    }

    async fn list_keys(&self, bucket: &str, cursor: Option<u64>) -> Result<KeyPage, BrokerError> {
        let start = usize::try_from(cursor.unwrap_or(0))
            .map_err(|_| BrokerError::Invalid("cursor out of range".into()))?;
        let store = self.bucket(bucket).await?;
        let keys = store
            .keys()
            .await
            .map_err(|e| unavailable("list a bucket", &e))?;
        let mut all: Vec<String> = keys
            .try_collect::<Vec<String>>()
            .await
            .map_err(|e| unavailable("list a bucket", &e))?
            .iter()
            .filter_map(|k| guest_key(k))
            .collect();
        // NATS lists keys in no particular order; pages need one.
        all.sort();
        let keys: Vec<String> = all.iter().skip(start).take(KEY_PAGE).cloned().collect();
        let end = start + keys.len();
        Ok(KeyPage {
            keys,
            cursor: (end < all.len()).then(|| u64::try_from(end).ok()).flatten(),
        })
    }

    async fn configure_bucket(
        &self,
        bucket: &str,
        settings: BucketSettings,
    ) -> Result<(), BrokerError> {
        lock(&self.settings).insert(bucket.to_owned(), settings);
        // Opened (or made) with the settings, then brought to them if it
        // was made before with others (by an earlier manifest, or another host).
        lock(&self.buckets).remove(bucket);
        let store = self.bucket(bucket).await?;
        let ttl = settings.ttl.unwrap_or_default();
        let mut stream = self
            .js
            .get_stream(&store.stream_name)
            .await
            .map_err(|e| unavailable("configure a bucket", &e))?;
        let info = stream
            .info()
            .await
            .map_err(|e| unavailable("configure a bucket", &e))?;
        if info.config.max_age != ttl {
            let mut config = info.config.clone();
            config.max_age = ttl;
            // The server refuses a duplicate window longer than the max age
            // (a bucket writes no message ids, so the window is unused).
            if !ttl.is_zero() && config.duplicate_window > ttl {
                config.duplicate_window = ttl;
            }
            self.js
                .update_stream(config)
                .await
                .map_err(|e| unavailable("configure a bucket", &e))?;
            let old = info.config.max_age;
            // Zero is no time to live: any TTL shortens it.
            if !ttl.is_zero() && (old.is_zero() || ttl < old) {
                tracing::warn!(
                    bucket,
                    ttl_ms = ttl.as_millis(),
                    old_ttl_ms = old.as_millis(),
                    "queues: NATS: bucket's time to live shortened; it applies to every stored entry, so those written longer ago than it expire now"
                );
            } else {
                tracing::info!(
                    bucket,
                    ttl_ms = ttl.as_millis(),
                    "queues: NATS: bucket's time to live changed"
                );
            }
        }
        Ok(())
    }

    async fn purge_bucket(&self, bucket: &str) -> Result<u64, BrokerError> {
        let store = self.bucket(bucket).await?;
        // The stream also holds delete markers, so the entries are counted
        // by their keys, then the stream emptied (markers too).
        let keys = store
            .keys()
            .await
            .map_err(|e| unavailable("list a bucket", &e))?;
        let count = keys
            .try_collect::<Vec<String>>()
            .await
            .map_err(|e| unavailable("list a bucket", &e))?
            .iter()
            .filter(|k| guest_key(k).is_some())
            .count();
        store
            .stream
            .purge()
            .await
            .map_err(|e| unavailable("purge a bucket", &e))?;
        Ok(u64::try_from(count).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_message_fits_in_a_value() {
        const { assert!(crate::MAX_MESSAGE_BYTES < MAX_STORED_BYTES) };
    }

    /// A bucket made before with another time to live (an earlier
    /// manifest's, or none) is brought to the new one, and back.
    #[tokio::test]
    async fn configuring_a_bucket_made_with_another_ttl_updates_its_stream() {
        use crate::{BackendKind, NatsBroker, QueuesConfig};
        let config = QueuesConfig {
            backend: Some(BackendKind::Nats),
            url: Some(super::super::test_url()),
            connect_timeout_secs: 5,
            ..QueuesConfig::default()
        };
        let broker = NatsBroker::connect(&config)
            .await
            .unwrap_or_else(|e| panic!("{e}: this test needs a NATS server (see .ci/run)"));
        let bucket = format!("ttl-update-{:x}", rand::random::<u64>());
        broker.set(&bucket, "k", b"v".to_vec()).await.unwrap();
        let max_age = || async {
            let client = async_nats::connect(super::super::test_url()).await.unwrap();
            let mut stream = jetstream::new(client)
                .get_stream(format!("KV_weft_{}", token(&bucket)))
                .await
                .unwrap();
            stream.info().await.unwrap().config.max_age
        };
        assert_eq!(max_age().await, std::time::Duration::ZERO);
        let ttl = std::time::Duration::from_secs(1);
        broker
            .configure_bucket(&bucket, BucketSettings { ttl: Some(ttl) })
            .await
            .unwrap();
        assert_eq!(max_age().await, ttl);
        // The server applies it to what the bucket already holds.
        let give_up = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while broker.get(&bucket, "k").await.unwrap().is_some() {
            assert!(std::time::Instant::now() < give_up, "never expired");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        broker
            .configure_bucket(&bucket, BucketSettings::default())
            .await
            .unwrap();
        assert_eq!(max_age().await, std::time::Duration::ZERO);
        broker.set(&bucket, "k", b"kept".to_vec()).await.unwrap();
        assert_eq!(broker.purge_bucket(&bucket).await.unwrap(), 1);
    }
}
