//! What each role has used of the host: fuel, its share of the CPU, time
//! parked and throttled, host calls made and refused, bytes in and out,
//! failures, and memory.
//!
//! [`RoleUsage`] holds a role's counters (plain atomics, updated where the
//! thing happens: the CPU scheduler, the rate limiter, the memory limiter,
//! the web and worker paths). [`crate::Runtime::usage`] copies every live
//! role's counters into a [`UsageSnapshot`], which the host renders as
//! Prometheus text and which guests read through `weft:vmbus/usage`.

use crate::error::GuestFailure;
use crate::rate_limit::CallStats;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Why a guest waited for the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WaitKind {
    /// For a slot, while other roles had their turn.
    Parked,
    /// For the role's hard quota to refill.
    Throttled,
}

/// Which way body bytes flow, seen from the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Incoming request bodies a web role reads.
    HttpIn,
    /// Response bodies a web role writes.
    HttpOut,
    /// Bodies a web role sends in its outgoing requests.
    EgressOut,
    /// Response bodies a web role receives from its outgoing requests.
    EgressIn,
}

/// The kinds of failure counted per role, as [`GuestFailure::kind`] names them.
const FAILURE_KINDS: [&str; 9] = [
    "fuel",
    "deadline",
    "memory",
    "trap",
    "exit",
    "instantiate",
    "capacity",
    "start",
    "protocol",
];

/// A role's usage counters.
#[derive(Debug, Default)]
pub struct RoleUsage {
    fuel: AtomicU64,
    share_ppm: AtomicU32,
    parked_ns: AtomicU64,
    throttled_ns: AtomicU64,
    invocations: AtomicU64,
    failures: [AtomicU64; FAILURE_KINDS.len()],
    live: AtomicU64,
    /// Body bytes by [`Flow`].
    flows: [AtomicU64; 4],
}

impl RoleUsage {
    pub(crate) fn add_fuel(&self, fuel: u64) {
        self.fuel.fetch_add(fuel, Ordering::Relaxed);
    }

