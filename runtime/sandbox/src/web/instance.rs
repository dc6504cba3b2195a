//! A web role's instances: a store and the component instantiated in it,
//! serving one request, or several in sequence when the role reuses them.
//!
//! By default every request gets a [`WebInstance`] of its own, dropped when
//! the guest is done. A role with `requests-per-instance` above 1 keeps an
//! instance that served a request successfully in its [`IdleInstances`] and
//! hands it to a later request of the same role, up to that many requests
//! in all. Whatever the guest left in its memory (globals, caches) is then
//! visible to the next request of the same role; never to another role's,
//! since each role has its own idle instances. A role that takes no more
//! requests releases them ([`IdleInstances::release`]): idle instances are
//! freed then, busy ones when their request ends, so nothing keeps a
//! draining version alive.
//!
//! Every limit still applies per request: [`WebInstance::prepare`] gives the
//! guest its fuel budget afresh and its new deadline, and forgets a refused
//! memory growth it survived; [`WebInstance::finish`] charges the fuel it
//! burnt to the role and gives up its CPU slot. Its memory cap holds over
//! the instance's whole life, since the memory stays. An instance whose
//! request failed in any way (a trap, fuel, deadline, memory, or no
//! response) is never reused.

use crate::cpu::run_scheduled;
use crate::error::GuestFailure;
use crate::limits::SandboxLimits;
use crate::role_version::RoleVersion;
use crate::sandbox::{Failed, GuestState, sandbox_store, settle_cpu};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use wasmtime::Store;
use wasmtime::component::Resource;
use wasmtime_wasi_http::WasiHttpView as _;
use wasmtime_wasi_http::p2::bindings::{Proxy, ProxyPre};
use wasmtime_wasi_http::p2::types::{HostIncomingRequest, HostResponseOutparam};

/// One sandbox of a web role: its store, and once instantiated, the
/// component's `wasi:http/incoming-handler` export.
pub(super) struct WebInstance {
    store: Store<GuestState>,
    proxy: Option<Proxy>,
    /// Requests this instance has started.
    served: u32,
}

impl WebInstance {
    /// A new sandbox for a `version` of a role, labelled in logs with the number of the
    /// request it is made for. The component is instantiated in it by the
    /// first [`Self::run`], under that request's deadline.
    pub(super) fn new(
        pre: &ProxyPre<GuestState>,
        version: &Arc<RoleVersion>,
        request_number: u64,
    ) -> Result<Self, GuestFailure> {
        let store = sandbox_store(
            pre.engine(),
            version,
            format!("req-{request_number}"),
            version.vmbus(),
        )?;
        Ok(Self {
            store,
            proxy: None,
            served: 0,
        })
    }

    /// Readies the instance for one more request: the role's full fuel
    /// budget, the request's deadline, and no memory refusal remembered.
    pub(super) fn prepare(
        &mut self,
        limits: &SandboxLimits,
        deadline: Instant,
    ) -> Result<(), GuestFailure> {
        if self.served > 0 {
            // What the last request burnt was charged when it finished.
            self.store
                .set_fuel(limits.fuel)
                .map_err(|e| GuestFailure::Instantiate(e.to_string()))?;
            let state = self.store.data_mut();
            state.cpu.refuelled(limits.fuel);
            state.limiter.clear_refusal();
            // Scheduler ticks count from now, not from the last request.
            state.cpu.restart_ticks();
        }
        self.store.data_mut().deadline = Some(deadline);
        self.served = self.served.saturating_add(1);
        Ok(())
    }

    /// The store, to hand the guest its request and response resources.
    pub(super) fn store_mut(&mut self) -> &mut Store<GuestState> {
        &mut self.store
    }

    /// The store's data, to explain a failure.
    pub(super) fn state(&self) -> &GuestState {
        self.store.data()
    }

    /// Instantiates the component in the store, unless it is already.
    pub(super) async fn instantiate(&mut self, pre: &ProxyPre<GuestState>) -> Result<(), Failed> {
        let spot = self.store.data().cpu.parking_spot();
        run_scheduled(spot, instantiated(&mut self.store, &mut self.proxy, pre))
            .await
            .map(|_| ())
    }

