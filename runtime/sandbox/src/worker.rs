//! Worker roles: a component the host runs through the standard
//! `wasi:cli/run` entry, which pulls its work from queues.
//!
//! [`WorkerRole::run_instance_with`] runs one instance through its
//! lifecycle: *starting* (instantiated, its optional `start` hook running,
//! bounded like a batch), *ready* (`run` pulling work), *draining* (asked to
//! stop: `receive` hands out nothing new and `lifecycle.stopping` says so,
//! so the guest finishes its batch and returns from `run`), then its
//! optional `stop` hook, bounded by the role's stop grace period. A guest
//! that does not return within the grace period once it holds no batch is
//! dropped without its `stop` hook (a component instance cannot be entered
//! again once a call into it was abandoned).
//!
//! Fuel and the deadline cover one received batch (see
//! [`crate::vmbus::queue`]); this module enforces the deadline from outside
//! the guest, so it also covers time blocked in host calls. However the
//! instance ends, the messages it still holds are abandoned at once, so they
//! come back (with their dequeue count one higher) without waiting out their
//! visibility timeout. Restarting instances is the supervisor's job.

use crate::config::Grants;
use crate::error::GuestFailure;
use crate::hooks::{Hook, Hooks};
use crate::sandbox::{Failed, GuestState, sandbox_store, settle_cpu};
use crate::tenant::Tenant;
use crate::vmbus::queue::BatchControl;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;
use wasmtime::Store;
use wasmtime::component::Instance;
use wasmtime_wasi::p2::bindings::{Command, CommandIndices, CommandPre};

/// A worker role ready to run instances.
pub struct WorkerRole {
    pre: CommandPre<GuestState>,
    command: CommandIndices,
    hooks: Option<Hooks>,
    tenant: Arc<Tenant>,
}

/// How an instance ended without failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerExit {
    /// The guest's `run` returned successfully without being asked to stop.
    Returned,
    /// The host asked it to stop, and it did (or was dropped between batches
    /// once its grace period was over).
    Stopped,
}

/// What a supervisor learns of an instance while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InstancePhase {
    /// Its `start` hook returned (or it has none): `run` is taking work.
    Ready,
    /// It was asked to stop and is finishing what it holds.
    Draining,
}

