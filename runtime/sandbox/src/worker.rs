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

use crate::cpu::run_scheduled;
use crate::error::{GuestFailure, one_line};
use crate::grants::Grants;
use crate::hooks::{Hook, Hooks};
use crate::limits::SandboxLimits;
use crate::role_version::RoleVersion;
use crate::sandbox::{Failed, GuestState, refuel, sandbox_store, settle_cpu};
use crate::usage::UsageSnapshot;
use crate::vmbus::queue::BatchControl;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use wasmtime::component::Instance;
use wasmtime::{AsContextMut, Store};
use wasmtime_wasi::p2::bindings::{Command, CommandIndices, CommandPre};

/// A worker role ready to run instances.
pub struct WorkerRole {
    pre: CommandPre<GuestState>,
    command: CommandIndices,
    hooks: Option<Hooks>,
    /// The version of the role it runs, shared by all its instances.
    version: Arc<RoleVersion>,
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

/// What a supervisor learns of an instance while it runs. Exhaustive on
/// purpose: the host matches every phase, so a new one must be handled there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstancePhase {
    /// Its `start` hook returned (or it has none): `run` is taking work.
    Ready,
    /// It was asked to stop and is finishing what it holds.
    Draining,
}

impl WorkerRole {
    pub(crate) fn new(
        pre: CommandPre<GuestState>,
        version: Arc<RoleVersion>,
        hooks: Option<Hooks>,
    ) -> wasmtime::Result<Self> {
        let command = CommandIndices::new(pre.instance_pre())?;
        Ok(Self {
            pre,
            command,
            hooks,
            version,
        })
    }

    /// The role's grants.
    pub fn grants(&self) -> &Grants {
        &self.version.grants
    }

    /// The role's limits.
    pub fn limits(&self) -> &SandboxLimits {
        self.version.limits()
    }

    /// What the role has used of the host so far.
    pub fn usage(&self) -> UsageSnapshot {
        self.version.snapshot()
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
    ///
    /// It reads as its phases, in order: *prepare* (the sandbox, and the
    /// host's ends of its batch and stop signals), *start* (instantiate,
    /// `start` hook), *ready* (a batch's fuel), *run* (until `run` returns,
    /// overruns a batch's deadline, or outlives its stop grace period),
    /// *ended* (how it ended), the `stop` hook for a guest that returned,
    /// and *finish* (settle its accounts, however it ended).
    pub async fn run_instance_with(
        &self,
        instance: u32,
        stop: impl Future<Output = ()>,
        mut phase: impl FnMut(InstancePhase),
    ) -> Result<WorkerExit, GuestFailure> {
        let mut worker = self.prepare(instance)?;
        let mut stop = std::pin::pin!(stop);

        let (handle, command) = match worker.start(self, &mut stop).await {
            Ok(started) => started,
            Err(failure) => return self.finish(&mut worker.store, Err(failure)).await,
        };
        if let Err(failure) = worker.ready(&mut phase) {
            return self.finish(&mut worker.store, Err(failure)).await;
        }
        let outcome = worker.run(command, &mut stop, &mut phase).await;

        let exit = match worker.ended(outcome) {
            Ended::Returned => {
                self.stop_hook(&mut worker, &handle).await;
                Ok(worker.exit())
            }
            Ended::Failed(failure) => Err(failure),
            Ended::Dropped => {
                tracing::warn!(
                    service = %self.version.grants.service,
                    role = %self.version.grants.role,
                    instance,
                    grace_ms = worker.limits.stop_grace_ms,
                    "worker did not return from run within its stop grace period; dropped without its stop hook"
                );
                Ok(WorkerExit::Stopped)
            }
        };
        self.finish(&mut worker.store, exit).await
    }

    /// Preparing: a sandbox for instance number `instance`, whose VMBus
    /// tells the host when each batch starts and tells the guest when it is
    /// asked to stop.
    fn prepare(&self, instance: u32) -> Result<WorkerInstance, GuestFailure> {
        let version = &self.version;
        let limits = *version.limits();
        let (batch_tx, batches) = watch::channel(None::<Instant>);
        let (stopping, stopping_rx) = watch::channel(false);
        let mut vmbus = version.vmbus();
        vmbus.queue.batch = Some(BatchControl {
            fuel: limits.fuel,
            deadline: limits.deadline(),
            current: batch_tx,
        });
        vmbus.lifecycle.stopping = Some(stopping_rx);
        let store = sandbox_store(self.pre.engine(), version, instance.to_string(), vmbus)?;
        Ok(WorkerInstance {
            number: instance,
            store,
            limits,
            batches,
            stop: StopSignal {
                grace: limits.stop_grace(),
                grace_ends: None,
                stopping,
            },
        })
    }

    /// Saying goodbye: a guest that returned from `run` can be entered
    /// again, so its `stop` hook, if any, runs; a failure is only logged.
    async fn stop_hook(&self, worker: &mut WorkerInstance, instance: &Instance) {
        let Some(hooks) = &self.hooks else {
            return;
        };
        if let Err(failure) = hooks.call(Hook::Stop, &mut worker.store, instance).await {
            tracing::warn!(
                service = %self.version.grants.service,
                role = %self.version.grants.role,
                instance = worker.number,
                %failure,
                "worker stop hook failed"
            );
        }
    }

    /// Instantiates the component and runs its start hook, if any.
    async fn instantiate(
        &self,
        store: &mut Store<GuestState>,
    ) -> Result<(Instance, Command), GuestFailure> {
        let limits = *self.version.limits();
        let spot = store.data().cpu.parking_spot();
        let instance = run_scheduled(spot, self.pre.instance_pre().instantiate_async(&mut *store))
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
            self.version.usage.add_failure(failure);
        }
        // Its deliveries end here: those it still holds are abandoned below.
        let fuel = crate::vmbus::queue::instance_fuel(&mut store.as_context_mut());
        let deliveries = &mut store.data_mut().vmbus.queue.deliveries;
        deliveries.end_all("abandoned", fuel);
        self.abandon_held(store).await;
        result
    }

