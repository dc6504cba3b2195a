//! The in-process backend's key-value buckets: entries in memory, each
//! with its deadline, swept as [`expiry`](crate::expiry) says.
//! [`MemoryBroker`](super::MemoryBroker)'s `KvStore` methods call
//! [`Buckets`] with the time of the broker's clock; it does not name the
//! broker, so the two modules do not import each other.

use crate::api::{BucketSettings, KeyPage};
use crate::error::BrokerError;
use crate::expiry::{Expiry, MAX_SWEEP, expired};
use crate::limits::{KEY_PAGE, MAX_BUCKET_BYTES};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};

#[derive(Debug, Default)]
struct Bucket {
    entries: BTreeMap<String, Entry>,
    /// Keys and values held, expired entries not yet swept included.
    bytes: usize,
    /// The entries that expire, by deadline: what a sweep walks.
    deadlines: BTreeSet<(u64, String)>,
}

#[derive(Debug)]
struct Entry {
    value: Vec<u8>,
    /// When it expires (epoch milliseconds); `None`: never.
    deadline: Option<u64>,
}

impl Bucket {
    /// The value under `key` unless it has expired at `now_ms`.
    fn live(&self, key: &str, now_ms: u64) -> Option<&Vec<u8>> {
        self.entries
            .get(key)
            .filter(|e| !expired(e.deadline, now_ms))
            .map(|e| &e.value)
    }

    fn remove(&mut self, key: &str) -> Option<Entry> {
        let old = self.entries.remove(key)?;
        self.bytes -= key.len() + old.value.len();
        if let Some(at) = old.deadline {
            self.deadlines.remove(&(at, key.to_owned()));
        }
        Some(old)
    }

    /// Frees up to `max` entries expired at `now_ms`, earliest first;
    /// returns how many it freed.
    fn sweep(&mut self, now_ms: u64, max: usize) -> usize {
        let mut swept = 0;
        while swept < max
            && let Some((at, key)) = self.deadlines.first().cloned()
            && at <= now_ms
        {
            self.remove(&key);
            swept += 1;
        }
        swept
    }
}

/// The buckets of a broker in memory, with their settings.
#[derive(Debug, Default)]
pub(super) struct Buckets {
    buckets: Mutex<HashMap<String, Bucket>>,
    expiry: Expiry,
}

/// What [`KvStore`](crate::KvStore) does, at `now` (epoch milliseconds,
/// from the broker's clock).
impl Buckets {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Bucket>> {
        self.buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn get(&self, bucket: &str, key: &str, now: u64) -> Option<Vec<u8>> {
        self.lock()
            .get(bucket)
            .and_then(|b| b.live(key, now).cloned())
    }

    pub(super) fn set(
        &self,
        bucket: &str,
        key: &str,
        value: Vec<u8>,
        now: u64,
    ) -> Result<(), BrokerError> {
        let deadline = self.expiry.deadline(bucket, now);
        let mut buckets = self.lock();
        if self.expiry.sweep_due(now) {
            // Under the lock every bucket waits on: at most MAX_SWEEP
            // entries, the rest at the next write.
            let mut left = MAX_SWEEP;
            for b in buckets.values_mut() {
                left -= b.sweep(now, left);
                if left == 0 {
                    self.expiry.sweep_soon();
                    break;
                }
            }
        }
        let b = buckets.entry(bucket.to_owned()).or_default();
        let after = |b: &Bucket| {
            let replaced = b
                .entries
                .get(key)
                .map_or(0, |old| key.len() + old.value.len());
            b.bytes - replaced + key.len() + value.len()
        };
        if after(b) > MAX_BUCKET_BYTES {
            // Expired entries never make a bucket refuse a write: all of
            // this bucket's go (as many as its bytes limit lets it hold).
            b.sweep(now, usize::MAX);
            if after(b) > MAX_BUCKET_BYTES {
                return Err(BrokerError::BucketFull(format!(
                    "the bucket holds {} bytes; the limit is {MAX_BUCKET_BYTES}",
                    b.bytes
                )));
            }
        }
        b.remove(key);
        b.bytes += key.len() + value.len();
        if let Some(at) = deadline {
            b.deadlines.insert((at, key.to_owned()));
        }
        b.entries.insert(key.to_owned(), Entry { value, deadline });
        Ok(())
    }

    pub(super) fn delete(&self, bucket: &str, key: &str) {
        if let Some(b) = self.lock().get_mut(bucket) {
            b.remove(key);
        }
    }

    pub(super) fn exists(&self, bucket: &str, key: &str, now: u64) -> bool {
        self.lock()
            .get(bucket)
            .is_some_and(|b| b.live(key, now).is_some())
    }

    pub(super) fn list_keys(
        &self,
        bucket: &str,
        cursor: Option<u64>,
        now: u64,
    ) -> Result<KeyPage, BrokerError> {
        let start = usize::try_from(cursor.unwrap_or(0))
            .map_err(|_| BrokerError::Invalid("cursor out of range".into()))?;
        let buckets = self.lock();
        let Some(b) = buckets.get(bucket) else {
            return Ok(KeyPage::default());
        };
        let mut live = b
            .entries
            .iter()
            .filter(|(_, e)| !expired(e.deadline, now))
            .map(|(k, _)| k)
            .skip(start);
        let keys: Vec<String> = live.by_ref().take(KEY_PAGE).cloned().collect();
        let end = start + keys.len();
        let cursor = if live.next().is_some() {
            u64::try_from(end).ok()
        } else {
            None
        };
        Ok(KeyPage { keys, cursor })
    }

