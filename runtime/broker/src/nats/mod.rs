//! The NATS JetStream backend: queues and buckets on a NATS server that
//! several hosts share, so a web role on one host enqueues and worker
//! instances on others drain.
//!
//! - A queue is a work-queue stream (`WEFT_<queue>`, file storage) with two
//!   subjects: `weft.q.<queue>` for visible messages, taken by one durable
//!   pull consumer (`weft`) that every host shares, and `weft.d.<queue>` for
//!   delayed ones (consumer `weft-delayed`). Limits are the stream's
//!   (`max_msgs`, discard new: a full queue refuses sends; delayed messages
//!   count too); dedupe ids are JetStream's `Nats-Msg-Id` within a 10-minute
//!   duplicate window, one window for the whole stream, so a delayed and an
//!   immediate send with the same dedupe id store one message.
//! - A receive is a pull: what is available at once, else a long poll for
//!   one message. The server's delivery count is the dequeue count; a message
//!   delivered `max-deliveries` times is copied to `<queue>-poison` (with its
//!   reason, deduped by its id) and then acknowledged, on its next delivery:
//!   the server's own `max_deliver` only stops delivering and leaves the
//!   message stranded in a work-queue stream, so Weft counts instead. A
//!   poison queue's stream has the queue limits too; while it is full (or
//!   the copy fails) the message is given back to its queue with a delay of
//!   [`POISON_RETRY`](crate::POISON_RETRY), and the rest of the
//!   batch is handed out.
//! - Leases: the consumer's ack wait (the `[queues] ack-wait-ms`) is how long
//!   a message stays hidden when the host holding it vanishes. While the
//!   host lives, [`leases`] keeps each lease to its own visibility timeout:
//!   it sends "in progress" to hold a message longer than the ack wait, and a
//!   negative acknowledgement to let it go when the lease lapses. Receipts
//!   are known only to the host that issued them, so a stale receipt, or one
//!   from another host, is refused.
//! - A delayed send goes to the delayed subject; a receive moves the
//!   messages that are due to the visible one (at most every 250 ms per
//!   queue and host), so delays are honoured to about a second while a
//!   receiver polls. A time to live is a header; an expired message is
//!   acknowledged instead of delivered.
//! - A bucket is a JetStream key-value bucket (`weft_<bucket>`, history 1,
//!   64 MiB, file storage); keys are escaped to NATS's key alphabet.
//!
//! When the server cannot be reached every call answers `unavailable`, and
//! the client reconnects by itself; guests keep running. See ARCHITECTURE.md
//! for what durability the server gives.

mod leases;
mod queue;

use super::config::QueuesConfig;
use super::{BrokerError, KeyPage, KvStore, QueueSettings};
use async_nats::jetstream::{self, kv, stream::StorageType};
use async_trait::async_trait;
use futures::TryStreamExt;
use leases::Leases;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How many keys one `list_keys` page holds.
const KEY_PAGE: usize = 1000;
/// The most bytes (keys and values) one bucket holds, as the other backends.
const MAX_BUCKET_BYTES: i64 = 64 * 1024 * 1024;
/// The largest value a bucket takes (the VMBus allows 1 MiB), with room for
/// NATS's own headers.
const MAX_VALUE_BYTES: i32 = 1024 * 1024 + 4096;

/// Why the backend could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NatsError {
    /// The server did not answer within the connect timeout.
    #[error(
        "queues: cannot reach the NATS server at {url} (tried {attempts} times over {secs} s): {reason}"
    )]
    Unreachable {
        /// The server's URL.
        url: String,
        /// Connection attempts made.
        attempts: u32,
        /// Seconds spent trying.
        secs: u64,
        /// The last attempt's error.
        reason: String,
    },
    /// The server answers but has no JetStream.
    #[error(
        "queues: the NATS server at {url} has no JetStream (start it with --jetstream): {reason}"
    )]
    NoJetStream {
        /// The server's URL.
        url: String,
        /// What it said.
        reason: String,
    },
}

/// Queues and buckets on a NATS JetStream server.
pub struct NatsBroker {
    client: async_nats::Client,
    js: jetstream::Context,
    settings: QueueSettings,
    ack_wait: Duration,
    replicas: usize,
    queues: Mutex<HashMap<String, Arc<queue::Handles>>>,
    buckets: Mutex<HashMap<String, kv::Store>>,
    leases: Arc<Leases>,
    keeper: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for NatsBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBroker").finish_non_exhaustive()
    }
}

