//! [`Queues`]: a [`QueueRules`] behind a lock, with its clock and its
//! persistence: every [`QueueBroker`](crate::QueueBroker) operation of the in-process and
//! embedded backends, including the long poll.
//!
//! Changes are submitted to the store while the rules' lock is held, so the
//! store sees them in the rules' order (see [`persist`](crate::persist)); only the
//! waits for commits happen outside it. What must follow a commit (a send
//! becoming receivable, or being forgotten if its write failed; a receive's
//! messages coming back if its write failed or its receiver is gone) is done
//! by the commit's callback on the store's writer thread, not by the future
//! waiting for it: a future dropped mid-wait (a request's deadline, a worker
//! stopped, shutdown) leaves nothing half done.

use crate::api::{Delivery, Peeked, ReceiveRequest, SendOptions};
use crate::clock::Clock;
use crate::error::BrokerError;
use crate::limits::{QueueSettings, check_batch, check_send};
use crate::persist::{Change, Changes, Done, Persist};
use crate::rules::{Prepared, QueueRules, Settle};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::oneshot;

/// The rules behind a lock, with its clock and its persistence: everything a
/// [`QueueBroker`](crate::QueueBroker) does, for the in-process and embedded backends.
pub(crate) struct Queues<P> {
    /// Shared with the callbacks of pending commits.
    rules: Arc<Mutex<QueueRules>>,
    clock: Clock,
    persist: P,
}

fn lock(rules: &Mutex<QueueRules>) -> MutexGuard<'_, QueueRules> {
    // A panic while holding the lock cannot leave a queue half-updated in
    // a way later calls would misread, so a poisoned lock is still usable.
    rules
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The answer when a commit's outcome never came (the writer is gone).
fn closed() -> BrokerError {
    BrokerError::Unavailable("the queue store is closed".into())
}

/// A callback that passes a commit's outcome to a waiting future.
fn answer(tx: oneshot::Sender<Result<(), BrokerError>>) -> Done {
    Box::new(move |outcome| {
        let _ = tx.send(outcome);
    })
}

impl<P: Persist> Queues<P> {
    pub(crate) fn new(settings: QueueSettings, persist: P) -> Self {
        Self {
            rules: Arc::new(Mutex::new(QueueRules::new(settings))),
            clock: Clock::new(),
            persist,
        }
    }

    #[cfg(any(test, feature = "embedded"))]
    pub(crate) fn persist(&self) -> &P {
        &self.persist
    }

