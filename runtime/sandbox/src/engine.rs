//! The host's one wasmtime engine, and turning component files into roles.
//!
//! [`Runtime`] owns the [`wasmtime::Engine`] (component model, async, fuel,
//! pooling allocator; no epoch interruption), the CPU scheduler and the
//! thread that ticks it, the on-disk cache of compiled components, one
//! [`Linker`] per role kind, and a weak reference to every role it made, to
//! report their usage. Web roles get WASI (granting nothing), `wasi:http`
//! (outgoing requests only to their allowlist) and the VMBus; worker roles
//! get WASI and the VMBus only. Either kind may export lifecycle hooks
//! ([`crate::hooks`]), found when the role is prepared.

use crate::cache::{CacheStats, ComponentCache, compile};
use crate::cpu::CpuScheduler;
use crate::engine_config::EngineConfig;
use crate::error::{RuntimeError, one_line};
use crate::hooks::Hooks;
use crate::limits::SandboxLimits;
use crate::role_spec::RoleSpec;
use crate::role_version::RoleVersion;
use crate::sandbox::GuestState;
use crate::scratch;
use crate::trace::SpanSink;
use crate::usage::UsageSnapshot;
use crate::vmbus;
use crate::web::{Handler, P3Handler, WebRole};
use crate::worker::WorkerRole;
use std::num::NonZeroU64;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use wasmtime::component::{Component, Linker};
use wasmtime::{Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};
use wasmtime_wasi_http::p3::bindings::ServicePre;

/// The host's engine and the linkers for each role kind.
pub struct Runtime {
    engine: Engine,
    config: EngineConfig,
    cache: Option<ComponentCache>,
    web_linker: Linker<GuestState>,
    worker_linker: Linker<GuestState>,
    scheduler: Arc<CpuScheduler>,
    /// Every version of a role it prepared, while it lives.
    versions: Mutex<Vec<Weak<RoleVersion>>>,
    /// How often guests yield, in fuel (the config's, checked).
    fuel_yields: NonZeroU64,
    ticker: SchedulerTicker,
    /// Where the spans of the roles it makes go; `None`: tracing is off.
    spans: Option<Arc<dyn SpanSink>>,
}

