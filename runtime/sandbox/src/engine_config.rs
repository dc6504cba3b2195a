//! What the host's one wasmtime engine is built with: pooling slots,
//! epoch ticks, fuel yields, CPU slots.
//!
//! Engine-wide settings are a type of their own, apart from what bounds each
//! sandbox ([`crate::limits`]) and what each role is granted
//! ([`crate::grants`]), as wasmtime separates its `Config` from a `Store`.
//! Every default is safe for a host nobody configured.

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
    /// How often the epoch ticks. Each tick a running guest's fuel is
    /// accounted to its role, the CPU scheduler decides whether it keeps
    /// running, and its deadline is checked. Default 10 ms: the scheduler's
    /// time slice, and the precision of deadlines.
    pub epoch_tick: Duration,
    /// A running guest yields to the async executor after every this many
    /// units of fuel, so a short request waiting for a thread never waits
    /// long behind a CPU-bound guest. It is also the granularity at which
    /// the CPU scheduler sees a looping guest's fuel (wasmtime saves the
    /// count only at calls and yields). `None` yields only at epoch ticks.
    /// Default [`DEFAULT_FUEL_YIELD_INTERVAL`], chosen by measurement (see
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
            epoch_tick: Duration::from_millis(10),
            fuel_yield_interval: Some(DEFAULT_FUEL_YIELD_INTERVAL),
            cpu_slots: std::thread::available_parallelism()
                .ok()
                .and_then(|n| u32::try_from(n.get()).ok())
                .unwrap_or(1),
            fair_cpu: true,
        }
    }
}