impl WorkerRole {
    pub(crate) fn new(
        pre: CommandPre<GuestState>,
        tenant: Arc<Tenant>,
        hooks: Option<Hooks>,
    ) -> wasmtime::Result<Self> {
        let command = CommandIndices::new(pre.instance_pre())?;
        Ok(Self {
            pre,
            command,
            hooks,
            tenant,
        })
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

    /// Whether the role's component exports lifecycle hooks.
    pub fn has_hooks(&self) -> bool {
        self.hooks.is_some()
    }

    /// Runs instance number `instance` until its guest returns, fails, or
    /// `stop` completes and it winds down (see the module docs).
    pub async fn run_instance(
        &self,
        instance: u32,
        stop: impl Future<Output = ()>,
    ) -> Result<WorkerExit, GuestFailure> {
        self.run_instance_with(instance, stop, |_| {}).await
    }

    /// [`WorkerRole::run_instance`], telling `phase` when the instance
    /// becomes ready and when it starts draining.
    pub async fn run_instance_with(
        &self,
        instance: u32,
        stop: impl Future<Output = ()>,
        mut phase: impl FnMut(InstancePhase),
    ) -> Result<WorkerExit, GuestFailure> {
        let tenant = &self.tenant;
        let limits = *tenant.limits();
        let (batch_tx, mut batch_rx) = watch::channel(None::<Instant>);
        let (stopping_tx, stopping_rx) = watch::channel(false);
        let mut vmbus = tenant.vmbus();
        vmbus.batch = Some(BatchControl {
            fuel: limits.fuel,
            deadline: limits.deadline(),
            current: batch_tx,
        });
        vmbus.stopping = Some(stopping_rx);
        let mut store = sandbox_store(self.pre.engine(), tenant, instance.to_string(), vmbus)?;

        let mut stop = std::pin::pin!(stop);
        let mut grace_ends: Option<Instant> = None;
        let ask_to_stop = |grace_ends: &mut Option<Instant>| {
            if grace_ends.is_none() {
                *grace_ends = Some(Instant::now() + limits.stop_grace());
                stopping_tx.send_replace(true);
            }
        };

        // Starting: instantiate and run the start hook. A stop asked for
        // meanwhile is noted; the start is not cut short (it is bounded).
        let started = {
            let start = self.start(&mut store);
            let mut start = std::pin::pin!(start);
            loop {
                tokio::select! {
                    started = &mut start => break started,
                    () = &mut stop, if grace_ends.is_none() => ask_to_stop(&mut grace_ends),
                }
            }
        };
        let (instance_handle, command) = match started {
            Ok(started) => started,
            Err(failure) => return self.finish(&mut store, Err(failure)).await,
        };
        if let Err(e) = store.set_fuel(limits.fuel) {
            let failure = GuestFailure::Instantiate(crate::error::one_line(&e));
            return self.finish(&mut store, Err(failure)).await;
        }
        phase(InstancePhase::Ready);
        if grace_ends.is_some() {
            // Asked to stop while starting: its grace period runs from now,
            // when it can first see the ask.
            grace_ends = Some(Instant::now() + limits.stop_grace());
            phase(InstancePhase::Draining);
        }

        let outcome = {
            let store = &mut store;
            let mut run = Box::pin(async move {
                command
                    .wasi_cli_run()
                    .call_run(&mut *store)
                    .await
                    .map_err(Failed::Running)
            });
            loop {
                let batch_deadline = *batch_rx.borrow_and_update();
                let expiry = async {
                    match batch_deadline {
                        Some(at) => tokio::time::sleep_until(at.into()).await,
                        None => std::future::pending().await,
                    }
                };
                // Past its grace period a draining guest is dropped, but
                // never in the middle of a batch.
                let grace = grace_ends;
                let grace_over = async move {
                    match (grace, batch_deadline) {
                        (Some(at), None) => tokio::time::sleep_until(at.into()).await,
                        _ => std::future::pending().await,
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
                    () = &mut stop, if grace_ends.is_none() => {
                        ask_to_stop(&mut grace_ends);
                        phase(InstancePhase::Draining);
                    }
                    () = grace_over => break Outcome::Dropped,
                }
            }
        };

        let asked_to_stop = grace_ends.is_some();
        let result = match outcome {
            Outcome::Ran(Ok(Ok(()))) => Ok(()),
            Outcome::Ran(Ok(Err(()))) => Err(GuestFailure::Exit(1)),
            Outcome::Ran(Err(failed)) => match failed.explain(store.data(), &limits) {
                GuestFailure::Exit(0) => Ok(()),
                failure => Err(failure),
            },
            Outcome::DeadlineHit => Err(GuestFailure::Deadline(limits.deadline())),
            Outcome::Dropped => {
                tracing::warn!(
                    service = %tenant.grants.service,
                    role = %tenant.grants.role,
                    instance,
                    grace_ms = limits.stop_grace_ms,
                    "worker did not return from run within its stop grace period; dropped without its stop hook"
                );
                return self.finish(&mut store, Ok(WorkerExit::Stopped)).await;
            }
        };
        // A guest that returned from `run` can be entered again: say goodbye.
        if result.is_ok()
            && let Some(hooks) = &self.hooks
            && let Err(failure) = hooks.call(Hook::Stop, &mut store, &instance_handle).await
        {
            tracing::warn!(
                service = %tenant.grants.service,
                role = %tenant.grants.role,
                instance,
                %failure,
                "worker stop hook failed"
            );
        }
        let exit = match (result, asked_to_stop) {
            (Ok(()), true) => Ok(WorkerExit::Stopped),
            (Ok(()), false) => Ok(WorkerExit::Returned),
            (Err(failure), _) => Err(failure),
        };
        self.finish(&mut store, exit).await
    }

    /// Instantiates the component and runs its start hook, if any.
    async fn start(
        &self,
        store: &mut Store<GuestState>,
    ) -> Result<(Instance, Command), GuestFailure> {
        let limits = *self.tenant.limits();
        let instance = self
            .pre
            .instance_pre()
            .instantiate_async(&mut *store)
            .await
            .map_err(|e| Failed::Instantiating(e).explain(store.data(), &limits))?;
        let command = self
            .command
            .load(&mut *store, &instance)
            .map_err(|e| Failed::Instantiating(e).explain(store.data(), &limits))?;
        if let Some(hooks) = &self.hooks {
            hooks.call(Hook::Start, store, &instance).await?;
        }
        Ok((instance, command))
    }

    /// Settles the instance's CPU, counts a failure, and returns what it
    /// still holds to its queues.
    async fn finish(
        &self,
        store: &mut Store<GuestState>,
        result: Result<WorkerExit, GuestFailure>,
    ) -> Result<WorkerExit, GuestFailure> {
        settle_cpu(store);
        if let Err(failure) = &result {
            self.tenant.usage.add_failure(failure);
        }
        self.abandon_held(store).await;
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
    /// Asked to stop, it did not return within its grace period.
    Dropped,
}
