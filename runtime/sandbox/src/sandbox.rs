//! One guest's sandbox: the store data, and the limits that bound it.
//!
//! Every guest invocation gets a fresh [`wasmtime::Store`] holding a
//! [`GuestState`]: a WASI context that grants nothing (no preopened folders
//! unless a scratch folder is granted, no environment, no arguments, no
//! network), an HTTP context whose outgoing requests pass the role's egress
//! allowlist and limits ([`crate::egress`]), the VMBus state for the role's
//! grants, a memory limiter (per instance and per role), and the guest's
//! CPU account with the scheduler ([`crate::cpu`]). The store carries a fuel
//! budget, yields every [`crate::EngineConfig::fuel_yield_interval`] units
//! of fuel, and has a call hook that, at the guest's first fuel yield or
//! host call after each tick of the CPU scheduler, stops it once its
//! deadline has passed (the same `Trap::Interrupt` an epoch deadline
//! raised), charges the fuel burnt to the role, and lets the scheduler park
//! it. No epoch check is compiled into guest code. Every future that runs
//! guest code is driven through [`crate::cpu::run_scheduled`], which waits
//! out a parking, and is dropped at its deadline from outside, so a guest
//! blocked in a host call is stopped too.
//!
//! Host memory held on a guest's behalf is bounded too: at most
//! [`MAX_RESOURCE_HANDLES`] resource handles (streams, header maps, buckets),
//! header maps of at most [`MAX_HEADER_BYTES`], and at most
//! [`MAX_HOSTCALL_BYTES`] of strings and lists passed in one host call.

use crate::cpu::GuestCpu;
use crate::egress::EgressHooks;
use crate::error::{GuestFailure, RuntimeError, one_line};
use crate::guest_log::{GuestLog, GuestTags, Stream};
use crate::limits::{MIB, SandboxLimits};
use crate::memory::MemoryLimiter;
use crate::rate_limit::RoleLimiter;
use crate::role_version::RoleVersion;
use crate::scratch::{ScratchQuota, ScratchView};
use crate::usage::LiveInstance;
use crate::vmbus::caller::Caller;
use crate::vmbus::queue::{QueueHost, QueueView};
use crate::vmbus::usage::{Measured, UsageHost};
use crate::vmbus::{VmBusCtx, VmBusHost, VmBusView};
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Instant;
use wasmtime::component::ResourceTable;
use wasmtime::{CallHook, Engine, Store, StoreContextMut, Trap};
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Where a granted scratch folder appears inside the guest.
pub const SCRATCH_GUEST_PATH: &str = "/scratch";
/// Resource handles (streams, pollables, header maps, buckets...) one
/// guest may hold at once: hundreds are plenty for a request, and the cap
/// bounds the host memory a guest can pin by creating handles in a loop.
pub const MAX_RESOURCE_HANDLES: usize = 4096;
/// The largest header map (names and values) a guest may build, in bytes.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// The most bytes of strings and lists a guest may pass in one host call
/// (wasmtime's "hostcall fuel", 128 MiB by default). The largest legitimate
/// argument is a 1 MiB key-value value or body write; past this the call
/// traps before the host copies or decodes anything.
pub const MAX_HOSTCALL_BYTES: usize = 4 * 1024 * 1024;

/// The data of one guest's store.
pub struct GuestState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: EgressHooks,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) vmbus: VmBusCtx,
    pub(crate) cpu: GuestCpu,
    /// The version of the role this guest is an instance of.
    pub(crate) version: Arc<RoleVersion>,
    /// When the current invocation must stop; checked at the guest's first
    /// fuel yield or host call after each scheduler tick.
    pub(crate) deadline: Option<Instant>,
    _live: LiveInstance,
}

impl GuestState {
    /// State for one instance of a role, starting with `fuel`.
    pub(crate) fn new(
        version: &Arc<RoleVersion>,
        tags: Arc<GuestTags>,
        vmbus: VmBusCtx,
        fuel: u64,
    ) -> Result<Self, RuntimeError> {
        let wasi = wasi_ctx(version, tags, vmbus.limiter())?;
        let memory_cap = usize::try_from(version.limits().memory_bytes()).unwrap_or(usize::MAX);
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(MAX_HEADER_BYTES);
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCE_HANDLES);
        Ok(Self {
            wasi,
            http,
            hooks: EgressHooks {
                allow: version.grants.clone(),
                limiter: version.limiter.clone(),
                usage: version.usage.clone(),
            },
            table,
            limiter: MemoryLimiter::new(memory_cap, version.memory.clone()),
            vmbus,
            cpu: version.cpu.guest(fuel),
            version: version.clone(),
            deadline: None,
            _live: version.usage.instance_alive(),
        })
    }

    /// Whether the memory cap refused a growth during this invocation.
    pub(crate) fn memory_refused(&self) -> bool {
        self.limiter.refused
    }
}

