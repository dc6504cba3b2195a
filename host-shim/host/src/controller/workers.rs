//! A worker role's instance slots: the declared number of instances, each
//! kept running by a task that restarts it with backoff, moves it to the
//! version its slot is told to run, and reports its lifecycle state.
//!
//! Slot `i` is in upgrade domain `i % domains`. A slot's desired version is
//! a `watch` value: changing it asks the running instance to stop (it
//! drains: finishes its batch, returns, runs its stop hook) and starts the
//! new version at once; `None` stops the slot for good (scale-down,
//! removal, shutdown).

use super::instance::InstanceState;
use super::lock::lock;
use super::status::InstanceStatus;
use super::version::VersionInfo;
use crate::supervisor::{FailureWindow, next_backoff};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weft_sandbox::{InstancePhase, WorkerExit, WorkerRole};

/// One version of a worker role.
pub struct WorkerVersion {
    /// What it was built from.
    pub info: VersionInfo,
    /// The role, compiled and ready to run instances.
    pub role: WorkerRole,
}

/// What a slot's task reports.
#[derive(Debug)]
struct SlotStatus {
    state: InstanceState,
    generation: u64,
    restarts: u64,
    failures: FailureWindow,
    last_failure: Option<String>,
    /// When the instance became ready, at its current generation.
    ready_since: Option<Instant>,
    /// The generation it last failed at, and when.
    failed_at: Option<(u64, Instant)>,
}

struct Slot {
    index: u32,
    desired: watch::Sender<Option<Arc<WorkerVersion>>>,
    status: Arc<Mutex<SlotStatus>>,
    task: JoinHandle<()>,
}

/// How a domain's instances are doing at a generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainHealth {
    /// All ready for the settle time, none failed.
    Healthy,
    /// Not yet.
    Waiting,
    /// An instance failed at that generation.
    Failed(String),
}

/// A worker role's slots.
pub struct WorkerPool {
    service: String,
    role: String,
    slots: Mutex<Vec<Slot>>,
    /// Slots scaled away, draining; shown until they stop.
    retired: Mutex<Vec<Slot>>,
    current: Mutex<Arc<WorkerVersion>>,
    domains: AtomicU32,
    /// Set (under the `slots` lock) by [`WorkerPool::stop`]: no slot
    /// starts after it, whatever asks.
    stopped: AtomicBool,
}

impl WorkerPool {
    /// Starts `count` instances of `version`.
    pub fn start(
        service: &str,
        role: &str,
        version: Arc<WorkerVersion>,
        count: u32,
        domains: u32,
    ) -> Arc<Self> {
        let pool = Arc::new(Self {
            service: service.to_owned(),
            role: role.to_owned(),
            slots: Mutex::new(Vec::new()),
            retired: Mutex::new(Vec::new()),
            current: Mutex::new(version),
            domains: AtomicU32::new(domains.max(1)),
            stopped: AtomicBool::new(false),
        });
        pool.scale(count);
        pool
    }

    /// The version new instances run.
    pub fn current(&self) -> Arc<WorkerVersion> {
        lock(&self.current).clone()
    }

    /// Makes `version` the one new instances run (the slots are moved by
    /// [`WorkerPool::move_domain`]).
    pub fn set_current(&self, version: Arc<WorkerVersion>) {
        *lock(&self.current) = version;
    }

    /// Splits the slots into `domains` upgrade domains.
    pub fn set_domains(&self, domains: u32) {
        self.domains.store(domains.max(1), Ordering::Relaxed);
    }

    /// The number of instances declared.
    pub fn count(&self) -> u32 {
        u32::try_from(lock(&self.slots).len()).unwrap_or(u32::MAX)
    }

