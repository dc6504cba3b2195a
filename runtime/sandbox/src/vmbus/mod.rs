//! The host side of the VMBus: the only calls a guest can make beyond WASI's
//! granted-nothing defaults.
//!
//! Each interface is one module with the same lifecycle: linked into the
//! [`wasmtime::component::Linker`] once per role kind ([`add_to_linker`]),
//! given per-instance state from the role's [`Grants`] ([`VmBusCtx`]), then
//! serving calls, checking every name and number the guest passes.
//!
//! - [`queue`]: Weft's own `weft:vmbus/queue` (hand-linked, because `receive`
//!   needs the store to refill a worker's fuel for each batch).
//! - [`keyvalue`]: the standard `wasi:keyvalue/store`.
//! - [`config`]: the standard `wasi:config/store`.
//! - [`usage`]: Weft's own read-only `weft:vmbus/usage`.
//! - [`lifecycle`]: Weft's own `weft:vmbus/lifecycle`, whether the host has
//!   asked the instance to stop.

pub mod config;
pub mod keyvalue;
pub mod lifecycle;
pub mod queue;
pub mod usage;

use crate::config::Grants;
use crate::rate_limit::RoleLimiter;
use crate::sandbox::GuestState;
use std::sync::Arc;
use tokio::sync::watch;
use wasmtime::component::{HasData, Linker, ResourceTable};
use weft_broker::{KvStore, QueueBroker};

/// Bindings generated from `wit/`, for the VMBus imports.
pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "weft:vmbus/imports",
        imports: { default: async | trappable },
        with: {
            "wasi:keyvalue/store.bucket": super::keyvalue::BucketHandle,
        },
    });
}

/// Per-instance VMBus state: what the guest may reach, and the backends.
pub struct VmBusCtx {
    pub(crate) grants: Arc<Grants>,
    pub(crate) queues: Arc<dyn QueueBroker>,
    pub(crate) kv: Arc<dyn KvStore>,
    pub(crate) leases: queue::Leases,
    pub(crate) batch: Option<queue::BatchControl>,
    pub(crate) open_buckets: usize,
    pub(crate) limiter: Arc<RoleLimiter>,
    /// Whether the host has asked this instance to stop; `None` for a
    /// sandbox that is never asked (a web request).
    pub(crate) stopping: Option<watch::Receiver<bool>>,
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
            grants,
            queues,
            kv,
            leases: queue::Leases::default(),
            batch: None,
            open_buckets: 0,
            limiter,
            stopping: None,
        }
    }

    /// Whether the host has asked this instance to stop.
    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.as_ref().is_some_and(|flag| *flag.borrow())
    }

    /// The backend's name for a guest's queue or bucket: scoped by service,
    /// so two services on one host never share one by accident.
    pub(crate) fn scoped(&self, name: &str) -> String {
        format!("{}/{}", self.grants.service, name)
    }
}

/// A borrowed view of the store's VMBus state, which the generated `Host`
/// traits are implemented for.
pub struct VmBusView<'a> {
    pub(crate) ctx: &'a mut VmBusCtx,
    pub(crate) table: &'a mut ResourceTable,
}

/// Marks [`VmBusView`] as the data the VMBus host functions borrow.
pub(crate) struct VmBus;

impl HasData for VmBus {
    type Data<'a> = VmBusView<'a>;
}

/// Links every VMBus interface into `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<GuestState>) -> wasmtime::Result<()> {
    queue::add_to_linker(linker)?;
    usage::add_to_linker(linker)?;
    bindings::wasi::keyvalue::store::add_to_linker::<GuestState, VmBus>(linker, GuestState::vmbus)?;
    bindings::wasi::config::store::add_to_linker::<GuestState, VmBus>(linker, GuestState::vmbus)?;
    bindings::weft::vmbus::lifecycle::add_to_linker::<GuestState, VmBus>(
        linker,
        GuestState::vmbus,
    )?;
    Ok(())
}
