//! Fair CPU: fuel is each guest's CPU account, and one scheduler per host
//! decides which guests execute when more of them want to than there are
//! CPUs.
//!
//! # How it works
//!
//! The host has a number of CPU *slots* (one per CPU by default), and a
//! timer thread ticks the scheduler every 10 ms
//! ([`crate::EngineConfig::scheduler_tick`]). No check is compiled into
//! guest code for it: an executing guest meets the scheduler in its store's
//! call hook, at its first fuel yield or host call after each tick (it
//! yields every [`crate::EngineConfig::fuel_yield_interval`] units of fuel,
//! about a millisecond, so a loop that calls nothing still does). There
//! the hook stops it if its deadline has passed, and otherwise calls
//! `GuestCpu::on_tick` with the fuel it has left:
//!
//! 1. The fuel burnt since its last report is charged to its role: to the
//!    role's usage, to its *virtual time* (fuel divided by weight), and to
//!    its quota bucket if it has one.
//! 2. A role over its hard quota (fuel per second, like cgroup v2's
//!    `cpu.max`) has the guest parked until the quota has refilled. It is
//!    not killed; its own fuel budget and deadline still apply.
//! 3. A guest holding a slot keeps it unless some guest waits whose role has
//!    used no more virtual time than its own; then it hands the slot over
//!    and queues behind. A guest without a slot takes a free one, or queues.
//! 4. Freed slots go to the waiting guest whose role has the least virtual
//!    time, in arrival order within a role. Roles therefore share the slots
//!    in proportion to their weights (like cgroup v2's `cpu.weight`), and
//!    the guests of one role share its portion round-robin, however many
//!    instances each role runs.
//!
//! The fuel the hook sees is exact: the hook runs as the guest calls out
//! (a fuel yield is a call to wasmtime's out-of-gas libcall), where
//! wasmtime has saved the running count. A guest that calls nothing
//! reports at most one fuel yield interval (about a millisecond) after a
//! tick.
//!
//! A parked guest waits in the future that drives it
//! ([`parking::run_scheduled`]): it holds no thread. A slot whose holder
//! stopped reporting (it finished, or it is blocked on I/O in a host call)
//! is taken back within two ticks, so the scheduler wastes little of a
//! slot. A role that starts running after idling (100 ms without a guest
//! reporting or asking) starts from the least virtual time among busy
//! roles, so idling banks no credit (as CFS's `min_vruntime`); a role only
//! briefly absent keeps what it is owed.
//!
//! A guest that burnt less than one fuel yield interval (about a
//! millisecond of wasm) since its last report mostly waited, on host calls
//! or I/O, rather than computed: a request sending fsynced queue messages,
//! say. It is charged and held to its quota as usual, but runs on without a
//! slot and gives back any it holds. Queueing it would cost the host more
//! than it saves: such a guest would hold a scarce slot while blocked, until
//! the ticker took it back, and hundreds of them would take turns at the
//! rate of two ticks per slot (measured: 500 messages/s end to end instead
//! of 70,000+). A guest that computes reports at least one interval per
//! tick, so it still queues; one granted a slot just before a tick may
//! pass one tick unscheduled.
//!
//! Short invocations that end within a tick never meet the scheduler: they
//! run as soon as the async executor polls them. A CPU-bound neighbour
//! keeps its executor thread through its fuel yields while nothing else
//! waits, and gives it back at the first fuel yield after a task is queued
//! for any thread, or after a millisecond (`yields.rs`): so the executor's
//! spare thread stays free for them, a new one queued for any thread waits
//! at most a fuel yield interval, and one woken on a hog's own thread at
//! most a millisecond. That keeps a light role's latency low beside
//! hogs; their fuel is still charged to their role's account, and the quota
//! still holds them back (`RoleCpu::wait_for_quota`) before they start.

mod parking;
mod role;
mod share;
mod state;
mod waiter;
mod yields;

use crate::usage::{RoleUsage, WaitKind};
pub(crate) use parking::{Parked, ParkingSpot, run_scheduled};
use role::{RoleState, quota_bucket};
pub use share::CpuShare;
use state::{State, Turn};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use waiter::{GuestId, RoleId};