impl VmBusHost for GuestState {
    fn vmbus(&mut self) -> VmBusView<'_> {
        VmBusView {
            ctx: &mut self.vmbus,
            table: &mut self.table,
        }
    }
}

impl QueueHost for GuestState {
    fn queue(&mut self) -> QueueView<'_> {
        self.vmbus.queue_view()
    }

    fn start_batch(store: &mut StoreContextMut<'_, Self>, fuel: u64) -> wasmtime::Result<()> {
        start_batch(store, fuel)
    }

    fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }
}

impl UsageHost for GuestState {
    fn usage_caller(&self) -> &Caller {
        &self.vmbus.caller
    }

    fn measured(&self) -> Measured {
        Measured {
            role: self.version.snapshot(),
            memory_bytes: self.limiter.used_bytes(),
            deadline: self.deadline,
        }
    }
}

/// The WASI context of a guest with no ambient authority.
fn wasi_ctx(
    version: &RoleVersion,
    tags: Arc<GuestTags>,
    limiter: &Arc<RoleLimiter>,
) -> Result<WasiCtx, RuntimeError> {
    let mut builder = WasiCtxBuilder::new();
    builder
        .stdout(GuestLog::new(tags.clone(), Stream::Stdout, limiter.clone()))
        .stderr(GuestLog::new(tags, Stream::Stderr, limiter.clone()))
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }));
    if let Some(dir) = &version.grants.scratch_dir {
        builder
            .preopened_dir(dir, SCRATCH_GUEST_PATH, FsPerms::ReadWrite)
            .map_err(|e| RuntimeError::Grant {
                what: format!("scratch folder {}", dir.display()),
                reason: one_line(&e),
            })?;
    }
    Ok(builder.build())
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl ScratchView for GuestState {
    fn scratch_quota(&self) -> Option<Arc<ScratchQuota>> {
        self.version.scratch.clone()
    }
}

impl WasiHttpView for GuestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// A store for a new sandbox of a `version` of a role, its output tagged with
/// `instance` and its way out `vmbus`: the one way every sandbox is made
/// (web instances, worker instances, lifecycle hooks).
pub(crate) fn sandbox_store(
    engine: &Engine,
    version: &Arc<RoleVersion>,
    instance: String,
    mut vmbus: VmBusCtx,
) -> Result<Store<GuestState>, GuestFailure> {
    let fuel = version.limits().fuel;
    vmbus.caller.trace = version.trace.instance(&instance);
    let tags = Arc::new(GuestTags {
        service: version.grants.service.clone(),
        role: version.grants.role.clone(),
        instance,
    });
    let state = GuestState::new(version, tags, vmbus, fuel)
        .map_err(|e| GuestFailure::Instantiate(e.to_string()))?;
    new_store(engine, state, fuel, version.fuel_yield_interval)
        .map_err(|e| GuestFailure::Instantiate(e.to_string()))
}

/// A store for one invocation: fuel and its yields, the memory caps, and
/// the call hook that enforces the deadline, accounts CPU and schedules.
fn new_store(
    engine: &Engine,
    state: GuestState,
    fuel: u64,
    fuel_yield_interval: NonZeroU64,
) -> Result<Store<GuestState>, RuntimeError> {
    let mut store = Store::new(engine, state);
    store.limiter(|state| &mut state.limiter);
    store.set_hostcall_fuel(MAX_HOSTCALL_BYTES);
    let engine_error = |e: wasmtime::Error| RuntimeError::Engine(one_line(&e));
    store.set_fuel(fuel).map_err(engine_error)?;
    store
        .fuel_async_yield_interval(Some(fuel_yield_interval.get()))
        .map_err(engine_error)?;
    store.call_hook(meet_scheduler);
    Ok(store)
}

