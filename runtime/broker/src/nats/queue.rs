//! Queues on JetStream: sends, receives (with poison moves, expiry and
//! delayed messages), settles, length and peek. See the module above for
//! the mapping.

use super::escape::token;
use super::failure::{check_connected, lock, unavailable};
use super::leases::{Leases, Settle};
use crate::api::{Delivery, Peeked, QueueBroker, ReceiveRequest, SendOptions};
use crate::clock::{millis, unix_millis};
use crate::error::BrokerError;
use crate::limits::{
    DEDUPE_WINDOW, MAX_BATCH, MAX_MESSAGE_BYTES, POISON_RETRY, QueueSettings, check_batch,
    check_send,
};
use crate::message::{dedupe_message_id, poison_reason, random_message_id};
use crate::names::{POISON_SUFFIX, poison_queue};
use async_nats::HeaderMap;
use async_nats::jetstream;
use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use async_trait::async_trait;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ID: &str = "Weft-Id";
const SENT: &str = "Weft-Sent-Ms";
const EXPIRES: &str = "Weft-Expires-Ms";
const VISIBLE: &str = "Weft-Visible-Ms";
const REASON: &str = "Weft-Poison-Reason";
const MSG_ID: &str = "Nats-Msg-Id";
/// The durable consumer every host shares, of the queue's visible messages.
const CONSUMER: &str = "weft";
/// The durable consumer of the queue's delayed messages.
const DELAYED_CONSUMER: &str = "weft-delayed";
/// How long a due delayed message that could not be moved into its queue
/// (the queue is full) waits before the next try.
const PROMOTE_RETRY: Duration = Duration::from_secs(1);
/// How often one host looks for due delayed messages of one queue.
const PROMOTE_EVERY_MS: u64 = 250;
/// The longest one long-poll request waits; a receive waiting longer makes
/// several, looking for due delayed messages in between.
const POLL_SLICE: Duration = Duration::from_secs(1);

/// A service's queues on the server: streams and consumers, made on first
/// use, and the leases this host holds.
pub(super) struct NatsQueues {
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
    subject: String,
    /// The queue's one stream: its duplicate window covers delayed and
    /// immediate sends alike, so a dedupe id is recognised across both.
    stream: String,
    consumer: PullConsumer,
    /// Where delayed messages wait, in the same stream.
    delayed_subject: String,
    delayed: PullConsumer,
    /// When this host last moved due delayed messages (ms since the epoch).
    promoted_at: AtomicU64,
}

fn header<'a>(headers: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    headers?.get(name).map(|v| v.as_str())
}

fn header_ms(headers: Option<&HeaderMap>, name: &str) -> Option<u64> {
    header(headers, name)?.parse().ok()
}

fn stale() -> BrokerError {
    BrokerError::NotFound("no current delivery has this receipt".into())
}

fn parse_receipt(receipt: &str) -> Option<u64> {
    let (_, token) = receipt.split_once('.')?;
    u64::from_str_radix(token, 16).ok()
}

