//! [`Queues`]: a [`Book`] behind a lock, with its clock and its
//! persistence: every [`super::QueueBroker`] operation of the in-process and
//! embedded backends, including the long poll.

use super::book::{Book, Changes, Clock, Message, Persist, Prepared, Settle};
use super::{
    BrokerError, Delivery, Peeked, QueueSettings, ReceiveRequest, SendOptions, check_batch,
    check_send,
};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// A book behind a lock, with its clock and its persistence: everything a
/// [`super::QueueBroker`] does, for the in-process and embedded backends.
pub(crate) struct Queues<P> {
    book: Mutex<Book>,
    clock: Clock,
    persist: P,
}

impl<P: Persist> Queues<P> {
    pub(crate) fn new(settings: QueueSettings, persist: P) -> Self {
        Self {
            book: Mutex::new(Book::new(settings)),
            clock: Clock::new(),
            persist,
        }
    }

    pub(crate) fn persist(&self) -> &P {
        &self.persist
    }

    fn book(&self) -> MutexGuard<'_, Book> {
        // A panic while holding the lock cannot leave a queue half-updated in
        // a way later calls would misread, so a poisoned lock is still usable.
        self.book
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Puts back a message read from the store at start.
    pub(crate) fn restore(&self, queue: &str, seq: u64, message: Message) {
        self.book().restore(queue, seq, message);
    }

    /// Puts back a dedupe id read from the store at start.
    pub(crate) fn restore_dedupe(&self, queue: &str, key: String, id: String, expires_at_ms: u64) {
        self.book().restore_dedupe(queue, key, id, expires_at_ms);
    }

    /// Finishes a restore: orders the dedupe ids by expiry.
    pub(crate) fn restored(&self) {
        self.book().restored();
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    pub(crate) async fn send(
        &self,
        queue: &str,
        body: Vec<u8>,
        options: SendOptions,
    ) -> Result<String, BrokerError> {
        check_send(&body, &options)?;
        let mut changes = Changes::new(P::DURABLE);
        let now = self.clock.now_ms();
        let prepared = self
            .book()
            .prepare_send(queue, body, &options, now, &mut changes)?;
        let (seq, id) = match prepared {
            Prepared::Duplicate(id) => return Ok(id),
            Prepared::New { seq, id } => (seq, id),
        };
        let written = self.persist.durable(changes.take()).await;
        self.book()
            .finish_send(queue, seq, options.dedupe_id.as_deref(), written.is_ok());
        written.map(|()| id)
    }

    pub(crate) async fn receive(
        &self,
        queue: &str,
        request: ReceiveRequest,
    ) -> Result<Vec<Delivery>, BrokerError> {
        check_batch(request.max_messages)?;
        let give_up_at = tokio::time::Instant::now() + request.wait;
        let arrivals = self.book().arrivals(queue);
        loop {
            // Register for wake-ups before looking, so a send that lands
            // between the look and the wait is not missed.
            let arrival = arrivals.notified();
            tokio::pin!(arrival);
            arrival.as_mut().enable();
            let mut changes = Changes::new(P::DURABLE);
            let now = self.clock.now_ms();
            let (deliveries, next_visible) = self.book().take(
                queue,
                request.max_messages,
                request.visibility_timeout,
                now,
                &mut changes,
            );
            let changes = changes.take();
            if !changes.is_empty() {
                // Dequeue counts must be on disk before the messages are
                // handed out: a crash must not deliver them again as firsts.
                self.persist.durable(changes).await?;
            }
            if !deliveries.is_empty() || tokio::time::Instant::now() >= give_up_at {
                return Ok(deliveries);
            }
            let wake_at = next_visible
                .map(|at| {
                    let ms = at.saturating_sub(self.clock.now_ms());
                    tokio::time::Instant::now() + Duration::from_millis(ms)
                })
                .map_or(give_up_at, |at| at.min(give_up_at));
            tokio::select! {
                () = &mut arrival => {}
                () = tokio::time::sleep_until(wake_at) => {}
            }
        }
    }

    fn settle(&self, queue: &str, receipt: &str, how: Settle) -> Result<(), BrokerError> {
        let mut changes = Changes::new(P::DURABLE);
        let now = self.clock.now_ms();
        self.book().settle(queue, receipt, how, now, &mut changes)?;
        self.persist.lazy(changes.take());
        Ok(())
    }

    pub(crate) fn complete(&self, queue: &str, receipt: &str) -> Result<(), BrokerError> {
        self.settle(queue, receipt, Settle::Complete)
    }

    pub(crate) fn abandon(
        &self,
        queue: &str,
        receipt: &str,
        delay: Duration,
    ) -> Result<(), BrokerError> {
        self.settle(queue, receipt, Settle::Abandon(delay))
    }

    pub(crate) fn extend(
        &self,
        queue: &str,
        receipt: &str,
        visibility: Duration,
    ) -> Result<(), BrokerError> {
        self.settle(queue, receipt, Settle::Extend(visibility))
    }

    pub(crate) fn len(&self, queue: &str) -> usize {
        self.book().len(queue)
    }

    pub(crate) fn peek(&self, queue: &str, max: u32) -> Result<Vec<Peeked>, BrokerError> {
        check_batch(max)?;
        Ok(self.book().peek(queue, max, self.clock.now_ms()))
    }
}
