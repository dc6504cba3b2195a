//! The span queue and its batching task.
//!
//! [`Spans`] is the sink: `record` is a `try_send` into a bounded channel,
//! and a span that finds it full is dropped and counted. The task takes
//! spans off the channel into a batch, and sends the batch once it holds
//! `max_batch` spans or its first span has waited `interval`; one batch is
//! in flight at a time, so while the collector is slow the channel fills
//! and new spans are dropped, and nothing grows. The export itself is an
//! [`Export`] (OTLP/HTTP in production, a recorder in the tests, whose
//! clock is tokio's, paused).
//!
//! When the host stops, [`Flush::flush`] has the task send what it still
//! holds (the batch being filled and the whole queue, in batches of
//! `max_batch`) at once, and end: an export already in flight, and the
//! last ones, all end by the flush's deadline, and what is not sent by
//! then is dropped and counted. So stopping waits for the collector at
//! most that long, and spans recorded later are dropped and counted.

use super::stats::SpanStats;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use weft_sandbox::{FinishedSpan, SpanSink};

/// Failures are logged no more often than this.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The queue's and the batches' sizes.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Spans the channel holds.
    pub queue: usize,
    /// Spans one export carries at most.
    pub max_batch: usize,
    /// The longest the first span of a batch waits for the batch to be sent.
    pub interval: Duration,
}

/// Sends one batch: `Err` says why it failed (the batch is then dropped).
pub(crate) trait Export: Send + 'static {
    fn export(
        &mut self,
        spans: Vec<FinishedSpan>,
    ) -> impl Future<Output = Result<(), String>> + Send;
}

/// The sink the engine records spans into.
pub struct Spans {
    queue: mpsc::Sender<FinishedSpan>,
    stats: Arc<SpanStats>,
}

impl SpanSink for Spans {
    fn record(&self, span: FinishedSpan) {
        if self.queue.try_send(span).is_err() {
            self.stats.add_dropped(1);
        }
    }
}

/// Ends the export when the host stops: one last export of what is queued.
pub(crate) struct Flush {
    ask: oneshot::Sender<tokio::time::Instant>,
    task: JoinHandle<()>,
}

impl Flush {
    /// Has the task export what it holds and end, waiting for it no longer
    /// than `within`: however slow the collector, this returns by then.
    pub(crate) async fn flush(self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        // The task may have ended already (every sink dropped): nothing to do.
        let _ = self.ask.send(deadline);
        let _ = tokio::time::timeout_at(deadline, self.task).await;
    }
}

/// The sink, with the task that exports what it is given spawned on the
/// current runtime, and what flushes it.
pub(crate) fn start(
    limits: BatchLimits,
    export: impl Export,
    stats: Arc<SpanStats>,
) -> (Spans, Flush) {
    let (queue, spans) = mpsc::channel(limits.queue.max(1));
    let sink = Spans {
        queue,
        stats: stats.clone(),
    };
    let (ask, asked) = oneshot::channel();
    let task = tokio::spawn(run(spans, limits, export, stats, asked));
    (sink, Flush { ask, task })
}

/// A failed export's spans are counted dropped, and the failure logged
/// at most once every [`WARN_EVERY`].
struct Outcomes {
    stats: Arc<SpanStats>,
    warned: Option<Instant>,
    failed_since_warning: usize,
}

impl Outcomes {
    fn record(&mut self, count: usize, outcome: Result<(), String>) {
        let why = match outcome {
            Ok(()) => return self.stats.add_exported(count),
            Err(why) => why,
        };
        self.stats.add_dropped(count);
        self.failed_since_warning += 1;
        let now = Instant::now();
        if self
            .warned
            .is_none_or(|at| now.duration_since(at) >= WARN_EVERY)
        {
            tracing::warn!(
                error = %why,
                failed_batches = self.failed_since_warning,
                dropped_total = self.stats.dropped(),
                "cannot export spans; dropping them (logged at most once a minute)"
            );
            self.warned = Some(now);
            self.failed_since_warning = 0;
        }
    }
}

/// The deadline a flush asks for; never, if its asker is dropped unasked.
async fn flush_asked(asked: oneshot::Receiver<tokio::time::Instant>) -> tokio::time::Instant {
    match asked.await {
        Ok(deadline) => deadline,
        Err(_) => std::future::pending().await,
    }
}