    /// Instantiates the component if this is the instance's first request,
    /// then calls its handler with the request. `Ok(false)` when the
    /// handler returned without setting its response or dropping it.
    pub(super) async fn run(
        &mut self,
        pre: &ProxyPre<GuestState>,
        request: Resource<HostIncomingRequest>,
        response: Resource<HostResponseOutparam>,
    ) -> Result<bool, Failed> {
        let outparam = response.rep();
        let spot = self.store.data().cpu.parking_spot();
        run_scheduled(spot, async {
            instantiated(&mut self.store, &mut self.proxy, pre)
                .await?
                .wasi_http_incoming_handler()
                .call_handle(&mut self.store, request, response)
                .await
                .map_err(Failed::Running)
        })
        .await?;
        // Setting or dropping the outparam takes it out of the table. One
        // still there holds the sender its request waits on, which an
        // instance kept for reuse would keep for ever (componentize-js 0.23
        // answers only an instance's first request, and returns from the
        // next without a word).
        let left = Resource::<HostResponseOutparam>::new_own(outparam);
        Ok(self.store.data_mut().http().table.get(&left).is_err())
    }

    /// Ends a request: charges the fuel it burnt to the role and gives up
    /// the instance's CPU slot, so an idle instance holds none.
    pub(super) fn finish(&mut self) {
        settle_cpu(&mut self.store);
        self.store.data_mut().cpu.pause();
    }
}

/// The component's export in `store`, instantiating it first if need be.
async fn instantiated<'a>(
    store: &mut Store<GuestState>,
    proxy: &'a mut Option<Proxy>,
    pre: &ProxyPre<GuestState>,
) -> Result<&'a Proxy, Failed> {
    if proxy.is_none() {
        let fresh = pre
            .instantiate_async(store)
            .await
            .map_err(Failed::Instantiating)?;
        *proxy = Some(fresh);
    }
    proxy
        .as_ref()
        .ok_or_else(|| Failed::Instantiating(wasmtime::format_err!("no instance")))
}

/// A role's instances waiting for their next request.
pub(super) struct IdleInstances {
    /// Requests one instance may serve; 1 means none is ever kept.
    requests_per_instance: u32,
    /// At most this many wait at once: the role's `max-in-flight`, so
    /// reuse never keeps more instances than the role may run.
    capacity: usize,
    idle: Mutex<Idle>,
}

struct Idle {
    instances: Vec<WebInstance>,
    /// Set once the role takes no more requests: an instance that finishes
    /// is dropped, not kept, so the role holds no sandbox once its requests
    /// are done (a draining version would otherwise wait out its grace).
    released: bool,
}

impl IdleInstances {
    pub(super) fn new(requests_per_instance: u32, capacity: usize) -> Self {
        Self {
            requests_per_instance,
            capacity,
            idle: Mutex::new(Idle {
                instances: Vec::new(),
                released: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Idle> {
        // A push or a pop cannot leave the list half-changed.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The instance that finished a request most recently (its memory is
    /// the likeliest still in the CPU's caches), if any waits.
    pub(super) fn take(&self) -> Option<WebInstance> {
        if self.requests_per_instance <= 1 {
            return None;
        }
        self.lock().instances.pop()
    }

    /// Keeps `instance`, which served its request successfully, for a later
    /// request, unless it has served its share, enough instances wait, or
    /// the instances were released.
    pub(super) fn put(&self, instance: WebInstance) {
        if instance.served >= self.requests_per_instance {
            return;
        }
        let mut idle = self.lock();
        if !idle.released && idle.instances.len() < self.capacity {
            idle.instances.push(instance);
        } else {
            // Dropped outside the lock: freeing a sandbox takes a while.
            drop(idle);
            drop(instance);
        }
    }

    /// How many instances wait now.
    pub(super) fn count(&self) -> usize {
        self.lock().instances.len()
    }

    /// Drops every idle instance and keeps none from now on; how many
    /// were dropped. Instances still serving are dropped when they finish.
    pub(super) fn release(&self) -> usize {
        let released = {
            let mut idle = self.lock();
            idle.released = true;
            std::mem::take(&mut idle.instances)
        };
        released.len()
    }
}
