//! Host side of `weft:vmbus/lifecycle`: tells a guest whether the host has
//! asked its instance to stop.
//!
//! A worker instance's flag turns true when its supervisor asks it to stop
//! (an upgrade, a scale-down, a settings change, shutdown); from then on
//! `queue.receive` hands out nothing new (see [`super::queue`]), so a worker
//! finishes what it holds and returns from `run`. A web role's request
//! sandbox has no flag and always reads false. Not rate limited: it reads
//! one flag, no more than an instruction's worth of host work.

use super::VmBusView;
use super::bindings::weft::vmbus::lifecycle::Host;

impl Host for VmBusView<'_> {
    async fn stopping(&mut self) -> wasmtime::Result<bool> {
        Ok(self.ctx.is_stopping())
    }
}
