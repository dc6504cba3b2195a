//! Queues on JetStream: sends, receives (with poison moves, expiry and
//! delayed messages), settles, length and peek. See the module above for
//! the mapping; `poison.rs` moves messages to and from poison queues and
//! purges, and `handles.rs` opens queues and publishes.

use super::failure::{check_connected, unavailable};
use super::handles::{
    EXPIRES, Handles, ID, MSG_ID, QueueStreams, REASON, SENT, TRACE, VISIBLE, header, header_ms,
};
use super::leases::Settle;
use super::poison::Poisons;
use crate::api::{Delivery, Peeked, QueueBroker, ReceiveRequest, SendOptions};
use crate::clock::{millis, unix_millis};
use crate::error::BrokerError;
use crate::limits::{MAX_BATCH, POISON_RETRY, check_batch, check_send};
use crate::message::{dedupe_message_id, poison_reason, random_message_id};
use crate::names::POISON_SUFFIX;
use async_nats::HeaderMap;
use async_trait::async_trait;
use futures::StreamExt;
use std::ops::Deref;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How long a due delayed message that could not be moved into its queue
/// (the queue is full) waits before the next try.
const PROMOTE_RETRY: Duration = Duration::from_secs(1);
/// How often one host looks for due delayed messages of one queue.
const PROMOTE_EVERY_MS: u64 = 250;
/// The longest one long-poll request waits; a receive waiting longer makes
/// several, looking for due delayed messages in between.
const POLL_SLICE: Duration = Duration::from_secs(1);

fn stale() -> BrokerError {
    BrokerError::NotFound("no current delivery has this receipt".into())
}

fn parse_receipt(receipt: &str) -> Option<u64> {
    let (_, token) = receipt.split_once('.')?;
    u64::from_str_radix(token, 16).ok()
}

/// A service's queues on the server (see [`QueueStreams`]).
pub(super) struct NatsQueues(pub(super) QueueStreams);

impl Deref for NatsQueues {
    type Target = QueueStreams;

    fn deref(&self) -> &QueueStreams {
        &self.0
    }
}

impl NatsQueues {
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
                match Poisons(self)
                    .poison(queue, &id, seq, headers, &reason, &message)
                    .await
                {
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
                trace_parent: header(headers, TRACE).map(str::to_owned),
            });
        }
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
        if let Some(trace) = &options.trace_parent {
            headers.insert(TRACE, trace.as_str());
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

    async fn purge(&self, queue: &str) -> Result<u64, BrokerError> {
        Poisons(self).purge_stream(queue).await
    }

    async fn redrive(
        &self,
        queue: &str,
        ids: Option<&[String]>,
    ) -> Result<Vec<String>, BrokerError> {
        Poisons(self).redrive_poison(queue, ids).await
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
                trace_parent: header(headers, TRACE).map(str::to_owned),
            });
        }
        Ok(peeked)
    }
}