impl NatsQueues {
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
    async fn handles(&self, queue: &str) -> Result<Arc<Handles>, BrokerError> {
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
    async fn publish(
        &self,
        subject: &str,
        headers: HeaderMap,
        body: Vec<u8>,
    ) -> Result<bool, BrokerError> {
        let sent = self
            .js
            .publish_with_headers(subject.to_owned(), headers, body.into())
            .await
            .map_err(|e| unavailable("send", &e))?;
        match sent.await {
            Ok(ack) => Ok(ack.duplicate),
            Err(e) if e.to_string().contains("maximum") => Err(BrokerError::Unavailable(format!(
                "queue is full (the limits are {} messages and {} bytes)",
                self.settings.max_messages, self.settings.max_bytes
            ))),
            Err(e) => Err(unavailable("send", &e)),
        }
    }

    /// Moves the delayed messages of `handles` that are due into the queue,
    /// and asks for the others again when they will be.
    async fn promote_due(&self, handles: &Handles) -> Result<(), BrokerError> {
        let now = unix_millis();
        let last = handles.promoted_at.load(Ordering::Relaxed);
        if now.saturating_sub(last) < PROMOTE_EVERY_MS {
            return Ok(());
        }
        handles.promoted_at.store(now, Ordering::Relaxed);
        let mut batch = handles
            .delayed
            .fetch()
            .max_messages(usize::try_from(MAX_BATCH).unwrap_or(32))
            .messages()
            .await
            .map_err(|e| unavailable("receive", &e))?;
        while let Some(message) = batch.next().await {
            let message = message.map_err(|e| unavailable("receive", &e))?;
            let Some(reply) = message.reply.as_ref().map(ToString::to_string) else {
                continue;
            };
            let headers = message.headers.as_ref();
            let due = header_ms(headers, VISIBLE).unwrap_or(0);
            if due > now {
                self.leases
                    .nak(reply, Duration::from_millis(due - now))
                    .await;
                continue;
            }
            let seq = message.info().map(|i| i.stream_sequence).unwrap_or(0);
            let mut moved = headers.cloned().unwrap_or_default();
            // Deduped by the delayed message's own sequence, so a move that
            // is retried (this host died before acknowledging it) is
            // stored once. (Not by its dedupe id, which the stream has
            // seen already: the delayed message itself used it.)
            moved.insert(MSG_ID, format!("delayed-{seq}").as_str());
            match self
                .publish(&handles.subject, moved, message.payload.to_vec())
                .await
            {
                Ok(_) => self.leases.ack(reply).await,
                // The queue is full, or the server is struggling: this
                // message waits a little and the receive goes on, so the
                // receivers that would make room are not refused.
                Err(_) => self.leases.nak(reply, PROMOTE_RETRY).await,
            }
        }
        Ok(())
    }

    /// Takes up to `max` messages without waiting, or, with `wait`, waits up
    /// to it for one.
    async fn pull(
        &self,
        handles: &Handles,
        max: usize,
        wait: Option<Duration>,
    ) -> Result<Vec<async_nats::jetstream::Message>, BrokerError> {
        let pulled = match wait {
            None => handles.consumer.fetch().max_messages(max).messages().await,
            // A long poll asks for one message, so it ends as soon as one
            // comes; the rest of the batch is then taken without waiting.
            Some(wait) => {
                handles
                    .consumer
                    .batch()
                    .max_messages(1)
                    .expires(wait)
                    .messages()
                    .await
            }
        };
        let mut batch = pulled.map_err(|e| unavailable("receive", &e))?;
        let mut messages = Vec::new();
        while let Some(message) = batch.next().await {
            match message {
                Ok(message) => messages.push(message),
                Err(e) => {
                    // Keep what came: those messages are leased already.
                    tracing::debug!(error = %e, "queues: NATS: a pull ended early");
                    break;
                }
            }
        }
        Ok(messages)
    }

    /// Hands out, expires or poisons each pulled message. Never fails: a
    /// message it cannot move is given back with a delay, and the others
    /// are handed out, since they are leased already.
    async fn sort(
        &self,
        queue: &str,
        messages: Vec<async_nats::jetstream::Message>,
        visibility: Duration,
        deliveries: &mut Vec<Delivery>,
    ) {
        let now = unix_millis();
        let max_deliveries = self.settings.max_deliveries;
        for message in messages {
            let Some(reply) = message.reply.as_ref().map(ToString::to_string) else {
                continue;
            };
            let (seq, delivered) = match message.info() {
                Ok(info) => (
                    info.stream_sequence,
                    u32::try_from(info.delivered).unwrap_or(u32::MAX),
                ),
                Err(_) => continue,
            };
            let headers = message.headers.as_ref();
            let id = header(headers, ID).unwrap_or_default().to_owned();
            if header_ms(headers, EXPIRES).is_some_and(|at| at <= now) {
                tracing::debug!(queue, message = %id, "message expired unreceived");
                self.leases.ack(reply).await;
                continue;
            }
            if delivered > max_deliveries && !queue.ends_with(POISON_SUFFIX) {
                // Every delivery up to the maximum was handed out; later ones
                // were tries to move it (see below), not deliveries.
                let reason = poison_reason(max_deliveries, max_deliveries);
                match self.poison(queue, &id, headers, &reason, &message).await {
                    Ok(()) => {
                        tracing::warn!(queue, message = %id, deliveries = max_deliveries, "message moved to poison queue");
                        self.leases.ack(reply).await;
                    }
                    Err(e) => {
                        // Its poison queue is full (its stream refuses past
                        // the queue's message limit) or unreachable: the
                        // message stays here, hidden, and tries again later.
                        tracing::warn!(queue, message = %id, error = %e, retry_in_secs = POISON_RETRY.as_secs(), "cannot move a message to its poison queue; it stays hidden in its queue");
                        self.leases.nak(reply, POISON_RETRY).await;
                    }
                }
                continue;
            }
            let lease = self.leases.hold(queue, reply, visibility);
            deliveries.push(Delivery {
                id,
                body: message.payload.to_vec(),
                dequeue_count: delivered,
                inserted_at_ms: header_ms(headers, SENT).unwrap_or(0),
                receipt: format!("{seq:x}.{lease:016x}"),
                poison_reason: header(headers, REASON).map(str::to_owned),
            });
        }
    }

    /// Copies a message delivered too often to `<queue>-poison`, with its
    /// reason, deduped by its id (a copy retried after this host died
    /// before acknowledging the original is stored once).
    async fn poison(
        &self,
        queue: &str,
        id: &str,
        headers: Option<&HeaderMap>,
        reason: &str,
        message: &async_nats::jetstream::Message,
    ) -> Result<(), BrokerError> {
        let handles = self.handles(&poison_queue(queue)).await?;
        let mut moved = HeaderMap::new();
        moved.insert(ID, id);
        moved.insert(SENT, header(headers, SENT).unwrap_or("0"));
        moved.insert(REASON, reason);
        moved.insert(MSG_ID, format!("poison-{id}").as_str());
        self.publish(&handles.subject, moved, message.payload.to_vec())
            .await
            .map(|_| ())
    }

    async fn settle(&self, queue: &str, receipt: &str, how: Settle) -> Result<(), BrokerError> {
        let token = parse_receipt(receipt).ok_or_else(stale)?;
        check_connected(&self.client)?;
        if self.leases.settle(queue, token, how).await? {
            Ok(())
        } else {
            Err(stale())
        }
    }

    async fn stream_len(&self, stream: &str) -> Result<u64, BrokerError> {
        let stream = self
            .js
            .get_stream(stream)
            .await
            .map_err(|e| unavailable("count a queue", &e))?;
        Ok(stream.cached_info().state.messages)
    }
}

#[async_trait]
impl QueueBroker for NatsQueues {
    async fn send(
        &self,
        queue: &str,
        body: Vec<u8>,
        options: SendOptions,
    ) -> Result<String, BrokerError> {
        check_send(&body, &options)?;
        let handles = self.handles(queue).await?;
        let now = unix_millis();
        let id = match &options.dedupe_id {
            Some(dedupe) => dedupe_message_id(queue, dedupe),
            None => random_message_id(),
        };
        let mut headers = HeaderMap::new();
        headers.insert(ID, id.as_str());
        headers.insert(SENT, now.to_string().as_str());
        if let Some(ttl) = options.ttl {
            let at = now.saturating_add(millis(ttl));
            headers.insert(EXPIRES, at.to_string().as_str());
        }
        if options.dedupe_id.is_some() {
            // The id derives from the dedupe id, and is safe in a header
            // whatever bytes the guest's dedupe id holds.
            headers.insert(MSG_ID, id.as_str());
        }
        let subject = if options.delay.is_zero() {
            &handles.subject
        } else {
            let at = now.saturating_add(millis(options.delay));
            headers.insert(VISIBLE, at.to_string().as_str());
            &handles.delayed_subject
        };
        self.publish(subject, headers, body).await?;
        Ok(id)
    }