    pub(super) fn configure(&self, bucket: &str, settings: BucketSettings) {
        self.expiry.configure(bucket, settings);
    }

    pub(super) fn purge(&self, bucket: &str, now: u64) -> u64 {
        let Some(b) = self.lock().remove(bucket) else {
            return 0;
        };
        let live = b
            .entries
            .values()
            .filter(|e| !expired(e.deadline, now))
            .count();
        u64::try_from(live).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryBroker;
    use crate::api::KvStore;
    use std::time::Duration;

    #[tokio::test]
    async fn a_full_bucket_refuses_writes_and_counts_replacements() {
        let broker = MemoryBroker::default();
        let half = vec![0; MAX_BUCKET_BYTES / 2];
        broker.set("b", "a", half.clone()).await.unwrap();
        // Replacing a value does not count it twice.
        broker.set("b", "a", half.clone()).await.unwrap();
        assert!(matches!(
            broker.set("b", "b", half.clone()).await,
            Err(BrokerError::BucketFull(_))
        ));
        broker.delete("b", "a").await.unwrap();
        broker.set("b", "b", half).await.unwrap();
    }

    /// Expiry by the paused clock: an entry is gone at its deadline, not
    /// before; a full bucket of expired entries takes a write; a periodic
    /// sweep frees an idle bucket's expired bytes at another bucket's write.
    #[tokio::test(start_paused = true)]
    async fn expired_entries_read_as_missing_and_free_their_room() {
        let broker = MemoryBroker::default();
        let ttl = Duration::from_secs(60);
        let settings = BucketSettings { ttl: Some(ttl) };
        broker.configure_bucket("b", settings).await.unwrap();
        let value = vec![0; crate::MAX_VALUE_BYTES];
        let mut stored = 0;
        while broker
            .set("b", &format!("k{stored:03}"), value.clone())
            .await
            .is_ok()
        {
            stored += 1;
        }
        assert_eq!(stored, MAX_BUCKET_BYTES / value.len() - 1);
        broker.set("kept", "k", b"v".to_vec()).await.unwrap();
        tokio::time::advance(ttl - Duration::from_millis(1)).await;
        assert!(broker.exists("b", "k000").await.unwrap());
        assert!(matches!(
            broker.set("b", "new", value.clone()).await,
            Err(BrokerError::BucketFull(_))
        ));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(broker.get("b", "k000").await.unwrap(), None);
        assert!(!broker.exists("b", "k001").await.unwrap());
        assert_eq!(
            broker.list_keys("b", None).await.unwrap(),
            KeyPage::default()
        );
        // Swept to make room: the bucket holds only the new entry.
        broker.set("b", "new", value.clone()).await.unwrap();
        assert_eq!(broker.kv.lock()["b"].bytes, 3 + value.len());
        assert_eq!(broker.get("kept", "k").await.unwrap(), Some(b"v".to_vec()));
        // Left idle past its deadline, "b" is swept by a write elsewhere.
        tokio::time::advance(ttl + crate::expiry::SWEEP_EVERY).await;
        broker.set("kept", "k2", b"v".to_vec()).await.unwrap();
        assert_eq!(broker.kv.lock()["b"].bytes, 0);
        assert_eq!(broker.purge_bucket("b").await.unwrap(), 0);
        assert_eq!(broker.purge_bucket("kept").await.unwrap(), 2);
    }

    /// A periodic sweep frees at most MAX_SWEEP entries under the lock,
    /// and leaves the next one due at once for the rest.
    #[tokio::test(start_paused = true)]
    async fn a_periodic_sweep_stops_at_its_cap_and_the_next_write_sweeps_the_rest() {
        let broker = MemoryBroker::default();
        let ttl = Duration::from_secs(1);
        let settings = BucketSettings { ttl: Some(ttl) };
        broker.configure_bucket("b", settings).await.unwrap();
        for i in 0..MAX_SWEEP + 10 {
            broker.set("b", &format!("k{i:05}"), vec![1]).await.unwrap();
        }
        broker.set("kept", "k", vec![1]).await.unwrap();
        tokio::time::advance(ttl + crate::expiry::SWEEP_EVERY).await;
        broker.set("kept", "k1", vec![1]).await.unwrap();
        assert_eq!(broker.kv.lock()["b"].entries.len(), 10);
        broker.set("kept", "k2", vec![1]).await.unwrap();
        assert_eq!(broker.kv.lock()["b"].entries.len(), 0);
        assert_eq!(broker.kv.lock()["b"].bytes, 0);
        assert_eq!(broker.kv.lock()["kept"].entries.len(), 3);
        // Nothing left to sweep: the one after that waits its period again.
        assert!(!broker.kv.expiry.sweep_due(broker.queues.now_ms()));
    }

    #[tokio::test]
    async fn kv_pages_through_keys() {
        let broker = MemoryBroker::default();
        for i in 0..2500 {
            broker.set("b", &format!("k{i:05}"), vec![1]).await.unwrap();
        }
        let mut all = Vec::new();
        let mut cursor = None;
        loop {
            let page = broker.list_keys("b", cursor).await.unwrap();
            all.extend(page.keys);
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(all.len(), 2500);
        assert!(all.windows(2).all(|w| w[0] < w[1]));
        broker.delete("b", "k00000").await.unwrap();
        assert!(!broker.exists("b", "k00000").await.unwrap());
        assert_eq!(broker.get("b", "k00001").await.unwrap(), Some(vec![1]));
        assert_eq!(broker.get("other", "k").await.unwrap(), None);
    }
}
