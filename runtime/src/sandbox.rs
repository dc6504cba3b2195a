//! One guest's sandbox: the store data, and the limits that bound it.
//!
//! Every guest invocation gets a fresh [`wasmtime::Store`] holding a
//! [`GuestState`]: a WASI context that grants nothing (no preopened folders
//! unless a scratch folder is granted, no environment, no arguments, no
//! network), an HTTP context whose outgoing requests are all refused, the
//! VMBus state for the role's grants, and a memory limiter. The store carries
//! a fuel budget, and an epoch callback that makes the guest yield to the
//! async executor every tick and stops it once its deadline has passed.

use crate::config::{Grants, MIB, SandboxLimits};
use crate::error::{GuestFailure, RuntimeError, one_line};
use crate::guest_log::{GuestLog, GuestTags, Stream};
use crate::rate_limit::RoleLimiter;
use crate::vmbus::{VmBusCtx, VmBusView};
use std::sync::Arc;
use std::time::Instant;
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, ResourceLimiter, Store, Trap, UpdateDeadline};
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

/// Where a granted scratch folder appears inside the guest.
pub const SCRATCH_GUEST_PATH: &str = "/scratch";
/// Table elements one instance may grow to: far above what compilers emit
/// for function tables, far below what would strain the host.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// The data of one guest's store.
pub struct GuestState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: DenyOutgoingHttp,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) vmbus: VmBusCtx,
    /// When the current invocation must stop; checked at every epoch tick.
    pub(crate) deadline: Option<Instant>,
}

impl GuestState {
    /// State for one instance of a role.
    pub(crate) fn new(
        limits: &SandboxLimits,
        tags: Arc<GuestTags>,
        vmbus: VmBusCtx,
    ) -> Result<Self, RuntimeError> {
        let wasi = wasi_ctx(&vmbus.grants, tags, &vmbus.limiter)?;
        let memory_cap = usize::try_from(limits.memory_bytes()).unwrap_or(usize::MAX);
        Ok(Self {
            wasi,
            http: WasiHttpCtx::new(),
            hooks: DenyOutgoingHttp,
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(memory_cap),
            vmbus,
            deadline: None,
        })
    }

    pub(crate) fn vmbus(&mut self) -> VmBusView<'_> {
        VmBusView {
            ctx: &mut self.vmbus,
            table: &mut self.table,
        }
    }

    /// Whether the memory cap refused a growth during this invocation.
    pub(crate) fn memory_refused(&self) -> bool {
        self.limiter.refused
    }
}

/// The WASI context of a guest with no ambient authority.
fn wasi_ctx(
    grants: &Grants,
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
    if let Some(dir) = &grants.scratch_dir {
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

impl WasiHttpView for GuestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Refuses every outgoing HTTP request: a web role has no way out but the
/// VMBus until an egress allowlist grants one.
struct DenyOutgoingHttp;

type SendFuture = Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>;
type SendResult =
    wasmtime_wasi_http::Result<(http::Response<wasmtime_wasi_http::WasiBody>, SendFuture)>;

impl WasiHttpHooks for DenyOutgoingHttp {
    fn send_request(
        &mut self,
        _request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: SendFuture,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

/// Refuses memory growth that would take the guest's linear memories, all
/// of them together, past the cap (the guest sees `memory.grow` fail; it is
/// not trapped), and remembers that it did, to explain a later trap.
#[derive(Debug)]
pub(crate) struct MemoryLimiter {
    cap_bytes: usize,
    /// Bytes of linear memory the guest holds, over every memory it has.
    used_bytes: usize,
    /// Whether a growth was refused since the last [`Self::clear_refusal`].
    refused: bool,
}

impl MemoryLimiter {
    pub(crate) fn new(cap_bytes: usize) -> Self {
        Self {
            cap_bytes,
            used_bytes: 0,
            refused: false,
        }
    }

    /// Forgets a refusal the guest survived (a worker starting a new batch).
    pub(crate) fn clear_refusal(&mut self) {
        self.refused = false;
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self
            .used_bytes
            .saturating_sub(current)
            .saturating_add(desired);
        if total > self.cap_bytes {
            self.refused = true;
            return Ok(false);
        }
        self.used_bytes = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// A store for one invocation: fuel, memory cap, and epoch-driven yields
/// and deadline.
pub(crate) fn new_store(
    engine: &Engine,
    state: GuestState,
    fuel: u64,
) -> Result<Store<GuestState>, RuntimeError> {
    let mut store = Store::new(engine, state);
    store.limiter(|state| &mut state.limiter);
    store
        .set_fuel(fuel)
        .map_err(|e| RuntimeError::Engine(one_line(&e)))?;
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|ctx| {
        if ctx
            .data()
            .deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
        {
            return Ok(UpdateDeadline::Interrupt);
        }
        // Yield every tick so a guest in a loop shares its worker thread.
        Ok(UpdateDeadline::Yield(1))
    });
    Ok(store)
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

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    #[test]
    fn the_cap_covers_all_of_a_guests_memories_together() {
        let mut limiter = MemoryLimiter::new(10 * MIB);
        // Two memories start at 4 MiB each: 8 MiB in all.
        assert!(limiter.memory_growing(0, 4 * MIB, None).unwrap());
        assert!(limiter.memory_growing(0, 4 * MIB, None).unwrap());
        // A third memory of 4 MiB, or growing one to 8 MiB, passes the cap.
        assert!(!limiter.memory_growing(0, 4 * MIB, None).unwrap());
        assert!(!limiter.memory_growing(4 * MIB, 8 * MIB, None).unwrap());
        assert!(limiter.refused);
        // Growing one of them by 2 MiB fits exactly.
        assert!(limiter.memory_growing(4 * MIB, 6 * MIB, None).unwrap());
        assert_eq!(limiter.used_bytes, 10 * MIB);
        limiter.clear_refusal();
        assert!(!limiter.refused);
    }
}
