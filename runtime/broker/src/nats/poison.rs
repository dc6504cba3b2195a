//! Moving messages to and from poison queues on JetStream, and purging a
//! queue: the copy a receive makes of a message delivered too often, and
//! the operator's redrive and purge.
//!
//! A redrive must not move a poison message someone holds a lease on, but
//! the server tells no one which messages of a consumer are leased. So it
//! takes what it moves in two ways that cannot hand it a leased message:
//!
//! 1. messages the poison queue's consumer has delivered before, taken
//!    through the consumer (which hands out only those not leased now);
//! 2. messages it has never delivered (past its delivered sequence, as
//!    [`peek`](crate::QueueBroker::peek) shows them), read from the stream
//!    and deleted from it by sequence.
//!
//! Each moved message is published to its queue first, deduped by its
//! poison sequence (a redrive retried after this host died mid-move stores
//! it once), then removed from the poison queue: a failure in between
//! leaves it in both, never in neither.

use super::failure::{lock, unavailable};
use super::handles::{
    CONSUMER, DELAYED_CONSUMER, EXPIRES, Handles, ID, MSG_ID, QueueStreams, REASON, Refused, SENT,
    TRACE, header,
};
use crate::error::BrokerError;
use crate::names::poison_queue;
use async_nats::HeaderMap;
use async_nats::jetstream::AckKind;
use async_nats::jetstream::stream::RawMessageErrorKind;
use bytes::Bytes;
use futures::StreamExt;
use std::collections::HashSet;
use std::ops::Deref;

/// Which poison messages a redrive moves.
struct Wanted<'a>(Option<HashSet<&'a str>>);

impl Wanted<'_> {
    fn contains(&self, id: &str) -> bool {
        self.0.as_ref().is_none_or(|ids| ids.contains(id))
    }
}

/// How a redrive's move of one message went.
enum Moved {
    Yes,
    /// The queue is full: the redrive stops here.
    Full,
}

/// The poison moves, purges and redrives of a service's queues.
pub(super) struct Poisons<'a>(pub(super) &'a QueueStreams);

impl Deref for Poisons<'_> {
    type Target = QueueStreams;

    fn deref(&self) -> &QueueStreams {
        self.0
    }
}