impl Runtime {
    /// Builds the engine and its linkers, and starts the CPU scheduler's
    /// ticker. Refuses a config without fuel yields.
    pub fn new(config: EngineConfig) -> Result<Self, RuntimeError> {
        let fuel_yields = config.fuel_yields()?;
        let engine = build_engine(&config)?;
        let cache = match &config.cache_dir {
            Some(dir) => Some(ComponentCache::open(dir, &engine)?),
            None => None,
        };
        let link_error = |e: wasmtime::Error| RuntimeError::Engine(one_line(&e));

        let mut worker_linker = Linker::new(&engine);
        // Rust's wasm32-wasip2 std imports wasi:cli, clocks, random,
        // filesystem and sockets even when unused: link them all so ordinary
        // components instantiate; the WASI context grants none of it.
        wasmtime_wasi::p2::add_to_linker_async(&mut worker_linker).map_err(link_error)?;
        scratch::add_to_linker(&mut worker_linker).map_err(link_error)?;
        vmbus::add_to_linker(&mut worker_linker).map_err(link_error)?;

        let mut web_linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut web_linker).map_err(link_error)?;
        scratch::add_to_linker(&mut web_linker).map_err(link_error)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut web_linker)
            .map_err(link_error)?;
        // WASIp3 web roles: what `wasi:http/service@0.3.0` imports (its CLI
        // streams, clocks and random, and `wasi:http` itself), from the same
        // WASI context. Not p3's filesystem, whose writes would pass the
        // scratch quota (`scratch.rs` guards p2's), nor its sockets.
        wasmtime_wasi::p3::cli::add_to_linker(&mut web_linker).map_err(link_error)?;
        wasmtime_wasi::p3::clocks::add_to_linker(&mut web_linker).map_err(link_error)?;
        wasmtime_wasi::p3::random::add_to_linker(&mut web_linker).map_err(link_error)?;
        wasmtime_wasi_http::p3::add_to_linker(&mut web_linker).map_err(link_error)?;
        vmbus::add_to_linker(&mut web_linker).map_err(link_error)?;

        let scheduler = CpuScheduler::new(config.cpu_slots, config.fair_cpu, fuel_yields.get());
        let ticker = SchedulerTicker::start(scheduler.clone(), config.scheduler_tick)?;
        Ok(Self {
            engine,
            config,
            cache,
            web_linker,
            worker_linker,
            scheduler,
            versions: Mutex::new(Vec::new()),
            fuel_yields,
            ticker,
            spans: None,
        })
    }

    /// Records the spans of every role made from now on in `sink`
    /// ([`crate::trace`]); without one (the default) tracing is off.
    pub fn with_span_sink(mut self, sink: Option<Arc<dyn SpanSink>>) -> Self {
        self.spans = sink;
        self
    }

    /// The engine configuration this runtime was built with.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Reads and compiles (or loads from the cache) the component at `path`.
    pub fn load_component(&self, path: &Path) -> Result<Component, RuntimeError> {
        let wasm = std::fs::read(path).map_err(|source| RuntimeError::Read {
            path: path.into(),
            source,
        })?;
        match &self.cache {
            Some(cache) => cache.load(&self.engine, &wasm, path),
            None => compile(&self.engine, &wasm, path),
        }
    }

    /// Prepares a web role from the component at `path`.
    pub fn web_role(&self, path: &Path, spec: RoleSpec) -> Result<WebRole, RuntimeError> {
        self.check_spec(&spec)?;
        let component = self.load_component(path)?;
        let pre = self
            .web_linker
            .instantiate_pre(&component)
            .map_err(|e| incompatible(path, "web", &e))?;
        let hooks = Hooks::find(&pre).map_err(|reason| RuntimeError::Incompatible {
            path: path.into(),
            kind: "web",
            reason,
        })?;
        // A component exporting `wasi:http/handler@0.3.0` is a WASIp3 role;
        // any other must be a WASIp2 one.
        let found = match ServicePre::new(pre.clone()) {
            Ok(p3) => Ok(p3),
            Err(_) if spec.limits.concurrent_requests_per_instance > 1 => {
                return Err(RuntimeError::Limits(
                    "concurrent-requests-per-instance above 1 needs a WASIp3 component \
                     (exporting wasi:http/handler@0.3.0): a WASIp2 handler serves one \
                     request at a time"
                        .into(),
                ));
            }
            Err(_)
                if spec.limits.instance_idle_timeout_ms
                    != SandboxLimits::default().instance_idle_timeout_ms =>
            {
                return Err(RuntimeError::Limits(
                    "instance-idle-timeout-ms applies to WASIp3 components (exporting \
                     wasi:http/handler@0.3.0): a WASIp2 role keeps its idle instances until \
                     one is reused or the role is released"
                        .into(),
                ));
            }
            Err(_) => Err(wasmtime_wasi_http::p2::bindings::ProxyPre::new(pre.clone())
                .map_err(|e| incompatible(path, "web", &e))?),
        };
        let version = self.version(spec, "web");
        let handler = match found {
            Ok(p3) => Handler::P3(P3Handler::new(p3, version.clone())),
            Err(p2) => Handler::P2(p2),
        };
        Ok(WebRole::new(pre, handler, version, hooks))
    }

    /// Prepares a worker role from the component at `path`.
    pub fn worker_role(&self, path: &Path, spec: RoleSpec) -> Result<WorkerRole, RuntimeError> {
        self.check_spec(&spec)?;
        let component = self.load_component(path)?;
        let pre = self
            .worker_linker
            .instantiate_pre(&component)
            .map_err(|e| incompatible(path, "worker", &e))?;
        let hooks = Hooks::find(&pre).map_err(|reason| RuntimeError::Incompatible {
            path: path.into(),
            kind: "worker",
            reason,
        })?;
        let pre = wasmtime_wasi::p2::bindings::CommandPre::new(pre)
            .map_err(|e| incompatible(path, "worker", &e))?;
        WorkerRole::new(pre, self.version(spec, "worker"), hooks)
            .map_err(|e| incompatible(path, "worker", &e))
    }

    /// How often the compiled-component cache saved a compilation (all
    /// zero when the cache is off).
    pub fn cache_stats(&self) -> CacheStats {
        self.cache
            .as_ref()
            .map(ComponentCache::stats)
            .unwrap_or_default()
    }

    /// What every live role has used of the host, in the order the roles
    /// were made.
    pub fn usage(&self) -> Vec<UsageSnapshot> {
        let mut versions = self.versions.lock().unwrap_or_else(|p| p.into_inner());
        versions.retain(|v| v.strong_count() > 0);
        versions
            .iter()
            .filter_map(Weak::upgrade)
            .map(|v| v.snapshot())
            .collect()
    }

    /// A new version of a role, counted in [`Runtime::usage`] while it lives.
    fn version(&self, spec: RoleSpec, kind: &'static str) -> Arc<RoleVersion> {
        let version = Arc::new(RoleVersion::new(
            spec,
            kind,
            &self.scheduler,
            self.fuel_yields,
            self.spans.as_ref(),
        ));
        let mut versions = self.versions.lock().unwrap_or_else(|p| p.into_inner());
        versions.retain(|v| v.strong_count() > 0);
        versions.push(Arc::downgrade(&version));
        version
    }

    fn check_limits(&self, limits: &SandboxLimits) -> Result<(), RuntimeError> {
        limits
            .validate(&self.config)
            .map_err(|e| RuntimeError::Limits(e.to_string()))
    }

    fn check_spec(&self, spec: &RoleSpec) -> Result<(), RuntimeError> {
        self.check_limits(&spec.limits)?;
        spec.cpu
            .validate()
            .map_err(|e| RuntimeError::Limits(e.to_string()))
    }

    /// Stops the CPU scheduler's ticker. Running guests no longer meet the
    /// scheduler nor have their deadlines checked at their fuel yields (the
    /// deadlines around calls still hold); call this only once no guest
    /// runs. Dropping the runtime does the same.
    pub fn shutdown(self) {
        drop(self.ticker);
    }
}

