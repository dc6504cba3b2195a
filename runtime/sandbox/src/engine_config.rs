//! What the host's one wasmtime engine is built with: pooling slots, the
//! CPU scheduler's tick, fuel yields, CPU slots.
//!
//! Engine-wide settings are a type of their own, apart from what bounds each
//! sandbox ([`crate::limits`]) and what each role is granted
//! ([`crate::grants`]), as wasmtime separates its `Config` from a `Store`.
//! Every default is safe for a host nobody configured.

use crate::error::RuntimeError;
use std::num::NonZeroU64;
use std::path::PathBuf;
use std::time::Duration;

/// The default [`EngineConfig::max_memory_bytes`]: 128 MiB, the default
/// per-guest cap (`SandboxLimits::memory_mib`).
const DEFAULT_MAX_MEMORY_BYTES: u64 = 128 * 1024 * 1024;

/// Settings of the one wasmtime engine a host runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Where compiled components are cached, keyed by content hash; `None`
    /// disables the cache. Default: `None` (the host shim passes its state dir).
    pub cache_dir: Option<PathBuf>,
    /// The largest linear memory any guest may have, in bytes: the pooling
    /// allocator reserves this much address space per memory slot. Default
    /// 128 MiB, the default per-guest cap.
    pub max_memory_bytes: u64,
    /// Component instances alive at once across the host (pooling slots).
    /// Default 1,000: plenty for one machine's in-flight requests and
    /// workers, and its address-space reservation is modest.
    pub max_instances: u32,
    /// How often the CPU scheduler ticks (a plain timer thread; guest code
    /// has no epoch checks). After each tick a running guest, at its next
    /// fuel yield or host call, has its fuel accounted to its role, its
    /// deadline checked, and the scheduler decides whether it keeps
    /// running. Default 10 ms: the scheduler's time slice.
    pub scheduler_tick: Duration,
    /// A running guest yields after every this many units of fuel: to the
    /// async executor when another task waits for a thread (or it has held
    /// its own for a millisecond), so a short request never waits long
    /// behind a CPU-bound guest; otherwise it runs straight on, which costs
    /// a fiber switch. The yields are also where a guest
    /// that calls nothing meets the CPU scheduler and its deadline: they
    /// cannot be turned off, and `None` or 0 is refused
    /// ([`EngineConfig::fuel_yields`]). Default
    /// [`DEFAULT_FUEL_YIELD_INTERVAL`], chosen by measurement (see
    /// `docs/benchmarks.md`).
    pub fuel_yield_interval: Option<u64>,
    /// Guests that may execute at once; the rest wait their turn in the
    /// CPU scheduler, ordered by their role's weighted fuel account.
    /// Default: the number of CPUs (the async executor's threads).
    pub cpu_slots: u32,
    /// Whether the CPU scheduler shares the slots by role weight. Off, guests
    /// run as the async executor polls them (fuel is still accounted and
    /// hard quotas still bite). Default on; off exists to measure its cost.
    pub fair_cpu: bool,
}

/// The default [`EngineConfig::fuel_yield_interval`]: about a millisecond of
/// wasm on this class of machine.
pub const DEFAULT_FUEL_YIELD_INTERVAL: u64 = 2_000_000;

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            cache_dir: None,
            max_memory_bytes: DEFAULT_MAX_MEMORY_BYTES,
            max_instances: 1000,
            scheduler_tick: Duration::from_millis(10),
            fuel_yield_interval: Some(DEFAULT_FUEL_YIELD_INTERVAL),
            cpu_slots: std::thread::available_parallelism()
                .ok()
                .and_then(|n| u32::try_from(n.get()).ok())
                .unwrap_or(1),
            fair_cpu: true,
        }
    }
}

impl EngineConfig {
    /// The fuel yield interval, which must be set and at least 1: without
    /// fuel yields a guest in a loop that calls nothing would never meet
    /// the scheduler or its deadline, nor give its thread back.
    pub fn fuel_yields(&self) -> Result<NonZeroU64, RuntimeError> {
        self.fuel_yield_interval
            .and_then(NonZeroU64::new)
            .ok_or_else(|| {
                RuntimeError::Engine(format!(
                    "the fuel yield interval must be at least 1 (not {:?}): guests meet \
                     their deadline and the CPU scheduler at their fuel yields, so a guest \
                     that never yields could not be stopped (default {DEFAULT_FUEL_YIELD_INTERVAL})",
                    self.fuel_yield_interval
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuel_yields_cannot_be_turned_off() {
        let default = EngineConfig::default();
        assert_eq!(
            default.fuel_yields().unwrap().get(),
            DEFAULT_FUEL_YIELD_INTERVAL
        );
        for off in [None, Some(0)] {
            let config = EngineConfig {
                fuel_yield_interval: off,
                ..EngineConfig::default()
            };
            let error = config.fuel_yields().unwrap_err().to_string();
            assert!(
                error.contains("fuel yield interval must be at least 1"),
                "{error}"
            );
        }
    }
}
