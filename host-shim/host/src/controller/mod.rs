//! The fabric controller of one host: it deploys services into the host,
//! keeps each role's declared instances running, scales, reconfigures and
//! upgrades them one upgrade domain at a time, and removes them, as the
//! classic cloud fabric's controller did for the guests on each of its
//! hosts. The admin API ([`crate::admin`]) and `weft up` drive it.
//!
//! - [`store`]: the state folder: component blobs by SHA-256, and each
//!   service's deployment record, from which a restarted host redeploys.
//! - [`service`]: a deployed service: its queue store and its roles.
//! - [`web`]: a web role's versions and the share of requests each serves.
//! - [`workers`]: a worker role's instance slots, their lifecycle and restarts.
//! - [`rollout`]: upgrades, settings changes and scaling.
//! - [`slots`]: the engine's instance pool, and what each service reserved.
//! - [`status`]: what the API reports.
//!
//! One operation changes a service at a time (another gets 409 Conflict);
//! status is read at any time. Each service starts on its own: a deploy or
//! a restore claims its name and slots under a short lock and builds (and
//! connects to its queue backend) without it, so one slow service holds up
//! no other; status lists the services starting, and those whose redeploy
//! failed. Shutdown cancels every start and every change that has not
//! begun its rollout, giving back what it reserved.
//!
//! Blobs that no record in the state folder
//! (deployed or not: a service that failed to redeploy keeps its record),
//! no running service and no deploy or upgrade under way names are deleted
//! an hour after they were last stored or asked about, after the next
//! deploy, upgrade or removal (so an upload has time to be deployed, and a
//! rolled-back version's component goes away).

pub mod rollout;
pub mod service;
pub mod slots;
pub mod status;
pub mod store;
pub mod web;
pub mod workers;

#[cfg(test)]
mod test_support;

pub use crate::environment::Overrides;
use service::Service;
use status::{HostStatus, OperationStatus, PendingService, PendingState, ServiceStatus};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use store::{DeploymentRecord, DeploymentSource, Digest, StateDir};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weft_broker::BackendKind;
use weft_sandbox::Runtime;

/// How long an unreferenced blob is kept after it was written.
const BLOB_GRACE: Duration = Duration::from_secs(60 * 60);
/// The most blobs uploaded and not (yet) deployed the host keeps, and
/// their bytes: a client that uploads and never deploys cannot fill the
/// disk during [`BLOB_GRACE`]. Ample for a team's uploads ahead of deploys.
const MAX_UNDEPLOYED_BLOBS: usize = 64;
const MAX_UNDEPLOYED_BLOB_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// Why the controller refused or failed an operation; the admin API maps
/// each kind to an HTTP status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControllerError {
    /// No such service or role (404).
    #[error("{0}")]
    NotFound(String),
    /// The service exists already, or is changing (409).
    #[error("{0}")]
    Conflict(String),
    /// The request, manifest or component is not valid (400).
    #[error("{0}")]
    Invalid(String),
    /// The host is shutting down (503).
    #[error("{0}")]
    Unavailable(String),
    /// Something failed on the host (500).
    #[error("{0}")]
    Internal(String),
}

/// What a version of a role was built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    /// The deployment generation that made it.
    pub generation: u64,
    /// Its component.
    pub digest: Digest,
    /// Its settings' values.
    pub settings: BTreeMap<String, String>,
}

/// What every service on the host shares.
#[derive(Clone)]
pub struct HostContext {
    /// The engine.
    pub runtime: Arc<Runtime>,
    /// The state folder.
    pub state: StateDir,
    /// How long in-flight requests, draining versions and stop hooks may take.
    pub grace: Duration,
    /// Run only these roles (`weft up --role`); empty: all.
    pub only_roles: Vec<String>,
    /// The engine's instance slots, and what each service reserved.
    pub slots: Arc<slots::SlotBook>,
    /// The connection pool every web role's listener draws from.
    pub web_pool: Arc<crate::connections::Listening>,
}

impl HostContext {
    /// Whether this host runs role `name`.
    pub fn runs(&self, name: &str) -> bool {
        self.only_roles.is_empty() || self.only_roles.iter().any(|r| r == name)
    }
}

/// Runs `operation` to its end in a task of its own, so that a caller that
/// stops waiting (hyper drops the handler of a client that disconnected)
/// cannot cancel it halfway, between its steps.
async fn detached<T: Send + 'static>(
    operation: impl Future<Output = Result<T, ControllerError>> + Send + 'static,
) -> Result<T, ControllerError> {
    tokio::spawn(operation).await.unwrap_or_else(|e| {
        Err(ControllerError::Internal(format!(
            "the operation failed: {e}"
        )))
    })
}

