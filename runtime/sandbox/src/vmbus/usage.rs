//! Host side of `weft:vmbus/usage`: a guest reads what the host has measured
//! of its role (fuel, CPU share, waits, calls, memory) and of itself (fuel
//! and time left), to degrade gracefully. Read-only, and rate limited like
//! every VMBus call (the [`BUCKET`] bucket). No per-instance state of its
//! own: it reports what the sandbox measured ([`UsageHost::measured`]).
//!
//! Linked by hand, like the queue, because the fuel left is in the store,
//! not in its data. With tracing on ([`crate::trace`]), each call is a
//! `weft.vmbus` span (`usage.get`).

use super::bindings::weft::vmbus::types::Error as WitError;
use super::bindings::weft::vmbus::usage::RoleUsage;
use super::caller::Caller;
use crate::rate_limit::{Interface, byte_count};
use crate::trace::{CallSpan, SpanKind};
use crate::usage::UsageSnapshot;
use std::time::Instant;
use wasmtime::StoreContextMut;
use wasmtime::component::Linker;

/// The rate-limit bucket this interface draws on.
pub const BUCKET: Interface = Interface::Usage;

const INTERFACE: &str = "weft:vmbus/usage@0.1.0";

/// What the sandbox has measured of one instance and its role.
#[derive(Debug)]
pub struct Measured {
    /// The role's usage.
    pub role: UsageSnapshot,
    /// The instance's linear memory, in bytes.
    pub memory_bytes: usize,
    /// When the current invocation must stop, if it has a deadline.
    pub deadline: Option<Instant>,
}

/// What `weft:vmbus/usage` needs of a store's data.
pub trait UsageHost: Send + Sized + 'static {
    /// Who calls: the role's rate limiter admits each call, under the
    /// instance's tracing.
    fn usage_caller(&self) -> &Caller;
    /// What the sandbox has measured of the instance and its role.
    fn measured(&self) -> Measured;
}

/// Links `weft:vmbus/usage` into `linker`.
pub fn add_to_linker<T: UsageHost>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    let mut usage = linker.instance(INTERFACE)?;
    usage.func_wrap_async("get", |store: StoreContextMut<'_, T>, (): ()| {
        Box::new(async move {
            let span = CallSpan::start(
                &store.data().usage_caller().trace,
                "usage.get",
                SpanKind::Internal,
            );
            let result = get(store).await;
            span.end(&result);
            Ok((result,))
        })
    })?;
    Ok(())
}

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

async fn get<T: UsageHost>(store: StoreContextMut<'_, T>) -> Result<RoleUsage, WitError> {
    store.data().usage_caller().limiter.admit(BUCKET, 0).await?;
    let fuel_left = store.get_fuel().unwrap_or(0);
    let Measured {
        role,
        memory_bytes,
        deadline,
    } = store.data().measured();
    let guest_calls = role.calls.iter().filter(|c| c.interface.is_guest_call());
    let (calls, limited) = guest_calls.fold((0u64, 0u64), |(calls, limited), c| {
        (calls + c.admitted, limited + c.limited)
    });
    Ok(RoleUsage {
        fuel_used: role.counters.fuel_used,
        fuel_left,
        cpu_share_ppm: role.counters.cpu_share_ppm,
        weight: role.weight,
        parked_ms: millis(role.counters.parked),
        throttled_ms: millis(role.counters.throttled),
        calls,
        calls_rate_limited: limited,
        memory_bytes: byte_count(memory_bytes),
        memory_cap_bytes: role.memory.instance_cap,
        role_memory_bytes: role.memory.bytes,
        role_memory_cap_bytes: role.memory.role_cap,
        deadline_left_ms: deadline
            .map(|deadline| millis(deadline.saturating_duration_since(Instant::now()))),
    })
}
