//! Key-value buckets on JetStream: a bucket is a JetStream key-value bucket
//! (`weft_<bucket>`, history 1, 64 MiB, file storage); keys are escaped to
//! NATS's key alphabet ([`names`](super::escape)).

use super::escape::{guest_key, kv_key, token};
use super::failure::{check_connected, lock, unavailable};
use super::open_kv::open_or_create_kv;
use crate::api::{KeyPage, KvStore};
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
}

impl NatsBuckets {
    /// The key-value bucket `name`, created on first use.
    async fn bucket(&self, name: &str) -> Result<kv::Store, BrokerError> {
        check_connected(&self.client)?;
        if let Some(store) = lock(&self.buckets).get(name) {
            return Ok(store.clone());
        }
        let bucket = format!("weft_{}", token(name));
        let config = kv::Config {
            bucket,
            history: 1,
            // The same bound as the other backends'.
            max_bytes: i64::try_from(MAX_BUCKET_BYTES).unwrap_or(i64::MAX),
            max_value_size: i32::try_from(MAX_STORED_BYTES).unwrap_or(i32::MAX),
            storage: StorageType::File,
            num_replicas: self.replicas,
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
            Err(e) if e.to_string().contains("maximum bytes") => Err(BrokerError::Unavailable(
                format!("bucket is full (the limit is {MAX_BUCKET_BYTES} bytes)"),
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_message_fits_in_a_value() {
        const { assert!(crate::MAX_MESSAGE_BYTES < MAX_STORED_BYTES) };
    }
}
