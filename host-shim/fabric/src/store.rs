//! [`FabricStore`]: the connection to the fabric's JetStream (with the
//! user's credentials and TLS, retried with backoff at start), its two KV
//! buckets and its object store, and typed reads and compare-and-set
//! writes of the records in [`crate::model`].
//!
//! Every invariant of the fabric is built from single-key compare-and-set
//! (a write that names the revision it replaces) and the total order of a
//! bucket's stream: the server 2.9 in Debian has neither multi-key
//! transactions nor per-key TTLs, and the fabric needs neither.

use crate::error::{FabricError, one_line};
use crate::names::{BEATS_BUCKET, BLOBS_BUCKET, STATE_BUCKET};
use async_nats::jetstream::{self, kv, object_store};
use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use weft_broker::open_or_create_kv;

/// The first delay between connection attempts at start.
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// The longest delay between connection attempts at start.
const LONGEST_RETRY: Duration = Duration::from_secs(5);
/// The largest record: an assignment of 10,000 instances is about 200 KB.
const MAX_VALUE_BYTES: i32 = 1024 * 1024;
/// Revisions kept per key in the state bucket (for `weft fabric` history
/// and to read what a leader replaced).
const STATE_HISTORY: i64 = 8;
/// How long a silent host's last beat stays (the beats bucket's age
/// limit; a down host is still listed from its `host.<id>` record).
const BEATS_MAX_AGE: Duration = Duration::from_secs(60 * 60);
/// The longest a read of a key list or a key's history may take: both are
/// ordered consumers that end only when the server says nothing is pending,
/// and one that never says so would hang its caller (the leader's round).
const STREAM_READ_LIMIT: Duration = Duration::from_secs(10);

/// How to reach the fabric.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// The NATS server's URL (`nats://` or `tls://`).
    pub url: String,
    /// A NATS credentials file (`--fabric-creds`); never logged.
    pub creds: Option<PathBuf>,
    /// A CA certificate (PEM) the server's TLS certificate must chain to
    /// (`--fabric-tls-ca`); TLS is then required.
    pub tls_ca: Option<PathBuf>,
    /// How long to keep retrying a server that does not answer at start.
    pub timeout: Duration,
    /// Copies the server keeps of the fabric's buckets (1 for one server,
    /// 3 for a cluster).
    pub replicas: usize,
}

impl ConnectOptions {
    /// Options for `url` with no credentials, a 30 s connect timeout and one replica.
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            creds: None,
            tls_ca: None,
            timeout: Duration::from_secs(30),
            replicas: 1,
        }
    }
}

/// `url` with any password or token replaced by `***`, for messages and
/// logs (the broker's redaction, so both speak of a server alike).
pub use weft_broker::redact_url as shown_url;

/// A KV bucket of the fabric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// [`STATE_BUCKET`]: leader, members, desired state, placement.
    State,
    /// [`BEATS_BUCKET`]: heartbeats.
    Beats,
}

/// A record and the revision it was read at (the one a compare-and-set
/// names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    /// The record.
    pub value: T,
    /// Its KV revision.
    pub revision: u64,
}

/// The fabric's JetStream.
#[derive(Clone)]
pub struct FabricStore {
    client: async_nats::Client,
    state: kv::Store,
    beats: kv::Store,
    blobs: object_store::ObjectStore,
    url: String,
}

