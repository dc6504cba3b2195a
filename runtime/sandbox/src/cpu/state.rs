//! The scheduler's state and its decisions, apart from time and threads:
//! every function here takes the current time as an argument, so the
//! arithmetic is tested with a simulated host (no sleeps, no threads).

use super::role::RoleState;
use super::waiter::{GuestId, RoleId, Waiter};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Ticks over which each role's share of the host's fuel is measured.
pub(super) const SHARE_WINDOW_TICKS: u64 = 100;

/// Ticks without any guest reporting or asking after which a role counts
/// as idle, and starts again level with the busy roles (100 ms).
const IDLE_TICKS: u64 = 10;

/// What a guest does after a tick.
#[derive(Debug)]
pub(super) enum Turn {
    Run,
    /// Wait for a slot.
    Wait(Arc<Waiter>),
    /// Over quota: wait this long, then for a slot.
    Throttle(Duration),
}

#[derive(Debug)]
pub(super) struct Holder {
    guest: GuestId,
    role: RoleId,
    /// The tick of its last report (or of its grant).
    reported_at: u64,
}

#[derive(Debug)]
pub(super) struct State {
    pub(super) slots: usize,
    pub(super) tick: u64,
    pub(super) roles: HashMap<RoleId, RoleState>,
    pub(super) holders: Vec<Holder>,
}

impl State {
    pub(super) fn new(slots: usize) -> Self {
        Self {
            slots,
            tick: 0,
            roles: HashMap::new(),
            holders: Vec::new(),
        }
    }

    pub(super) fn charge(&mut self, role: RoleId, burnt: u64, now: Instant) {
        let Some(state) = self.roles.get_mut(&role) else {
            return;
        };
        state.usage.add_fuel(burnt);
        state.add_vtime(burnt);
        if let Some(quota) = &mut state.quota {
            quota.force(burnt, now);
        }
    }

    /// How long the role must wait for its quota to clear, if it is over it.
    pub(super) fn quota_wait(&mut self, role: RoleId, now: Instant) -> Option<Duration> {
        let quota = self.roles.get_mut(&role)?.quota.as_mut()?;
        let wait = quota.time_to_clear(now);
        (!wait.is_zero()).then_some(wait)
    }

    pub(super) fn on_tick(
        &mut self,
        guest: GuestId,
        role: RoleId,
        burnt: u64,
        now: Instant,
        fair: bool,
    ) -> Turn {
        self.charge(role, burnt, now);
        let turn = self.decide(guest, role, now, fair);
        self.mark_active(role);
        turn
    }

    /// A tick at which the guest reports so little fuel that it mostly
    /// waited: it is charged and held to its quota, then runs on without a
    /// slot, handing over any it holds.
    pub(super) fn on_light_tick(
        &mut self,
        guest: GuestId,
        role: RoleId,
        burnt: u64,
        now: Instant,
    ) -> Turn {
        self.charge(role, burnt, now);
        let turn = match self.quota_wait(role, now) {
            Some(wait) => Turn::Throttle(wait),
            None => Turn::Run,
        };
        self.release(guest);
        self.mark_active(role);
        turn
    }

    fn decide(&mut self, guest: GuestId, role: RoleId, now: Instant, fair: bool) -> Turn {
        if let Some(wait) = self.quota_wait(role, now) {
            self.release(guest);
            return Turn::Throttle(wait);
        }
        if !fair {
            return Turn::Run;
        }
        let tick = self.tick;
        if let Some(holder) = self.holders.iter_mut().find(|h| h.guest == guest) {
            holder.reported_at = tick;
            let mine = self.roles.get(&role).map_or(0, |r| r.vtime);
            let someone_due = self
                .best_waiting_role()
                .is_some_and(|(_, their_vtime)| their_vtime <= mine);
            if !someone_due {
                return Turn::Run;
            }
            // Hand the slot over first, so it goes to the waiter, not back to us.
            self.release(guest);
            return match self.enqueue(guest, role) {
                Some(waiter) => Turn::Wait(waiter),
                None => Turn::Run,
            };
        }
        match self.take_or_queue(guest, role) {
            Some(waiter) => Turn::Wait(waiter),
            None => Turn::Run,
        }
    }

