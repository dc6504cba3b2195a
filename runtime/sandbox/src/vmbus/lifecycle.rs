//! Host side of `weft:vmbus/lifecycle`: tells a guest whether the host has
//! asked its instance to stop.
//!
//! A worker instance's flag turns true when its supervisor asks it to stop
//! (an upgrade, a scale-down, a settings change, shutdown); from then on
//! `queue.receive` hands out nothing new (see [`super::queue`]), so a worker
//! finishes what it holds and returns from `run`. A web role's request
//! sandbox has no flag and always reads false. Not rate limited: it reads
//! one flag, no more than an instruction's worth of host work.

use super::bindings::weft::vmbus::lifecycle::{self, Host};
use tokio::sync::watch;
use wasmtime::component::{HasData, Linker};

/// An instance's lifecycle state: whether the host has asked it to stop.
#[derive(Debug, Default)]
pub struct LifecycleState {
    /// `None` for a sandbox that is never asked (a web request).
    pub(crate) stopping: Option<watch::Receiver<bool>>,
}

impl LifecycleState {
    /// Whether the host has asked this instance to stop.
    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.as_ref().is_some_and(|flag| *flag.borrow())
    }
}

/// Marks [`LifecycleState`] as the data the lifecycle host functions borrow.
struct Lifecycle;

impl HasData for Lifecycle {
    type Data<'a> = &'a mut LifecycleState;
}

/// Links `weft:vmbus/lifecycle` into `linker`, each call served on the
/// state `get` takes of the store's data.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut LifecycleState,
) -> wasmtime::Result<()> {
    lifecycle::add_to_linker::<T, Lifecycle>(linker, get)
}

impl Host for &mut LifecycleState {
    async fn stopping(&mut self) -> wasmtime::Result<bool> {
        Ok(self.is_stopping())
    }
}