    async fn receive(
        &self,
        queue: &str,
        request: ReceiveRequest,
    ) -> Result<Vec<Delivery>, BrokerError> {
        check_batch(request.max_messages)?;
        let max = usize::try_from(request.max_messages).unwrap_or(1);
        let handles = self.handles(queue).await?;
        let give_up = tokio::time::Instant::now() + request.wait;
        let mut deliveries = Vec::new();
        let visibility = request.visibility_timeout;
        loop {
            self.promote_due(&handles).await?;
            let ready = self.pull(&handles, max, None).await?;
            self.sort(queue, ready, visibility, &mut deliveries).await;
            let left = give_up.saturating_duration_since(tokio::time::Instant::now());
            if !deliveries.is_empty() || left.is_zero() {
                return Ok(deliveries);
            }
            let first = self.pull(&handles, 1, Some(left.min(POLL_SLICE))).await?;
            let came = !first.is_empty();
            self.sort(queue, first, visibility, &mut deliveries).await;
            if came && deliveries.len() < max {
                // What is leased already is handed out even if this fails.
                match self.pull(&handles, max - deliveries.len(), None).await {
                    Ok(more) => self.sort(queue, more, visibility, &mut deliveries).await,
                    Err(e) if deliveries.is_empty() => return Err(e),
                    Err(_) => {}
                }
            }
            if !deliveries.is_empty() {
                return Ok(deliveries);
            }
        }
    }

