//! [`NatsBroker`]: connecting to the server (retried with backoff at
//! start, then reconnecting by itself), and the two traits, each served by
//! one half: [`NatsQueues`] (`queue.rs`) and [`NatsBuckets`] (`bucket.rs`).

use super::bucket::NatsBuckets;
use super::handles::QueueStreams;
use super::leases::Leases;
use super::queue::NatsQueues;
use crate::api::{
    BucketSettings, Delivery, KeyPage, KvStore, Peeked, QueueBroker, ReceiveRequest, SendOptions,
};
use crate::backend::QueuesConfig;
use crate::error::one_line;
use crate::error::{BrokerError, OpenErrorKind};
use async_nats::jetstream;
use async_trait::async_trait;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

impl NatsError {
    /// What the failure means for the caller: a server that cannot be
    /// reached, or has no JetStream, is unavailable (the manifest is fine;
    /// the server must come up).
    pub fn kind(&self) -> OpenErrorKind {
        match self {
            Self::Unreachable { .. } | Self::NoJetStream { .. } => OpenErrorKind::Unavailable,
        }
    }
}

/// Queues and buckets on a NATS JetStream server.
pub struct NatsBroker {
    pub(super) queues: NatsQueues,
    buckets: NatsBuckets,
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
    /// called within a tokio runtime: it starts the lease keeper. `config`
    /// must have passed [`QueuesConfig::validate`].
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
        let replicas = usize::from(config.replicas);
        Ok(Self {
            queues: NatsQueues(QueueStreams {
                client: client.clone(),
                js: js.clone(),
                settings: config.settings(),
                ack_wait,
                replicas,
                opened: Mutex::default(),
                leases,
            }),
            buckets: NatsBuckets {
                client,
                js,
                replicas,
                buckets: Mutex::default(),
                settings: Mutex::default(),
            },
            keeper,
        })
    }
}

// The two traits, each served by its half of the broker.

#[async_trait]
impl QueueBroker for NatsBroker {
    async fn send(
        &self,
        queue: &str,
        body: Vec<u8>,
        options: SendOptions,
    ) -> Result<String, BrokerError> {
        self.queues.send(queue, body, options).await
    }

    async fn receive(
        &self,
        queue: &str,
        request: ReceiveRequest,
    ) -> Result<Vec<Delivery>, BrokerError> {
        self.queues.receive(queue, request).await
    }

    async fn complete(&self, queue: &str, receipt: &str) -> Result<(), BrokerError> {
        self.queues.complete(queue, receipt).await
    }

    async fn abandon(
        &self,
        queue: &str,
        receipt: &str,
        delay: Duration,
    ) -> Result<(), BrokerError> {
        self.queues.abandon(queue, receipt, delay).await
    }

    async fn extend(
        &self,
        queue: &str,
        receipt: &str,
        visibility: Duration,
    ) -> Result<(), BrokerError> {
        self.queues.extend(queue, receipt, visibility).await
    }

    async fn len(&self, queue: &str) -> Result<usize, BrokerError> {
        self.queues.len(queue).await
    }

    async fn peek(&self, queue: &str, max: u32) -> Result<Vec<Peeked>, BrokerError> {
        self.queues.peek(queue, max).await
    }

    async fn purge(&self, queue: &str) -> Result<u64, BrokerError> {
        self.queues.purge(queue).await
    }

    async fn redrive(
        &self,
        queue: &str,
        ids: Option<&[String]>,
    ) -> Result<Vec<String>, BrokerError> {
        self.queues.redrive(queue, ids).await
    }
}

#[async_trait]
impl KvStore for NatsBroker {
    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, BrokerError> {
        self.buckets.get(bucket, key).await
    }

    async fn set(&self, bucket: &str, key: &str, value: Vec<u8>) -> Result<(), BrokerError> {
        self.buckets.set(bucket, key, value).await
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), BrokerError> {
        self.buckets.delete(bucket, key).await
    }

    async fn exists(&self, bucket: &str, key: &str) -> Result<bool, BrokerError> {
        self.buckets.exists(bucket, key).await
    }

    async fn list_keys(&self, bucket: &str, cursor: Option<u64>) -> Result<KeyPage, BrokerError> {
        self.buckets.list_keys(bucket, cursor).await
    }

    async fn configure_bucket(
        &self,
        bucket: &str,
        settings: BucketSettings,
    ) -> Result<(), BrokerError> {
        self.buckets.configure_bucket(bucket, settings).await
    }

    async fn purge_bucket(&self, bucket: &str) -> Result<u64, BrokerError> {
        self.buckets.purge_bucket(bucket).await
    }
}
