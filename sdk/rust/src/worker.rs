//! [`Worker`]: the pull loop of a worker role.
//!
//! A worker role is a Rust binary; the host calls its `fn main` (the standard
//! `wasi:cli/run` export) and restarts it when it exits. `main` builds a
//! [`Worker`] for a queue and hands it a handler; the worker then loops
//! forever:
//!
//! 1. [`receive`](crate::queue::receive) a batch (waiting for one if the queue is empty);
//! 2. call the handler on each message ([`Worker::run`]) or on the whole batch
//!    ([`Worker::run_batch`]), and [`abandon`](crate::queue::abandon) a message at once
//!    (logging the error to stderr) if its handler returned `Err`, so it is delivered
//!    again (after [`Worker::retry_delay`], if set);
//! 3. once the whole batch is handled, [`complete_batch`](crate::queue::complete_batch)
//!    the messages whose handler returned `Ok`: one host call for the batch, so the
//!    role's queue rate limit counts one call per batch, not one per message.
//!
//! A message is so completed only after the rest of its batch is handled:
//! if the instance dies mid-batch, the messages it handled but had not
//! completed are delivered again (delivery is at least once anyway). The
//! visibility timeout must cover the whole batch, as it always had to.
//!
//! When the host asks the instance to stop (an upgrade, a scale-down,
//! shutdown), `receive` returns nothing and [`crate::lifecycle::stopping`]
//! says so: the loop, having finished the batch it held, returns `Ok(())`.
//!
//! When the host answers [`RateLimited`](Error::RateLimited) or
//! [`Unavailable`](Error::Unavailable), the worker sleeps (50 ms, doubling
//! up to 2 s) and retries. Any other error from `receive`, or from settling
//! a message, ends [`Worker::run`] with that error: return it from `main` and
//! the host restarts the role. A settle that fails with
//! [`NotFound`](Error::NotFound) means the lease lapsed first; the message
//! will be delivered again, so the worker logs it and carries on.
//!
//! A handler that panics or loops forever is the host's business: it traps
//! or interrupts the instance, the lease lapses and the message comes back.

use std::fmt::Display;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::error::{Error, Result};
use crate::queue::{self, Message, ReceiveOptions};

/// Pulls messages from one queue and hands each to a handler; see the
/// [module docs](self) for the loop.
///
/// ```no_run
/// use weft_sdk::worker::Worker;
/// use std::time::Duration;
///
/// fn main() -> Result<(), weft_sdk::Error> {
///     Worker::new("jobs")
///         .batch_size(4)
///         .visibility_timeout(Duration::from_secs(60))
///         .run(|message| {
///             let text = message.body_str().map_err(|e| format!("not text: {e}"))?;
///             println!("job {}: {} bytes", message.id(), text.len());
///             Ok::<(), String>(())
///         })?;
///     Ok(())
/// }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a Worker does nothing until `run` is called"]
pub struct Worker {
    queue: String,
    options: ReceiveOptions,
    retry_delay: Duration,
}

impl Worker {
    /// A worker for `queue`, with the [`ReceiveOptions`] defaults (batches of
    /// 8, a 30 s lease, waits of 20 s).
    pub fn new(queue: impl Into<String>) -> Self {
        Worker {
            queue: queue.into(),
            options: ReceiveOptions::default(),
            retry_delay: Duration::ZERO,
        }
    }

    /// The most messages to take per `receive` (clamped to `1..=32`).
    pub fn batch_size(mut self, n: u32) -> Self {
        self.options.max_messages = n;
        self
    }

    /// How long each message is leased to this worker. Make it comfortably
    /// longer than the handler takes for a whole batch.
    pub fn visibility_timeout(mut self, timeout: Duration) -> Self {
        self.options.visibility_timeout = timeout;
        self
    }

    /// How long one `receive` waits when the queue is empty.
    pub fn wait(mut self, wait: Duration) -> Self {
        self.options.wait = wait;
        self
    }

    /// How long a message whose handler failed stays invisible before it is
    /// delivered again (default: none, at once). A pause lets a downstream
    /// fault pass instead of spending the message's deliveries at once.
    pub fn retry_delay(mut self, delay: Duration) -> Self {
        self.retry_delay = delay;
        self
    }