/// Batches and exports until every sink is dropped and the queue is
/// empty, or a flush is asked for (then see [`last_exports`]).
async fn run(
    mut spans: mpsc::Receiver<FinishedSpan>,
    limits: BatchLimits,
    mut export: impl Export,
    stats: Arc<SpanStats>,
    asked: oneshot::Receiver<tokio::time::Instant>,
) {
    let max_batch = limits.max_batch.max(1);
    let mut outcomes = Outcomes {
        stats,
        warned: None,
        failed_since_warning: 0,
    };
    // Polled until it answers, never after.
    let mut flush = std::pin::pin!(flush_asked(asked));
    let mut batch = Vec::new();
    let deadline = 'batches: loop {
        let first = tokio::select! {
            biased;
            deadline = &mut flush => break 'batches deadline,
            first = spans.recv() => first,
        };
        let Some(first) = first else { return };
        batch.push(first);
        let send_at = tokio::time::Instant::now() + limits.interval;
        let mut open = true;
        while batch.len() < max_batch {
            tokio::select! {
                biased;
                deadline = &mut flush => break 'batches deadline,
                next = tokio::time::timeout_at(send_at, spans.recv()) => match next {
                    Ok(Some(span)) => batch.push(span),
                    Ok(None) => {
                        open = false;
                        break;
                    }
                    Err(_elapsed) => break,
                },
            }
        }
        let count = batch.len();
        let mut exporting = std::pin::pin!(export.export(std::mem::take(&mut batch)));
        // A flush asked for meanwhile lets this export finish, by its deadline.
        let mut asked = None;
        let outcome = tokio::select! {
            outcome = &mut exporting => outcome,
            deadline = &mut flush => {
                asked = Some(deadline);
                tokio::time::timeout_at(deadline, &mut exporting)
                    .await
                    .unwrap_or_else(|_| Err("the host stopped before the collector answered".into()))
            }
        };
        outcomes.record(count, outcome);
        if let Some(deadline) = asked {
            break deadline;
        }
        if !open {
            return;
        }
    };
    last_exports(spans, batch, deadline, max_batch, export, outcomes).await;
}