/// The store's call hook. wasmtime calls it around every host call and
/// libcall, the out-of-gas one included, which a guest makes at each fuel
/// yield: so a guest in a loop that calls nothing comes here every fuel
/// yield interval. Once per scheduler tick it does what an epoch deadline
/// callback would: stops the guest past its deadline, charges the fuel it
/// burnt (exact here: wasmtime saved the count on the way out of wasm),
/// and lets the scheduler park it (the future driving it waits).
fn meet_scheduler(
    mut ctx: StoreContextMut<'_, GuestState>,
    hook: CallHook,
) -> wasmtime::Result<()> {
    if !matches!(hook, CallHook::CallingHost) || !ctx.data_mut().cpu.tick_due() {
        return Ok(());
    }
    let deadline = ctx.data().deadline;
    if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
        return Err(Trap::Interrupt.into());
    }
    let fuel_left = ctx.get_fuel().unwrap_or(0);
    ctx.data_mut().cpu.on_tick(fuel_left, deadline);
    Ok(())
}

/// Charges the fuel the guest burnt since its last report to its role:
/// called when an invocation ends, however it ended.
pub(crate) fn settle_cpu(store: &mut Store<GuestState>) {
    let fuel_left = store.get_fuel().unwrap_or(0);
    store.data_mut().cpu.settle(fuel_left);
}

/// Gives the guest `fuel` afresh, first charging its role what it burnt
/// since its last report (so fuel burnt before, in a start hook or the
/// last batch, is never lost to the new budget).
pub(crate) fn refuel(
    store: &mut StoreContextMut<'_, GuestState>,
    fuel: u64,
) -> wasmtime::Result<()> {
    let fuel_left = store.get_fuel()?;
    store.data_mut().cpu.settle(fuel_left);
    store.set_fuel(fuel)?;
    store.data_mut().cpu.refuelled(fuel);
    Ok(())
}

/// Starts a worker's new batch: charges what the last batch burnt, gives the
/// guest `fuel` afresh, forgets a memory refusal it survived, and counts the
/// batch.
pub(crate) fn start_batch(
    store: &mut StoreContextMut<'_, GuestState>,
    fuel: u64,
) -> wasmtime::Result<()> {
    refuel(store, fuel)?;
    let state = store.data_mut();
    state.limiter.clear_refusal();
    state.version.usage.add_invocation();
    Ok(())
}

/// A guest invocation's error, and the stage it failed in.
pub(crate) enum Failed {
    /// Creating the instance failed (no pool slot, a start function trapped...).
    Instantiating(wasmtime::Error),
    /// The guest's export failed while running.
    Running(wasmtime::Error),
}

impl Failed {
    /// Explains the failure in terms an operator can act on.
    pub(crate) fn explain(&self, state: &GuestState, limits: &SandboxLimits) -> GuestFailure {
        match self {
            Failed::Instantiating(error)
                if error.is::<wasmtime::PoolConcurrencyLimitError>() || state.memory_refused() =>
            {
                GuestFailure::Capacity(root_cause(error))
            }
            Failed::Instantiating(error) => GuestFailure::Instantiate(root_cause(error)),
            Failed::Running(error) => classify(error, state, limits),
        }
    }
}

/// Explains why an invocation failed, in terms an operator can act on.
fn classify(error: &wasmtime::Error, state: &GuestState, limits: &SandboxLimits) -> GuestFailure {
    if let Some(exit) = error.downcast_ref::<I32Exit>() {
        return GuestFailure::Exit(exit.0);
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => GuestFailure::OutOfFuel,
        Some(Trap::Interrupt) => GuestFailure::Deadline(limits.deadline()),
        // Rust (and C) abort on a failed allocation with `unreachable`.
        Some(Trap::UnreachableCodeReached) if state.memory_refused() => {
            GuestFailure::MemoryCap(limits.memory_bytes() / MIB)
        }
        Some(trap) => GuestFailure::Trap(trap.to_string()),
        None => GuestFailure::Trap(root_cause(error)),
    }
}

/// The innermost cause of an error, on one line: wasmtime wraps traps and
/// host errors in context (a backtrace) whose first line says nothing.
fn root_cause(error: &wasmtime::Error) -> String {
    let cause = error.root_cause().to_string();
    let line = cause
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("unknown error");
    line.chars().take(300).collect()
}
