//! The optional lifecycle hooks a role may export (`weft:vmbus/hooks`, see
//! `wit/lifecycle.wit`): `start` before an instance is ready, `stop` when it
//! winds down.
//!
//! [`Hooks::find`] looks for the export once, when a role is prepared; a
//! component without it runs unchanged. A worker's hooks run in the worker
//! instance itself ([`crate::WorkerRole::run_instance_with`]); a web role,
//! which gets a fresh sandbox per request, runs them once per version of
//! the role, each in a sandbox of its own ([`crate::WebRole::start_hook`],
//! [`crate::WebRole::stop_hook`], in `web/hooks.rs`). `start` is bounded by the role's
//! deadline and fuel, `stop` by its stop grace period.

use crate::cpu::run_scheduled;
use crate::error::{GuestFailure, one_line};
use crate::role_version::RoleVersion;
use crate::sandbox::{Failed, GuestState};
use std::time::{Duration, Instant};
use wasmtime::Store;
use wasmtime::component::{Instance, InstancePre};

/// Bindings for the hooks export (world `weft:vmbus/role-hooks`).
mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "weft:vmbus/role-hooks",
        exports: { default: async },
    });
}

/// The name a component exports its hooks under.
const EXPORT: &str = "weft:vmbus/hooks@0.1.0";

/// Which hook to call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hook {
    /// Prepares an instance before it is ready.
    Start,
    /// Winds an instance down.
    Stop,
}

impl Hook {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Hook::Start => "start",
            Hook::Stop => "stop",
        }
    }

    /// How long the hook may run.
    fn bound(self, version: &RoleVersion) -> Duration {
        match self {
            Hook::Start => version.limits().deadline(),
            Hook::Stop => version.limits().stop_grace(),
        }
    }
}

/// Where a component's hooks are.
#[derive(Clone)]
pub(crate) struct Hooks(bindings::RoleHooksIndices);

impl Hooks {
    /// The component's hooks, `None` if it does not export them, or why its
    /// export does not fit the contract.
    pub(crate) fn find(pre: &InstancePre<GuestState>) -> Result<Option<Self>, String> {
        if pre.component().get_export_index(None, EXPORT).is_none() {
            return Ok(None);
        }
        bindings::RoleHooksIndices::new(pre)
            .map(|indices| Some(Self(indices)))
            .map_err(|e| format!("its {EXPORT} export does not fit: {}", one_line(&e)))
    }

    /// Calls `hook` on `instance`, bounded by the hook's time (the store's
    /// call hook interrupts a guest past it at a fuel yield; a guest blocked
    /// in a host call is dropped at it). The caller gives the store fuel.
    pub(crate) async fn call(
        &self,
        hook: Hook,
        store: &mut Store<GuestState>,
        instance: &Instance,
    ) -> Result<(), GuestFailure> {
        let bound = hook.bound(&store.data().version.clone());
        let deadline = Instant::now() + bound;
        store.data_mut().deadline = Some(deadline);
        let limits = *store.data().version.limits();
        let spot = store.data().cpu.parking_spot();
        let run = run_scheduled(spot, async {
            let hooks = self
                .0
                .load(&mut *store, instance)
                .map_err(Failed::Running)?;
            let guest = hooks.weft_vmbus_hooks();
            match hook {
                Hook::Start => guest.call_start(&mut *store).await.map_err(Failed::Running),
                Hook::Stop => guest
                    .call_stop(&mut *store)
                    .await
                    .map(|()| Ok(()))
                    .map_err(Failed::Running),
            }
        });
        let outcome = tokio::time::timeout_at(deadline.into(), run).await;
        let result = match outcome {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(why))) => Err(GuestFailure::Start(why.chars().take(300).collect())),
            Ok(Err(failed)) => Err(match failed.explain(store.data(), &limits) {
                GuestFailure::Deadline(_) => GuestFailure::Deadline(bound),
                failure => failure,
            }),
            Err(_elapsed) => Err(GuestFailure::Deadline(bound)),
        };
        store.data_mut().deadline = None;
        result
    }
}
