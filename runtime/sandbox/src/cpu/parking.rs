//! Where a running guest waits its turn.
//!
//! The scheduler decides that a guest must wait (for a slot, or for its
//! role's quota to refill) in the store's call hook, which runs on the
//! guest's stack and cannot suspend it. So the hook leaves the wait in the
//! guest's [`ParkingSpot`], and [`run_scheduled`], which drives every future
//! that runs guest code, waits in it before it polls the guest again.
//!
//! The guest gets there promptly: the hook meets the scheduler at the
//! guest's fuel yields (wasmtime calls it on entering its out-of-gas
//! libcall, just before the guest yields) and at its host calls. A guest
//! told to wait in a host call runs on to its next fuel yield or blocking
//! call, at most one fuel yield interval of wasm.

use super::yields::{YieldGate, YieldPolicy};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// A future a guest waits in before it runs on.
pub(crate) type Parked = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The wait the scheduler gave a guest, until the guest's driver takes it.
pub(crate) struct ParkingSpot {
    /// Whether `wait` holds a wait: every pending poll of the guest reads
    /// it, without the lock.
    occupied: AtomicBool,
    /// A mutex only so the spot is `Sync`: the hook and the driver run in
    /// the same task, one after the other.
    wait: Mutex<Option<Parked>>,
    /// The scheduler's tick count when the guest's last wait ended, until
    /// its next report reads it ([`NOT_RESUMED`] meanwhile).
    resumed_at: AtomicU64,
}

/// [`ParkingSpot::resumed_at`] when no wait ended since the last report.
const NOT_RESUMED: u64 = u64::MAX;

impl Default for ParkingSpot {
    fn default() -> Self {
        Self {
            occupied: AtomicBool::new(false),
            wait: Mutex::new(None),
            resumed_at: AtomicU64::new(NOT_RESUMED),
        }
    }
}

impl fmt::Debug for ParkingSpot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParkingSpot")
            .field("occupied", &self.occupied.load(Ordering::Relaxed))
            .finish()
    }
}

impl ParkingSpot {
    fn lock(&self) -> MutexGuard<'_, Option<Parked>> {
        // Setting or taking an `Option` cannot leave it half-changed.
        self.wait.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Leaves `wait` for the guest's driver, replacing one not yet taken.
    pub(crate) fn park(&self, wait: Parked) {
        let mut spot = self.lock();
        *spot = Some(wait);
        self.occupied.store(true, Ordering::Release);
    }

    /// The wait left for the guest, if any.
    pub(crate) fn take(&self) -> Option<Parked> {
        if !self.occupied.load(Ordering::Acquire) {
            return None;
        }
        let mut spot = self.lock();
        self.occupied.store(false, Ordering::Relaxed);
        spot.take()
    }

    /// Notes that the guest's wait ended at scheduler tick `tick`.
    pub(crate) fn resumed(&self, tick: u64) {
        self.resumed_at.store(tick, Ordering::Relaxed);
    }

    /// The tick at which the guest's last wait ended, if one ended since
    /// this was last asked.
    pub(crate) fn take_resumed(&self) -> Option<u64> {
        let tick = self.resumed_at.swap(NOT_RESUMED, Ordering::Relaxed);
        (tick != NOT_RESUMED).then_some(tick)
    }
}