/// The controller.
pub struct Controller {
    host: HostContext,
    services: Mutex<BTreeMap<String, Arc<Service>>>,
    /// Serializes the short steps that change the set of services (claiming
    /// a name, adding a started service, removing one); never held while a
    /// service builds, connects or drains.
    changing: tokio::sync::Mutex<()>,
    /// Set once shutdown began: changes are refused, and starts and changes
    /// that have not begun their rollout are cancelled.
    stopping: watch::Sender<bool>,
    /// The services being started (deployed or restored), by name: their
    /// names are taken, and shutdown waits for each to finish or cancel.
    starting: watch::Sender<BTreeSet<String>>,
    /// Services whose redeploy failed when the host started, and why;
    /// forgotten once deployed again or removed.
    failed: Mutex<BTreeMap<String, String>>,
    /// The components of deploys and upgrades being built, counted: the
    /// sweep keeps them though no record names them yet.
    incoming: Mutex<BTreeMap<Digest, usize>>,
    /// Held while blobs are swept, and while one is checked or stored, so
    /// a blob a client was just told is there is not deleted under it.
    blobs: Arc<Mutex<()>>,
}

/// A service being restored from its record, in a task of its own.
pub struct Restore {
    /// The service's name.
    pub name: String,
    /// Whether its queues live on a server outside the host (NATS): its
    /// start then waits on that server, which may be down for a while.
    pub remote: bool,
    /// Its outcome.
    pub task: JoinHandle<Result<(), ControllerError>>,
}

fn shutting_down() -> ControllerError {
    ControllerError::Unavailable("the host is shutting down".into())
}

/// A service's name and slots, claimed while it starts. Dropped unkept (the
/// start failed, or was cancelled where it waited), it gives both back.
struct Claim<'a> {
    controller: &'a Controller,
    name: String,
    keep_slots: bool,
}

impl<'a> Claim<'a> {
    fn new(controller: &'a Controller, name: &str) -> Self {
        controller.starting.send_modify(|starting| {
            starting.insert(name.to_owned());
        });
        Self {
            controller,
            name: name.to_owned(),
            keep_slots: false,
        }
    }

    /// The service started: its slots stay reserved.
    fn keep_slots(mut self) {
        self.keep_slots = true;
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if !self.keep_slots {
            self.controller.host.slots.release(&self.name);
        }
        self.controller.starting.send_modify(|starting| {
            starting.remove(&self.name);
        });
    }
}

/// Keeps the components of a deploy or upgrade from the sweep until dropped.
struct Incoming<'a> {
    counts: &'a Mutex<BTreeMap<Digest, usize>>,
    digests: Vec<Digest>,
}

impl<'a> Incoming<'a> {
    fn new(counts: &'a Mutex<BTreeMap<Digest, usize>>, source: &DeploymentSource) -> Self {
        let digests: Vec<Digest> = source.components.values().cloned().collect();
        let mut held = lock(counts);
        for digest in &digests {
            *held.entry(digest.clone()).or_default() += 1;
        }
        Self { counts, digests }
    }
}