    /// The queue this worker pulls from.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Runs the pull loop, calling `handler` on each message, until the host
    /// asks the instance to stop (then it returns `Ok(())` once the batch it
    /// held is settled), or an error the worker cannot retry (a queue the
    /// manifest does not grant, an invalid option...).
    pub fn run<F, E>(self, handler: F) -> Result<()>
    where
        F: FnMut(&Message) -> Result<(), E>,
        E: Display,
    {
        pull(
            &mut VmBus,
            &self.queue,
            &self.options,
            self.retry_delay,
            each_message(handler),
        )
    }

    /// Runs the pull loop as [`run`](Self::run) does, but hands `handler`
    /// each received batch whole: `Ok` completes all of it (one call),
    /// `Err` abandons all of it. For handlers whose cost is per batch rather
    /// than per message, such as writing every result with one
    /// [`Bucket::set_many`](crate::kv::Bucket::set_many) (one commit for the
    /// batch instead of one per message).
    ///
    /// ```no_run
    /// use weft_sdk::kv::Bucket;
    /// use weft_sdk::worker::Worker;
    ///
    /// fn main() -> Result<(), Box<dyn std::error::Error>> {
    ///     let lengths = Bucket::open("lengths")?;
    ///     Worker::new("jobs").batch_size(32).run_batch(|batch| {
    ///         lengths.set_many(
    ///             batch
    ///                 .iter()
    ///                 .map(|m| (m.id().to_owned(), m.body().len().to_string())),
    ///         )
    ///     })?;
    ///     Ok(())
    /// }
    /// ```
    pub fn run_batch<F, E>(self, handler: F) -> Result<()>
    where
        F: FnMut(&[Message]) -> Result<(), E>,
        E: Display,
    {
        pull(
            &mut VmBus,
            &self.queue,
            &self.options,
            self.retry_delay,
            whole_batch(handler),
        )
    }
}

/// A batch handler calling `handler` on each message of the batch.
fn each_message<F, E>(mut handler: F) -> impl FnMut(&[Message]) -> Vec<Result<(), E>>
where
    F: FnMut(&Message) -> Result<(), E>,
{
    move |batch| batch.iter().map(&mut handler).collect()
}

/// A batch handler calling `handler` once on the whole batch, its outcome
/// (the error shown as text) standing for every message.
fn whole_batch<F, E>(mut handler: F) -> impl FnMut(&[Message]) -> Vec<Result<(), String>>
where
    F: FnMut(&[Message]) -> Result<(), E>,
    E: Display,
{
    move |batch| {
        let outcome = handler(batch).map_err(|e| e.to_string());
        vec![outcome; batch.len()]
    }
}

/// What the pull loop needs from the host, so it can be tested without wasm.
pub(crate) trait Bus {
    fn receive(&mut self, queue: &str, options: &ReceiveOptions) -> Result<Vec<Message>>;
    fn complete(&mut self, queue: &str, message: &Message) -> Result<()>;
    fn complete_batch(&mut self, queue: &str, messages: &[&Message]) -> Result<Vec<Result<()>>>;
    fn abandon(&mut self, queue: &str, message: &Message, delay: Duration) -> Result<()>;
    fn sleep(&mut self, delay: Duration);
    fn stopping(&mut self) -> bool;
}

/// The real VMBus.
struct VmBus;

impl Bus for VmBus {
    fn receive(&mut self, queue: &str, options: &ReceiveOptions) -> Result<Vec<Message>> {
        queue::receive(queue, options)
    }
    fn complete(&mut self, queue: &str, message: &Message) -> Result<()> {
        queue::complete(queue, message)
    }
    fn complete_batch(&mut self, queue: &str, messages: &[&Message]) -> Result<Vec<Result<()>>> {
        queue::complete_batch(queue, messages)
    }
    fn abandon(&mut self, queue: &str, message: &Message, delay: Duration) -> Result<()> {
        queue::abandon_after(queue, message, delay)
    }
    fn sleep(&mut self, delay: Duration) {
        std::thread::sleep(delay);
    }
    fn stopping(&mut self) -> bool {
        crate::lifecycle::stopping()
    }
}