impl FabricStore {
    /// Connects (retrying with backoff, each failure logged, until
    /// `options.timeout`), then opens or creates the fabric's buckets.
    pub async fn connect(options: &ConnectOptions) -> Result<Self, FabricError> {
        let url = shown_url(&options.url);
        let started = Instant::now();
        let mut delay = FIRST_RETRY;
        let mut attempts = 0u32;
        let client = loop {
            attempts = attempts.saturating_add(1);
            let mut connect = async_nats::ConnectOptions::new()
                .name("weft-fabric")
                .connection_timeout(Duration::from_secs(2))
                .max_reconnects(None);
            if let Some(creds) = &options.creds {
                // The error's kind only: its text may quote the file.
                connect = connect.credentials_file(creds).await.map_err(|e| {
                    FabricError::Credentials(format!(
                        "the fabric's credentials file (--fabric-creds) cannot be used: {}",
                        e.kind()
                    ))
                })?;
            }
            if let Some(ca) = &options.tls_ca {
                if !ca.is_file() {
                    return Err(FabricError::Credentials(
                        "the fabric's TLS CA file (--fabric-tls-ca) cannot be read".into(),
                    ));
                }
                connect = connect.add_root_certificates(ca.clone()).require_tls(true);
            }
            match async_nats::connect_with_options(options.url.as_str(), connect).await {
                Ok(client) => break client,
                Err(e) => {
                    let reason = one_line(&e.to_string());
                    if started.elapsed() + delay > options.timeout {
                        return Err(FabricError::Unreachable {
                            url,
                            attempts,
                            secs: started.elapsed().as_secs(),
                            reason,
                        });
                    }
                    tracing::warn!(url = %url, %reason, retry_in_ms = delay.as_millis(), "cannot reach the fabric; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(LONGEST_RETRY);
                }
            }
        };
        let js = jetstream::new(client.clone());
        let buckets = |reason: String| FabricError::Buckets {
            url: url.clone(),
            reason: one_line(&reason),
        };
        let state = open_or_create_kv(
            &js,
            kv::Config {
                bucket: STATE_BUCKET.into(),
                description: "Weft fabric: leader, members, desired state, placement".into(),
                history: STATE_HISTORY,
                max_value_size: MAX_VALUE_BYTES,
                storage: jetstream::stream::StorageType::File,
                num_replicas: options.replicas,
                ..Default::default()
            },
        )
        .await
        .map_err(buckets)?;
        let beats = open_or_create_kv(
            &js,
            kv::Config {
                bucket: BEATS_BUCKET.into(),
                description: "Weft fabric: heartbeats".into(),
                history: 1,
                max_age: BEATS_MAX_AGE,
                max_value_size: MAX_VALUE_BYTES,
                storage: jetstream::stream::StorageType::Memory,
                num_replicas: options.replicas,
                ..Default::default()
            },
        )
        .await
        .map_err(buckets)?;
        let blobs = match js
            .create_object_store(object_store::Config {
                bucket: BLOBS_BUCKET.into(),
                description: Some("Weft fabric: components by digest".into()),
                storage: jetstream::stream::StorageType::File,
                num_replicas: options.replicas,
                ..Default::default()
            })
            .await
        {
            Ok(store) => store,
            Err(created) => js
                .get_object_store(BLOBS_BUCKET)
                .await
                .map_err(|_| buckets(created.to_string()))?,
        };
        Ok(Self {
            client,
            state,
            beats,
            blobs,
            url,
        })
    }

    /// The server's URL, without credentials.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The NATS connection.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The object store of components ([`crate::blobs`] reads and writes it).
    pub fn blob_store(&self) -> &object_store::ObjectStore {
        &self.blobs
    }

    fn kv(&self, bucket: Bucket) -> &kv::Store {
        match bucket {
            Bucket::State => &self.state,
            Bucket::Beats => &self.beats,
        }
    }

    /// The record at `key`, if any (a deleted key has none).
    pub async fn get<T: DeserializeOwned>(
        &self,
        bucket: Bucket,
        key: &str,
    ) -> Result<Option<Versioned<T>>, FabricError> {
        let entry = self
            .kv(bucket)
            .entry(key)
            .await
            .map_err(FabricError::store)?;
        match entry {
            Some(entry) if entry.operation == kv::Operation::Put => Ok(Some(Versioned {
                value: decode(key, &entry.value)?,
                revision: entry.revision,
            })),
            _ => Ok(None),
        }
    }

    /// The record `key` held at `revision` (an earlier one included, while
    /// the bucket keeps it: the state bucket keeps 8 per key); `None` if
    /// that revision is gone, was a delete, or belongs to another key.
    pub async fn get_at<T: DeserializeOwned>(
        &self,
        bucket: Bucket,
        key: &str,
        revision: u64,
    ) -> Result<Option<Versioned<T>>, FabricError> {
        let entry = self
            .kv(bucket)
            .entry_for_revision(key, revision)
            .await
            .map_err(FabricError::store)?;
        match entry {
            Some(entry) if entry.operation == kv::Operation::Put => Ok(Some(Versioned {
                value: decode(key, &entry.value)?,
                revision: entry.revision,
            })),
            _ => Ok(None),
        }
    }

    /// The revision of `key`'s last change, a delete included (0: never
    /// written), for a compare-and-set that must not lose to a delete.
    pub async fn last_revision(&self, bucket: Bucket, key: &str) -> Result<u64, FabricError> {
        let entry = self
            .kv(bucket)
            .entry(key)
            .await
            .map_err(FabricError::store)?;
        Ok(entry.map_or(0, |entry| entry.revision))
    }

    /// The revision of `key`'s last change before revision `before` (a
    /// delete included; 0: none the bucket keeps), read from the key's
    /// history: what a signed write at `before` must say it replaced.
    pub async fn previous_revision(
        &self,
        bucket: Bucket,
        key: &str,
        before: u64,
    ) -> Result<u64, FabricError> {
        let read = async {
            let mut history = self
                .kv(bucket)
                .history(key)
                .await
                .map_err(FabricError::store)?;
            let mut previous = 0;
            while let Some(entry) = history.next().await {
                let entry = entry.map_err(FabricError::store)?;
                if entry.revision >= before {
                    break;
                }
                previous = entry.revision;
            }
            Ok(previous)
        };
        // A history that never ends must fail the read, not hang it.
        tokio::time::timeout(STREAM_READ_LIMIT, read)
            .await
            .unwrap_or_else(|_| Err(unfinished(&format!("the history of {key}"))))
    }

    /// Writes `value` at `key` unless the key holds a value:
    /// [`FabricError::Conflict`] if it does. Returns the new revision.
    pub async fn create<T: Serialize>(
        &self,
        bucket: Bucket,
        key: &str,
        value: &T,
    ) -> Result<u64, FabricError> {
        let bytes = encode(value)?;
        self.kv(bucket)
            .create(key, bytes)
            .await
            .map_err(|e| match e.kind() {
                kv::CreateErrorKind::AlreadyExists => {
                    FabricError::Conflict(format!("{key} exists already"))
                }
                _ => FabricError::store(e),
            })
    }

    /// Writes `value` at `key` if the key's last revision is still
    /// `revision`: [`FabricError::Conflict`] if someone wrote it since.
    pub async fn update<T: Serialize>(
        &self,
        bucket: Bucket,
        key: &str,
        value: &T,
        revision: u64,
    ) -> Result<u64, FabricError> {
        let bytes = encode(value)?;
        self.kv(bucket)
            .update(key, bytes, revision)
            .await
            .map_err(|e| match e.kind() {
                kv::UpdateErrorKind::WrongLastRevision => {
                    FabricError::Conflict(format!("{key} changed meanwhile"))
                }
                _ => FabricError::store(e),
            })
    }

    /// Writes `value` at `key` whatever it held (a host's own records).
    pub async fn put<T: Serialize>(
        &self,
        bucket: Bucket,
        key: &str,
        value: &T,
    ) -> Result<u64, FabricError> {
        let bytes = encode(value)?;
        self.kv(bucket)
            .put(key, bytes)
            .await
            .map_err(FabricError::store)
    }

    /// Deletes `key` if its last revision is still `revision`
    /// ([`FabricError::Conflict`] if not).
    pub async fn delete(
        &self,
        bucket: Bucket,
        key: &str,
        revision: u64,
    ) -> Result<(), FabricError> {
        self.kv(bucket)
            .delete_expect_revision(key, Some(revision))
            .await
            .map_err(|e| match e.kind() {
                kv::DeleteErrorKind::WrongLastRevision => {
                    FabricError::Conflict(format!("{key} changed meanwhile"))
                }
                _ => FabricError::store(e),
            })
    }

    /// Every record whose key starts with `prefix`, by the rest of the key.
    /// An entry that is not the record its key holds is logged and left out
    /// (whoever can write to the bucket could plant one; it must not stop
    /// the fabric from reading the rest).
    pub async fn list<T: DeserializeOwned>(
        &self,
        bucket: Bucket,
        prefix: &str,
    ) -> Result<BTreeMap<String, Versioned<T>>, FabricError> {
        let store = self.kv(bucket);
        let read = async {
            let mut keys = store.keys().await.map_err(FabricError::store)?;
            let mut wanted = Vec::new();
            while let Some(key) = keys.next().await {
                let key = key.map_err(FabricError::store)?;
                if key.starts_with(prefix) {
                    wanted.push(key);
                }
            }
            Ok::<_, FabricError>(wanted)
        };
        // A key list that never ends must fail the read, not hang it.
        let wanted = tokio::time::timeout(STREAM_READ_LIMIT, read)
            .await
            .unwrap_or_else(|_| Err(unfinished(&format!("the list of {prefix}* keys"))))?;
        let mut records = BTreeMap::new();
        for key in wanted {
            match self.get::<T>(bucket, &key).await {
                Ok(Some(record)) => {
                    records.insert(key[prefix.len()..].to_owned(), record);
                }
                Ok(None) => {}
                Err(FabricError::Malformed { key, reason }) => {
                    tracing::warn!(%key, %reason, "skipped a malformed entry in the fabric's store");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(records)
    }

    /// A stream that yields once for every change of any key in `bucket`,
    /// so a loop wakes at once instead of at its next tick. It ends if the server goes away; loops keep their tick.
    pub async fn changes(
        &self,
        bucket: Bucket,
    ) -> Result<impl futures::Stream<Item = ()> + Send + use<>, FabricError> {
        let watch = self
            .kv(bucket)
            .watch_all()
            .await
            .map_err(FabricError::store)?;
        Ok(watch.map(|_| ()))
    }
}

/// The error of a read of `what` that did not end within [`STREAM_READ_LIMIT`].
fn unfinished(what: &str) -> FabricError {
    FabricError::Store(format!(
        "reading {what} did not finish within {} s",
        STREAM_READ_LIMIT.as_secs()
    ))
}

fn encode<T: Serialize>(value: &T) -> Result<bytes::Bytes, FabricError> {
    serde_json::to_vec(value)
        .map(bytes::Bytes::from)
        .map_err(|e| FabricError::Store(format!("cannot encode a record: {e}")))
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, FabricError> {
    serde_json::from_slice(bytes).map_err(|e| FabricError::Malformed {
        key: key.to_owned(),
        reason: one_line(&e.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_credentials() {
        assert_eq!(shown_url("nats://u:p@h:4222"), "nats://u:***@h:4222");
        assert_eq!(shown_url("nats://h:4222"), "nats://h:4222");
    }
}