    /// Notes that a guest of `role` acts now.
    fn mark_active(&mut self, role: RoleId) {
        let tick = self.tick;
        if let Some(state) = self.roles.get_mut(&role) {
            state.active_at = tick;
        }
    }

    /// Takes a free slot for `guest`, or queues it: `None` when it holds a
    /// slot now, else the ticket to wait on.
    pub(super) fn acquire(&mut self, guest: GuestId, role: RoleId) -> Option<Arc<Waiter>> {
        let outcome = self.take_or_queue(guest, role);
        self.mark_active(role);
        outcome
    }

    fn take_or_queue(&mut self, guest: GuestId, role: RoleId) -> Option<Arc<Waiter>> {
        if self.holders.iter().any(|h| h.guest == guest) {
            return None;
        }
        self.catch_up(role);
        let anyone_waiting = self.roles.values().any(|r| !r.waiting.is_empty());
        if self.holders.len() < self.slots && !anyone_waiting {
            self.holders.push(Holder {
                guest,
                role,
                reported_at: self.tick,
            });
            return None;
        }
        self.enqueue(guest, role)
    }

    /// Queues `guest` behind its role's other waiters and hands out any free
    /// slot; the returned ticket may already be granted.
    fn enqueue(&mut self, guest: GuestId, role: RoleId) -> Option<Arc<Waiter>> {
        let state = self.roles.get_mut(&role)?;
        let waiter = Waiter::new(guest);
        state.waiting.push_back(waiter.clone());
        self.grant_free();
        Some(waiter)
    }

    /// A role that had no guest running or waiting for a while starts
    /// again from the least virtual time of the busy roles: idling banks no
    /// credit. A role only briefly absent (its guests between a lost slot
    /// and their next report, on a host whose threads the OS keeps waiting)
    /// keeps what it is owed.
    fn catch_up(&mut self, role: RoleId) {
        let busy = |id: &RoleId, r: &RoleState| {
            !r.waiting.is_empty() || self.holders.iter().any(|h| h.role == *id)
        };
        let Some(state) = self.roles.get(&role) else {
            return;
        };
        let recently_active = self.tick.saturating_sub(state.active_at) <= IDLE_TICKS;
        if busy(&role, state) || recently_active {
            return;
        }
        let floor = self
            .roles
            .iter()
            .filter(|(id, r)| **id != role && busy(id, r))
            .map(|(_, r)| r.vtime)
            .min();
        if let (Some(floor), Some(state)) = (floor, self.roles.get_mut(&role)) {
            state.vtime = state.vtime.max(floor);
        }
    }

    /// The role with waiting guests that has used the least virtual time.
    fn best_waiting_role(&self) -> Option<(RoleId, u128)> {
        self.roles
            .iter()
            .filter(|(_, r)| !r.waiting.is_empty())
            .map(|(id, r)| (*id, r.vtime))
            .min_by_key(|(id, vtime)| (*vtime, *id))
    }

    fn release(&mut self, guest: GuestId) {
        let before = self.holders.len();
        self.holders.retain(|h| h.guest != guest);
        if self.holders.len() != before {
            self.grant_free();
        }
    }

    /// Hands free slots to waiters, least virtual time first.
    pub(super) fn grant_free(&mut self) {
        while self.holders.len() < self.slots {
            let Some((role, _)) = self.best_waiting_role() else {
                return;
            };
            let Some(waiter) = self
                .roles
                .get_mut(&role)
                .and_then(|r| r.waiting.pop_front())
            else {
                return;
            };
            self.holders.push(Holder {
                guest: waiter.guest,
                role,
                reported_at: self.tick,
            });
            waiter.grant();
        }
    }

    /// A guest's store is gone: free its slot and its place in the queue.
    pub(super) fn leave(&mut self, guest: GuestId, role: RoleId) {
        if let Some(state) = self.roles.get_mut(&role) {
            state.waiting.retain(|w| w.guest != guest);
        }
        self.release(guest);
    }