/// The pull loop; returns when the host asks the instance to stop, or with
/// the error that ended it. `handle` answers one outcome per message of a
/// batch, in order; a message it gives no outcome is abandoned.
pub(crate) fn pull<B, F, E>(
    bus: &mut B,
    queue: &str,
    options: &ReceiveOptions,
    retry_delay: Duration,
    mut handle: F,
) -> Result<()>
where
    B: Bus,
    F: FnMut(&[Message]) -> Vec<Result<(), E>>,
    E: Display,
{
    let mut backoff = Backoff::new();
    loop {
        let batch = match bus.receive(queue, options) {
            Ok(batch) => batch,
            Err(e) if e.is_transient() => {
                bus.sleep(backoff.next_delay());
                continue;
            }
            Err(e) => return Err(e),
        };
        if batch.is_empty() {
            // A host asking the instance to stop hands out nothing more.
            if bus.stopping() {
                return Ok(());
            }
            // The host waited `options.wait` for nothing; with no wait at
            // all, pace the polling instead of spinning.
            if options.wait.is_zero() {
                bus.sleep(backoff.next_delay());
            }
            continue;
        }
        backoff.reset();
        let mut done = Vec::with_capacity(batch.len());
        let mut outcomes = handle(&batch).into_iter();
        for message in &batch {
            let failure = match outcomes.next() {
                Some(Ok(())) => {
                    done.push(message);
                    continue;
                }
                Some(Err(e)) => e.to_string(),
                None => "the handler gave it no outcome".to_owned(),
            };
            eprintln!(
                "weft-sdk: queue `{queue}`: message {} failed on delivery {}: {failure}; abandoning it",
                message.id(),
                message.dequeue_count()
            );
            settle(bus, queue, message, Settle::Abandon(retry_delay))?;
        }
        complete_all(bus, queue, &done)?;
    }
}

/// Completes the messages a batch handled in one call, retrying the call
/// while it fails transiently; a message the call could not complete for a
/// passing reason is then settled on its own, and one whose lease lapsed is
/// logged and left (see [`settle`]).
fn complete_all<B: Bus>(bus: &mut B, queue: &str, done: &[&Message]) -> Result<()> {
    if done.is_empty() {
        return Ok(());
    }
    let mut backoff = Backoff::new();
    let outcomes = loop {
        match bus.complete_batch(queue, done) {
            Ok(outcomes) => break outcomes,
            Err(e) if e.is_transient() => bus.sleep(backoff.next_delay()),
            Err(e) => return Err(e),
        }
    };
    let mut outcomes = outcomes.into_iter();
    for message in done {
        // A host answering fewer outcomes than receipts: the rest are
        // settled one by one.
        match outcomes.next() {
            Some(Ok(())) => {}
            Some(Err(Error::NotFound(why))) => lapsed(queue, message, &why),
            Some(Err(e)) if !e.is_transient() => return Err(e),
            Some(Err(_)) | None => settle(bus, queue, message, Settle::Complete)?,
        }
    }
    Ok(())
}

/// Logs a settle refused because the message's lease lapsed first.
fn lapsed(queue: &str, message: &Message, why: &str) {
    eprintln!(
        "weft-sdk: queue `{queue}`: could not settle message {} ({why}); its lease lapsed and it will be delivered again",
        message.id()
    );
}

#[derive(Debug, Clone, Copy)]
enum Settle {
    Complete,
    Abandon(Duration),
}

