//! A service running on this host, the live state of one deployment: its
//! queues and buckets, its roles (web roles behind their listeners, worker
//! roles' instance slots, each a [`RoleRunner`]), its deployment record,
//! and the operation changing it, if any (an upgrade or a settings change
//! is rolled out by [`super::rollout`]).
//!
//! [`RunningService::start`] builds every role's version before anything runs (a
//! malformed component or manifest stops the deploy with nothing started),
//! binds every listener, starts each web version (its start hook, then its
//! health path) before it takes traffic, and starts the worker instances.
//! [`RunningService::stop`] drains it: listeners close and in-flight requests
//! finish (bounded by the grace period), worker instances finish or
//! abandon their batch, stop hooks run, the queue store is closed.

use super::build::{Version, VersionBuilder};
use super::context::HostContext;
use super::error::ControllerError;
use super::lock::lock;
use super::role::{RoleRunner, Stopping};
use super::slots::slots_needed;
use super::status::{
    OperationKind, OperationState, OperationStatus, QueueStatus, RoleStatus, ServiceStatus,
    UsageStatus,
};
use super::store::{DeploymentRecord, Digest};
use super::web::WebVersion;
use super::workers::WorkerPool;
use crate::backends::Backends;
use crate::http_server::WebServer;
use crate::manifest::{Manifest, Role};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::OwnedMutexGuard;
use tokio::task::JoinHandle;
use weft_broker::{POISON_SUFFIX, StoreHealth};
use weft_sandbox::UsageSnapshot;

/// How long a queue depth may take to read for a status report.
const QUEUE_DEPTH_TIMEOUT: Duration = Duration::from_secs(1);
/// Extra time, beyond the longest deadline and the grace period, that
/// worker instances get to stop before they are abandoned.
const WORKER_STOP_SLACK: Duration = Duration::from_secs(5);

/// What changes as operations run.
pub(super) struct ServiceState {
    pub(super) record: DeploymentRecord,
    pub(super) manifest: Manifest,
    pub(super) operation: Option<OperationStatus>,
    /// The components of the rollout under way, kept from the blob sweep
    /// until it is committed (then the record names them) or rolled back.
    pub(super) incoming: Vec<Digest>,
}

/// A service running on this host.
pub struct RunningService {
    pub(super) name: String,
    pub(super) host: HostContext,
    pub(super) backends: Backends,
    pub(super) roles: BTreeMap<String, RoleRunner>,
    pub(super) state: Mutex<ServiceState>,
    /// Held by the operation changing the service.
    pub(super) busy: Arc<tokio::sync::Mutex<()>>,
    /// The rollout under way; `stopped` is set under the same lock, so a
    /// rollout is either aborted by [`RunningService::stop`] or never spawned.
    pub(super) rollout: Mutex<Option<JoinHandle<()>>>,
    /// Set once [`RunningService::stop`] began: no operation may change the
    /// service from then on (its pools are stopped, its store closing).
    pub(super) stopped: AtomicBool,
}

impl RunningService {
    /// Builds, starts and serves the service `record` describes.
    pub async fn start(
        host: &HostContext,
        name: &str,
        record: DeploymentRecord,
    ) -> Result<Arc<Self>, ControllerError> {
        let manifest = record
            .manifest()
            .map_err(|e| ControllerError::Invalid(e.to_string()))?;
        if manifest.service != name {
            return Err(ControllerError::Invalid(format!(
                "{}: service.name is '{}', not '{name}'",
                manifest.path.display(),
                manifest.service
            )));
        }
        // Private, and refused if others could write there: they could
        // plant the queue store or a scratch file.
        let folder = host
            .state
            .prepare_service_dir(name)
            .map_err(ControllerError::State)?;
        let backends = Backends::open(&manifest, &folder)
            .await
            .map_err(ControllerError::Backend)?;
        match Self::start_roles(host, &manifest, &record, &backends).await {
            Ok(roles) => Ok(Arc::new(Self {
                name: name.to_owned(),
                host: host.clone(),
                backends,
                roles,
                state: Mutex::new(ServiceState {
                    record,
                    manifest,
                    operation: None,
                    incoming: Vec::new(),
                }),
                busy: Arc::new(tokio::sync::Mutex::new(())),
                rollout: Mutex::new(None),
                stopped: AtomicBool::new(false),
            })),
            Err(e) => {
                backends.close().await;
                Err(e)
            }
        }
    }