    /// Returns the messages the instance still holds to their queues.
    async fn abandon_held(&self, store: &mut Store<GuestState>) {
        let held = store.data_mut().vmbus.queue.leases.take_live();
        for lease in held {
            if let Err(e) = self
                .version
                .spec
                .queues
                .abandon(&lease.queue, &lease.receipt, Duration::ZERO)
                .await
            {
                tracing::debug!(queue = %lease.queue, error = %e, "could not abandon a held message");
            }
        }
    }
}

/// One instance of a worker role while it runs: its sandbox, and the host's
/// ends of its batch and stop signals.
struct WorkerInstance {
    /// Its number among the role's instances, for logs.
    number: u32,
    store: Store<GuestState>,
    limits: SandboxLimits,
    /// When the batch it holds must end (`None` between batches), sent by
    /// `queue.receive` ([`crate::vmbus::queue`]).
    batches: watch::Receiver<Option<Instant>>,
    stop: StopSignal,
}

/// Whether an instance was asked to stop, and until when it may take.
struct StopSignal {
    /// The role's stop grace period.
    grace: Duration,
    /// When the grace period ends: `Some` once the instance was asked to stop.
    grace_ends: Option<Instant>,
    /// What `lifecycle.stopping` reads in the guest.
    stopping: watch::Sender<bool>,
}

impl StopSignal {
    fn asked(&self) -> bool {
        self.grace_ends.is_some()
    }

    /// Asks the guest to stop (once): its grace period starts now.
    fn ask(&mut self) {
        if self.grace_ends.is_none() {
            self.grace_ends = Some(Instant::now() + self.grace);
            self.stopping.send_replace(true);
        }
    }
}

impl WorkerInstance {
    /// Starting: instantiates the component and runs its `start` hook. A
    /// stop asked for meanwhile is noted; the start is not cut short (it is
    /// bounded).
    async fn start(
        &mut self,
        role: &WorkerRole,
        stop: &mut (impl Future<Output = ()> + Unpin),
    ) -> Result<(Instance, Command), GuestFailure> {
        let start = role.instantiate(&mut self.store);
        let mut start = std::pin::pin!(start);
        loop {
            tokio::select! {
                started = &mut start => break started,
                () = &mut *stop, if !self.stop.asked() => self.stop.ask(),
            }
        }
    }