    /// Fuel burnt by the role's guests so far.
    pub fn fuel(&self) -> u64 {
        self.fuel.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    pub(crate) fn snapshot_fuel(&self) -> u64 {
        self.fuel()
    }

    pub(crate) fn set_share_ppm(&self, ppm: u32) {
        self.share_ppm.store(ppm, Ordering::Relaxed);
    }

    pub(crate) fn add_wait(&self, kind: WaitKind, waited: Duration) {
        let nanos = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        let counter = match kind {
            WaitKind::Parked => &self.parked_ns,
            WaitKind::Throttled => &self.throttled_ns,
        };
        counter.fetch_add(nanos, Ordering::Relaxed);
    }

    pub(crate) fn add_bytes(&self, flow: Flow, bytes: u64) {
        self.flows[flow as usize].fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts a request (web) or a received batch (worker).
    pub(crate) fn add_invocation(&self) {
        self.invocations.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_failure(&self, failure: &GuestFailure) {
        if let Some(index) = FAILURE_KINDS.iter().position(|k| *k == failure.kind()) {
            self.failures[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Marks one more instance alive until the guard drops.
    pub(crate) fn instance_alive(self: &std::sync::Arc<Self>) -> LiveInstance {
        self.live.fetch_add(1, Ordering::Relaxed);
        LiveInstance(self.clone())
    }

    /// Copies the counters (memory and calls come from elsewhere).
    pub(crate) fn counters(&self) -> Counters {
        Counters {
            fuel_used: self.fuel(),
            cpu_share_ppm: self.share_ppm.load(Ordering::Relaxed),
            parked: Duration::from_nanos(self.parked_ns.load(Ordering::Relaxed)),
            throttled: Duration::from_nanos(self.throttled_ns.load(Ordering::Relaxed)),
            invocations: self.invocations.load(Ordering::Relaxed),
            failures: FAILURE_KINDS
                .iter()
                .zip(&self.failures)
                .map(|(kind, count)| (*kind, count.load(Ordering::Relaxed)))
                .collect(),
            instances_live: self.live.load(Ordering::Relaxed),
            bytes: BodyBytes {
                http_in: self.flows[Flow::HttpIn as usize].load(Ordering::Relaxed),
                http_out: self.flows[Flow::HttpOut as usize].load(Ordering::Relaxed),
                egress_out: self.flows[Flow::EgressOut as usize].load(Ordering::Relaxed),
                egress_in: self.flows[Flow::EgressIn as usize].load(Ordering::Relaxed),
            },
        }
    }
}

/// Counts an instance as alive while it exists.
#[derive(Debug)]
pub(crate) struct LiveInstance(std::sync::Arc<RoleUsage>);

impl Drop for LiveInstance {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The CPU and invocation counters of a role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counters {
    /// Fuel its guests have burnt.
    pub fuel_used: u64,
    /// Its share of all the fuel burnt on the host over the last second, in
    /// parts per million.
    pub cpu_share_ppm: u32,
    /// Time its guests waited for a CPU slot while other roles had theirs.
    pub parked: Duration,
    /// Time its guests were held back by its hard CPU quota.
    pub throttled: Duration,
    /// Requests (web) or received batches (worker).
    pub invocations: u64,
    /// Failures by kind (`fuel`, `deadline`, `memory`, `trap`, `exit`,
    /// `instantiate`, `capacity`, `start`, `protocol`).
    pub failures: Vec<(&'static str, u64)>,
    /// Instances alive now (web: requests in flight, plus idle instances
    /// kept for reuse).
    pub instances_live: u64,
    /// HTTP body bytes in and out.
    pub bytes: BodyBytes,
}

/// HTTP body bytes a web role moved, by direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BodyBytes {
    /// Request bodies it read.
    pub http_in: u64,
    /// Response bodies it wrote.
    pub http_out: u64,
    /// Bodies it sent in outgoing requests.
    pub egress_out: u64,
    /// Response bodies it received from outgoing requests.
    pub egress_in: u64,
}

impl Counters {
    /// The role's share of the host's fuel over the last second, 0 to 1.
    pub fn cpu_share(&self) -> f64 {
        f64::from(self.cpu_share_ppm) / 1e6
    }
}

/// A role's memory: all its instances together, and the largest single one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryUsage {
    /// Linear memory its instances hold now, in bytes.
    pub bytes: u64,
    /// The most they held at once.
    pub high_water: u64,
    /// The most one instance held.
    pub instance_high_water: u64,
    /// The cap on one instance.
    pub instance_cap: u64,
    /// The cap on all instances together, if any.
    pub role_cap: Option<u64>,
}

/// Everything measured of one role, at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageSnapshot {
    /// The service the role belongs to.
    pub service: String,
    /// The role's name.
    pub role: String,
    /// `web` or `worker`.
    pub kind: &'static str,
    /// The role's CPU weight.
    pub weight: u32,
    /// CPU and invocations.
    pub counters: Counters,
    /// Host calls per interface.
    pub calls: Vec<CallStats>,
    /// Linear memory.
    pub memory: MemoryUsage,
}

impl UsageSnapshot {
    /// Adds the figures of another version of the same role (two versions
    /// run side by side during a rolling upgrade, each with its own
    /// accounts): counters, waits, calls, bytes and live memory add up; high
    /// waters and caps take the larger.
    pub fn absorb(&mut self, other: &UsageSnapshot) {
        let (mine, theirs) = (&mut self.counters, &other.counters);
        mine.fuel_used = mine.fuel_used.saturating_add(theirs.fuel_used);
        mine.cpu_share_ppm = mine.cpu_share_ppm.saturating_add(theirs.cpu_share_ppm);
        mine.parked = mine.parked.saturating_add(theirs.parked);
        mine.throttled = mine.throttled.saturating_add(theirs.throttled);
        mine.invocations = mine.invocations.saturating_add(theirs.invocations);
        mine.instances_live = mine.instances_live.saturating_add(theirs.instances_live);
        for (kind, count) in &theirs.failures {
            match mine.failures.iter_mut().find(|(k, _)| k == kind) {
                Some((_, mine)) => *mine = mine.saturating_add(*count),
                None => mine.failures.push((kind, *count)),
            }
        }
        let (a, b) = (&mut mine.bytes, &theirs.bytes);
        a.http_in = a.http_in.saturating_add(b.http_in);
        a.http_out = a.http_out.saturating_add(b.http_out);
        a.egress_out = a.egress_out.saturating_add(b.egress_out);
        a.egress_in = a.egress_in.saturating_add(b.egress_in);
        for call in &other.calls {
            match self
                .calls
                .iter_mut()
                .find(|c| c.interface == call.interface)
            {
                Some(mine) => {
                    mine.admitted = mine.admitted.saturating_add(call.admitted);
                    mine.limited = mine.limited.saturating_add(call.limited);
                    mine.waited = mine.waited.saturating_add(call.waited);
                    mine.bytes = mine.bytes.saturating_add(call.bytes);
                }
                None => self.calls.push(*call),
            }
        }
        let (a, b) = (&mut self.memory, &other.memory);
        a.bytes = a.bytes.saturating_add(b.bytes);
        a.high_water = a.high_water.max(b.high_water);
        a.instance_high_water = a.instance_high_water.max(b.instance_high_water);
        a.instance_cap = a.instance_cap.max(b.instance_cap);
        a.role_cap = a.role_cap.max(b.role_cap);
        self.weight = self.weight.max(other.weight);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn counters_add_up() {
        let usage = Arc::new(RoleUsage::default());
        usage.add_fuel(5);
        usage.add_fuel(7);
        usage.add_wait(WaitKind::Parked, Duration::from_millis(3));
        usage.add_wait(WaitKind::Throttled, Duration::from_millis(4));
        usage.add_invocation();
        usage.add_failure(&GuestFailure::OutOfFuel);
        usage.add_failure(&GuestFailure::Deadline(Duration::from_secs(1)));
        usage.add_failure(&GuestFailure::OutOfFuel);
        let live = usage.instance_alive();
        let counters = usage.counters();
        assert_eq!(counters.fuel_used, 12);
        assert_eq!(counters.parked, Duration::from_millis(3));
        assert_eq!(counters.throttled, Duration::from_millis(4));
        assert_eq!(counters.invocations, 1);
        assert_eq!(counters.failures[0], ("fuel", 2));
        assert_eq!(counters.failures[1], ("deadline", 1));
        assert_eq!(counters.instances_live, 1);
        drop(live);
        assert_eq!(usage.counters().instances_live, 0);
    }

    #[test]
    fn two_versions_of_a_role_add_up() {
        let (one, two) = (
            Arc::new(RoleUsage::default()),
            Arc::new(RoleUsage::default()),
        );
        one.add_fuel(5);
        two.add_fuel(7);
        one.add_failure(&GuestFailure::OutOfFuel);
        two.add_failure(&GuestFailure::OutOfFuel);
        two.add_invocation();
        let snapshot = |usage: &RoleUsage, bytes| UsageSnapshot {
            service: "s".into(),
            role: "r".into(),
            kind: "web",
            weight: 100,
            counters: usage.counters(),
            calls: Vec::new(),
            memory: MemoryUsage {
                bytes,
                high_water: bytes,
                instance_high_water: bytes,
                instance_cap: 10,
                role_cap: None,
            },
        };
        let mut total = snapshot(&one, 3);
        total.absorb(&snapshot(&two, 4));
        assert_eq!(total.counters.fuel_used, 12);
        assert_eq!(total.counters.invocations, 1);
        assert_eq!(total.counters.failures[0], ("fuel", 2));
        assert_eq!((total.memory.bytes, total.memory.high_water), (7, 4));
    }
}
