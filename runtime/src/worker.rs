//! Worker roles: a component the host runs through the standard
//! `wasi:cli/run` entry, which pulls its work from queues.
//!
//! [`WorkerRole::run_instance`] runs one instance until its guest returns or
//! fails. Fuel and the deadline cover one received batch (see
//! [`crate::vmbus::queue`]); this module enforces the deadline from outside
//! the guest, so it also covers time blocked in host calls. However the
//! instance ends, the messages it still holds are abandoned at once, so they
//! come back (with their dequeue count one higher) without waiting out their
//! visibility timeout. Restarting instances is the supervisor's job.

use crate::config::Grants;
use crate::error::GuestFailure;
use crate::guest_log::GuestTags;
use crate::sandbox::{Failed, GuestState, new_store, settle_cpu};
use crate::tenant::Tenant;
use crate::vmbus::VmBusCtx;
use crate::vmbus::queue::BatchControl;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;
use wasmtime::Store;
use wasmtime_wasi::p2::bindings::CommandPre;

/// A worker role ready to run instances.
pub struct WorkerRole {
    pre: CommandPre<GuestState>,
    tenant: Arc<Tenant>,
}

/// How an instance ended without failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerExit {
    /// The guest's `run` returned successfully.
    Returned,
    /// The host asked it to stop, and it was between batches.
    Stopped,
}

impl WorkerRole {
    pub(crate) fn new(pre: CommandPre<GuestState>, tenant: Arc<Tenant>) -> Self {
        Self { pre, tenant }
    }

    /// The role's grants.
    pub fn grants(&self) -> &Grants {
        &self.tenant.grants
    }

    /// The role's limits.
    pub fn limits(&self) -> &crate::SandboxLimits {
        self.tenant.limits()
    }

    /// What the role has used of the host so far.
    pub fn usage(&self) -> crate::UsageSnapshot {
        self.tenant.snapshot()
    }

    /// Runs instance number `instance` until its guest returns, fails, or
    /// `stop` completes. On `stop` a guest in the middle of a batch finishes
    /// the batch first (its deadline still bounds it).
    pub async fn run_instance(
        &self,
        instance: u32,
        stop: impl Future<Output = ()>,
    ) -> Result<WorkerExit, GuestFailure> {
        let tenant = &self.tenant;
        let limits = *tenant.limits();
        let tags = Arc::new(GuestTags {
            service: tenant.grants.service.clone(),
            role: tenant.grants.role.clone(),
            instance: instance.to_string(),
        });
        let (batch_tx, mut batch_rx) = watch::channel(None::<Instant>);
        let mut vmbus = VmBusCtx::new(
            tenant.grants.clone(),
            tenant.spec.queues.clone(),
            tenant.spec.kv.clone(),
            tenant.limiter.clone(),
        );
        vmbus.batch = Some(BatchControl {
            fuel: limits.fuel,
            deadline: limits.deadline(),
            current: batch_tx,
        });
        let state = GuestState::new(tenant, tags, vmbus, limits.fuel)
            .map_err(|e| GuestFailure::Instantiate(e.to_string()))?;
        let mut store = new_store(
            self.pre.engine(),
            state,
            limits.fuel,
            tenant.fuel_yield_interval,
        )
        .map_err(|e| GuestFailure::Instantiate(e.to_string()))?;

        let outcome = {
            let pre = &self.pre;
            let store = &mut store;
            let mut run = Box::pin(async move {
                let command = pre
                    .instantiate_async(&mut *store)
                    .await
                    .map_err(Failed::Instantiating)?;
                command
                    .wasi_cli_run()
                    .call_run(&mut *store)
                    .await
                    .map_err(Failed::Running)
            });
            let mut stop = std::pin::pin!(stop);
            let mut stopping = false;
            loop {
                let batch_deadline = *batch_rx.borrow_and_update();
                if stopping && batch_deadline.is_none() {
                    break Outcome::Stopped;
                }
                let expiry = async {
                    match batch_deadline {
                        Some(at) => tokio::time::sleep_until(at.into()).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    result = &mut run => break Outcome::Ran(result),
                    changed = batch_rx.changed() => {
                        if changed.is_err() {
                            // The guest's state is gone; only `run` can end now.
                            break Outcome::Ran((&mut run).await);
                        }
                    }
                    () = expiry => break Outcome::DeadlineHit,
                    () = &mut stop, if !stopping => stopping = true,
                }
            }
        };

        let result = match outcome {
            Outcome::Ran(Ok(Ok(()))) => Ok(WorkerExit::Returned),
            Outcome::Ran(Ok(Err(()))) => Err(GuestFailure::Exit(1)),
            Outcome::Ran(Err(failed)) => match failed.explain(store.data(), &limits) {
                GuestFailure::Exit(0) => Ok(WorkerExit::Returned),
                failure => Err(failure),
            },
            Outcome::DeadlineHit => Err(GuestFailure::Deadline(limits.deadline())),
            Outcome::Stopped => Ok(WorkerExit::Stopped),
        };
        settle_cpu(&mut store);
        if let Err(failure) = &result {
            tenant.usage.add_failure(failure);
        }
        self.abandon_held(&mut store).await;
        result
    }

    /// Returns the messages the instance still holds to their queues.
    async fn abandon_held(&self, store: &mut Store<GuestState>) {
        let held = store.data_mut().vmbus.leases.take_live();
        for lease in held {
            if let Err(e) = self
                .tenant
                .spec
                .queues
                .abandon(&lease.queue, &lease.receipt, std::time::Duration::ZERO)
                .await
            {
                tracing::debug!(queue = %lease.queue, error = %e, "could not abandon a held message");
            }
        }
    }
}

enum Outcome {
    Ran(Result<Result<(), ()>, Failed>),
    DeadlineHit,
    Stopped,
}