/// A flush: takes no more spans, and exports the batch being filled and
/// all the queue holds, each export bounded by `deadline`; what is not
/// sent by then is dropped and counted.
async fn last_exports(
    mut spans: mpsc::Receiver<FinishedSpan>,
    mut held: Vec<FinishedSpan>,
    deadline: tokio::time::Instant,
    max_batch: usize,
    mut export: impl Export,
    mut outcomes: Outcomes,
) {
    spans.close();
    while let Ok(span) = spans.try_recv() {
        held.push(span);
    }
    let mut held = held.into_iter().peekable();
    while held.peek().is_some() {
        let batch: Vec<_> = held.by_ref().take(max_batch).collect();
        let count = batch.len();
        match tokio::time::timeout_at(deadline, export.export(batch)).await {
            Ok(outcome) => outcomes.record(count, outcome),
            Err(_elapsed) => {
                let left = count + held.len();
                outcomes.record(
                    left,
                    Err("the host stopped before the collector answered".into()),
                );
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::SystemTime;
    use tokio::sync::Semaphore;
    use weft_sandbox::trace::{SpanId, SpanKind, TraceId};

    fn span(n: u8) -> FinishedSpan {
        FinishedSpan {
            name: "weft.request",
            kind: SpanKind::Server,
            trace_id: TraceId([n.max(1); 16]),
            span_id: SpanId([n.max(1); 8]),
            parent_span_id: None,
            start: SystemTime::UNIX_EPOCH,
            end: SystemTime::UNIX_EPOCH,
            attributes: Vec::new(),
        }
    }

    /// Records each batch's size; each export waits for a permit (none
    /// missing: exports pass at once), and fails when told to.
    #[derive(Clone, Default)]
    struct Recorder {
        batches: Arc<Mutex<Vec<usize>>>,
        gate: Option<Arc<Semaphore>>,
        fail: bool,
    }

    impl Export for Recorder {
        async fn export(&mut self, spans: Vec<FinishedSpan>) -> Result<(), String> {
            if let Some(gate) = &self.gate {
                let _permit = gate.acquire().await.map_err(|e| e.to_string())?;
            }
            self.batches.lock().unwrap().push(spans.len());
            if self.fail {
                Err("refused".into())
            } else {
                Ok(())
            }
        }
    }

    const LIMITS: BatchLimits = BatchLimits {
        queue: 64,
        max_batch: 10,
        interval: Duration::from_secs(1),
    };

    #[tokio::test(start_paused = true)]
    async fn full_batches_go_at_once_and_the_rest_after_the_interval() {
        let recorder = Recorder::default();
        let stats = Arc::new(SpanStats::default());
        let (sink, flush) = start(LIMITS, recorder.clone(), stats.clone());
        for n in 0..25 {
            sink.record(span(n));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(*recorder.batches.lock().unwrap(), [10, 10]);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(*recorder.batches.lock().unwrap(), [10, 10, 5]);
        assert_eq!((stats.exported(), stats.dropped()), (25, 0));
        drop(sink);
        flush.task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_stuck_collector_fills_the_queue_then_spans_are_dropped_and_counted() {
        let gate = Arc::new(Semaphore::new(0));
        let recorder = Recorder {
            gate: Some(gate.clone()),
            ..Recorder::default()
        };
        let stats = Arc::new(SpanStats::default());
        let (sink, _flush) = start(LIMITS, recorder.clone(), stats.clone());
        // The first batch (10) is taken and stuck; the queue holds 64 more.
        for n in 0..10 {
            sink.record(span(n));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        for n in 0..100 {
            sink.record(span(n));
        }
        assert_eq!(
            stats.dropped(),
            100 - 64,
            "only what the queue holds is kept"
        );
        // Once the collector answers, what was kept goes out in full batches.
        gate.add_permits(1000);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let batches = recorder.batches.lock().unwrap().clone();
        assert_eq!(batches.iter().sum::<usize>(), 10 + 64);
        assert!(batches.iter().all(|b| *b <= 10), "{batches:?}");
        assert_eq!(stats.exported(), 74);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_batches_are_dropped_counted_and_not_retried() {
        let recorder = Recorder {
            fail: true,
            ..Recorder::default()
        };
        let stats = Arc::new(SpanStats::default());
        let (sink, flush) = start(LIMITS, recorder.clone(), stats.clone());
        for n in 0..15 {
            sink.record(span(n));
        }
        drop(sink);
        flush.task.await.unwrap();
        assert_eq!(*recorder.batches.lock().unwrap(), [10, 5]);
        assert_eq!((stats.exported(), stats.dropped()), (0, 15));
    }

    #[tokio::test(start_paused = true)]
    async fn a_flush_sends_the_queue_and_the_batch_being_filled_at_once_then_ends() {
        // All still queued: the task has not run yet.
        let recorder = Recorder::default();
        let stats = Arc::new(SpanStats::default());
        let (sink, flush) = start(LIMITS, recorder.clone(), stats.clone());
        for n in 0..25 {
            sink.record(span(n));
        }
        let started = tokio::time::Instant::now();
        flush.flush(Duration::from_secs(2)).await;
        assert_eq!(*recorder.batches.lock().unwrap(), [10, 10, 5]);
        assert_eq!((stats.exported(), stats.dropped()), (25, 0));
        assert!(
            started.elapsed() < LIMITS.interval,
            "{:?}",
            started.elapsed()
        );
        // The export has ended: a span recorded now is dropped and counted.
        sink.record(span(1));
        assert_eq!(stats.dropped(), 1);

        // A batch being filled, waiting for its interval, goes at once too.
        let recorder = Recorder::default();
        let stats = Arc::new(SpanStats::default());
        let (sink, flush) = start(LIMITS, recorder.clone(), stats.clone());
        for n in 0..5 {
            sink.record(span(n));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(recorder.batches.lock().unwrap().is_empty());
        let started = tokio::time::Instant::now();
        flush.flush(Duration::from_secs(2)).await;
        assert_eq!(*recorder.batches.lock().unwrap(), [5]);
        assert_eq!(stats.exported(), 5);
        assert!(
            started.elapsed() < LIMITS.interval,
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_flush_waits_for_a_stuck_collector_no_longer_than_its_bound() {
        let gate = Arc::new(Semaphore::new(0));
        let recorder = Recorder {
            gate: Some(gate.clone()),
            ..Recorder::default()
        };
        let stats = Arc::new(SpanStats::default());
        let (sink, flush) = start(LIMITS, recorder.clone(), stats.clone());
        // One batch stuck in flight, 30 spans queued behind it.
        for n in 0..10 {
            sink.record(span(n));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        for n in 0..30 {
            sink.record(span(n));
        }
        let started = tokio::time::Instant::now();
        flush.flush(Duration::from_secs(2)).await;
        let waited = started.elapsed();
        assert!(
            (Duration::from_secs(2)..Duration::from_millis(2010)).contains(&waited),
            "{waited:?}"
        );
        // Nothing arrived; all of it is counted dropped.
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(recorder.batches.lock().unwrap().is_empty());
        assert_eq!((stats.exported(), stats.dropped()), (0, 40));
    }
}