/// Drives `guest`, a future that runs guest code in a store whose CPU
/// account parks in `spot`: whenever it is pending and the scheduler left
/// it a wait, waits that out before polling the guest again. A guest that
/// only woke itself (a fuel yield) is polled again at once unless its
/// yield is due ([`YieldPolicy`]).
pub(crate) async fn run_scheduled<F: Future>(spot: Arc<ParkingSpot>, guest: F) -> F::Output {
    let mut guest = std::pin::pin!(guest);
    let mut waiting: Option<Parked> = None;
    let gate = YieldGate::new();
    let guest_waker = Waker::from(gate.clone());
    let mut policy = YieldPolicy::new();
    std::future::poll_fn(move |cx| {
        loop {
            if let Some(wait) = waiting.as_mut() {
                if wait.as_mut().poll(cx).is_pending() {
                    policy.released();
                    return Poll::Pending;
                }
                waiting = None;
            }
            gate.begin(cx);
            let polled = guest.as_mut().poll(&mut Context::from_waker(&guest_waker));
            let woke_itself = gate.end();
            if let Poll::Ready(output) = polled {
                return Poll::Ready(output);
            }
            if let Some(wait) = spot.take() {
                // Polled again once the wait is over, woken or not.
                waiting = Some(wait);
                continue;
            }
            if !woke_itself {
                policy.released();
                return Poll::Pending;
            }
            if policy.due() {
                // As tokio's own yield: woken once the worker has run what
                // else it has and polled its I/O driver, not straight away.
                let _deferred = std::pin::pin!(tokio::task::yield_now()).poll(cx);
                return Poll::Pending;
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;
    use tokio::sync::Notify;

    /// A guest that yields `yields` times, counting its polls, and parks in
    /// `spot` (released by `turn`) at its first yield.
    fn guest(
        spot: Arc<ParkingSpot>,
        turn: Arc<Notify>,
        polls: Arc<AtomicU32>,
        yields: u32,
    ) -> impl Future<Output = u32> {
        let mut left = yields;
        std::future::poll_fn(move |cx| {
            let polled = polls.fetch_add(1, Ordering::SeqCst) + 1;
            if left == 0 {
                return Poll::Ready(polled);
            }
            if left == yields {
                let turn = turn.clone();
                spot.park(Box::pin(async move { turn.notified().await }));
            }
            left -= 1;
            // As wasmtime's fuel yield: wake at once, then return pending.
            cx.waker().wake_by_ref();
            Poll::Pending
        })
    }

    #[tokio::test]
    async fn a_parked_guest_is_not_polled_until_its_wait_ends() {
        let spot = Arc::new(ParkingSpot::default());
        let turn = Arc::new(Notify::new());
        let polls = Arc::new(AtomicU32::new(0));
        let task = tokio::spawn(run_scheduled(
            spot.clone(),
            guest(spot.clone(), turn.clone(), polls.clone(), 3),
        ));
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        assert_eq!(polls.load(Ordering::SeqCst), 1, "parked after one poll");
        turn.notify_one();
        assert_eq!(task.await.unwrap(), 4, "then runs to the end");
        assert!(spot.take().is_none());
    }

    #[test]
    fn a_guest_that_only_yields_keeps_its_thread_until_its_yield_is_due() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let spot = Arc::new(ParkingSpot::default());
            let polls = Arc::new(AtomicU32::new(0));
            // It parks in a spot the driver does not watch: never waits.
            let elsewhere = Arc::new(ParkingSpot::default());
            let run = run_scheduled(spot, guest(elsewhere, Arc::default(), polls, 500));
            let mut run = std::pin::pin!(run);
            let mut handed_back = 0;
            let polled = std::future::poll_fn(|cx| {
                let poll = run.as_mut().poll(cx);
                if poll.is_pending() {
                    handed_back += 1;
                }
                poll
            })
            .await;
            assert_eq!(polled, 501, "every yield polled again");
            // 500 yields handed to the executor would be 500; a few are
            // due in case this thread was held up for the hold's length.
            assert!(
                handed_back < 10,
                "{handed_back} yields went to the executor"
            );
        });
    }

    #[tokio::test]
    async fn a_guest_left_no_wait_runs_on() {
        let spot = Arc::new(ParkingSpot::default());
        let polls = Arc::new(AtomicU32::new(0));
        // Parks in a spot the driver does not watch: never waits.
        let other = Arc::new(ParkingSpot::default());
        let run = run_scheduled(
            spot,
            guest(other.clone(), Arc::new(Notify::new()), polls, 3),
        );
        assert_eq!(run.await, 4);
        assert!(other.take().is_some(), "the other spot kept its wait");
    }
}