/// The host's CPU scheduler: slots, the roles sharing them, and who waits.
#[derive(Debug)]
pub struct CpuScheduler {
    fair: bool,
    /// Fuel below which a tick's report shows a guest that mostly waited
    /// (on host calls, on I/O) rather than computed; 0 treats every report
    /// as computing.
    light_fuel: u64,
    next_id: AtomicU64,
    /// Ticks so far: a guest meets the scheduler when this moved since it
    /// last did, a load per host call or fuel yield, without the lock.
    ticks: AtomicU64,
    state: Mutex<State>,
}

impl CpuScheduler {
    /// A scheduler with `slots` CPU slots (at least one); `fair` off means
    /// guests are accounted and quotas enforced, but never queued for a slot.
    /// A guest that burnt less than `light_fuel` since its last report runs
    /// on without a slot (see the module docs); pass the fuel yield interval
    /// (0 treats every guest as computing).
    pub fn new(slots: u32, fair: bool, light_fuel: u64) -> Arc<Self> {
        Arc::new(Self {
            fair,
            light_fuel,
            next_id: AtomicU64::new(1),
            ticks: AtomicU64::new(0),
            state: Mutex::new(State::new(
                usize::try_from(slots.max(1)).unwrap_or(usize::MAX),
            )),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every update leaves the state consistent before anything can
        // panic, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Advances the scheduler's clock by one tick: takes back the slots of
    /// guests that stopped reporting, hands them to waiters, now and then
    /// measures each role's share of the host's fuel, and has every
    /// executing guest report at its next fuel yield or host call.
    pub fn tick(&self) {
        self.state().tick();
        self.ticks.fetch_add(1, Ordering::Relaxed);
    }

    /// Registers a role with its share of the CPU.
    pub(crate) fn register(self: &Arc<Self>, share: CpuShare, usage: Arc<RoleUsage>) -> RoleCpu {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let quota = share
            .max_fuel_per_sec
            .and_then(|rate| quota_bucket(rate, Instant::now()));
        let has_quota = quota.is_some();
        let unsettled = Arc::new(AtomicU64::new(0));
        self.state().roles.insert(
            id,
            RoleState::new(share.weight, quota, unsettled.clone(), usage.clone()),
        );
        RoleCpu {
            id,
            scheduler: self.clone(),
            usage,
            has_quota,
            unsettled,
        }
    }
}

/// One role's registration with the scheduler; unregistered on drop.
#[derive(Debug)]
pub(crate) struct RoleCpu {
    id: RoleId,
    scheduler: Arc<CpuScheduler>,
    usage: Arc<RoleUsage>,
    has_quota: bool,
    /// Fuel burnt by invocations that ended, not yet in the role's virtual
    /// time: folded in at the next tick, so ending a request takes no lock.
    unsettled: Arc<AtomicU64>,
}

impl Drop for RoleCpu {
    fn drop(&mut self) {
        let mut state = self.scheduler.state();
        state.roles.remove(&self.id);
        state.grant_free();
    }
}

impl RoleCpu {
    /// Accounting for one new guest of this role that starts with `fuel`.
    pub(crate) fn guest(self: &Arc<Self>, fuel: u64) -> GuestCpu {
        GuestCpu {
            id: self.scheduler.next_id.fetch_add(1, Ordering::Relaxed),
            role: self.clone(),
            fuel_mark: fuel,
            met_scheduler: false,
            seen_tick: self.scheduler.ticks.load(Ordering::Relaxed),
            spot: Arc::new(ParkingSpot::default()),
        }
    }

    /// Waits, no longer than `deadline`, while the role is over its hard
    /// quota: called before an invocation starts, so that invocations too
    /// short to meet the scheduler's tick are held to the quota too.
    pub(crate) async fn wait_for_quota(&self, deadline: Option<tokio::time::Instant>) {
        if !self.has_quota {
            return;
        }
        let wait = self
            .scheduler
            .state()
            .quota_wait(self.id, clock_now())
            .unwrap_or_default();
        if wait.is_zero() {
            return;
        }
        let _watch = Stopwatch::start(self.usage.clone(), WaitKind::Throttled);
        sleep_until_either(tokio::time::Instant::now() + wait, deadline).await;
    }
}

/// One guest's CPU account: the fuel it had at its last report, and its
/// place with the scheduler (a slot, or a place in the queue), given up
/// when the guest's store is dropped.
#[derive(Debug)]
pub(crate) struct GuestCpu {
    id: GuestId,
    role: Arc<RoleCpu>,
    fuel_mark: u64,
    /// Whether the guest has reported a tick since it last gave up its
    /// place: only then may it hold a slot or wait for one. A guest done
    /// within a tick never takes the scheduler's lock.
    met_scheduler: bool,
    /// The scheduler's tick count when the guest last reported (or began).
    seen_tick: u64,
    /// Where the scheduler leaves the guest a wait, for the future that
    /// drives the guest to wait in.
    spot: Arc<ParkingSpot>,
}

impl GuestCpu {
    /// Charges the fuel burnt since the last report to the role, given the
    /// fuel the guest has left now.
    pub(crate) fn settle(&mut self, fuel_left: u64) {
        let burnt = self.take_burnt(fuel_left);
        if burnt == 0 {
            return;
        }
        let role = &self.role;
        if role.has_quota {
            // The quota must see it at once.
            role.scheduler.state().charge(role.id, burnt, clock_now());
        } else {
            role.usage.add_fuel(burnt);
            role.unsettled.fetch_add(burnt, Ordering::Relaxed);
        }
    }

    /// Notes that the guest's fuel was set to `fuel` (a worker's new batch):
    /// call [`Self::settle`] first, so nothing burnt before goes uncharged.
    pub(crate) fn refuelled(&mut self, fuel: u64) {
        self.fuel_mark = fuel;
    }

    fn take_burnt(&mut self, fuel_left: u64) -> u64 {
        let burnt = self.fuel_mark.saturating_sub(fuel_left);
        self.fuel_mark = fuel_left;
        burnt
    }

    /// Whether the scheduler ticked since the guest last reported; if so,
    /// notes that it reports now. Called at every fuel yield and host call,
    /// so it is one atomic load when nothing is due.
    pub(crate) fn tick_due(&mut self) -> bool {
        let ticks = self.role.scheduler.ticks.load(Ordering::Relaxed);
        if ticks == self.seen_tick {
            return false;
        }
        // A guest that waited reports a tick after it resumed, not at once:
        // else a guest granted a slot late in a tick would hand it over
        // after one fuel yield interval, not a tick (as an epoch deadline
        // set after an epoch yield did).
        if let Some(resumed) = self.spot.take_resumed() {
            self.seen_tick = resumed;
            if ticks == resumed {
                return false;
            }
        }
        self.seen_tick = ticks;
        true
    }

    /// Counts ticks afresh from now: an invocation begins on an instance
    /// that was idle (a reused web instance), and its first report is due
    /// at the next tick, not at its first host call.
    pub(crate) fn restart_ticks(&mut self) {
        self.spot.take_resumed();
        self.seen_tick = self.role.scheduler.ticks.load(Ordering::Relaxed);
    }

    /// Where the guest's driver finds the waits the scheduler gives it
    /// (see [`run_scheduled`]).
    pub(crate) fn parking_spot(&self) -> Arc<ParkingSpot> {
        self.spot.clone()
    }

    /// Called at the guest's first fuel yield or host call after each tick,
    /// with the fuel it has left. When it must wait first (until the quota
    /// refills, or a slot is granted; never past the deadline), leaves the
    /// wait in its parking spot.
    pub(crate) fn on_tick(&mut self, fuel_left: u64, deadline: Option<Instant>) {
        if let Some(wait) = self.turn(fuel_left, deadline) {
            let scheduler = self.role.scheduler.clone();
            let spot = self.spot.clone();
            self.spot.park(Box::pin(async move {
                wait.await;
                spot.resumed(scheduler.ticks.load(Ordering::Relaxed));
            }));
        }
    }

    /// Charges the fuel burnt since the last report and asks the scheduler
    /// for the guest's turn: `None` to run on, or a future to wait in.
    fn turn(&mut self, fuel_left: u64, deadline: Option<Instant>) -> Option<Parked> {
        self.met_scheduler = true;
        let burnt = self.take_burnt(fuel_left);
        let scheduler = &self.role.scheduler;
        let turn = if burnt < scheduler.light_fuel {
            scheduler
                .state()
                .on_light_tick(self.id, self.role.id, burnt, clock_now())
        } else {
            scheduler
                .state()
                .on_tick(self.id, self.role.id, burnt, clock_now(), scheduler.fair)
        };
        let deadline = deadline.map(tokio::time::Instant::from_std);
        let usage = self.role.usage.clone();
        match turn {
            Turn::Run => None,
            Turn::Wait(waiter) => Some(Box::pin(async move {
                let _watch = Stopwatch::start(usage, WaitKind::Parked);
                waiter.granted_or(deadline).await;
            })),
            Turn::Throttle(wait) => {
                let role = self.role.clone();
                let guest = self.id;
                Some(Box::pin(async move {
                    {
                        let _watch = Stopwatch::start(usage.clone(), WaitKind::Throttled);
                        sleep_until_either(tokio::time::Instant::now() + wait, deadline).await;
                    }
                    if !role.scheduler.fair {
                        return;
                    }
                    let waiter = role.scheduler.state().acquire(guest, role.id);
                    if let Some(waiter) = waiter {
                        let _watch = Stopwatch::start(usage, WaitKind::Parked);
                        waiter.granted_or(deadline).await;
                    }
                }))
            }
        }
    }

    /// Gives up the guest's slot, or its place in the queue for one: its
    /// invocation ended, and it will not execute until the next starts (a
    /// reused web instance between requests).
    pub(crate) fn pause(&mut self) {
        // A wait given at the guest's last host call, which it returned
        // from without waiting, ends with the invocation.
        drop(self.spot.take());
        if std::mem::take(&mut self.met_scheduler) {
            self.role.scheduler.state().leave(self.id, self.role.id);
        }
    }
}

impl Drop for GuestCpu {
    fn drop(&mut self) {
        self.pause();
    }
}

/// Now, on tokio's clock (so tests with a paused clock see time pass).
fn clock_now() -> Instant {
    tokio::time::Instant::now().into_std()
}

async fn sleep_until_either(until: tokio::time::Instant, deadline: Option<tokio::time::Instant>) {
    let until = deadline.map_or(until, |deadline| deadline.min(until));
    tokio::time::sleep_until(until).await;
}

/// Adds the time between its start and its drop to the role's usage.
struct Stopwatch {
    usage: Arc<RoleUsage>,
    kind: WaitKind,
    started: tokio::time::Instant,
}

impl Stopwatch {
    fn start(usage: Arc<RoleUsage>, kind: WaitKind) -> Self {
        Self {
            usage,
            kind,
            started: tokio::time::Instant::now(),
        }
    }
}

impl Drop for Stopwatch {
    fn drop(&mut self) {
        self.usage.add_wait(self.kind, self.started.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::role::WEIGHT_SCALE;
    use super::*;

    #[test]
    fn ended_invocations_settle_without_the_lock_and_fold_in_at_the_tick() {
        let scheduler = CpuScheduler::new(1, true, 0);
        let usage = Arc::new(RoleUsage::default());
        let role = Arc::new(scheduler.register(CpuShare::default(), usage.clone()));
        let mut guest = role.guest(100);
        guest.settle(40);
        assert_eq!(usage.fuel(), 60, "usage is current at once");
        let vtime = |s: &CpuScheduler| s.state().roles[&role.id].vtime;
        assert_eq!(vtime(&scheduler), 0);
        scheduler.tick();
        assert_eq!(vtime(&scheduler), 60 * WEIGHT_SCALE / 100);
        // With a quota, the charge is immediate.
        let capped_usage = Arc::new(RoleUsage::default());
        let capped = Arc::new(scheduler.register(
            CpuShare {
                max_fuel_per_sec: Some(1000),
                ..CpuShare::default()
            },
            capped_usage.clone(),
        ));
        let mut guest = capped.guest(1000);
        guest.settle(0);
        assert_eq!(capped_usage.fuel(), 1000);
        assert!(
            scheduler
                .state()
                .quota_wait(capped.id, clock_now())
                .is_some()
        );
    }

    #[test]
    fn a_guest_reports_once_a_tick_and_a_tick_after_its_wait_ends() {
        let scheduler = CpuScheduler::new(1, true, 0);
        let role = Arc::new(scheduler.register(CpuShare::default(), Arc::default()));
        let mut guest = role.guest(100);
        assert!(!guest.tick_due(), "not before the first tick");
        scheduler.tick();
        assert!(guest.tick_due());
        assert!(!guest.tick_due(), "once a tick");
        scheduler.tick();
        // Its wait ended after this tick: the next report is a tick later.
        guest
            .parking_spot()
            .resumed(scheduler.ticks.load(Ordering::Relaxed));
        assert!(!guest.tick_due());
        scheduler.tick();
        assert!(guest.tick_due());
    }
}