impl Poisons<'_> {
    /// Copies a message delivered too often (stream sequence `seq` of
    /// `queue`) to `<queue>-poison`, with its reason and `traceparent`,
    /// deduped by its id and sequence: a copy retried after this host died
    /// before acknowledging the original is stored once, and a message
    /// redriven and poisoned again (a new sequence) is stored again.
    pub(super) async fn poison(
        &self,
        queue: &str,
        id: &str,
        seq: u64,
        headers: Option<&HeaderMap>,
        reason: &str,
        message: &async_nats::jetstream::Message,
    ) -> Result<(), BrokerError> {
        let handles = self.handles(&poison_queue(queue)).await?;
        let mut moved = HeaderMap::new();
        moved.insert(ID, id);
        moved.insert(SENT, header(headers, SENT).unwrap_or("0"));
        moved.insert(REASON, reason);
        if let Some(trace) = header(headers, TRACE) {
            moved.insert(TRACE, trace);
        }
        moved.insert(MSG_ID, format!("poison-{id}-{seq}").as_str());
        self.publish(&handles.subject, moved, message.payload.to_vec())
            .await
            .map(|_| ())
    }

    /// Deletes every message of `queue` (visible and delayed) and drops
    /// this host's leases of it.
    pub(super) async fn purge_stream(&self, queue: &str) -> Result<u64, BrokerError> {
        let handles = self.handles(queue).await?;
        let stream = self
            .js
            .get_stream(&handles.stream)
            .await
            .map_err(|e| unavailable("purge a queue", &e))?;
        let purged = stream
            .purge()
            .await
            .map_err(|e| unavailable("purge a queue", &e))?
            .purged;
        self.leases.forget(queue);
        // The server (2.9) keeps a consumer's leases and pending redeliveries
        // of purged messages, and a pull then waits for them forever: start
        // both consumers afresh. Other hosts' next pull reaches the new
        // ones by name; a message sent meanwhile is still delivered (a new
        // consumer starts at the stream's first message).
        lock(&self.opened).remove(queue);
        for consumer in [CONSUMER, DELAYED_CONSUMER] {
            if let Err(e) = stream.delete_consumer(consumer).await {
                tracing::debug!(queue, consumer, error = %e, "queues: NATS: a purged queue's consumer was not deleted");
            }
        }
        self.handles(queue).await?;
        Ok(purged)
    }

    /// Moves `<queue>-poison`'s visible messages (those in `ids`, or all)
    /// back to `queue`; see the module docs.
    pub(super) async fn redrive_poison(
        &self,
        queue: &str,
        ids: Option<&[String]>,
    ) -> Result<Vec<String>, BrokerError> {
        let target = self.handles(queue).await?;
        let poison = self.handles(&poison_queue(queue)).await?;
        let wanted = Wanted(ids.map(|ids| ids.iter().map(String::as_str).collect()));
        let info = poison
            .consumer
            .get_info()
            .await
            .map_err(|e| unavailable("redrive", &e))?;
        let delivered = info.delivered.stream_sequence;
        let mut moved = Vec::new();
        // Step 1 only when some delivered message is unacknowledged: else
        // its first fetch would only deliver (and hide from peek) a message
        // step 2 reads anyway.
        let room = info.num_ack_pending == 0
            || self
                .redrive_delivered(&target, &poison, delivered, &wanted, &mut moved)
                .await?;
        if room {
            self.redrive_undelivered(&target, &poison, delivered, &wanted, &mut moved)
                .await?;
        }
        Ok(moved)
    }

    /// Step 1: the poison messages delivered before (up to sequence
    /// `delivered`) and not leased now, through the consumer. Those not
    /// wanted are held until the end, so the consumer does not hand them
    /// out again, then given back. `Ok(false)`: the queue is full.
    async fn redrive_delivered(
        &self,
        target: &Handles,
        poison: &Handles,
        delivered: u64,
        wanted: &Wanted<'_>,
        moved: &mut Vec<String>,
    ) -> Result<bool, BrokerError> {
        let mut held = Vec::new();
        let mut seen = HashSet::new();
        let mut room = true;
        let outcome = loop {
            // One at a time: the first message past `delivered` ends this
            // step, and is left for step 2 to read as a never-delivered one.
            let mut batch = match poison.consumer.fetch().max_messages(1).messages().await {
                Ok(batch) => batch,
                Err(e) => break Err(unavailable("redrive", &e)),
            };
            let Some(Ok(message)) = batch.next().await else {
                break Ok(());
            };
            let Ok(seq) = message.info().map(|i| i.stream_sequence) else {
                held.push(message);
                continue;
            };
            if seq > delivered || !seen.insert(seq) {
                held.push(message);
                break Ok(());
            }
            let headers = message.headers.as_ref();
            let id = header(headers, ID).unwrap_or_default().to_owned();
            if !wanted.contains(&id) {
                held.push(message);
                continue;
            }
            match self
                .move_back(target, poison, seq, headers, &message.payload)
                .await
            {
                Ok(Moved::Yes) => {}
                Ok(Moved::Full) => {
                    room = false;
                    held.push(message);
                    break Ok(());
                }
                Err(e) => {
                    held.push(message);
                    break Err(e);
                }
            }
            // Published: now take it off the poison queue, and wait for the
            // server to confirm, so it is gone when the redrive answers.
            if let Err(e) = message.double_ack().await {
                tracing::warn!(message = %id, error = %e, "queues: NATS: a redriven message is also still in its poison queue");
            }
            moved.push(id);
        };
        for message in held {
            if let Err(e) = message.ack_with(AckKind::Nak(None)).await {
                tracing::debug!(error = %e, "queues: NATS: a poison message held by a redrive was not given back; it comes back after the ack wait");
            }
        }
        outcome.map(|()| room)
    }

    /// Step 2: the poison messages never delivered (past `delivered`), read
    /// from the stream in order and deleted from it once moved.
    async fn redrive_undelivered(
        &self,
        target: &Handles,
        poison: &Handles,
        delivered: u64,
        wanted: &Wanted<'_>,
        moved: &mut Vec<String>,
    ) -> Result<(), BrokerError> {
        let stream = self
            .js
            .get_stream(&poison.stream)
            .await
            .map_err(|e| unavailable("redrive", &e))?;
        let mut next = delivered.saturating_add(1);
        loop {
            let message = match stream
                .raw_message_builder()
                .sequence(next)
                .next_by_subject(poison.subject.clone())
                .send()
                .await
            {
                Ok(message) => message,
                Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => return Ok(()),
                Err(e) => return Err(unavailable("redrive", &e)),
            };
            next = message.sequence.saturating_add(1);
            let headers = Some(&message.headers);
            let id = header(headers, ID).unwrap_or_default().to_owned();
            if !wanted.contains(&id) {
                continue;
            }
            match self
                .move_back(target, poison, message.sequence, headers, &message.payload)
                .await?
            {
                Moved::Yes => {}
                Moved::Full => return Ok(()),
            }
            stream
                .delete_message(message.sequence)
                .await
                .map_err(|e| unavailable("redrive", &e))?;
            moved.push(id);
        }
    }

    /// Publishes poison message `seq` to its queue as a new message: its
    /// id, send time, expiry and `traceparent` kept, its reason dropped.
    async fn move_back(
        &self,
        target: &Handles,
        poison: &Handles,
        seq: u64,
        headers: Option<&HeaderMap>,
        body: &Bytes,
    ) -> Result<Moved, BrokerError> {
        let mut fresh = HeaderMap::new();
        for name in [ID, SENT, EXPIRES, TRACE] {
            if let Some(value) = header(headers, name) {
                fresh.insert(name, value);
            }
        }
        fresh.insert(MSG_ID, format!("redrive-{}-{seq}", poison.stream).as_str());
        match self
            .try_publish(&target.subject, fresh, body.to_vec())
            .await
        {
            Ok(_) => Ok(Moved::Yes),
            Err(Refused::Full) => {
                tracing::warn!(queue = %target.stream, "queues: NATS: queue is full: redrive stopped before every message moved");
                Ok(Moved::Full)
            }
            Err(Refused::Failed(e)) => Err(e),
        }
    }
}