    async fn start_roles(
        host: &HostContext,
        manifest: &Manifest,
        record: &DeploymentRecord,
        backends: &Backends,
    ) -> Result<BTreeMap<String, RoleRunner>, ControllerError> {
        let builder = VersionBuilder {
            host,
            manifest,
            record,
            backends,
        };
        let mut versions = Vec::new();
        for name in manifest.roles.keys().filter(|n| host.runs(n)) {
            versions.push((name.clone(), builder.build(name).await?));
        }
        // Every address is bound before any role serves, so a taken port
        // stops the deploy with nothing started.
        let mut listeners = BTreeMap::new();
        let web_roles = manifest
            .roles
            .iter()
            .filter(|(name, _)| host.runs(name))
            .filter_map(|(name, role)| Some((name, role.web()?)));
        for (name, web) in web_roles {
            let addr = web.listen;
            let listener = TcpListener::bind(addr).await.map_err(|e| {
                ControllerError::Invalid(format!(
                    "roles.{name}.listen: cannot listen on {addr}: {e}"
                ))
            })?;
            listeners.insert(name.clone(), listener);
        }
        let policy = manifest.upgrade;
        let mut started: Vec<&WebVersion> = Vec::new();
        for (name, version) in &versions {
            if let Version::Web(web) = version {
                if let Err(why) = web.start(policy.timeout).await {
                    // Those that started took no request: they stop at once.
                    for web in started {
                        web.drain_and_stop(Duration::ZERO).await;
                    }
                    return Err(ControllerError::Invalid(format!(
                        "role '{name}' did not start: {why}"
                    )));
                }
                started.push(web);
            }
        }
        let mut roles = BTreeMap::new();
        for (name, version) in versions {
            let runner = match version {
                Version::Web(web) => {
                    let listener = listeners
                        .remove(&name)
                        .ok_or_else(|| ControllerError::Internal("listener missing".into()))?;
                    let server = WebServer::start(
                        listener,
                        &web,
                        policy.domains,
                        host.web_pool.clone(),
                        &name,
                        host.grace,
                    )
                    .map_err(|e| ControllerError::Internal(e.to_string()))?;
                    RoleRunner::web(server, web)
                }
                Version::Worker(worker) => {
                    let count = manifest.roles[&name].instances();
                    RoleRunner::Worker(WorkerPool::start(
                        &manifest.service,
                        &name,
                        worker,
                        count,
                        policy.domains,
                    ))
                }
            };
            roles.insert(name, runner);
        }
        Ok(roles)
    }

