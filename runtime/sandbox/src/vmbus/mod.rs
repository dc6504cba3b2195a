//! The host side of the VMBus: the only calls a guest can make beyond WASI's
//! granted-nothing defaults.
//!
//! Each interface is one module, a capability with the same lifecycle
//! (after Spin's factors: `init`, `prepare`, then calls):
//! - it is linked into a [`Linker`] once per role kind, generic over the
//!   store's data (its `add_to_linker`, as `wasmtime-wasi`'s are: it asks of
//!   the data only a view of its own state);
//! - each instance gets its per-instance state, made from the role's
//!   [`Grants`] and backends ([`VmBusCtx::new`]);
//! - it serves calls, checking every name and number the guest passes, each
//!   call admitted by the role's rate limiter from the bucket the module
//!   names (its `BUCKET`; the buckets' names and defaults are registered in
//!   [`crate::rate_limit::Interface`]). All but [`lifecycle`], which names
//!   none: it is not rate limited, as it reads one flag.
//!
//! The interfaces:
//! - [`queue`]: Weft's own `weft:vmbus/queue` (hand-linked, because `receive`
//!   needs the store to refill a worker's fuel for each batch).
//! - [`keyvalue`]: the standard `wasi:keyvalue/store`.
//! - [`keyvalue_batch`]: the standard `wasi:keyvalue/batch` (many keys in
//!   one call, on `keyvalue`'s buckets, state and rate-limit bucket).
//! - [`config`]: the standard `wasi:config/store`.
//! - [`usage`]: Weft's own read-only `weft:vmbus/usage`.
//! - [`lifecycle`]: Weft's own `weft:vmbus/lifecycle`, whether the host has
//!   asked the instance to stop.
//!
//! [`caller`] is what every call is checked against (the role's grants and
//! rate limiter), `bindings` the code generated from `wit/`. This module
//! assembles them: the per-instance state of all ([`VmBusCtx`]), what the
//! VMBus needs of a store's data ([`VmBusHost`]), and [`add_to_linker`].
//! It depends on its interfaces, never they on it, nor the VMBus on the
//! sandbox that links it.
//!
//! Adding an interface: its module (state, view, `add_to_linker`, and its
//! `BUCKET` unless it is as cheap as lifecycle's one flag), its state in
//! [`VmBusCtx`] and its line in [`add_to_linker`] here (and, if it needs
//! more of the store's data than its view, its trait as a supertrait of
//! [`VmBusHost`], as [`QueueHost`] and [`UsageHost`] are), its bucket's
//! entry in [`crate::rate_limit::Interface`], and its WIT import in
//! `world imports` (`wit/vmbus.wit`).

pub(crate) mod bindings;
pub mod caller;
pub mod config;
pub mod keyvalue;
pub mod keyvalue_batch;
pub mod lifecycle;
pub mod queue;
pub mod usage;

use crate::grants::Grants;
use crate::rate_limit::RoleLimiter;
use caller::Caller;
use keyvalue::{KvState, KvView};
use lifecycle::LifecycleState;
use queue::{QueueHost, QueueState, QueueView};
use std::sync::Arc;
use usage::UsageHost;
use wasmtime::component::{Linker, ResourceTable};
use weft_broker::{KvStore, QueueBroker};

/// Per-instance VMBus state: who calls, and each interface's own state.
pub struct VmBusCtx {
    /// The role's grants and rate limiter, which every call checks.
    pub(crate) caller: Caller,
    /// `weft:vmbus/queue`'s.
    pub(crate) queue: QueueState,
    /// `wasi:keyvalue/store`'s (and `wasi:keyvalue/batch`'s, on the same
    /// buckets).
    pub(crate) keyvalue: KvState,
    /// `weft:vmbus/lifecycle`'s.
    pub(crate) lifecycle: LifecycleState,
}

impl VmBusCtx {
    /// State for one instance of a role with `grants`, using these backends,
    /// rate limited by the role's `limiter`.
    pub fn new(
        grants: Arc<Grants>,
        queues: Arc<dyn QueueBroker>,
        kv: Arc<dyn KvStore>,
        limiter: Arc<RoleLimiter>,
    ) -> Self {
        Self {
            caller: Caller::new(grants, limiter),
            queue: QueueState::new(queues),
            keyvalue: KvState::new(kv),
            lifecycle: LifecycleState::default(),
        }
    }

    /// The role's rate limiter.
    pub(crate) fn limiter(&self) -> &Arc<RoleLimiter> {
        &self.caller.limiter
    }

    /// The view `weft:vmbus/queue`'s calls work on (what a store's data
    /// answers for [`QueueHost::queue`]).
    pub fn queue_view(&mut self) -> QueueView<'_> {
        QueueView {
            state: &mut self.queue,
            caller: &self.caller,
            lifecycle: &self.lifecycle,
        }
    }
}

/// A borrowed view of a store's VMBus state and resource table.
pub struct VmBusView<'a> {
    /// The instance's VMBus state.
    pub ctx: &'a mut VmBusCtx,
    /// The instance's resource table (it holds open buckets).
    pub table: &'a mut ResourceTable,
}

/// What the VMBus needs of the data of a store it is linked into: what
/// each hand-linked interface needs ([`QueueHost`], [`UsageHost`]: the few
/// things only the sandbox around it holds), and its state, from which the
/// other interfaces' views are taken.
pub trait VmBusHost: QueueHost + UsageHost {
    /// The instance's VMBus state and resource table.
    fn vmbus(&mut self) -> VmBusView<'_>;
}

fn kv_view<T: VmBusHost>(data: &mut T) -> KvView<'_> {
    let VmBusView { ctx, table } = data.vmbus();
    KvView {
        state: &mut ctx.keyvalue,
        caller: &ctx.caller,
        table,
    }
}

fn config_view<T: VmBusHost>(data: &mut T) -> config::ConfigView<'_> {
    config::ConfigView {
        caller: &data.vmbus().ctx.caller,
    }
}

fn lifecycle_state<T: VmBusHost>(data: &mut T) -> &mut LifecycleState {
    &mut data.vmbus().ctx.lifecycle
}

/// Links every VMBus interface into `linker`.
pub fn add_to_linker<T: VmBusHost>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    queue::add_to_linker(linker)?;
    usage::add_to_linker(linker)?;
    keyvalue::add_to_linker(linker, kv_view::<T>)?;
    keyvalue_batch::add_to_linker(linker, kv_view::<T>)?;
    config::add_to_linker(linker, config_view::<T>)?;
    lifecycle::add_to_linker(linker, lifecycle_state::<T>)?;
    Ok(())
}