impl Drop for NatsBroker {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

/// The first delay between connection attempts at start.
const FIRST_RETRY: Duration = Duration::from_millis(250);
/// The longest delay between connection attempts at start.
const LAST_RETRY: Duration = Duration::from_secs(5);

impl NatsBroker {
    /// Connects to the server `config` names, retrying with backoff (each
    /// failure logged) until `connect-timeout-secs` has passed. Must be
    /// called within a tokio runtime: it starts the lease keeper.
    pub async fn connect(config: &QueuesConfig) -> Result<Self, NatsError> {
        let url = config.nats_url().to_owned();
        // What logs and errors say: never the password or token.
        let shown = config.shown_url();
        let started = tokio::time::Instant::now();
        let budget = Duration::from_secs(config.connect_timeout_secs);
        let mut delay = FIRST_RETRY;
        let mut attempts = 0;
        let client = loop {
            attempts += 1;
            let options = async_nats::ConnectOptions::new()
                .connection_timeout(Duration::from_secs(2))
                .request_timeout(Some(Duration::from_secs(5)))
                .max_reconnects(None)
                .event_callback(|event| async move {
                    match event {
                        async_nats::Event::Disconnected => {
                            tracing::warn!("queues: lost the NATS server; VMBus queue calls answer unavailable until it is back");
                        }
                        async_nats::Event::Connected => {
                            tracing::info!("queues: connected to the NATS server");
                        }
                        other => tracing::debug!(event = %other, "queues: NATS event"),
                    }
                });
            match async_nats::connect_with_options(url.as_str(), options).await {
                Ok(client) => break client,
                Err(e) => {
                    let spent = started.elapsed();
                    if spent + delay > budget {
                        let reason = one_line(&e).replace(&url, &shown);
                        return Err(NatsError::Unreachable {
                            url: shown,
                            attempts,
                            secs: spent.as_secs(),
                            reason,
                        });
                    }
                    tracing::warn!(url = %shown, error = %one_line(&e).replace(&url, &shown), retry_in_ms = delay.as_millis(), "queues: cannot reach the NATS server; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(LAST_RETRY);
                }
            }
        };
        let js = jetstream::new(client.clone());
        // Asked by hand: the client's account-info type wants fields older
        // servers (the Debian package's 2.9) do not send.
        let info = client
            .request("$JS.API.INFO", bytes::Bytes::new())
            .await
            .map_err(|e| one_line(&e))
            .and_then(|reply| {
                let text = String::from_utf8_lossy(&reply.payload).into_owned();
                if text.contains("\"error\"") {
                    Err(text)
                } else {
                    Ok(())
                }
            });
        if let Err(reason) = info {
            let reason = reason.replace(&url, &shown);
            return Err(NatsError::NoJetStream { url: shown, reason });
        }
        let ack_wait = Duration::from_millis(config.ack_wait_ms);
        let leases = Arc::new(Leases::new(client.clone(), ack_wait));
        let keeper = tokio::spawn(leases.clone().keep());
        tracing::info!(url = %shown, "queues: using NATS JetStream");
        Ok(Self {
            client,
            js,
            settings: config.settings(),
            ack_wait,
            replicas: usize::from(config.replicas),
            queues: Mutex::default(),
            buckets: Mutex::default(),
            leases,
            keeper,
        })
    }

    /// Whether the client is connected now; calls made while it is not
    /// answer `unavailable` at once instead of waiting out a timeout.
    fn check_connected(&self) -> Result<(), BrokerError> {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            _ => Err(unreachable_now()),
        }
    }

    /// The key-value bucket `name`, created on first use.
    async fn bucket(&self, name: &str) -> Result<kv::Store, BrokerError> {
        self.check_connected()?;
        if let Some(store) = lock(&self.buckets).get(name) {
            return Ok(store.clone());
        }
        let bucket = format!("weft_{}", token(name));
        let store = match self.js.get_key_value(bucket.as_str()).await {
            Ok(store) => store,
            Err(_) => {
                // The bucket's stream is made by hand, as the client's
                // `create_key_value` would make it: that call first asks for
                // account details the Debian package's 2.9 server words
                // differently. A bucket another host made meanwhile is fine.
                let config = jetstream::stream::Config {
                    name: format!("KV_{bucket}"),
                    subjects: vec![format!("$KV.{bucket}.>")],
                    max_messages_per_subject: 1,
                    max_bytes: MAX_BUCKET_BYTES,
                    max_message_size: MAX_VALUE_BYTES,
                    storage: StorageType::File,
                    allow_rollup: true,
                    deny_delete: true,
                    allow_direct: true,
                    discard: jetstream::stream::DiscardPolicy::New,
                    num_replicas: self.replicas,
                    ..jetstream::stream::Config::default()
                };
                if let Err(e) = self.js.get_or_create_stream(config).await {
                    return Err(unavailable("open a bucket", &e));
                }
                self.js
                    .get_key_value(bucket.as_str())
                    .await
                    .map_err(|e| unavailable("open a bucket", &e))?
            }
        };
        lock(&self.buckets).insert(name.to_owned(), store.clone());
        Ok(store)
    }
}

/// The answer to any call while the server cannot be reached.
fn unreachable_now() -> BrokerError {
    BrokerError::Unavailable("the queue service cannot be reached now; retry later".into())
}

/// Logs a failed server call and answers `unavailable` without internals.
fn unavailable(what: &str, error: &dyn std::fmt::Display) -> BrokerError {
    tracing::warn!(error = %one_line(error), "queues: NATS: cannot {what}");
    BrokerError::Unavailable(format!("the queue service cannot {what} now; retry later"))
}

fn one_line(error: &dyn std::fmt::Display) -> String {
    error
        .to_string()
        .lines()
        .next()
        .unwrap_or("unknown error")
        .to_owned()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// A name in the alphabet NATS allows in stream names, subjects' tokens and
/// bucket names: letters, digits and `-` stay; every other byte becomes
/// `_xx` (its hex), so distinct names never meet.
pub(crate) fn token(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("_{b:02x}"));
        }
    }
    out
}