    /// Whether the service runs role `role` on this host.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.contains_key(role)
    }

    /// The record in force.
    pub fn record(&self) -> DeploymentRecord {
        lock(&self.state).record.clone()
    }

    /// Every component the service runs, or is rolling out.
    pub fn components(&self) -> Vec<Digest> {
        let state = lock(&self.state);
        state
            .record
            .source
            .components
            .values()
            .chain(&state.incoming)
            .cloned()
            .collect()
    }

    /// Whether [`RunningService::stop`] began.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Unavailable once the service is stopping (the host shuts down, or
    /// the service is being removed).
    fn still_running(&self) -> Result<(), ControllerError> {
        if self.is_stopped() {
            return Err(ControllerError::Unavailable(format!(
                "service '{}' is stopping",
                self.name
            )));
        }
        Ok(())
    }

    /// Claims the service for an operation (409 while another changes it).
    pub(super) fn claim(&self) -> Result<OwnedMutexGuard<()>, ControllerError> {
        self.busy.clone().try_lock_owned().map_err(|_| {
            ControllerError::Conflict(format!(
                "service '{}' is changing (see `weft status`); try again when it is done",
                self.name
            ))
        })
    }

    /// Role `role`, or 404.
    pub(super) fn role(&self, role: &str) -> Result<&RoleRunner, ControllerError> {
        self.roles.get(role).ok_or_else(|| {
            ControllerError::NotFound(format!("service '{}' has no role '{role}' here", self.name))
        })
    }

    /// Sets worker role `role`'s instance count (on this host, for a
    /// service that runs on many), once the record saying so is saved:
    /// new instances start at once, or the highest-numbered ones drain.
    pub async fn scale(&self, role: &str, count: u32) -> Result<OperationStatus, ControllerError> {
        let _busy = self.claim()?;
        self.still_running()?;
        let pool = self.role(role)?.scalable(role)?;
        let mut record = self.record();
        // A host running its part of a service scales that part: the
        // part's counts are the ones in force here.
        match &mut record.local {
            Some(part) => {
                part.roles.insert(role.to_owned(), count);
            }
            None => {
                record.overrides.instances.insert(role.to_owned(), count);
            }
        }
        let manifest = record
            .manifest()
            .map_err(|e| ControllerError::Invalid(e.to_string()))?;
        let held = self.host.slots.held(&self.name);
        let need = slots_needed(&manifest, |name| self.host.runs(name));
        self.host.slots.reserve(&self.name, need)?;
        // The record first: if it cannot be saved, nothing changes.
        if let Err(e) = self
            .host
            .state
            .save_record_off_thread(&self.name, &record)
            .await
        {
            self.host.slots.set(&self.name, held);
            return Err(ControllerError::State(e));
        }
        pool.scale(count);
        let operation = OperationStatus {
            kind: OperationKind::Scale,
            state: OperationState::Done,
            step: format!("role '{role}' scaled to {count} instances"),
            steps: Vec::new(),
            generation: record.generation,
            domains_done: 0,
            domains: 0,
            reason: None,
        };
        let mut state = lock(&self.state);
        state.record = record;
        state.manifest = manifest;
        state.operation = Some(operation.clone());
        Ok(operation)
    }

    /// Spawns `rollout` as `operation`, keeping `incoming` from the blob
    /// sweep, unless the service is stopping. Checked under the lock
    /// [`RunningService::stop`] sets its flag under, so a rollout is either
    /// spawned before `stop` aborts it, or never.
    pub(super) fn begin(
        &self,
        operation: OperationStatus,
        incoming: Vec<Digest>,
        rollout: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ControllerError> {
        let mut slot = lock(&self.rollout);
        self.still_running()?;
        {
            let mut state = lock(&self.state);
            state.operation = Some(operation);
            state.incoming = incoming;
        }
        *slot = Some(tokio::spawn(rollout));
        Ok(())
    }

    /// Records the operation's next step.
    pub(super) fn progress(&self, step: String, domains_done: u32) {
        if let Some(operation) = &mut lock(&self.state).operation {
            tracing::info!(service = %self.name, kind = %operation.kind, %step, "rollout");
            operation.record(step);
            operation.domains_done = domains_done;
        }
    }

    /// Marks the operation failed after its rollout panicked (a bug): its
    /// state and step say so, rather than `running` for ever. The service
    /// keeps the larger reservation of the two versions, which may both
    /// hold instances, until its next operation or its removal.
    pub(super) fn rollout_failed(&self, why: &str) {
        tracing::error!(service = %self.name, reason = %why, "the rollout failed unexpectedly");
        let mut state = lock(&self.state);
        state.incoming.clear();
        if let Some(operation) = &mut state.operation {
            operation.state = OperationState::Failed;
            operation.record("failed unexpectedly: see the host's log and `weft status`".into());
            operation.reason = Some(format!("the rollout failed unexpectedly: {why}"));
        }
    }

    /// Drains and stops every role, then closes the queue store.
    pub async fn stop(&self) {
        let rollout = {
            let mut rollout = lock(&self.rollout);
            self.stopped.store(true, Ordering::Release);
            rollout.take()
        };
        if let Some(rollout) = rollout {
            rollout.abort();
        }
        let grace = self.host.grace;
        let stopping: Vec<Stopping> = self.roles.values().map(RoleRunner::begin_stop).collect();
        let mut workers = Vec::new();
        let mut longest_deadline = Duration::ZERO;
        let mut servers = Vec::new();
        for role in stopping {
            servers.extend(role.server);
            workers.extend(role.instances);
            longest_deadline = longest_deadline.max(role.deadline);
        }
        for server in servers {
            let _ = server.await;
        }
        // Requests are answered; the versions' stop hooks run, those of
        // versions an upgrade retired too (their drains are under way).
        for role in self.roles.values() {
            role.drain(grace).await;
        }
        let aborts: Vec<_> = workers.iter().map(JoinHandle::abort_handle).collect();
        let all = async {
            for worker in workers {
                let _ = worker.await;
            }
        };
        let bound = longest_deadline
            .saturating_add(grace)
            .saturating_add(WORKER_STOP_SLACK);
        if tokio::time::timeout(bound, all).await.is_err() {
            tracing::warn!(service = %self.name, "some workers did not stop in time; stopping them now");
            for abort in aborts {
                abort.abort();
            }
        }
        self.backends.close().await;
    }

    /// What the service is doing now.
    pub async fn status(&self, usage: &[UsageSnapshot]) -> ServiceStatus {
        let (record, manifest, operation) = {
            let state = lock(&self.state);
            (
                state.record.clone(),
                state.manifest.clone(),
                state.operation.clone(),
            )
        };
        let mut roles = Vec::new();
        for (name, runner) in &self.roles {
            let Some(role) = manifest.roles.get(name) else {
                continue;
            };
            let report = runner.report(manifest.upgrade.domains);
            roles.push(RoleStatus {
                name: name.clone(),
                kind: report.kind,
                url: report.url,
                component: report.info.digest.to_string(),
                generation: report.info.generation,
                declared: report.declared,
                ready: report.ready,
                settings: report.info.settings,
                health: role.health().map(str::to_owned),
                instances: report.instances,
                usage: usage_of(usage, &self.name, name),
                queues: self.queue_depths(role).await,
            });
        }
        ServiceStatus {
            name: self.name.clone(),
            generation: record.generation,
            environment: record.source.environment.as_ref().map(|e| e.name.clone()),
            upgrade_domains: manifest.upgrade.domains,
            operation,
            roles,
            store_failing: match self.backends.store_health() {
                Some(StoreHealth::Failing { reason }) => Some(reason),
                _ => None,
            },
        }
    }

    async fn queue_depths(&self, role: &Role) -> Vec<QueueStatus> {
        let mut depths = Vec::new();
        for queue in &role.queues {
            let depth = |name: String| {
                let queues = self.backends.queues.clone();
                let scoped = weft_broker::scoped(&self.name, &name);
                async move {
                    tokio::time::timeout(QUEUE_DEPTH_TIMEOUT, queues.len(&scoped))
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .and_then(|n| u64::try_from(n).ok())
                }
            };
            depths.push(QueueStatus {
                name: queue.clone(),
                length: depth(queue.clone()).await,
                poison: if queue.ends_with(POISON_SUFFIX) {
                    None
                } else {
                    depth(weft_broker::poison_queue(queue)).await
                },
            });
        }
        depths
    }
}

/// A role's usage, every version of it on this host added up.
fn usage_of(usage: &[UsageSnapshot], service: &str, role: &str) -> UsageStatus {
    let mut total: Option<UsageSnapshot> = None;
    for snapshot in usage
        .iter()
        .filter(|s| s.service == service && s.role == role)
    {
        match &mut total {
            Some(total) => total.absorb(snapshot),
            None => total = Some(snapshot.clone()),
        }
    }
    total.map_or_else(UsageStatus::default, |total| UsageStatus {
        fuel_used: total.counters.fuel_used,
        memory_bytes: total.memory.bytes,
        memory_high_water: total.memory.high_water,
        invocations: total.counters.invocations,
        failures: total.counters.failures.iter().map(|(_, n)| n).sum(),
        cpu_share_ppm: total.counters.cpu_share_ppm,
    })
}