    pub(super) fn tick(&mut self) {
        self.tick += 1;
        for role in self.roles.values_mut() {
            role.fold_unsettled();
        }
        // A holder that reported neither in the last tick nor in this one
        // is not executing: blocked in a host call, or done.
        let tick = self.tick;
        let before = self.holders.len();
        self.holders.retain(|h| h.reported_at + 1 >= tick);
        if self.holders.len() != before {
            self.grant_free();
        }
        if tick.is_multiple_of(SHARE_WINDOW_TICKS) {
            let total: u128 = self.roles.values().map(|r| u128::from(r.window_fuel)).sum();
            for state in self.roles.values_mut() {
                let ppm = (u128::from(state.window_fuel) * 1_000_000)
                    .checked_div(total)
                    .unwrap_or(0);
                state
                    .usage
                    .set_share_ppm(u32::try_from(ppm).unwrap_or(1_000_000));
                state.window_fuel = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::role::{QUOTA_PERIOD, quota_bucket};
    use super::*;
    use crate::rate_limit::TokenBucket;
    use crate::usage::RoleUsage;
    use std::sync::atomic::Ordering;

    /// A simulated host: `slots` slots, guests that burn `fuel_per_tick`
    /// whenever they hold a slot, for `ticks` ticks. Returns fuel per role.
    struct Sim {
        state: State,
        /// (guest, role, the ticket it waits on, if it waits)
        guests: Vec<(GuestId, RoleId, Option<Arc<Waiter>>)>,
        usage: Vec<Arc<RoleUsage>>,
        now: Instant,
    }

    impl Sim {
        fn new(slots: usize) -> Self {
            Self {
                state: State::new(slots),
                guests: Vec::new(),
                usage: Vec::new(),
                now: Instant::now(),
            }
        }

        fn role(&mut self, weight: u32, quota: Option<u64>, guests: usize) -> RoleId {
            let role = u64::try_from(self.usage.len()).unwrap() + 1;
            let usage = Arc::new(RoleUsage::default());
            self.usage.push(usage.clone());
            let quota = quota.and_then(|rate| quota_bucket(rate, self.now));
            self.state
                .roles
                .insert(role, role_state(weight, quota, usage));
            for _ in 0..guests {
                let id = u64::try_from(self.guests.len()).unwrap() + 1000;
                self.guests.push((id, role, None));
            }
            role
        }

        /// One tick: every guest that was executing burns `fuel` and reports.
        fn step(&mut self, fuel: u64) {
            if self.state.tick == 0 {
                // Guests arrive and ask for a slot before they first run.
                for i in 0..self.guests.len() {
                    let (guest, role, _) = self.guests[i];
                    self.guests[i].2 = self.state.acquire(guest, role);
                }
            }
            self.now += Duration::from_millis(10);
            self.state.tick();
            let running: Vec<usize> = (0..self.guests.len())
                .filter(|&i| {
                    self.guests[i]
                        .2
                        .as_ref()
                        .is_none_or(|waiter| waiter.granted.load(Ordering::Acquire))
                })
                .collect();
            for i in running {
                let (guest, role, _) = self.guests[i];
                match self.state.on_tick(guest, role, fuel, self.now, true) {
                    Turn::Run => self.guests[i].2 = None,
                    Turn::Wait(waiter) => self.guests[i].2 = Some(waiter),
                    Turn::Throttle(_) => {
                        // Parked until the quota clears: modelled as a
                        // ticket nobody grants; re-queued when it clears.
                        self.guests[i].2 = Some(Waiter::new(guest));
                    }
                }
            }
            // Throttled guests whose quota has cleared come back.
            for i in 0..self.guests.len() {
                let (guest, role, ticket) = &self.guests[i];
                let throttled = ticket.as_ref().is_some_and(|w| {
                    !w.granted.load(Ordering::Acquire)
                        && !self.state.roles[role]
                            .waiting
                            .iter()
                            .any(|q| q.guest == w.guest)
                });
                if throttled && self.state.quota_wait(*role, self.now).is_none() {
                    let (guest, role) = (*guest, *role);
                    self.guests[i].2 = self.state.acquire(guest, role);
                }
            }
        }

        fn fuel(&self, role: RoleId) -> u64 {
            self.usage[usize::try_from(role - 1).unwrap()].snapshot_fuel()
        }
    }

    fn role_state(weight: u32, quota: Option<TokenBucket>, usage: Arc<RoleUsage>) -> RoleState {
        RoleState::new(weight, quota, Arc::default(), usage)
    }

    fn ratio(a: u64, b: u64) -> f64 {
        a as f64 / b as f64
    }

    #[test]
    fn equal_weights_share_equally_whatever_the_instance_counts() {
        let mut sim = Sim::new(2);
        let many = sim.role(100, None, 6);
        let few = sim.role(100, None, 2);
        for _ in 0..2000 {
            sim.step(1_000_000);
        }
        let r = ratio(sim.fuel(many), sim.fuel(few));
        assert!((0.95..=1.05).contains(&r), "ratio {r}");
        // The slots never idle while guests wait.
        assert_eq!(sim.fuel(many) + sim.fuel(few), 2 * 2000 * 1_000_000);
    }

    #[test]
    fn weights_two_to_one_give_two_to_one() {
        let mut sim = Sim::new(2);
        let heavy = sim.role(200, None, 4);
        let light = sim.role(100, None, 4);
        for _ in 0..3000 {
            sim.step(1_000_000);
        }
        let r = ratio(sim.fuel(heavy), sim.fuel(light));
        assert!((1.9..=2.1).contains(&r), "ratio {r}");
    }

    #[test]
    fn guests_of_one_role_take_turns() {
        let mut sim = Sim::new(1);
        sim.role(100, None, 3);
        let mut ran = HashMap::new();
        for _ in 0..300 {
            sim.step(1);
            for holder in &sim.state.holders {
                *ran.entry(holder.guest).or_insert(0) += 1;
            }
        }
        assert_eq!(ran.len(), 3, "{ran:?}");
        assert!(ran.values().all(|n| (90..=110).contains(n)), "{ran:?}");
    }

    #[test]
    fn an_idle_role_banks_no_credit() {
        let mut sim = Sim::new(1);
        let early = sim.role(100, None, 1);
        for _ in 0..100 {
            sim.step(1_000);
        }
        // A role arriving now starts level with the busy one, so they
        // alternate instead of the newcomer running alone for 100 ticks.
        let late = sim.role(100, None, 1);
        let before = sim.fuel(early);
        for _ in 0..100 {
            sim.step(1_000);
        }
        let r = ratio(sim.fuel(early) - before, sim.fuel(late));
        assert!((0.9..=1.1).contains(&r), "ratio {r}");
    }

    #[test]
    fn a_lone_role_uses_every_slot_whatever_its_weight() {
        let mut sim = Sim::new(2);
        let lone = sim.role(1, None, 2);
        for _ in 0..100 {
            sim.step(1_000);
        }
        assert_eq!(sim.fuel(lone), 2 * 100 * 1_000);
    }

    #[test]
    fn a_quota_holds_a_role_to_its_rate_and_frees_the_rest() {
        let mut sim = Sim::new(2);
        // 1M fuel per tick per slot is 100M/s; the quota is 30M/s.
        let capped = sim.role(100, Some(30_000_000), 2);
        let free = sim.role(100, None, 2);
        for _ in 0..1000 {
            sim.step(1_000_000);
        }
        // 10 s of simulated time at 30M/s, plus one period's allowance.
        let capped_fuel = sim.fuel(capped);
        assert!(
            (290_000_000..=320_000_000).contains(&capped_fuel),
            "{capped_fuel}"
        );
        // What the capped role cannot use goes to the other one.
        assert!(sim.fuel(free) >= 1_600_000_000, "{}", sim.fuel(free));
    }

    #[test]
    fn a_slot_whose_holder_stops_reporting_is_taken_back() {
        let mut state = State::new(1);
        let usage = Arc::new(RoleUsage::default());
        state.roles.insert(1, role_state(100, None, usage));
        let now = Instant::now();
        assert!(matches!(state.on_tick(10, 1, 5, now, true), Turn::Run));
        let Turn::Wait(waiter) = state.on_tick(11, 1, 5, now, true) else {
            panic!("the second guest must wait");
        };
        // Guest 10 blocks in a host call and reports no more.
        state.tick();
        assert!(!waiter.granted.load(Ordering::Acquire));
        state.tick();
        assert!(waiter.granted.load(Ordering::Acquire));
        // A guest that leaves gives its slot up at once.
        let Turn::Wait(third) = state.on_tick(12, 1, 5, now, true) else {
            panic!("the third guest must wait");
        };
        state.leave(11, 1);
        assert!(third.granted.load(Ordering::Acquire));
    }

    #[test]
    fn a_guest_that_mostly_waited_runs_without_a_slot_and_hands_its_own_over() {
        let mut state = State::new(1);
        let usage = Arc::new(RoleUsage::default());
        state.roles.insert(1, role_state(100, None, usage));
        let now = Instant::now();
        assert!(matches!(state.on_tick(10, 1, 5, now, true), Turn::Run));
        let Turn::Wait(waiter) = state.on_tick(11, 1, 5, now, true) else {
            panic!("a computing guest must wait for the only slot");
        };
        // A third guest that mostly waited neither queues nor takes the slot.
        assert!(matches!(state.on_light_tick(12, 1, 5, now), Turn::Run));
        assert!(!waiter.granted.load(Ordering::Acquire));
        assert!(state.holders.iter().all(|h| h.guest != 12));
        // The holder waiting on a host call gives its slot over at once.
        assert!(matches!(state.on_light_tick(10, 1, 5, now), Turn::Run));
        assert!(waiter.granted.load(Ordering::Acquire));
        // Its fuel is charged all the same.
        assert_eq!(state.roles.get(&1).map(|r| r.vtime > 0), Some(true));
    }

    #[test]
    fn unfair_mode_never_queues_but_still_enforces_quotas() {
        let mut state = State::new(1);
        let usage = Arc::new(RoleUsage::default());
        let now = Instant::now();
        state.roles.insert(
            1,
            role_state(100, TokenBucket::new(100, QUOTA_PERIOD, 0, now), usage),
        );
        for guest in 0..5 {
            assert!(matches!(state.on_tick(guest, 1, 10, now, false), Turn::Run));
        }
        assert!(matches!(
            state.on_tick(9, 1, 100, now, false),
            Turn::Throttle(_)
        ));
    }

    #[test]
    fn a_role_briefly_absent_keeps_what_it_is_owed_and_a_long_idle_one_does_not() {
        let mut state = State::new(1);
        for role in [1, 2] {
            state
                .roles
                .insert(role, role_state(100, None, Arc::new(RoleUsage::default())));
        }
        let now = Instant::now();
        // Role 1 runs and is far ahead; role 2's guest asks, then vanishes
        // (its thread kept waiting by the OS), then asks again 3 ticks on.
        assert!(matches!(
            state.on_tick(10, 1, 1_000_000, now, true),
            Turn::Run
        ));
        assert!(state.acquire(20, 2).is_some());
        state.leave(20, 2);
        for _ in 0..3 {
            state.tick();
            let _ = state.on_tick(10, 1, 0, now, true);
        }
        let _ = state.acquire(20, 2);
        assert_eq!(state.roles[&2].vtime, 0, "still owed its share");
        // Gone for longer than IDLE_TICKS, it starts level with role 1.
        state.leave(20, 2);
        for _ in 0..=IDLE_TICKS + 1 {
            state.tick();
            let _ = state.on_tick(10, 1, 0, now, true);
        }
        let _ = state.acquire(20, 2);
        assert_eq!(state.roles[&2].vtime, state.roles[&1].vtime);
    }
}