    async fn complete(&self, queue: &str, receipt: &str) -> Result<(), BrokerError> {
        self.settle(queue, receipt, Settle::Complete).await
    }

    async fn abandon(
        &self,
        queue: &str,
        receipt: &str,
        delay: Duration,
    ) -> Result<(), BrokerError> {
        self.settle(queue, receipt, Settle::Abandon(delay)).await
    }

    async fn extend(
        &self,
        queue: &str,
        receipt: &str,
        visibility: Duration,
    ) -> Result<(), BrokerError> {
        self.settle(queue, receipt, Settle::Extend(visibility))
            .await
    }

    async fn len(&self, queue: &str) -> Result<usize, BrokerError> {
        let handles = self.handles(queue).await?;
        let held = self.stream_len(&handles.stream).await?;
        Ok(usize::try_from(held).unwrap_or(usize::MAX))
    }

    async fn peek(&self, queue: &str, max: u32) -> Result<Vec<Peeked>, BrokerError> {
        check_batch(max)?;
        let max = usize::try_from(max).unwrap_or(1);
        let handles = self.handles(queue).await?;
        // Only messages never delivered are certainly visible: the server
        // does not say which delivered ones are leased and which wait to
        // be delivered again, so peek leaves those out.
        let delivered = handles
            .consumer
            .get_info()
            .await
            .map_err(|e| unavailable("peek", &e))?
            .delivered
            .stream_sequence;
        let stream = self
            .js
            .get_stream(&handles.stream)
            .await
            .map_err(|e| unavailable("peek", &e))?;
        let state = &stream.cached_info().state;
        let now = unix_millis();
        let mut peeked = Vec::new();
        let first = state.first_sequence.max(delivered + 1);
        // Sequences of deleted messages are gaps; look a bounded way past them.
        for seq in (first..=state.last_sequence).take(max * 4 + 64) {
            if peeked.len() == max {
                break;
            }
            let Ok(message) = stream.get_raw_message(seq).await else {
                continue;
            };
            // Delayed messages share the stream, and are not visible.
            if message.subject.as_str() != handles.subject {
                continue;
            }
            let headers = Some(&message.headers);
            if header_ms(headers, EXPIRES).is_some_and(|at| at <= now) {
                continue;
            }
            peeked.push(Peeked {
                id: header(headers, ID).unwrap_or_default().to_owned(),
                body: message.payload.to_vec(),
                dequeue_count: 0,
                inserted_at_ms: header_ms(headers, SENT).unwrap_or(0),
                poison_reason: header(headers, REASON).map(str::to_owned),
            });
        }
        Ok(peeked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