    /// Starts or retires slots until there are `count`; retired ones drain.
    /// Does nothing once the pool is stopped.
    pub fn scale(&self, count: u32) {
        let mut slots = lock(&self.slots);
        if self.stopped.load(Ordering::Acquire) {
            return;
        }
        let current = self.current();
        while u32::try_from(slots.len()).unwrap_or(u32::MAX) < count {
            let index = u32::try_from(slots.len()).unwrap_or(u32::MAX);
            slots.push(self.spawn_slot(index, current.clone()));
        }
        let mut retired = lock(&self.retired);
        while u32::try_from(slots.len()).unwrap_or(u32::MAX) > count {
            if let Some(slot) = slots.pop() {
                slot.desired.send_replace(None);
                retired.push(slot);
            }
        }
    }

    fn spawn_slot(&self, index: u32, version: Arc<WorkerVersion>) -> Slot {
        let (desired, watching) = watch::channel(Some(version.clone()));
        let status = Arc::new(Mutex::new(SlotStatus {
            state: InstanceState::Starting,
            generation: version.info.generation,
            restarts: 0,
            failures: FailureWindow::default(),
            last_failure: None,
            ready_since: None,
            failed_at: None,
        }));
        let task = tokio::spawn(run_slot(
            self.service.clone(),
            self.role.clone(),
            index,
            watching,
            status.clone(),
        ));
        Slot {
            index,
            desired,
            status,
            task,
        }
    }

    /// Moves the slots of upgrade domain `domain` to `version`.
    pub fn move_domain(&self, domain: u32, version: &Arc<WorkerVersion>) {
        let domains = self.domains.load(Ordering::Relaxed);
        for slot in lock(&self.slots).iter() {
            if slot.index % domains == domain {
                slot.desired.send_replace(Some(version.clone()));
            }
        }
    }

    /// How domain `domain`'s instances are doing at `generation`: healthy
    /// once each has been ready for `settle`, failed if one failed at that
    /// generation since `since`.
    pub fn domain_health(
        &self,
        domain: u32,
        generation: u64,
        since: Instant,
        settle: Duration,
    ) -> DomainHealth {
        let domains = self.domains.load(Ordering::Relaxed);
        let now = Instant::now();
        let mut healthy = true;
        for slot in lock(&self.slots).iter() {
            if slot.index % domains != domain {
                continue;
            }
            let status = lock(&slot.status);
            if let Some((failed_generation, at)) = status.failed_at
                && failed_generation == generation
                && at >= since
            {
                let why = status.last_failure.clone().unwrap_or_default();
                return DomainHealth::Failed(format!("instance {}: {why}", slot.index));
            }
            let settled = status.generation == generation
                && status.state == InstanceState::Ready
                && status
                    .ready_since
                    .is_some_and(|at| now.saturating_duration_since(at) >= settle);
            healthy &= settled;
        }
        if healthy {
            DomainHealth::Healthy
        } else {
            DomainHealth::Waiting
        }
    }

    /// Each instance's state (retired ones too, until they stop), and how
    /// many are ready.
    pub fn status(&self) -> (Vec<InstanceStatus>, u32) {
        let domains = self.domains.load(Ordering::Relaxed);
        let now = Instant::now();
        // Slots before retired ones, as `scale` takes them.
        let slots = lock(&self.slots);
        let mut retired = lock(&self.retired);
        retired.retain(|slot| !slot.task.is_finished());
        let mut ready = 0;
        let instances = slots
            .iter()
            .map(|slot| (slot, Some(slot.index % domains)))
            .chain(retired.iter().map(|slot| (slot, None)))
            .map(|(slot, domain)| {
                let status = lock(&slot.status);
                if domain.is_some() && status.state == InstanceState::Ready {
                    ready += 1;
                }
                InstanceStatus {
                    id: slot.index.to_string(),
                    domain,
                    generation: status.generation,
                    state: status.state,
                    restarts: status.restarts,
                    crash_looping: status.failures.crash_looping(now),
                    last_failure: status.last_failure.clone(),
                    in_flight: None,
                }
            })
            .collect();
        (instances, ready)
    }

