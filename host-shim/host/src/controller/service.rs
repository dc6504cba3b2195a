//! A deployed service on this host: its queues and buckets, its roles
//! (web roles behind their listeners, worker roles' instance slots), its
//! deployment record, and the operation changing it, if any.
//!
//! [`Service::start`] builds every role's version before anything runs (a
//! malformed component or manifest stops the deploy with nothing started),
//! binds every listener, starts each web version (its start hook, then its
//! health path) before it takes traffic, and starts the worker instances.
//! [`Service::stop`] drains it: listeners close and in-flight requests
//! finish (bounded by the grace period), worker instances finish or
//! abandon their batch, stop hooks run, the queue store is closed.

use super::status::{QueueStatus, RoleStatus, ServiceStatus, UsageStatus};
use super::store::{DeploymentRecord, Digest};
use super::web::{WebFront, WebVersion};
use super::workers::{WorkerPool, WorkerVersion};
use super::{ControllerError, HostContext, VersionInfo};
use crate::manifest::{Manifest, Role, RoleKind};
use crate::service::{Backends, role_spec};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weft_broker::{POISON_SUFFIX, StoreHealth};
use weft_sandbox::UsageSnapshot;

/// How long a queue depth may take to read for a status report.
const QUEUE_DEPTH_TIMEOUT: Duration = Duration::from_secs(1);
/// Extra time, beyond the longest deadline and the grace period, that
/// worker instances get to stop before they are abandoned.
const WORKER_STOP_SLACK: Duration = Duration::from_secs(5);

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A new version of one role.
#[derive(Clone)]
pub(super) enum Version {
    Web(Arc<WebVersion>),
    Worker(Arc<WorkerVersion>),
}

/// A web role on this host.
pub(super) struct WebRunner {
    pub(super) front: Arc<WebFront>,
    pub(super) url: String,
    /// The version committed last (all shares go to it outside upgrades).
    pub(super) current: Mutex<Arc<WebVersion>>,
    stop: watch::Sender<bool>,
    server: Mutex<Option<JoinHandle<()>>>,
}

/// A role on this host.
pub(super) enum RoleRunner {
    Web(WebRunner),
    Worker(Arc<WorkerPool>),
}

/// What changes as operations run.
pub(super) struct ServiceState {
    pub(super) record: DeploymentRecord,
    pub(super) manifest: Manifest,
    pub(super) operation: Option<super::status::OperationStatus>,
    /// The components of the rollout under way, kept from the blob sweep
    /// until it is committed (then the record names them) or rolled back.
    pub(super) incoming: Vec<Digest>,
}

/// A service running on this host.
pub struct Service {
    pub(super) name: String,
    pub(super) host: HostContext,
    pub(super) backends: Backends,
    pub(super) roles: BTreeMap<String, RoleRunner>,
    pub(super) state: Mutex<ServiceState>,
    /// Held by the operation changing the service.
    pub(super) busy: Arc<tokio::sync::Mutex<()>>,
    /// The rollout under way; `stopped` is set under the same lock, so a
    /// rollout is either aborted by [`Service::stop`] or never spawned.
    pub(super) rollout: Mutex<Option<JoinHandle<()>>>,
    /// Set once [`Service::stop`] began: no operation may change the
    /// service from then on (its pools are stopped, its store closing).
    pub(super) stopped: AtomicBool,
}

