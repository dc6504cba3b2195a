//! Host side of `weft:vmbus/usage`: a guest reads what the host has measured
//! of its role (fuel, CPU share, waits, calls, memory) and of itself (fuel
//! and time left), to degrade gracefully. Read-only, and rate limited like
//! every VMBus call.
//!
//! Linked by hand, like the queue, because the fuel left is in the store,
//! not in its data.

use super::bindings::weft::vmbus::types::Error as WitError;
use super::bindings::weft::vmbus::usage::RoleUsage;
use crate::rate_limit::Interface;
use crate::sandbox::GuestState;
use std::time::Instant;
use wasmtime::StoreContextMut;
use wasmtime::component::Linker;

const INTERFACE: &str = "weft:vmbus/usage@0.1.0";

pub(crate) fn add_to_linker(linker: &mut Linker<GuestState>) -> wasmtime::Result<()> {
    let mut usage = linker.instance(INTERFACE)?;
    usage.func_wrap_async("get", |store: StoreContextMut<'_, GuestState>, (): ()| {
        Box::new(async move { Ok((get(store).await,)) })
    })?;
    Ok(())
}

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn bytes(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

async fn get(store: StoreContextMut<'_, GuestState>) -> Result<RoleUsage, WitError> {
    let limiter = store.data().vmbus.limiter.clone();
    limiter.admit(Interface::Usage, 0).await?;
    let fuel_left = store.get_fuel().unwrap_or(0);
    let state = store.data();
    let role = state.tenant_snapshot();
    let vmbus_calls = role
        .calls
        .iter()
        .filter(|c| !matches!(c.interface, Interface::Log | Interface::Http));
    let (calls, limited) = vmbus_calls.fold((0u64, 0u64), |(calls, limited), c| {
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
        memory_bytes: bytes(state.limiter.used_bytes()),
        memory_cap_bytes: role.memory.instance_cap,
        role_memory_bytes: role.memory.bytes,
        role_memory_cap_bytes: role.memory.role_cap,
        deadline_left_ms: state
            .deadline
            .map(|deadline| millis(deadline.saturating_duration_since(Instant::now()))),
    })
}
