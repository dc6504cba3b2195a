//! A guest's fuel yields, kept on its own thread while nothing else is
//! waiting for one.
//!
//! wasmtime yields a guest at every fuel yield by waking its task and
//! returning pending. Handed to tokio as it is, each such yield re-queues
//! the task and can wake an idle worker to steal it: about 4 µs a yield
//! (`weft-bench cpu --only yields`: fuel yields every 100,000 units cost
//! CPU-bound work 1.30× none), and CPU-bound guests that wander onto every
//! executor thread, the spare one the host keeps for short requests and
//! I/O included, where a light tenant's request then waits behind them
//! (its p99 beside 64 hogs was 3–8× its p99 alone).
//!
//! [`YieldGate`] catches the wake a guest gives itself while it is being
//! polled. The driver ([`super::run_scheduled`]) then polls the guest again
//! at once, a fiber switch rather than a trip through the executor, unless
//! the yield is due: another task is queued for any worker (the runtime's
//! injection queue), or the guest has held its thread for
//! [`MAX_HOLD`], or has spent its task's tokio budget (tokio's own
//! resources then wake it and return pending until it has been through the
//! executor). A real yield is tokio's own `yield_now`, which lets the thread
//! run everything else it has and poll its I/O driver first. Tasks woken on
//! the guest's own thread wait at most [`MAX_HOLD`], the "about a
//! millisecond" of one [`crate::DEFAULT_FUEL_YIELD_INTERVAL`].

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Wake, Waker};
use std::time::{Duration, Instant};

/// The longest a guest keeps its executor thread between real yields.
pub(crate) const MAX_HOLD: Duration = Duration::from_millis(1);

/// Not being polled: wakes go to the executor.
const IDLE: u8 = 0;
/// Being polled: a wake is only noted.
const POLLING: u8 = 1;
/// Being polled, and woken meanwhile.
const WOKEN: u8 = 2;

/// The waker a guest is polled with: notes wakes during a poll, forwards
/// the others to the task's own waker.
pub(crate) struct YieldGate {
    state: AtomicU8,
    task: Mutex<Option<Waker>>,
}

impl YieldGate {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            state: AtomicU8::new(IDLE),
            task: Mutex::new(None),
        })
    }

    fn task(&self) -> MutexGuard<'_, Option<Waker>> {
        // Replacing an `Option` cannot leave it half-changed.
        self.task.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a poll on behalf of the task `cx` belongs to.
    pub(crate) fn begin(&self, cx: &Context<'_>) {
        {
            let mut task = self.task();
            if !task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *task = Some(cx.waker().clone());
            }
        }
        self.state.store(POLLING, Ordering::Release);
    }

    /// Ends a poll: whether the guest was woken during it (a wake noted and
    /// not yet passed on).
    pub(crate) fn end(&self) -> bool {
        self.state.swap(IDLE, Ordering::AcqRel) == WOKEN
    }
}

impl Wake for YieldGate {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self
            .state
            .compare_exchange(POLLING, WOKEN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            return;
        }
        if let Some(task) = self.task().as_ref() {
            task.wake_by_ref();
        }
    }
}

/// When a guest that woke itself yields its thread for real.
#[derive(Debug)]
pub(crate) struct YieldPolicy {
    held_since: Instant,
}

impl YieldPolicy {
    pub(crate) fn new() -> Self {
        Self {
            held_since: Instant::now(),
        }
    }

    /// Whether the guest should give its thread back now, rather than be
    /// polled again at once.
    pub(crate) fn due(&mut self) -> bool {
        let now = Instant::now();
        let due = now.duration_since(self.held_since) >= MAX_HOLD
            || others_queued()
            || !tokio::task::coop::has_budget_remaining();
        if due {
            self.held_since = now;
        }
        due
    }

    /// Notes that the guest's task gave its thread back for another reason
    /// (it waited on I/O, a host call, or the scheduler).
    pub(crate) fn released(&mut self) {
        self.held_since = Instant::now();
    }
}

/// Whether tasks wait in the runtime's injection queue: tasks woken or
/// spawned off the executor's threads (a new request's guest, a guest the
/// scheduler's ticker gave a slot), which any worker may take.
fn others_queued() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|runtime| runtime.metrics().global_queue_depth() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;
    use std::task::Poll;

    struct Count(AtomicU32);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_wake_during_a_poll_is_noted_and_not_passed_on() {
        let count = Arc::new(Count(AtomicU32::new(0)));
        let task = Waker::from(count.clone());
        let gate = YieldGate::new();
        let guest = Waker::from(gate.clone());
        gate.begin(&Context::from_waker(&task));
        guest.wake_by_ref();
        assert!(gate.end(), "the wake was noted");
        assert_eq!(count.0.load(Ordering::SeqCst), 0, "and kept from the task");
        assert!(!gate.end(), "once");
    }

    #[test]
    fn a_wake_between_polls_reaches_the_task() {
        let count = Arc::new(Count(AtomicU32::new(0)));
        let task = Waker::from(count.clone());
        let gate = YieldGate::new();
        let guest = Waker::from(gate.clone());
        gate.begin(&Context::from_waker(&task));
        assert!(!gate.end());
        guest.wake_by_ref();
        guest.wake();
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_guest_holds_its_thread_no_longer_than_the_bound() {
        let mut policy = YieldPolicy::new();
        assert!(!policy.due(), "no executor here, nothing queued");
        std::thread::sleep(MAX_HOLD);
        assert!(policy.due());
        assert!(!policy.due(), "the hold starts again");
    }

    #[tokio::test]
    async fn a_task_that_spent_its_budget_must_yield() {
        let mut policy = YieldPolicy::new();
        assert!(!policy.due(), "a fresh budget");
        // Each receive from a ready channel spends some of the task's
        // budget; once spent, tokio's resources wake the task and return
        // pending until it has been through the executor again.
        let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
        for i in 0..1000 {
            sender.send(i).unwrap();
        }
        let mut received = 0;
        while tokio::task::coop::has_budget_remaining() && received < 1000 {
            let polled = std::future::poll_fn(|cx| Poll::Ready(receiver.poll_recv(cx))).await;
            if polled.is_ready() {
                received += 1;
            }
        }
        assert!(received < 1000, "the budget ran out first");
        assert!(policy.due());
    }

    #[test]
    fn a_task_queued_for_any_worker_makes_the_yield_due() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut policy = YieldPolicy::new();
            assert!(!policy.due(), "nothing queued");
            // Spawned off the executor's thread: the task waits in the
            // injection queue until this one yields.
            let handle = tokio::runtime::Handle::current();
            let task = std::thread::spawn(move || handle.spawn(async {}))
                .join()
                .unwrap();
            assert!(policy.due(), "a task waits");
            task.await.unwrap();
            assert!(!policy.due(), "nothing queued again");
        });
    }
}