fn incompatible(path: &Path, kind: &'static str, error: &wasmtime::Error) -> RuntimeError {
    RuntimeError::Incompatible {
        path: path.into(),
        kind,
        reason: one_line(error),
    }
}

/// Dirty bytes of each memory and table reset in place when an instance
/// ends, instead of being unmapped: a small role's whole working set.
const KEEP_RESIDENT_BYTES: usize = 1 << 20;
/// Core instances one component may create (and each pool slot reserves).
const CORE_INSTANCES_PER_COMPONENT: u32 = 16;
/// Linear memories one component may have.
const MEMORIES_PER_COMPONENT: u32 = 2;
/// Tables one component may have.
const TABLES_PER_COMPONENT: u32 = 8;

fn build_engine(config: &EngineConfig) -> Result<Engine, RuntimeError> {
    let max_memory = usize::try_from(config.max_memory_bytes).map_err(|_| {
        RuntimeError::Engine("max memory does not fit this machine's address space".into())
    })?;
    let instances = config.max_instances;
    let mut pool = PoolingAllocationConfig::default();
    // Every component instance slot carries its own share of core
    // instances, memories and tables, and one component may use no more
    // than its share: so a hand-made component with many modules cannot
    // drain the pool that other roles' sandboxes draw on, and each role's
    // own limits (`max-in-flight`, instance counts) bite first. A Rust
    // component needs a handful of core instances (its module plus small
    // shims), one memory (two with a preview-1 adapter) and a few tables.
    pool.total_component_instances(instances)
        .total_core_instances(instances.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
        .total_memories(instances.saturating_mul(MEMORIES_PER_COMPONENT))
        .total_tables(instances.saturating_mul(TABLES_PER_COMPONENT))
        .total_stacks(instances)
        .max_memory_size(max_memory)
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .max_memories_per_component(MEMORIES_PER_COMPONENT)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        // When an instance ends, reset the pages its memories and tables
        // dirtied by copying them back (found with Linux's PAGEMAP_SCAN
        // where the kernel has it, 6.7 and later), rather than unmapping them
        // with madvise: every unmap of a multi-threaded process's pages
        // shoots down the other cores' TLBs, and the next instance in the
        // slot would fault them all in again. Measured on the request path
        // of a small web role, madvise and its faults were the largest cost
        // after the guest itself (see docs/benchmarks.md). Memory is still
        // reset to its initial image; past this many dirty bytes the rest is
        // unmapped as before.
        .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
        .table_keep_resident(KEEP_RESIDENT_BYTES)
        .pagemap_scan(Enabled::Auto);

    let mut wasm = wasmtime::Config::new();
    // No epoch interruption: its checks, compiled into every loop and
    // function of guest code, cost CPU-bound work 1.5x unmetered wasm where
    // fuel alone costs 1.01x (docs/benchmarks.md). Guests meet their
    // deadline and the CPU scheduler at the fuel yields they make anyway,
    // in the store's call hook (`sandbox.rs`); one blocked in a host call
    // is dropped at its deadline by the future that drives it.
    wasm.wasm_component_model(true)
        // WASIp3 web roles: async exports and imports, streams and futures
        // (experimental in wasmtime 48; see `web/p3`).
        .wasm_component_model_async(true)
        .consume_fuel(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&wasm).map_err(|e| RuntimeError::Engine(one_line(&e)))
}

/// A timer thread that ticks the CPU scheduler: it takes back idle slots
/// and hands them on, and after each tick every executing guest reports its
/// fuel (and may be parked, or stopped at its deadline) at its next fuel
/// yield or host call. It touches no guest and no engine.
struct SchedulerTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SchedulerTicker {
    fn start(
        scheduler: Arc<CpuScheduler>,
        tick: std::time::Duration,
    ) -> Result<Self, RuntimeError> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("weft-cpu-tick".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    scheduler.tick();
                }
            })
            .map_err(|e| {
                RuntimeError::Engine(format!("cannot start the CPU scheduler's ticker: {e}"))
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for SchedulerTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::run_scheduled;
    use crate::error::GuestFailure;
    use crate::sandbox::{Failed, sandbox_store, settle_cpu};
    use std::time::{Duration, Instant};
    use wasmtime::Trap;

    /// `count(n)` loops `n` times and `spin` for ever; neither calls anything.
    const LOOPS: &str = r#"(component
        (core module $m
            (func (export "count") (param $n i32)
                (loop $again
                    (local.set $n (i32.sub (local.get $n) (i32.const 1)))
                    (br_if $again (local.get $n))))
            (func (export "spin") (loop $again (br $again))))
        (core instance $i (instantiate $m))
        (func (export "count") (param "n" u32) (canon lift (core func $i "count")))
        (func (export "spin") (canon lift (core func $i "spin"))))"#;

    #[tokio::test]
    async fn guests_run_without_epoch_checks_and_meet_their_deadline_at_fuel_yields() {
        let runtime = Runtime::new(EngineConfig {
            max_instances: 4,
            scheduler_tick: Duration::from_millis(1),
            ..EngineConfig::default()
        })
        .unwrap();
        let broker = Arc::new(weft_broker::MemoryBroker::default());
        let spec = RoleSpec {
            grants: crate::Grants::default(),
            limits: SandboxLimits::default(),
            rate_limits: crate::RateLimits::default(),
            cpu: crate::CpuShare::default(),
            queues: broker.clone(),
            kv: broker,
        };
        let version = runtime.version(spec, "worker");
        let component = Component::new(&runtime.engine, LOOPS).unwrap();
        let mut store =
            sandbox_store(&runtime.engine, &version, "loops".into(), version.vmbus()).unwrap();
        let spot = store.data().cpu.parking_spot();
        let instance = Linker::new(&runtime.engine)
            .instantiate_async(&mut store, &component)
            .await
            .unwrap();

        // An engine with epoch interruption would trap at once here: the
        // store never sets an epoch deadline.
        let count = instance
            .get_typed_func::<(u32,), ()>(&mut store, "count")
            .unwrap();
        run_scheduled(spot.clone(), count.call_async(&mut store, (20_000_000,)))
            .await
            .unwrap();
        // What the hook charged at its ticks and the settle add up exactly.
        settle_cpu(&mut store);
        let burnt = version.limits().fuel - store.get_fuel().unwrap();
        assert!(burnt > 20_000_000);
        assert_eq!(version.usage.fuel(), burnt);

        // A loop that calls nothing, past its deadline, with nothing around
        // it to drop it: the call hook stops it at a fuel yield, as an epoch
        // deadline did (the bound only keeps a failure from hanging).
        let spin = instance
            .get_typed_func::<(), ()>(&mut store, "spin")
            .unwrap();
        store.data_mut().deadline = Some(Instant::now());
        let spun = tokio::time::timeout(
            Duration::from_secs(60),
            run_scheduled(spot, spin.call_async(&mut store, ())),
        )
        .await
        .expect("the loop ran on past its deadline");
        let error = spun.unwrap_err();
        assert!(matches!(
            error.downcast_ref::<Trap>(),
            Some(Trap::Interrupt)
        ));
        let failure = Failed::Running(error).explain(store.data(), version.limits());
        assert!(matches!(failure, GuestFailure::Deadline(_)), "{failure}");
    }
}
