//! What the queue side of the NATS backend shares between its sends and
//! receives (`queue.rs`) and its poison moves, purges and redrives
//! (`poison.rs`): Weft's message headers, the service's queues and each
//! queue's stream and consumers, opened on first use, and publishing.
//! Kept apart so neither of those two modules imports the other: both
//! reach [`QueueStreams`] through a wrapper of their own (`NatsQueues`,
//! `Poisons`), as a type's methods all count as its module's imports.

use super::escape::token;
use super::failure::{check_connected, lock, unavailable};
use super::leases::Leases;
use crate::error::BrokerError;
use crate::limits::{DEDUPE_WINDOW, MAX_MESSAGE_BYTES, QueueSettings};
use async_nats::HeaderMap;
use async_nats::jetstream;
use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub(super) const ID: &str = "Weft-Id";
pub(super) const SENT: &str = "Weft-Sent-Ms";
pub(super) const EXPIRES: &str = "Weft-Expires-Ms";
pub(super) const VISIBLE: &str = "Weft-Visible-Ms";
pub(super) const REASON: &str = "Weft-Poison-Reason";
/// The sender's W3C `traceparent`, under the header name W3C's trace
/// context for messaging uses (`check_send` keeps it printable ASCII, so
/// it is a valid header value).
pub(super) const TRACE: &str = "traceparent";
pub(super) const MSG_ID: &str = "Nats-Msg-Id";
/// The durable consumer every host shares, of the queue's visible messages.
pub(super) const CONSUMER: &str = "weft";
/// The durable consumer of the queue's delayed messages.
pub(super) const DELAYED_CONSUMER: &str = "weft-delayed";

/// A service's queues on the server: streams and consumers, made on first
/// use, and the leases this host holds.
pub(super) struct QueueStreams {
    pub(super) client: async_nats::Client,
    pub(super) js: jetstream::Context,
    pub(super) settings: QueueSettings,
    /// The consumers' ack wait: how long a message stays hidden when the
    /// host holding it vanishes.
    pub(super) ack_wait: Duration,
    /// Copies the server keeps of each stream.
    pub(super) replicas: usize,
    /// The queues opened so far, by name.
    pub(super) opened: Mutex<HashMap<String, Arc<Handles>>>,
    pub(super) leases: Arc<Leases>,
}

/// A queue's stream and consumers, made on first use.
pub(super) struct Handles {
    /// Where visible messages are published.
    pub(super) subject: String,
    /// The queue's one stream: its duplicate window covers delayed and
    /// immediate sends alike, so a dedupe id is recognised across both.
    pub(super) stream: String,
    pub(super) consumer: PullConsumer,
    /// Where delayed messages wait, in the same stream.
    pub(super) delayed_subject: String,
    pub(super) delayed: PullConsumer,
    /// When this host last moved due delayed messages (ms since the epoch).
    pub(super) promoted_at: AtomicU64,
}

pub(super) fn header<'a>(headers: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    headers?.get(name).map(|v| v.as_str())
}

pub(super) fn header_ms(headers: Option<&HeaderMap>, name: &str) -> Option<u64> {
    header(headers, name)?.parse().ok()
}

/// Why a publish was refused.
pub(super) enum Refused {
    /// The stream holds its queue's limit of messages.
    Full,
    Failed(BrokerError),
}
impl QueueStreams {
    fn stream_config(&self, name: String, subjects: Vec<String>) -> stream::Config {
        let limit = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        stream::Config {
            name,
            subjects,
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::File,
            max_messages: limit(self.settings.max_messages),
            // No byte limit on the stream: JetStream reserves a stream's
            // `max_bytes` of server storage when the stream is made, so a
            // service's queues would use up the server while empty. The
            // message limit holds, and the server's own storage limit.
            discard: DiscardPolicy::New,
            duplicate_window: DEDUPE_WINDOW,
            // Room for Weft's headers beside a full body.
            max_message_size: i32::try_from(MAX_MESSAGE_BYTES + 4096).unwrap_or(i32::MAX),
            num_replicas: self.replicas,
            ..stream::Config::default()
        }
    }

    /// One of a queue's two consumers: each takes one subject of the
    /// stream (a work-queue stream allows several consumers whose subjects
    /// do not overlap).
    async fn consumer(
        stream: &stream::Stream,
        name: &str,
        subject: &str,
        ack_wait: Duration,
    ) -> Result<PullConsumer, BrokerError> {
        stream
            .get_or_create_consumer(
                name,
                pull::Config {
                    durable_name: Some(name.into()),
                    filter_subject: subject.into(),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait,
                    // Weft counts deliveries itself (see the module docs).
                    max_deliver: -1,
                    max_ack_pending: 20_000,
                    ..pull::Config::default()
                },
            )
            .await
            .map_err(|e| unavailable("open a queue", &e))
    }