impl Drop for Incoming<'_> {
    fn drop(&mut self) {
        let mut held = lock(self.counts);
        for digest in &self.digests {
            if let Some(count) = held.get_mut(digest) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    held.remove(digest);
                }
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Controller {
    /// A controller with no services yet.
    pub fn new(host: HostContext) -> Arc<Self> {
        Arc::new(Self {
            host,
            services: Mutex::new(BTreeMap::new()),
            changing: tokio::sync::Mutex::new(()),
            stopping: watch::Sender::new(false),
            starting: watch::Sender::new(BTreeSet::new()),
            failed: Mutex::new(BTreeMap::new()),
            incoming: Mutex::new(BTreeMap::new()),
            blobs: Arc::new(Mutex::new(())),
        })
    }

    fn service(&self, name: &str) -> Result<Arc<Service>, ControllerError> {
        lock(&self.services)
            .get(name)
            .cloned()
            .ok_or_else(|| ControllerError::NotFound(format!("no service '{name}' on this host")))
    }

    fn open_for_changes(&self) -> Result<(), ControllerError> {
        if *self.stopping.borrow() {
            return Err(shutting_down());
        }
        Ok(())
    }

    /// Runs `change` unless shutdown begins first; then it is dropped where
    /// it waits (what it reserved is given back as it unwinds) and the
    /// answer is 503.
    async fn unless_stopping<T>(
        &self,
        change: impl Future<Output = Result<T, ControllerError>>,
    ) -> Result<T, ControllerError> {
        let mut stopping = self.stopping.subscribe();
        tokio::select! {
            outcome = change => outcome,
            _ = stopping.wait_for(|stopping| *stopping) => Err(shutting_down()),
        }
    }

    /// Starts redeploying every service the state folder has a record of,
    /// each in a task of its own, so that one whose build is slow or whose
    /// queue server is down holds up no other. Each outcome is logged (a
    /// service that fails keeps its record, to be removed or redeployed).
    pub fn restore(self: &Arc<Self>) -> Vec<Restore> {
        let mut restores = Vec::new();
        for (name, record) in self.host.state.records() {
            let remote = record.as_ref().is_ok_and(|record| {
                record
                    .manifest()
                    .is_ok_and(|m| m.queues.backend != BackendKind::Embedded)
            });
            let (this, service) = (self.clone(), name.clone());
            let task = tokio::spawn(async move {
                let outcome = match record {
                    Ok(record) => this.start(&service, record).await.map(|_| ()),
                    Err(why) => Err(ControllerError::Internal(why)),
                };
                match &outcome {
                    Err(ControllerError::Unavailable(_)) => {
                        tracing::info!(service = %service, "redeploy cancelled: the host is shutting down");
                    }
                    Err(e) => {
                        tracing::error!(service = %service, error = %e, "cannot redeploy the service");
                        lock(&this.failed).insert(service.clone(), e.to_string());
                    }
                    Ok(()) => {
                        tracing::info!(service = %service, "redeployed from the state folder")
                    }
                }
                outcome
            });
            restores.push(Restore { name, remote, task });
        }
        restores
    }

    /// Deploys a new service `name` from `source`. Like every change, it
    /// runs to its end in a task of its own, even if the caller stops
    /// waiting (an admin client that disconnects).
    pub async fn deploy(
        self: &Arc<Self>,
        name: &str,
        source: DeploymentSource,
    ) -> Result<ServiceStatus, ControllerError> {
        let (this, name) = (self.clone(), name.to_owned());
        detached(async move { this.deploy_now(&name, source).await }).await
    }

    async fn deploy_now(
        &self,
        name: &str,
        source: DeploymentSource,
    ) -> Result<ServiceStatus, ControllerError> {
        self.open_for_changes()?;
        let incoming = Incoming::new(&self.incoming, &source);
        let record = DeploymentRecord {
            source,
            overrides: Overrides::default(),
            generation: 1,
        };
        let started = self.start(name, record).await;
        drop(incoming);
        self.sweep_blobs().await;
        Ok(started?.status(&self.host.runtime.usage()).await)
    }

    /// Claims `name` and its slots, builds and starts the service without
    /// holding the lock, then adds it: unless shutdown began meanwhile,
    /// which cancels the build or stops what was built.
    async fn start(
        &self,
        name: &str,
        record: DeploymentRecord,
    ) -> Result<Arc<Service>, ControllerError> {
        let manifest = record.manifest().map_err(ControllerError::Invalid)?;
        let need = slots::slots_needed(&manifest, |role| self.host.runs(role));
        let claim = {
            let _changing = self.changing.lock().await;
            // Shutdown may have begun while this waited its turn.
            self.open_for_changes()?;
            if lock(&self.services).contains_key(name) {
                return Err(ControllerError::Conflict(format!(
                    "service '{name}' is already deployed: upgrade it, or remove it first"
                )));
            }
            if self.starting.borrow().contains(name) {
                return Err(ControllerError::Conflict(format!(
                    "service '{name}' is being deployed (see `weft status`)"
                )));
            }
            self.host.slots.reserve(name, need)?;
            Claim::new(self, name)
        };
        let service = self
            .unless_stopping(Service::start(&self.host, name, record.clone()))
            .await?;
        let changing = self.changing.lock().await;
        let refused = match self.open_for_changes() {
            Err(e) => Some(e),
            Ok(()) => self
                .host
                .state
                .save_record_off_thread(name, &record)
                .await
                .err()
                .map(|e| {
                    ControllerError::Internal(format!("cannot save the deployment record: {e}"))
                }),
        };
        if let Some(e) = refused {
            drop(changing);
            service.stop().await;
            return Err(e);
        }
        lock(&self.services).insert(name.to_owned(), service.clone());
        lock(&self.failed).remove(name);
        claim.keep_slots();
        tracing::info!(service = %name, generation = record.generation, "deployed");
        Ok(service)
    }

    /// Starts a rolling upgrade of service `name` to `source`.
    pub async fn upgrade(
        self: &Arc<Self>,
        name: &str,
        source: DeploymentSource,
    ) -> Result<OperationStatus, ControllerError> {
        let (this, name) = (self.clone(), name.to_owned());
        detached(async move { this.unless_stopping(this.upgrade_now(&name, source)).await }).await
    }

    async fn upgrade_now(
        &self,
        name: &str,
        source: DeploymentSource,
    ) -> Result<OperationStatus, ControllerError> {
        self.open_for_changes()?;
        let service = self.service(name)?;
        let incoming = Incoming::new(&self.incoming, &source);
        // Once the rollout is under way the service keeps its components
        // from the sweep itself.
        let started = service.upgrade(source).await;
        drop(incoming);
        self.sweep_blobs().await;
        started
    }

    /// Starts a rolling change of role `role`'s settings.
    pub async fn set_settings(
        self: &Arc<Self>,
        name: &str,
        role: &str,
        settings: BTreeMap<String, String>,
    ) -> Result<OperationStatus, ControllerError> {
        self.open_for_changes()?;
        let (this, service, role) = (self.clone(), self.service(name)?, role.to_owned());
        detached(async move {
            this.unless_stopping(service.set_settings(&role, settings))
                .await
        })
        .await
    }

    /// Sets worker role `role`'s instance count. It runs to its end in a
    /// task of its own: its record is saved on a blocking thread, and a
    /// client that stops waiting must not leave the record and the running
    /// service disagreeing.
    pub async fn scale(
        &self,
        name: &str,
        role: &str,
        count: u32,
    ) -> Result<OperationStatus, ControllerError> {
        self.open_for_changes()?;
        let (service, role) = (self.service(name)?, role.to_owned());
        detached(async move { service.scale(&role, count).await }).await
    }

    /// Drains, stops and forgets service `name` (its data folder stays).
    /// A service that has a record but does not run (its redeploy failed
    /// when the host started) has its record forgotten.
    pub async fn remove(self: &Arc<Self>, name: &str) -> Result<(), ControllerError> {
        let (this, name) = (self.clone(), name.to_owned());
        detached(async move { this.remove_now(&name).await }).await
    }

    async fn remove_now(&self, name: &str) -> Result<(), ControllerError> {
        self.open_for_changes()?;
        let _changing = self.changing.lock().await;
        self.open_for_changes()?;
        if self.starting.borrow().contains(name) {
            return Err(ControllerError::Conflict(format!(
                "service '{name}' is being deployed (see `weft status`); remove it when it is done"
            )));
        }
        let running = lock(&self.services).get(name).cloned();
        let Some(service) = running else {
            if !self.host.state.has_record(name) {
                return Err(ControllerError::NotFound(format!(
                    "no service '{name}' on this host"
                )));
            }
            self.host
                .state
                .remove_record(name)
                .map_err(|e| ControllerError::Internal(format!("cannot remove the record: {e}")))?;
            lock(&self.failed).remove(name);
            tracing::info!(service = %name, "removed the record of a service that was not running");
            self.sweep_blobs().await;
            return Ok(());
        };
        // Refused while an operation changes it (its rollout holds `busy`).
        let _busy = service.busy.clone().try_lock_owned().map_err(|_| {
            ControllerError::Conflict(format!(
                "service '{name}' is changing (see `weft status`); remove it when it is done"
            ))
        })?;
        lock(&self.services).remove(name);
        service.stop().await;
        self.host.slots.release(name);
        self.host
            .state
            .remove_record(name)
            .map_err(|e| ControllerError::Internal(format!("cannot remove the record: {e}")))?;
        tracing::info!(service = %name, "removed");
        self.sweep_blobs().await;
        Ok(())
    }

    /// The status of service `name`, or of every service.
    pub async fn status(&self, name: Option<&str>) -> Result<HostStatus, ControllerError> {
        let services: Vec<Arc<Service>> = match name {
            Some(name) => vec![self.service(name)?],
            None => lock(&self.services).values().cloned().collect(),
        };
        let usage = self.host.runtime.usage();
        let mut statuses = Vec::new();
        for service in services {
            statuses.push(service.status(&usage).await);
        }
        let pending = if name.is_some() {
            Vec::new()
        } else {
            let starting = self.starting.borrow().clone();
            let starting = starting.into_iter().map(|name| PendingService {
                name,
                state: PendingState::Starting,
                reason: None,
            });
            let failed = lock(&self.failed).clone();
            let failed = failed.into_iter().map(|(name, why)| PendingService {
                name,
                state: PendingState::Failed,
                reason: Some(why),
            });
            starting.chain(failed).collect()
        };
        Ok(HostStatus {
            services: statuses,
            pending,
        })
    }

    /// Whether each service's embedded queue store can write now (services
    /// on NATS have none), for `/metrics`.
    pub fn store_health(&self) -> Vec<(String, weft_broker::StoreHealth)> {
        lock(&self.services)
            .iter()
            .filter_map(|(name, service)| Some((name.clone(), service.backends.store_health()?)))
            .collect()
    }

    /// Ok if service `name` runs role `role` on this host.
    pub fn role_exists(&self, name: &str, role: &str) -> Result<(), ControllerError> {
        if self.service(name)?.has_role(role) {
            Ok(())
        } else {
            Err(ControllerError::NotFound(format!(
                "service '{name}' has no role '{role}' on this host"
            )))
        }
    }

    /// Whether blob `digest` is stored intact (which gives it a fresh
    /// grace period); a damaged one is not, so the client uploads it again.
    /// Hashed on a blocking thread.
    pub async fn has_blob(&self, digest: &Digest) -> bool {
        let (state, blobs, digest) = (self.host.state.clone(), self.blobs.clone(), digest.clone());
        tokio::task::spawn_blocking(move || {
            let _blobs = lock(&blobs);
            state.has_blob(&digest)
        })
        .await
        .unwrap_or(false)
    }

    /// Stores `bytes`, which must hash to `digest` (replacing a damaged
    /// copy). Hashed and written on a blocking thread.
    pub async fn put_blob(
        &self,
        digest: &Digest,
        bytes: bytes::Bytes,
    ) -> Result<(), ControllerError> {
        let (state, blobs, digest) = (self.host.state.clone(), self.blobs.clone(), digest.clone());
        let used = self.blobs_in_use();
        tokio::task::spawn_blocking(move || {
            let actual = Digest::of(&bytes);
            if actual != digest {
                return Err(ControllerError::Invalid(format!(
                    "the body's digest is {actual}, not {digest}"
                )));
            }
            let _blobs = lock(&blobs);
            room_for_undeployed(&state, used, &digest, bytes.len())?;
            state
                .put_blob(&bytes)
                .map(|_| ())
                .map_err(|e| ControllerError::Internal(format!("cannot store the blob: {e}")))
        })
        .await
        .unwrap_or_else(|e| Err(ControllerError::Internal(format!("storing the blob: {e}"))))
    }

    /// Drains and stops every service (shutdown); changes are refused from
    /// now, and starts and changes that have not begun their rollout are
    /// cancelled (shutdown waits only for them to unwind).
    pub async fn shutdown(&self) {
        self.stopping.send_replace(true);
        let _ = self.starting.subscribe().wait_for(BTreeSet::is_empty).await;
        let _changing = self.changing.lock().await;
        let services: Vec<Arc<Service>> = lock(&self.services).values().cloned().collect();
        // Concurrently: each service's drain is bounded on its own.
        let stops: Vec<_> = services
            .into_iter()
            .map(|service| tokio::spawn(async move { service.stop().await }))
            .collect();
        for stop in stops {
            let _ = stop.await;
        }
    }

    /// Deletes the blobs nothing needs: neither a record in the state
    /// folder (a service that failed to redeploy keeps its record, and may
    /// be redeployed or removed), nor a running service or its rollout, nor
    /// a deploy or upgrade being built, once they are old enough that no
    /// client could be about to name them; and the temporary files of
    /// uploads a crash cut short. The folder is read on a blocking thread.
    async fn sweep_blobs(&self) {
        let used = self.blobs_in_use();
        let (state, blobs) = (self.host.state.clone(), self.blobs.clone());
        let swept = tokio::task::spawn_blocking(move || sweep(&state, &blobs, used)).await;
        if let Err(e) = swept {
            tracing::warn!(error = %e, "the blob sweep failed");
        }
    }
}

impl Controller {
    /// The blobs running services and changes under way need (records add
    /// their own).
    fn blobs_in_use(&self) -> BTreeSet<Digest> {
        let mut used: BTreeSet<Digest> = lock(&self.incoming).keys().cloned().collect();
        let services: Vec<Arc<Service>> = lock(&self.services).values().cloned().collect();
        for service in services {
            used.extend(service.components());
        }
        used
    }
}

/// Refuses a new blob of `len` bytes if the blobs nothing uses (nor any
/// record) would then pass [`MAX_UNDEPLOYED_BLOBS`] or
/// [`MAX_UNDEPLOYED_BLOB_BYTES`]. One already stored costs nothing more.
fn room_for_undeployed(
    state: &StateDir,
    mut used: BTreeSet<Digest>,
    digest: &Digest,
    len: usize,
) -> Result<(), ControllerError> {
    if state.has_blob(digest) {
        return Ok(());
    }
    for (_, record) in state.records() {
        if let Ok(record) = record {
            used.extend(record.source.components.into_values());
        }
    }
    let (count, bytes) = state.unused_blobs(&used);
    let len = u64::try_from(len).unwrap_or(u64::MAX);
    if count >= MAX_UNDEPLOYED_BLOBS || bytes.saturating_add(len) > MAX_UNDEPLOYED_BLOB_BYTES {
        return Err(ControllerError::Conflict(format!(
            "the host holds {count} components ({bytes} bytes) uploaded and not deployed; \
             the limit is {MAX_UNDEPLOYED_BLOBS} ({MAX_UNDEPLOYED_BLOB_BYTES} bytes): deploy them, \
             or wait for those unused for an hour to be removed"
        )));
    }
    Ok(())
}

/// [`Controller::sweep_blobs`]' work on the folder: `used` holds what
/// running services and changes under way need; every record adds its own.
fn sweep(state: &StateDir, blobs: &Mutex<()>, mut used: BTreeSet<Digest>) {
    for (name, record) in state.records() {
        match record {
            Ok(record) => used.extend(record.source.components.into_values()),
            Err(why) => {
                // Its blobs are unknown: keep every blob.
                tracing::warn!(service = %name, error = %why, "cannot read a record; no blob is swept");
                return;
            }
        }
    }
    let _blobs = lock(blobs);
    for digest in state.blobs() {
        let old_enough = state.blob_age(&digest).is_some_and(|age| age >= BLOB_GRACE);
        if old_enough && !used.contains(&digest) {
            state.remove_blob(&digest);
        }
    }
    state.remove_stale_temporaries();
}

#[cfg(test)]
mod undeployed_blob_tests {
    use super::store::{DeploymentSource, Layout};
    use super::*;

    #[test]
    fn blobs_uploaded_and_never_deployed_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path(), Layout::Host).unwrap();
        let upload = |i: usize| -> Result<Digest, ControllerError> {
            let bytes = format!("component {i}").into_bytes();
            let digest = Digest::of(&bytes);
            room_for_undeployed(&state, BTreeSet::new(), &digest, bytes.len())?;
            Ok(state.put_blob(&bytes).unwrap())
        };
        let first = upload(0).unwrap();
        for i in 1..MAX_UNDEPLOYED_BLOBS {
            upload(i).unwrap();
        }
        let refused = upload(MAX_UNDEPLOYED_BLOBS).unwrap_err();
        assert!(
            matches!(refused, ControllerError::Conflict(ref why) if why.contains("not deployed")),
            "{refused:?}"
        );
        // Uploading one already stored again costs nothing.
        assert!(room_for_undeployed(&state, BTreeSet::new(), &first, 100).is_ok());
        // A blob a record names is deployed, so no longer counted.
        let record = DeploymentRecord {
            source: DeploymentSource {
                manifest_file: "weft.toml".into(),
                manifest: "[service]\nname = \"x\"\n".into(),
                environment: None,
                components: [("web".to_owned(), first)].into(),
            },
            overrides: Overrides::default(),
            generation: 1,
        };
        state.save_record("x", &record).unwrap();
        upload(MAX_UNDEPLOYED_BLOBS).unwrap();
        // Bytes are bounded too, whatever the count.
        let big = Digest::of(b"big");
        let too_big = usize::try_from(MAX_UNDEPLOYED_BLOB_BYTES).unwrap();
        let empty = tempfile::tempdir().unwrap();
        let state = StateDir::open(empty.path(), Layout::Host).unwrap();
        assert!(room_for_undeployed(&state, BTreeSet::new(), &big, too_big).is_ok());
        assert!(room_for_undeployed(&state, BTreeSet::new(), &big, too_big + 1).is_err());
    }
}
