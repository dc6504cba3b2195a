//! WASIp3 web roles: a component exporting `wasi:http/handler@0.3.0`.
//!
//! Such a role passes the same admission as any web role ([`super`]: body
//! size, `Host`, request rate, a slot among `max-in-flight`, the CPU
//! quota) and runs under the same limits: each of its stores is made by
//! `sandbox_store` like a p2 sandbox's (fuel and its yields, the memory
//! caps, the call hook that meets the CPU scheduler and stops the guest at
//! its deadline, the egress hooks its `wasi:http/client.send` goes through,
//! the VMBus). What differs is how requests reach the guest: a p3 handler
//! is an async export, so an instance is a task of its own ([`worker`])
//! whose store runs an event loop (`Store::run_concurrent`), and a request
//! is handed to an instance rather than an instance made for a request
//! ([`registry`]).
//!
//! By default an instance serves one request and ends, as a p2 sandbox
//! does. With `requests-per-instance` above 1 an instance is kept for later
//! requests of the role, and with `concurrent-requests-per-instance` above
//! 1 it takes several at once, interleaved at the guest's awaits (a request
//! goes to an instance whose event loop waits, never to one running guest
//! code, which would hold it until its next await); idle for
//! `instance-idle-timeout-ms`, it ends. What wasmtime 48's experimental p3
//! cannot do shapes the limits of an instance serving several requests:
//! - one guest task cannot be cancelled alone (wasmtime issue #11833), so a
//!   request past its deadline gets its 504 at once, its instance takes no
//!   more requests, and the instance ends when its last request is done or
//!   at the latest deadline of those it carries;
//! - fuel and memory belong to the store: each request adds the role's
//!   fuel budget (an instance holds at most one budget per request in
//!   flight), the memory cap bounds the instance, and a trap (fuel, memory,
//!   a guest bug) ends every request the instance carries;
//! - a task spinning or blocked in a host call holds the whole event loop
//!   (wasmtime issues #11869, #11870): the others wait for its next fuel
//!   yield or for its call to return.

mod registry;
mod worker;

use crate::cpu::run_scheduled;
use crate::error::GuestFailure;
use crate::limits::SandboxLimits;
use crate::role_version::RoleVersion;
use crate::sandbox::{Failed, GuestState, sandbox_store, settle_cpu};
use crate::trace::SpanContext;
use registry::{Caps, Handed, Registry};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::OwnedSemaphorePermit;
use wasmtime_wasi_http::WasiBody;
use wasmtime_wasi_http::p3::bindings::ServicePre;
use worker::Shared;

/// A WASIp3 web role's handler: its pre-instantiated component and its
/// open instances.
pub(crate) struct P3Handler {
    shared: Arc<Shared>,
}

impl P3Handler {
    pub(crate) fn new(pre: ServicePre<GuestState>, version: Arc<RoleVersion>) -> Self {
        let limits = version.limits();
        let caps = Caps {
            concurrent: limits.concurrent_requests_per_instance,
            total: limits.requests_per_instance,
            idle: limits.instance_idle_timeout(),
        };
        Self {
            shared: Arc::new(Shared {
                pre,
                version,
                registry: Registry::new(caps),
            }),
        }
    }

    /// Serves one request (admitted, holding `slot` until it is done, body
    /// included) in an open instance with room for it whose event loop
    /// waits, or a new one. The
    /// guest's VMBus calls hang under `span`, the request's, while it is
    /// the only request its instance carries; with others in flight they
    /// hang under the instance's, since a store cannot tell whose call it is.
    pub(crate) async fn serve(
        &self,
        request: http::Request<WasiBody>,
        number: u64,
        deadline: Instant,
        slot: OwnedSemaphorePermit,
        span: Option<SpanContext>,
    ) -> Result<http::Response<WasiBody>, GuestFailure> {
        let limits = *self.shared.version.limits();
        let answer = match self.shared.registry.hand(request, deadline, slot, span) {
            Handed::Existing(answer) => answer,
            Handed::New(new, answer) => {
                tokio::spawn(worker::run(self.shared.clone(), new, number));
                answer
            }
        };
        match tokio::time::timeout_at(deadline.into(), answer).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_gone)) => Err(GuestFailure::Trap(
                "the instance serving the request ended abnormally".into(),
            )),
            Err(_elapsed) => Err(GuestFailure::Deadline(limits.deadline())),
        }
    }

    /// Keeps no instance from now on; how many idle ones were freed.
    pub(crate) fn release_idle(&self) -> usize {
        self.shared.registry.release()
    }

    /// Open instances waiting for a request.
    pub(crate) fn idle_instances(&self) -> usize {
        self.shared.registry.idle_count()
    }

    /// Makes a sandbox and instantiates the component in it, as a new
    /// instance does, then drops it.
    pub(crate) async fn instantiate_once(&self, number: u64) -> Result<(), GuestFailure> {
        let version = &self.shared.version;
        let limits: SandboxLimits = *version.limits();
        let mut store = sandbox_store(
            self.shared.pre.engine(),
            version,
            format!("req-{number}"),
            version.vmbus(),
        )?;
        store.data_mut().deadline = Some(Instant::now() + limits.deadline());
        let spot = store.data().cpu.parking_spot();
        let outcome = run_scheduled(spot, self.shared.pre.instantiate_async(&mut store)).await;
        settle_cpu(&mut store);
        store.data_mut().cpu.pause();
        outcome
            .map(|_| ())
            .map_err(|e| Failed::Instantiating(e).explain(store.data(), &limits))
    }
}