    /// Asks every instance to stop, for good; the returned tasks end when
    /// they have.
    pub fn stop(&self) -> Vec<JoinHandle<()>> {
        let mut tasks = Vec::new();
        let mut slots = lock(&self.slots);
        self.stopped.store(true, Ordering::Release);
        for slot in slots.drain(..).chain(lock(&self.retired).drain(..)) {
            slot.desired.send_replace(None);
            tasks.push(slot.task);
        }
        tasks
    }
}

fn same(desired: &Option<Arc<WorkerVersion>>, running: &Arc<WorkerVersion>) -> bool {
    desired
        .as_ref()
        .is_some_and(|version| Arc::ptr_eq(version, running))
}

/// Keeps slot `index` running the version `desired` names until it names none.
async fn run_slot(
    service: String,
    role: String,
    index: u32,
    mut desired: watch::Receiver<Option<Arc<WorkerVersion>>>,
    status: Arc<Mutex<SlotStatus>>,
) {
    let mut backoff = None;
    loop {
        let Some(version) = desired.borrow_and_update().clone() else {
            lock(&status).state = InstanceState::Stopped;
            return;
        };
        {
            let mut status = lock(&status);
            status.state = InstanceState::Starting;
            status.generation = version.info.generation;
            status.ready_since = None;
        }
        let started = Instant::now();
        let stop = {
            let mut desired = desired.clone();
            let running = version.clone();
            async move {
                let _ = desired.wait_for(|now| !same(now, &running)).await;
            }
        };
        let reporting = status.clone();
        let result = version
            .role
            .run_instance_with(index, stop, |phase| {
                let mut status = lock(&reporting);
                match phase {
                    InstancePhase::Ready => {
                        status.state = InstanceState::Ready;
                        status.ready_since = Some(Instant::now());
                    }
                    InstancePhase::Draining => status.state = InstanceState::Draining,
                }
            })
            .await;
        let why = match result {
            Ok(WorkerExit::Stopped) => {
                lock(&status).state = InstanceState::Stopped;
                backoff = None;
                continue;
            }
            Ok(WorkerExit::Returned) => {
                tracing::info!(service = %service, role = %role, instance = index, "worker returned; restarting it");
                "returned from run".to_owned()
            }
            Err(failure) => {
                tracing::warn!(service = %service, role = %role, instance = index, %failure, "worker failed; restarting it");
                failure.to_string()
            }
        };
        let now = Instant::now();
        let crash_looping = {
            let mut status = lock(&status);
            let was_looping = status.failures.crash_looping(now);
            status.state = InstanceState::Failed;
            status.restarts += 1;
            status.failures.record(now);
            status.last_failure = Some(why);
            status.failed_at = Some((version.info.generation, now));
            !was_looping && status.failures.crash_looping(now)
        };
        if crash_looping {
            tracing::warn!(service = %service, role = %role, instance = index, "worker instance is crash-looping");
        }
        let delay = next_backoff(backoff, started.elapsed());
        backoff = Some(delay);
        // A new version (or a stop) does not wait out the backoff.
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = desired.changed() => backoff = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::test_support::{first_version, role_spec};
    use std::path::Path;
    use weft_sandbox::{EngineConfig, Runtime};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stopped_pool_starts_no_slot_whatever_asks() {
        let runtime = Runtime::new(EngineConfig::default()).unwrap();
        let spec = role_spec("worker", &["jobs"], &["ledger"]);
        let role = runtime
            .worker_role(Path::new(weft_test_artifacts::ROLLOUT_WORKER), spec)
            .unwrap();
        let version = Arc::new(WorkerVersion {
            info: first_version("rollout-worker"),
            role,
        });
        let pool = WorkerPool::start("test", "worker", version, 1, 2);
        assert_eq!(pool.count(), 1);
        let stopping = pool.stop();
        // What a rollout committing just then would do.
        pool.scale(3);
        for task in stopping {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .unwrap()
                .unwrap();
        }
        pool.scale(2);
        assert_eq!(pool.count(), 0);
        assert!(pool.status().0.is_empty());
    }
}