/// Completes or abandons `message`, retrying transient failures. A lapsed
/// lease (`NotFound`) is logged and ignored: the message comes back anyway.
fn settle<B: Bus>(bus: &mut B, queue: &str, message: &Message, how: Settle) -> Result<()> {
    let mut backoff = Backoff::new();
    loop {
        let result = match how {
            Settle::Complete => bus.complete(queue, message),
            Settle::Abandon(delay) => bus.abandon(queue, message, delay),
        };
        match result {
            Ok(()) => return Ok(()),
            Err(e) if e.is_transient() => bus.sleep(backoff.next_delay()),
            Err(Error::NotFound(why)) => {
                lapsed(queue, message, &why);
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A scripted bus: `receive` answers from `batches` (then `Denied`, which
    /// ends the loop), settling answers from `settles` (then `Ok`); a batch
    /// completion answers from `batch_calls`, else each of its messages from
    /// `settles`.
    #[derive(Default)]
    struct FakeBus {
        batches: VecDeque<Result<Vec<Message>>>,
        settles: VecDeque<Result<()>>,
        batch_calls: VecDeque<Result<Vec<Result<()>>>>,
        /// How many messages each batch completion carried.
        batch_sizes: Vec<usize>,
        /// Single completions.
        single_completes: usize,
        completed: Vec<String>,
        abandoned: Vec<String>,
        abandon_delays: Vec<Duration>,
        slept: Vec<Duration>,
        /// Whether the host asks the loop to stop once the batches run out.
        stop_at_end: bool,
    }

    impl FakeBus {
        fn next_settle(&mut self) -> Result<()> {
            self.settles.pop_front().unwrap_or(Ok(()))
        }
    }

    impl Bus for FakeBus {
        fn receive(&mut self, _: &str, _: &ReceiveOptions) -> Result<Vec<Message>> {
            match self.batches.pop_front() {
                Some(batch) => batch,
                None if self.stop_at_end => Ok(Vec::new()),
                None => Err(Error::Denied("script over".into())),
            }
        }
        fn complete(&mut self, _: &str, message: &Message) -> Result<()> {
            self.single_completes += 1;
            let result = self.next_settle();
            if result.is_ok() {
                self.completed.push(message.id.clone());
            }
            result
        }
        fn complete_batch(&mut self, _: &str, messages: &[&Message]) -> Result<Vec<Result<()>>> {
            self.batch_sizes.push(messages.len());
            let outcomes = match self.batch_calls.pop_front() {
                Some(answer) => answer?,
                None => messages.iter().map(|_| self.next_settle()).collect(),
            };
            for (message, outcome) in messages.iter().zip(&outcomes) {
                if outcome.is_ok() {
                    self.completed.push(message.id.clone());
                }
            }
            Ok(outcomes)
        }
        fn abandon(&mut self, _: &str, message: &Message, delay: Duration) -> Result<()> {
            let result = self.next_settle();
            if result.is_ok() {
                self.abandoned.push(message.id.clone());
                self.abandon_delays.push(delay);
            }
            result
        }
        fn sleep(&mut self, delay: Duration) {
            self.slept.push(delay);
        }
        fn stopping(&mut self) -> bool {
            self.stop_at_end && self.batches.is_empty()
        }
    }

    fn message(id: &str, body: &str) -> Message {
        Message {
            id: id.into(),
            body: body.as_bytes().to_vec(),
            dequeue_count: 1,
            inserted_at_ms: 0,
            receipt: format!("receipt-{id}"),
            poison_reason: None,
        }
    }

    fn ok_unless_fail(m: &Message) -> Result<(), String> {
        match m.body() {
            b"fail" => Err("asked to fail".into()),
            _ => Ok(()),
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn completes_successes_and_abandons_failures() {
        let mut bus = FakeBus::default();
        bus.batches
            .push_back(Ok(vec![message("a", "ok"), message("b", "fail")]));
        bus.batches.push_back(Ok(vec![message("c", "ok")]));
        let end = pull(
            &mut bus,
            "q",
            &ReceiveOptions::default(),
            Duration::ZERO,
            each_message(ok_unless_fail),
        );
        assert_eq!(end, Err(Error::Denied("script over".into())));
        assert_eq!(bus.completed, ["a", "c"]);
        assert_eq!(bus.abandoned, ["b"]);
        assert_eq!(bus.abandon_delays, [Duration::ZERO]);
        assert!(bus.slept.is_empty());
    }

    #[test]
    fn backs_off_on_transient_receive_errors_and_resets_after_success() {
        let mut bus = FakeBus::default();
        for _ in 0..7 {
            bus.batches.push_back(Err(Error::RateLimited));
        }
        bus.batches.push_back(Ok(vec![message("a", "ok")]));
        bus.batches
            .push_back(Err(Error::Unavailable("restarting".into())));
        let end = pull(
            &mut bus,
            "q",
            &ReceiveOptions::default(),
            Duration::ZERO,
            each_message(ok_unless_fail),
        );
        assert_eq!(end, Err(Error::Denied("script over".into())));
        assert_eq!(
            bus.slept,
            [
                ms(50),
                ms(100),
                ms(200),
                ms(400),
                ms(800),
                ms(1600),
                ms(2000),
                ms(50)
            ]
        );
        assert_eq!(bus.completed, ["a"]);
    }

    #[test]
    fn stops_on_errors_it_cannot_retry() {
        for fatal in [
            Error::Denied("no".into()),
            Error::NotFound("queue".into()),
            Error::Invalid("batch".into()),
        ] {
            let mut bus = FakeBus::default();
            bus.batches.push_back(Err(fatal.clone()));
            bus.batches.push_back(Ok(vec![message("never", "ok")]));
            let end = pull(
                &mut bus,
                "q",
                &ReceiveOptions::default(),
                Duration::ZERO,
                each_message(ok_unless_fail),
            );
            assert_eq!(end, Err(fatal));
            assert!(bus.completed.is_empty());
        }
    }

    #[test]
    fn empty_batches_are_paced_only_without_a_wait() {
        let mut bus = FakeBus::default();
        bus.batches.push_back(Ok(vec![]));
        let _ = pull(
            &mut bus,
            "q",
            &ReceiveOptions::default(),
            Duration::ZERO,
            each_message(ok_unless_fail),
        );
        assert!(bus.slept.is_empty());

        let mut bus = FakeBus::default();
        bus.batches.push_back(Ok(vec![]));
        bus.batches.push_back(Ok(vec![]));
        let no_wait = ReceiveOptions {
            wait: Duration::ZERO,
            ..ReceiveOptions::default()
        };
        let _ = pull(
            &mut bus,
            "q",
            &no_wait,
            Duration::ZERO,
            each_message(ok_unless_fail),
        );
        assert_eq!(bus.slept, [ms(50), ms(100)]);
    }

    #[test]
    fn settling_retries_transient_errors_and_skips_lapsed_leases() {
        let mut bus = FakeBus::default();
        bus.batches.push_back(Ok(vec![
            message("a", "ok"),
            message("b", "ok"),
            message("c", "ok"),
        ]));
        // The batch call is refused twice as a whole, then answers: `a`
        // done, `b` unavailable for now, `c`'s lease lapsed.
        bus.batch_calls.push_back(Err(Error::RateLimited));
        bus.batch_calls
            .push_back(Err(Error::Unavailable("x".into())));
        bus.batch_calls.push_back(Ok(vec![
            Ok(()),
            Err(Error::Unavailable("y".into())),
            Err(Error::NotFound("stale receipt".into())),
        ]));
        // `b` alone: unavailable once more, then done.
        bus.settles.push_back(Err(Error::Unavailable("z".into())));
        let end = pull(
            &mut bus,
            "q",
            &ReceiveOptions::default(),
            Duration::ZERO,
            each_message(ok_unless_fail),
        );
        assert_eq!(end, Err(Error::Denied("script over".into())));
        assert_eq!(bus.completed, ["a", "b"]);
        assert_eq!(bus.batch_sizes, [3, 3, 3]);
        assert_eq!(bus.single_completes, 2);
        assert_eq!(bus.slept, [ms(50), ms(100), ms(50)]);
    }

    /// A batch's successes are completed in one call, whatever its size;
    /// its failures are abandoned one by one, and a batch of failures
    /// makes no completion call.
    #[test]
    fn a_batch_is_completed_in_one_call() {
        let mut bus = FakeBus::default();
        let batch: Vec<Message> = (0..32).map(|i| message(&format!("m{i}"), "ok")).collect();
        bus.batches.push_back(Ok(batch));
        bus.batches
            .push_back(Ok(vec![message("x", "fail"), message("y", "fail")]));
        bus.batches.push_back(Ok(vec![
            message("p", "ok"),
            message("q", "fail"),
            message("r", "ok"),
        ]));
        let _ = pull(
            &mut bus,
            "q",
            &ReceiveOptions::default(),
            Duration::ZERO,
            each_message(ok_unless_fail),
        );
        assert_eq!(bus.batch_sizes, [32, 2]);
        assert_eq!(bus.single_completes, 0);
        assert_eq!(bus.completed.len(), 34);
        assert_eq!(bus.completed[32..], ["p", "r"]);
        assert_eq!(bus.abandoned, ["x", "y", "q"]);
    }

    #[test]
    fn a_batch_completion_stops_on_a_denial() {
        let mut bus = FakeBus::default();
        bus.batches.push_back(Ok(vec![message("a", "ok")]));
        bus.batch_calls
            .push_back(Err(Error::Denied("revoked".into())));
        let end = pull(
            &mut bus,
            "q",
            &ReceiveOptions::default(),
            Duration::ZERO,
            each_message(ok_unless_fail),
        );
        assert_eq!(end, Err(Error::Denied("revoked".into())));
        assert!(bus.completed.is_empty());
    }

    #[test]
    fn settling_stops_on_a_denial() {
        let mut bus = FakeBus::default();
        bus.batches
            .push_back(Ok(vec![message("a", "fail"), message("b", "ok")]));
        bus.settles.push_back(Err(Error::Denied("revoked".into())));
        let end = pull(
            &mut bus,
            "q",
            &ReceiveOptions::default(),
            Duration::ZERO,
            each_message(ok_unless_fail),
        );
        assert_eq!(end, Err(Error::Denied("revoked".into())));
        assert!(bus.completed.is_empty() && bus.abandoned.is_empty());
    }

    #[test]
    fn failures_are_retried_after_the_retry_delay() {
        let mut bus = FakeBus::default();
        bus.batches.push_back(Ok(vec![message("a", "fail")]));
        let options = ReceiveOptions::default();
        let _ = pull(
            &mut bus,
            "q",
            &options,
            ms(1500),
            each_message(ok_unless_fail),
        );
        assert_eq!(bus.abandon_delays, [ms(1500)]);
    }

    #[test]
    fn builder_sets_the_receive_options() {
        let worker = Worker::new("jobs")
            .batch_size(3)
            .visibility_timeout(Duration::from_secs(5))
            .wait(Duration::from_secs(1))
            .retry_delay(Duration::from_secs(2));
        assert_eq!(worker.queue(), "jobs");
        assert_eq!(worker.retry_delay, Duration::from_secs(2));
        assert_eq!(
            worker.options,
            ReceiveOptions {
                max_messages: 3,
                visibility_timeout: Duration::from_secs(5),
                wait: Duration::from_secs(1),
            }
        );
    }

    #[test]
    fn a_stop_ends_the_loop_once_the_batch_is_settled() {
        let mut bus = FakeBus {
            stop_at_end: true,
            ..FakeBus::default()
        };
        bus.batches
            .push_back(Ok(vec![message("a", "ok"), message("b", "fail")]));
        let end = pull(
            &mut bus,
            "q",
            &ReceiveOptions::default(),
            Duration::ZERO,
            each_message(ok_unless_fail),
        );
        assert_eq!(end, Ok(()));
        assert_eq!(bus.completed, ["a"]);
        assert_eq!(bus.abandoned, ["b"]);
    }

    /// `run_batch`'s handler sees each batch whole: `Ok` completes all of
    /// it in one call, `Err` abandons every message of it.
    #[test]
    fn a_whole_batch_handler_completes_or_abandons_its_batch_together() {
        let mut bus = FakeBus {
            stop_at_end: true,
            ..FakeBus::default()
        };
        bus.batches
            .push_back(Ok(vec![message("a", "ok"), message("b", "ok")]));
        bus.batches.push_back(Ok(vec![
            message("c", "ok"),
            message("d", "fail"),
            message("e", "ok"),
        ]));
        let mut seen = Vec::new();
        let end = pull(
            &mut bus,
            "q",
            &ReceiveOptions::default(),
            Duration::ZERO,
            whole_batch(|batch: &[Message]| {
                seen.push(batch.len());
                batch.iter().try_for_each(ok_unless_fail)
            }),
        );
        assert_eq!(end, Ok(()));
        assert_eq!(seen, [2, 3]);
        assert_eq!(bus.batch_sizes, [2]);
        assert_eq!(bus.completed, ["a", "b"]);
        assert_eq!(bus.abandoned, ["c", "d", "e"]);
    }

    /// A message the handler gives no outcome is abandoned, not left to
    /// lapse.
    #[test]
    fn a_message_without_an_outcome_is_abandoned() {
        let mut bus = FakeBus {
            stop_at_end: true,
            ..FakeBus::default()
        };
        bus.batches
            .push_back(Ok(vec![message("a", "ok"), message("b", "ok")]));
        let end = pull(
            &mut bus,
            "q",
            &ReceiveOptions::default(),
            Duration::ZERO,
            |_: &[Message]| vec![Ok::<(), String>(())],
        );
        assert_eq!(end, Ok(()));
        assert_eq!(bus.completed, ["a"]);
        assert_eq!(bus.abandoned, ["b"]);
    }
}
