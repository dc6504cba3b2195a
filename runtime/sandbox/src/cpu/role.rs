//! One role's account with the scheduler: its weight and virtual time
//! (the arithmetic of fair shares), its hard quota, the fuel it burnt in
//! the current share window, and its guests waiting for a slot. The
//! decisions over all roles and slots are in `state`.

use super::waiter::Waiter;
use crate::rate_limit::TokenBucket;
use crate::usage::RoleUsage;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Virtual time is fuel × this ÷ weight, so small weights lose no precision.
pub(super) const WEIGHT_SCALE: u128 = 1 << 16;
/// The period of a hard quota: a role may burn a tenth of a second's quota
/// at once, then is held to the rate (as `cpu.max`'s default 100 ms period).
pub(super) const QUOTA_PERIOD: Duration = Duration::from_millis(100);

/// One role's account: what the scheduler knows of it between ticks.
#[derive(Debug)]
pub(super) struct RoleState {
    pub(super) weight: u128,
    /// Fuel burnt × WEIGHT_SCALE ÷ weight.
    pub(super) vtime: u128,
    pub(super) quota: Option<TokenBucket>,
    pub(super) waiting: VecDeque<Arc<Waiter>>,
    /// Fuel burnt in the current share window.
    pub(super) window_fuel: u64,
    /// Fuel settled without the lock (already in `usage`), to fold in.
    pub(super) unsettled: Arc<AtomicU64>,
    /// The tick a guest of the role last reported or asked for a slot.
    pub(super) active_at: u64,
    pub(super) usage: Arc<RoleUsage>,
}

impl RoleState {
    pub(super) fn new(
        weight: u32,
        quota: Option<TokenBucket>,
        unsettled: Arc<AtomicU64>,
        usage: Arc<RoleUsage>,
    ) -> Self {
        Self {
            weight: u128::from(weight.max(1)),
            vtime: 0,
            quota,
            waiting: VecDeque::new(),
            window_fuel: 0,
            unsettled,
            active_at: 0,
            usage,
        }
    }

    /// Adds fuel (already counted in the usage) to the virtual time.
    pub(super) fn add_vtime(&mut self, burnt: u64) {
        self.vtime = self
            .vtime
            .saturating_add(u128::from(burnt) * WEIGHT_SCALE / self.weight);
        self.window_fuel = self.window_fuel.saturating_add(burnt);
    }

    /// Folds in what invocations settled without the lock.
    pub(super) fn fold_unsettled(&mut self) {
        let burnt = self.unsettled.swap(0, Ordering::Relaxed);
        if burnt > 0 {
            self.add_vtime(burnt);
        }
    }
}

/// A bucket holding one quota period's fuel, refilled every period.
pub(super) fn quota_bucket(fuel_per_sec: u64, now: Instant) -> Option<TokenBucket> {
    let period_ms = u64::try_from(QUOTA_PERIOD.as_millis()).unwrap_or(1000);
    let per_period = fuel_per_sec.saturating_mul(period_ms) / 1000;
    TokenBucket::new(per_period.max(1), QUOTA_PERIOD, 0, now)
}