    /// The streams and consumers of `queue`, created on first use.
    pub(super) async fn handles(&self, queue: &str) -> Result<Arc<Handles>, BrokerError> {
        check_connected(&self.client)?;
        if let Some(handles) = lock(&self.opened).get(queue) {
            return Ok(handles.clone());
        }
        let name = token(queue);
        let (subject, delayed_subject) = (format!("weft.q.{name}"), format!("weft.d.{name}"));
        let stream_name = format!("WEFT_{name}");
        let config = self.stream_config(
            stream_name.clone(),
            vec![subject.clone(), delayed_subject.clone()],
        );
        let mut stream = self
            .js
            .get_or_create_stream(config.clone())
            .await
            .map_err(|e| unavailable("open a queue", &e))?;
        if !stream
            .cached_info()
            .config
            .subjects
            .contains(&delayed_subject)
        {
            // A queue made by an earlier Weft, whose delayed messages had
            // a stream of their own: give this one the delayed subject.
            // The server refuses while that old stream (`WEFTD_<queue>`)
            // still holds the subject: drain it and delete it first.
            if let Err(e) = self.js.update_stream(&config).await {
                tracing::warn!(queue, stream = %stream_name, old = %format!("WEFTD_{name}"), error = %e, "queues: NATS: a queue made by an earlier Weft needs its old delayed stream deleted");
                return Err(unavailable("open a queue", &e));
            }
            stream = self
                .js
                .get_stream(&stream_name)
                .await
                .map_err(|e| unavailable("open a queue", &e))?;
        }
        let consumer = Self::consumer(&stream, CONSUMER, &subject, self.ack_wait).await?;
        let delayed =
            Self::consumer(&stream, DELAYED_CONSUMER, &delayed_subject, self.ack_wait).await?;
        let handles = Arc::new(Handles {
            subject,
            stream: stream_name,
            consumer,
            delayed_subject,
            delayed,
            promoted_at: AtomicU64::new(0),
        });
        lock(&self.opened).insert(queue.to_owned(), handles.clone());
        Ok(handles)
    }

    /// Publishes and waits for the server's acknowledgement; `Ok(true)` if
    /// the server knew the message id already (a deduped retry).
    pub(super) async fn publish(
        &self,
        subject: &str,
        headers: HeaderMap,
        body: Vec<u8>,
    ) -> Result<bool, BrokerError> {
        self.try_publish(subject, headers, body)
            .await
            .map_err(|refused| match refused {
                Refused::Full => BrokerError::Unavailable(format!(
                    "queue is full (the limits are {} messages and {} bytes)",
                    self.settings.max_messages, self.settings.max_bytes
                )),
                Refused::Failed(e) => e,
            })
    }

    /// As [`QueueStreams::publish`], telling a full queue from other failures.
    pub(super) async fn try_publish(
        &self,
        subject: &str,
        headers: HeaderMap,
        body: Vec<u8>,
    ) -> Result<bool, Refused> {
        let sent = self
            .js
            .publish_with_headers(subject.to_owned(), headers, body.into())
            .await
            .map_err(|e| Refused::Failed(unavailable("send", &e)))?;
        match sent.await {
            Ok(ack) => Ok(ack.duplicate),
            Err(e) if e.to_string().contains("maximum") => Err(Refused::Full),
            Err(e) => Err(Refused::Failed(unavailable("send", &e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{QueueBroker, ReceiveRequest, SendOptions};
    use crate::{BackendKind, NatsBroker, QueuesConfig};

    #[tokio::test]
    async fn a_queue_made_by_the_earlier_layout_gains_its_delayed_subject() {
        let config = QueuesConfig {
            backend: Some(BackendKind::Nats),
            url: Some(super::super::test_url()),
            connect_timeout_secs: 5,
            ..QueuesConfig::default()
        };
        let broker = NatsBroker::connect(&config).await.unwrap();
        let queue = format!("old{:012x}/q", rand::random::<u64>() >> 16);
        let name = token(&queue);
        // The stream an earlier Weft made: visible messages only.
        let old = broker
            .queues
            .stream_config(format!("WEFT_{name}"), vec![format!("weft.q.{name}")]);
        broker.queues.js.create_stream(old).await.unwrap();
        let later = SendOptions {
            delay: Duration::from_millis(300),
            ..SendOptions::default()
        };
        let id = broker.send(&queue, b"later".to_vec(), later).await.unwrap();
        let request = ReceiveRequest {
            max_messages: 1,
            visibility_timeout: Duration::from_secs(60),
            wait: Duration::from_secs(10),
        };
        let got = broker.receive(&queue, request).await.unwrap();
        assert_eq!(got[0].id, id);
        broker.complete(&queue, &got[0].receipt).await.unwrap();
    }
}