impl Service {
    /// Builds, starts and serves the service `record` describes.
    pub async fn start(
        host: &HostContext,
        name: &str,
        record: DeploymentRecord,
    ) -> Result<Arc<Self>, ControllerError> {
        let manifest = record.manifest().map_err(ControllerError::Invalid)?;
        if manifest.service != name {
            return Err(ControllerError::Invalid(format!(
                "{}: service.name is '{}', not '{name}'",
                manifest.path.display(),
                manifest.service
            )));
        }
        // Private, and refused if others could write there: they could
        // plant the queue store or a scratch file.
        let folder = host.state.prepare_service_dir(name).map_err(|e| {
            ControllerError::Internal(format!("the state folder is not safe to use: {e}"))
        })?;
        let backends = Backends::open(&manifest.queues, &folder)
            .await
            .map_err(|e| ControllerError::Invalid(format!("{e:#}")))?;
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
        let mut versions = Vec::new();
        for name in manifest.roles.keys().filter(|n| host.runs(n)) {
            let version = build_version(host, manifest, name, record, backends).await?;
            versions.push((name.clone(), version));
        }
        // Every address is bound before any role serves, so a taken port
        // stops the deploy with nothing started.
        let mut listeners = BTreeMap::new();
        for (name, _) in versions
            .iter()
            .filter(|(_, v)| matches!(v, Version::Web(_)))
        {
            let addr = manifest.roles[name]
                .listen
                .ok_or_else(|| ControllerError::Invalid(format!("roles.{name}.listen: missing")))?;
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
                    let local: SocketAddr = listener
                        .local_addr()
                        .map_err(|e| ControllerError::Internal(e.to_string()))?;
                    let front = Arc::new(WebFront::default());
                    front.route_all(&web, policy.domains);
                    let (stop, mut stopped) = watch::channel(false);
                    let shutdown = async move {
                        let _ = stopped.wait_for(|stop| *stop).await;
                    };
                    let server = tokio::spawn(crate::http_server::serve(
                        listener,
                        host.web_pool.clone(),
                        front.clone(),
                        name.clone(),
                        shutdown,
                        host.grace,
                    ));
                    RoleRunner::Web(WebRunner {
                        front,
                        url: format!("http://{local}"),
                        current: Mutex::new(web),
                        stop,
                        server: Mutex::new(Some(server)),
                    })
                }
                Version::Worker(worker) => {
                    let count = manifest.roles[&name].instances;
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

    /// Whether [`Service::stop`] began.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
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
        let mut servers = Vec::new();
        let mut workers = Vec::new();
        let mut longest_deadline = Duration::ZERO;
        for runner in self.roles.values() {
            match runner {
                RoleRunner::Web(web) => {
                    let _ = web.stop.send(true);
                    if let Some(server) = lock(&web.server).take() {
                        servers.push(server);
                    }
                }
                RoleRunner::Worker(pool) => {
                    longest_deadline =
                        longest_deadline.max(pool.current().role.limits().deadline());
                    workers.extend(pool.stop());
                }
            }
        }
        for server in servers {
            let _ = server.await;
        }
        // Requests are answered; the versions' stop hooks run, those of
        // versions an upgrade retired too (their drains are under way).
        for runner in self.roles.values() {
            if let RoleRunner::Web(web) = runner {
                for version in web.front.close() {
                    version.drain_and_stop(grace).await;
                }
                for retiring in web.front.retiring() {
                    let _ = retiring.await;
                }
            }
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
            let (kind, url, info, instances, ready, declared) = match runner {
                RoleRunner::Web(web) => {
                    let (instances, ready) = web.front.status();
                    let info = lock(&web.current).info.clone();
                    let url = Some(web.url.clone());
                    ("web", url, info, instances, ready, manifest.upgrade.domains)
                }
                RoleRunner::Worker(pool) => {
                    let (instances, ready) = pool.status();
                    let info = pool.current().info.clone();
                    ("worker", None, info, instances, ready, pool.count())
                }
            };
            roles.push(RoleStatus {
                name: name.clone(),
                kind: kind.to_owned(),
                url,
                component: info.digest.to_string(),
                generation: info.generation,
                declared,
                ready,
                settings: info.settings.clone(),
                health: role.health.clone(),
                instances,
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
                let scoped = format!("{}/{name}", self.name);
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
                    depth(format!("{queue}{POISON_SUFFIX}")).await
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
    })
}

/// Builds (compiles, or loads from the cache, and pre-instantiates) role
/// `name`'s version from `record`, off the async threads.
pub(super) async fn build_version(
    host: &HostContext,
    manifest: &Manifest,
    name: &str,
    record: &DeploymentRecord,
    backends: &Backends,
) -> Result<Version, ControllerError> {
    let invalid = |why: String| ControllerError::Invalid(why);
    let role = manifest
        .roles
        .get(name)
        .ok_or_else(|| invalid(format!("roles.{name}: no such role")))?;
    let digest: Digest = record
        .source
        .components
        .get(name)
        .cloned()
        .ok_or_else(|| invalid(format!("roles.{name}: no component given for the role")))?;
    // The bytes must still be the ones uploaded: a damaged or planted blob
    // is never compiled. (Between this check and the read that compiles,
    // only this user could change the file: the folder is private.)
    let (state, blob) = (host.state.clone(), digest.clone());
    tokio::task::spawn_blocking(move || state.check_blob(&blob))
        .await
        .map_err(|e| ControllerError::Internal(format!("checking role '{name}': {e}")))?
        .map_err(|e| invalid(format!("roles.{name}: component {digest} {e}")))?;
    let path = host.state.blob_path(&digest);
    let folder = host.state.service_dir(&manifest.service);
    let spec = role_spec(manifest, name, role, &folder, backends)
        .map_err(|e| invalid(format!("{e:#}")))?;
    let info = VersionInfo {
        generation: record.generation,
        digest: digest.clone(),
        settings: role.settings.clone(),
    };
    let runtime = host.runtime.clone();
    let kind = role.kind;
    let health = role.health.clone();
    let describe = move |e: weft_sandbox::RuntimeError, path: &Path| {
        let text = e
            .to_string()
            .replace(&path.display().to_string(), &format!("component {digest}"));
        ControllerError::Invalid(format!("roles.{name}: {text}"))
    };
    let build_path = path.clone();
    let built = tokio::task::spawn_blocking(move || match kind {
        RoleKind::Web => runtime
            .web_role(&build_path, spec)
            .map(|role| Version::Web(Arc::new(WebVersion::new(info, role, health)))),
        RoleKind::Worker => runtime
            .worker_role(&build_path, spec)
            .map(|role| Version::Worker(Arc::new(WorkerVersion { info, role }))),
    })
    .await
    .map_err(|e| ControllerError::Internal(format!("building role '{name}': {e}")))?;
    built.map_err(|e| describe(e, &path))
}