/// A guest's key as a NATS key: `k` (so it is never empty), then the key
/// with letters, digits, `-` and `/` kept and every other byte as `_xx`.
fn kv_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 1);
    out.push('k');
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'/' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("_{b:02x}"));
        }
    }
    out
}

/// The guest's key a NATS key stands for (`None`: not one of ours).
fn guest_key(key: &str) -> Option<String> {
    let rest = key.strip_prefix('k')?;
    let mut bytes = Vec::with_capacity(rest.len());
    let mut chars = rest.bytes();
    while let Some(b) = chars.next() {
        if b == b'_' {
            let hex = [chars.next()?, chars.next()?];
            bytes.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            bytes.push(b);
        }
    }
    String::from_utf8(bytes).ok()
}

#[async_trait]
impl KvStore for NatsBroker {
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

/// The NATS server the tests use: `WEFT_TEST_NATS_URL`, or the one `.ci/run`
/// starts on this machine's default port.
#[cfg(test)]
pub(crate) fn test_url() -> String {
    std::env::var("WEFT_TEST_NATS_URL").unwrap_or_else(|_| super::config::DEFAULT_NATS_URL.into())
}

#[cfg(test)]
mod conformance {
    use crate::conformance::{Backend, Guard, SETTINGS, conformance_tests};
    use crate::{BackendKind, QueuesConfig};
    use std::sync::Arc;

    /// A backend on the test server. These tests fail, never skip, when no
    /// server runs: start one with `nats-server --jetstream` (as `.ci/run` does).
    async fn nats() -> (Arc<dyn Backend>, Guard) {
        let config = QueuesConfig {
            backend: BackendKind::Nats,
            url: Some(super::test_url()),
            max_deliveries: SETTINGS.max_deliveries,
            max_messages: u32::try_from(SETTINGS.max_messages).unwrap_or(u32::MAX),
            connect_timeout_secs: 5,
            ..QueuesConfig::default()
        };
        let broker = super::NatsBroker::connect(&config)
            .await
            .unwrap_or_else(|e| {
                panic!("{e}: these tests need a NATS server with JetStream (see .ci/run)")
            });
        (Arc::new(broker), Box::new(()))
    }

    conformance_tests!(nats);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_keys_escape_reversibly() {
        assert_eq!(token("svc/jobs-poison"), "svc_2fjobs-poison");
        assert_ne!(token("a_/b"), token("a/_b"));
        for key in ["", "a.b", "seen/x y", "ünï", "_x_", "k", "a=b+c"] {
            let escaped = kv_key(key);
            assert!(
                escaped
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-/_".contains(&b)),
                "{escaped}"
            );
            assert_eq!(guest_key(&escaped).as_deref(), Some(key));
        }
        assert_eq!(guest_key("x"), None);
        assert_eq!(guest_key("k_4"), None);
        assert!(crate::MAX_MESSAGE_BYTES < usize::try_from(MAX_VALUE_BYTES).unwrap());
    }

    /// A server that cannot be reached is named without its password.
    #[tokio::test]
    async fn an_unreachable_server_is_named_without_its_credentials() {
        let config = QueuesConfig {
            backend: crate::BackendKind::Nats,
            url: Some("nats://weft:hunter2@127.0.0.1:1".into()),
            connect_timeout_secs: 0,
            ..QueuesConfig::default()
        };
        let error = NatsBroker::connect(&config)
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(
            error.contains("nats://weft:***@127.0.0.1:1") && !error.contains("hunter2"),
            "{error}"
        );
    }
}