    /// Ready: the guest gets a batch's fuel for the work before its first
    /// batch, its start's fuel charged first. One asked to stop while
    /// starting is draining at once, its grace period running from now, when
    /// it can first see the ask.
    fn ready(&mut self, phase: &mut impl FnMut(InstancePhase)) -> Result<(), GuestFailure> {
        refuel(&mut self.store.as_context_mut(), self.limits.fuel)
            .map_err(|e| GuestFailure::Instantiate(one_line(&e)))?;
        phase(InstancePhase::Ready);
        if self.stop.asked() {
            self.stop.grace_ends = Some(Instant::now() + self.stop.grace);
            phase(InstancePhase::Draining);
        }
        Ok(())
    }

    /// Running, then draining once asked to stop: calls `run` and watches
    /// it from outside, until it returns, holds a batch past its deadline
    /// (even blocked in a host call), or, draining and between batches,
    /// outlives its grace period.
    async fn run(
        &mut self,
        command: Command,
        stop: &mut (impl Future<Output = ()> + Unpin),
        phase: &mut impl FnMut(InstancePhase),
    ) -> Outcome {
        let Self {
            store,
            batches,
            stop: signal,
            ..
        } = self;
        let spot = store.data().cpu.parking_spot();
        let mut run = Box::pin(run_scheduled(spot, async move {
            command
                .wasi_cli_run()
                .call_run(&mut *store)
                .await
                .map_err(Failed::Running)
        }));
        loop {
            let batch_deadline = *batches.borrow_and_update();
            let expiry = async {
                match batch_deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            // Past its grace period a draining guest is dropped, but
            // never in the middle of a batch.
            let grace = signal.grace_ends;
            let grace_over = async move {
                match (grace, batch_deadline) {
                    (Some(at), None) => tokio::time::sleep_until(at.into()).await,
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                result = &mut run => break Outcome::Ran(result),
                changed = batches.changed() => {
                    if changed.is_err() {
                        // The guest's state is gone; only `run` can end now.
                        break Outcome::Ran((&mut run).await);
                    }
                }
                () = expiry => break Outcome::DeadlineHit,
                () = &mut *stop, if !signal.asked() => {
                    signal.ask();
                    phase(InstancePhase::Draining);
                }
                () = grace_over => break Outcome::Dropped,
            }
        }
    }

    /// How `run` ended, in terms a supervisor acts on: `run` returning an
    /// error is exit code 1; a guest exiting with code 0 returned.
    fn ended(&self, outcome: Outcome) -> Ended {
        match outcome {
            Outcome::Ran(Ok(Ok(()))) => Ended::Returned,
            Outcome::Ran(Ok(Err(()))) => Ended::Failed(GuestFailure::Exit(1)),
            Outcome::Ran(Err(failed)) => match failed.explain(self.store.data(), &self.limits) {
                GuestFailure::Exit(0) => Ended::Returned,
                failure => Ended::Failed(failure),
            },
            Outcome::DeadlineHit => Ended::Failed(GuestFailure::Deadline(self.limits.deadline())),
            Outcome::Dropped => Ended::Dropped,
        }
    }

    /// How an instance that returned ended: stopped if it was asked to.
    fn exit(&self) -> WorkerExit {
        if self.stop.asked() {
            WorkerExit::Stopped
        } else {
            WorkerExit::Returned
        }
    }
}

/// What watching `run` saw.
enum Outcome {
    Ran(Result<Result<(), ()>, Failed>),
    DeadlineHit,
    /// Asked to stop, it did not return within its grace period.
    Dropped,
}

/// How an instance's `run` ended.
enum Ended {
    /// It returned (or exited with code 0): its `stop` hook may run.
    Returned,
    /// It failed.
    Failed(GuestFailure),
    /// Asked to stop, it did not return within its grace period.
    Dropped,
}