    fn rules(&self) -> MutexGuard<'_, QueueRules> {
        lock(&self.rules)
    }

    /// Puts back a message read from the store at start.
    #[cfg(feature = "embedded")]
    pub(crate) fn restore(&self, queue: &str, seq: u64, message: crate::message::Message) {
        self.rules().restore(queue, seq, message);
    }

    /// Puts back a dedupe id read from the store at start.
    #[cfg(feature = "embedded")]
    pub(crate) fn restore_dedupe(&self, queue: &str, key: String, id: String, expires_at_ms: u64) {
        self.rules().restore_dedupe(queue, key, id, expires_at_ms);
    }

    /// Finishes a restore: orders the dedupe ids by expiry.
    #[cfg(feature = "embedded")]
    pub(crate) fn restored(&self) {
        self.rules().restored();
    }

    /// Now, by the queues' clock (which buckets' expiry shares).
    pub(crate) fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Writes changes that nobody waits for (settles, forgotten dedupe
    /// ids): they ride on the next commit. Called under the rules' lock. If
    /// the store is closed they are lost, which costs at most a redelivery.
    fn write_later(&self, changes: Vec<Change>) {
        if !changes.is_empty() {
            let _ = self.persist.submit(changes, None);
        }
    }

    pub(crate) async fn send(
        &self,
        queue: &str,
        mut body: Vec<u8>,
        options: SendOptions,
    ) -> Result<String, BrokerError> {
        check_send(&body, &options)?;
        loop {
            let (tx, written) = oneshot::channel();
            let new_id = {
                let mut changes = Changes::new(P::DURABLE);
                let now = self.clock.now_ms();
                let mut rules = self.rules();
                let prepared = rules.prepare_send(queue, &mut body, &options, now, &mut changes);
                let changes = changes.take();
                match prepared {
                    Err(e) => {
                        self.write_later(changes);
                        return Err(e);
                    }
                    Ok(Prepared::Duplicate {
                        id,
                        committed: true,
                    }) => {
                        self.write_later(changes);
                        return Ok(id);
                    }
                    Ok(Prepared::Duplicate {
                        committed: false, ..
                    }) => {
                        // The first send with this id is not on disk yet.
                        // Answering now would hand out an acknowledgement a
                        // failed commit or a crash could take back; so wait
                        // behind it in the writer's FIFO (its callback has
                        // then run), and look again: if it failed, this send
                        // stores the message itself.
                        self.persist.submit(changes, Some(answer(tx)))?;
                        None
                    }
                    Ok(Prepared::New { seq, id }) if !P::DURABLE => {
                        rules.finish_send(queue, seq, options.dedupe_id.as_deref(), true);
                        return Ok(id);
                    }
                    Ok(Prepared::New { seq, id }) => {
                        let finish = {
                            let (rules, queue) = (self.rules.clone(), queue.to_owned());
                            let dedupe = options.dedupe_id.clone();
                            Box::new(move |outcome: Result<(), BrokerError>| {
                                lock(&rules).finish_send(
                                    &queue,
                                    seq,
                                    dedupe.as_deref(),
                                    outcome.is_ok(),
                                );
                                let _ = tx.send(outcome);
                            })
                        };
                        if let Err(e) = self.persist.submit(changes, Some(finish)) {
                            rules.finish_send(queue, seq, options.dedupe_id.as_deref(), false);
                            return Err(e);
                        }
                        Some(id)
                    }
                }
            };
            written.await.map_err(|_| closed())??;
            if let Some(id) = new_id {
                return Ok(id);
            }
        }
    }

    pub(crate) async fn receive(
        &self,
        queue: &str,
        request: ReceiveRequest,
    ) -> Result<Vec<Delivery>, BrokerError> {
        check_batch(request.max_messages)?;
        let give_up_at = tokio::time::Instant::now() + request.wait;
        let arrivals = self.rules().arrivals(queue);
        loop {
            // Register for wake-ups before looking, so a send that lands
            // between the look and the wait is not missed.
            let arrival = arrivals.notified();
            tokio::pin!(arrival);
            arrival.as_mut().enable();
            let (tx, written) = oneshot::channel();
            let (taken, submitted) = {
                let mut changes = Changes::new(P::DURABLE);
                let now = self.clock.now_ms();
                let mut rules = self.rules();
                let taken = rules.take(
                    queue,
                    request.max_messages,
                    request.visibility_timeout,
                    now,
                    &mut changes,
                );
                let changes = changes.take();
                let submitted = !changes.is_empty();
                if submitted {
                    // Dequeue counts must be on disk before the messages are
                    // handed out: a crash must not deliver them again as
                    // firsts. If that write fails, or this receive is gone
                    // by the time it lands, the messages come back at once
                    // instead of staying hidden for their visibility timeout.
                    let given_back = {
                        let (rules, queue, undo) =
                            (self.rules.clone(), queue.to_owned(), taken.undo.clone());
                        Box::new(move |outcome: Result<(), BrokerError>| {
                            if outcome.is_err() {
                                lock(&rules).untake(&queue, &undo, true);
                                let _ = tx.send(outcome);
                            } else if tx.send(outcome).is_err() {
                                lock(&rules).untake(&queue, &undo, false);
                            }
                        })
                    };
                    if let Err(e) = self.persist.submit(changes, Some(given_back)) {
                        rules.untake(queue, &taken.undo, true);
                        return Err(e);
                    }
                }
                (taken, submitted)
            };
            if submitted {
                written.await.map_err(|_| closed())??;
            }
            if !taken.deliveries.is_empty() || tokio::time::Instant::now() >= give_up_at {
                return Ok(taken.deliveries);
            }
            let wake_at = taken
                .next_visible
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
        let mut rules = self.rules();
        rules.settle(queue, receipt, how, now, &mut changes)?;
        self.write_later(changes.take());
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

    /// Submits an operator's changes and waits until they are on disk, so
    /// what the operation answered survives a restart. The changes are
    /// made in memory at once, so they are submitted as a settle is, with
    /// no one waiting on them: a failed commit carries them to the next
    /// one (see `store/writer.rs`) instead of dropping them, and memory and
    /// disk agree again once a commit succeeds. The wait is on an empty job
    /// behind them; if that commit fails the caller gets `unavailable`,
    /// though the change is made and reaches the disk with the next commit
    /// that succeeds.
    async fn write_now(
        &self,
        write: impl FnOnce(&mut QueueRules, &mut Changes),
    ) -> Result<(), BrokerError> {
        let (tx, written) = oneshot::channel();
        {
            let mut changes = Changes::new(P::DURABLE);
            let mut rules = self.rules();
            write(&mut rules, &mut changes);
            let changes = changes.take();
            if changes.is_empty() {
                return Ok(());
            }
            self.persist.submit(changes, None)?;
            self.persist.submit(Vec::new(), Some(answer(tx)))?;
        }
        written.await.map_err(|_| closed())?
    }

    pub(crate) async fn purge(&self, queue: &str) -> Result<u64, BrokerError> {
        let mut purged = 0;
        self.write_now(|rules, changes| purged = rules.purge(queue, changes))
            .await?;
        Ok(purged)
    }

    pub(crate) async fn redrive(
        &self,
        queue: &str,
        ids: Option<&[String]>,
    ) -> Result<Vec<String>, BrokerError> {
        let now = self.clock.now_ms();
        let mut moved = Vec::new();
        self.write_now(|rules, changes| moved = rules.redrive(queue, ids, now, changes))
            .await?;
        Ok(moved)
    }

    pub(crate) fn len(&self, queue: &str) -> usize {
        self.rules().len(queue)
    }

    /// Every message `queue` holds, as (id, dequeue count).
    #[cfg(all(test, feature = "embedded"))]
    pub(crate) fn contents(&self, queue: &str) -> Vec<(String, u32)> {
        self.rules().contents(queue)
    }

    pub(crate) fn peek(&self, queue: &str, max: u32) -> Result<Vec<Peeked>, BrokerError> {
        check_batch(max)?;
        Ok(self.rules().peek(queue, max, self.clock.now_ms()))
    }
}

/// Implements [`QueueBroker`](crate::QueueBroker) for a broker type whose `queues` field
/// is a [`Queues`]: every backend built on the rules answers the same way.
macro_rules! queue_broker_over_queues {
    ($broker:ty) => {
        #[async_trait::async_trait]
        impl $crate::api::QueueBroker for $broker {
            async fn send(
                &self,
                queue: &str,
                body: Vec<u8>,
                options: $crate::api::SendOptions,
            ) -> Result<String, $crate::error::BrokerError> {
                self.queues.send(queue, body, options).await
            }

            async fn receive(
                &self,
                queue: &str,
                request: $crate::api::ReceiveRequest,
            ) -> Result<Vec<$crate::api::Delivery>, $crate::error::BrokerError> {
                self.queues.receive(queue, request).await
            }

            async fn complete(
                &self,
                queue: &str,
                receipt: &str,
            ) -> Result<(), $crate::error::BrokerError> {
                self.queues.complete(queue, receipt)
            }

            async fn abandon(
                &self,
                queue: &str,
                receipt: &str,
                delay: std::time::Duration,
            ) -> Result<(), $crate::error::BrokerError> {
                self.queues.abandon(queue, receipt, delay)
            }

            async fn extend(
                &self,
                queue: &str,
                receipt: &str,
                visibility: std::time::Duration,
            ) -> Result<(), $crate::error::BrokerError> {
                self.queues.extend(queue, receipt, visibility)
            }

            async fn len(&self, queue: &str) -> Result<usize, $crate::error::BrokerError> {
                Ok(self.queues.len(queue))
            }

            async fn peek(
                &self,
                queue: &str,
                max: u32,
            ) -> Result<Vec<$crate::api::Peeked>, $crate::error::BrokerError> {
                self.queues.peek(queue, max)
            }

            async fn purge(&self, queue: &str) -> Result<u64, $crate::error::BrokerError> {
                self.queues.purge(queue).await
            }

            async fn redrive(
                &self,
                queue: &str,
                ids: Option<&[String]>,
            ) -> Result<Vec<String>, $crate::error::BrokerError> {
                self.queues.redrive(queue, ids).await
            }
        }
    };
}
pub(crate) use queue_broker_over_queues;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persist::Change;
    use futures::FutureExt;
    use std::collections::VecDeque;

    /// A store whose commits happen when the test says, in FIFO order, and
    /// that checks every submission is made under the rules' lock.
    #[derive(Default)]
    struct Gate {
        jobs: Mutex<VecDeque<(Vec<Change>, Option<Done>)>>,
        rules: std::sync::OnceLock<Arc<Mutex<QueueRules>>>,
    }

    impl Persist for Gate {
        const DURABLE: bool = true;
        fn submit(&self, changes: Vec<Change>, done: Option<Done>) -> Result<(), BrokerError> {
            if let Some(rules) = self.rules.get() {
                assert!(
                    matches!(rules.try_lock(), Err(std::sync::TryLockError::WouldBlock)),
                    "changes submitted outside the rules' lock: {changes:?}"
                );
            }
            self.jobs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push_back((changes, done));
            Ok(())
        }
    }

    impl Gate {
        /// Commits (or fails) the oldest submission; what it held.
        fn commit(&self, outcome: Result<(), BrokerError>) -> Vec<Change> {
            let job = self
                .jobs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop_front();
            let (changes, done) = job.expect("a submission to commit");
            if let Some(done) = done {
                done(outcome);
            }
            changes
        }

        fn waiting(&self) -> usize {
            self.jobs.lock().unwrap_or_else(|p| p.into_inner()).len()
        }
    }

    fn failed() -> Result<(), BrokerError> {
        Err(BrokerError::Unavailable("disk full".into()))
    }

    fn request(max: u32) -> ReceiveRequest {
        ReceiveRequest {
            max_messages: max,
            visibility_timeout: Duration::from_secs(60),
            wait: Duration::ZERO,
        }
    }

    fn gated(max_messages: usize) -> Queues<Gate> {
        let settings = QueueSettings {
            max_messages,
            ..QueueSettings::default()
        };
        let queues = Queues::new(settings, Gate::default());
        let _ = queues.persist.rules.set(queues.rules.clone());
        queues
    }

    async fn send_now(queues: &Queues<Gate>, body: &[u8]) -> String {
        let mut send = Box::pin(queues.send("q", body.to_vec(), SendOptions::now()));
        assert!(futures::poll!(&mut send).is_pending());
        queues.persist().commit(Ok(()));
        send.await.unwrap()
    }

    #[tokio::test]
    async fn a_send_dropped_before_its_commit_still_finishes() {
        let queues = gated(2);
        // Dropped while its write waits: the write lands, and the message
        // becomes receivable all the same.
        let dropped = queues.send("q", b"kept".to_vec(), SendOptions::now());
        assert!(dropped.now_or_never().is_none(), "the send waits");
        assert_eq!(queues.len("q"), 0, "receivable before it is on disk");
        queues.persist().commit(Ok(()));
        assert_eq!(queues.len("q"), 1);
        let got = queues.receive("q", request(1)).now_or_never();
        assert!(got.is_none(), "the receive writes its dequeue count first");
        // Dropped, and its write fails: forgotten, its room given back.
        let dropped = queues.send("q", b"lost".to_vec(), SendOptions::now());
        assert!(dropped.now_or_never().is_none());
        queues.persist().commit(Ok(())); // the dropped receive's write
        queues.persist().commit(failed());
        assert_eq!(queues.len("q"), 1);
        send_now(&queues, b"fits").await;
        let full = queues.send("q", b"full".to_vec(), SendOptions::now()).await;
        assert!(matches!(full, Err(BrokerError::Unavailable(_))), "{full:?}");
        // The dropped receive gave its message back at once.
        let mut receive = Box::pin(queues.receive("q", request(32)));
        assert!(futures::poll!(&mut receive).is_pending());
        queues.persist().commit(Ok(()));
        let bodies: Vec<Vec<u8>> = receive.await.unwrap().into_iter().map(|d| d.body).collect();
        assert_eq!(bodies, [b"kept".to_vec(), b"fits".to_vec()]);
    }

    #[tokio::test]
    async fn a_retried_send_is_answered_only_once_the_first_is_on_disk() {
        let queues = gated(100);
        let with = || SendOptions {
            dedupe_id: Some("order-1".into()),
            ..SendOptions::default()
        };
        // The first send's commit fails: its retry, made meanwhile, stores
        // the message itself instead of acknowledging one never stored.
        let mut first = Box::pin(queues.send("q", b"a".to_vec(), with()));
        assert!(futures::poll!(&mut first).is_pending());
        let mut retry = Box::pin(queues.send("q", b"a".to_vec(), with()));
        assert!(futures::poll!(&mut retry).is_pending(), "answered early");
        queues.persist().commit(failed());
        assert!(first.await.is_err());
        queues.persist().commit(Ok(())); // what the retry waited behind
        assert!(futures::poll!(&mut retry).is_pending(), "answered early");
        assert_eq!(queues.persist().waiting(), 1, "the retry sends anew");
        queues.persist().commit(Ok(()));
        let id = retry.await.unwrap();
        assert_eq!(queues.len("q"), 1);

        // Once the first is on disk, a retry is answered at once.
        let again = queues.send("q", b"a".to_vec(), with()).now_or_never();
        assert_eq!(again, Some(Ok(id.clone())));

        // A retry made while the first waits is answered after it lands.
        let with = || SendOptions {
            dedupe_id: Some("order-2".into()),
            ..SendOptions::default()
        };
        let mut first = Box::pin(queues.send("q", b"b".to_vec(), with()));
        assert!(futures::poll!(&mut first).is_pending());
        let mut retry = Box::pin(queues.send("q", b"b".to_vec(), with()));
        assert!(futures::poll!(&mut retry).is_pending());
        queues.persist().commit(Ok(()));
        let id = first.await.unwrap();
        assert!(futures::poll!(&mut retry).is_pending(), "answered early");
        queues.persist().commit(Ok(()));
        assert_eq!(retry.await.unwrap(), id);
        assert_eq!(queues.len("q"), 2);
    }

    #[tokio::test]
    async fn a_receive_whose_write_fails_gives_its_messages_back() {
        let queues = gated(100);
        let ids = [send_now(&queues, b"1").await, send_now(&queues, b"2").await];
        let mut receive = Box::pin(queues.receive("q", request(32)));
        assert!(futures::poll!(&mut receive).is_pending());
        queues.persist().commit(failed());
        assert!(receive.await.is_err());
        // Visible again at once, in order, their dequeue counts as on disk.
        let mut receive = Box::pin(queues.receive("q", request(32)));
        assert!(futures::poll!(&mut receive).is_pending());
        queues.persist().commit(Ok(()));
        let got: Vec<(String, u32)> = receive
            .await
            .unwrap()
            .into_iter()
            .map(|d| (d.id, d.dequeue_count))
            .collect();
        assert_eq!(got, [(ids[0].clone(), 1), (ids[1].clone(), 1)]);
    }

    #[tokio::test]
    async fn changes_reach_the_store_in_the_order_the_rules_made_them() {
        let queues = gated(100);
        send_now(&queues, b"x").await;
        // Deliver, abandon, deliver again, complete: each change is
        // submitted while the rules are locked (the gate checks), so the
        // store applies them in the rules' order whatever the threads do.
        let mut receive = Box::pin(queues.receive("q", request(1)));
        assert!(futures::poll!(&mut receive).is_pending());
        queues.persist().commit(Ok(()));
        let first = receive.await.unwrap().remove(0);
        queues.abandon("q", &first.receipt, Duration::ZERO).unwrap();
        let mut receive = Box::pin(queues.receive("q", request(1)));
        assert!(futures::poll!(&mut receive).is_pending());
        let second = {
            let gate = queues.persist();
            let abandon = gate.commit(Ok(()));
            assert!(
                matches!(abandon[..], [Change::Put { ref message, .. }] if message.dequeue_count == 1)
            );
            let delivered = gate.commit(Ok(()));
            assert!(
                matches!(delivered[..], [Change::Put { ref message, .. }] if message.dequeue_count == 2)
            );
            receive.await.unwrap().remove(0)
        };
        queues.complete("q", &second.receipt).unwrap();
        let complete = queues.persist().commit(Ok(()));
        assert!(matches!(complete[..], [Change::Delete { .. }]));
        assert_eq!(queues.persist().waiting(), 0);
    }
}
