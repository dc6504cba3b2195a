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
//! status is read at any time. Blobs that no record in the state folder
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
use status::{HostStatus, OperationStatus, ServiceStatus};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use store::{DeploymentRecord, DeploymentSource, Digest, StateDir};
use weft_runtime::Runtime;

/// How long an unreferenced blob is kept after it was written.
const BLOB_GRACE: Duration = Duration::from_secs(60 * 60);

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
    /// Serializes deploys and removals (the set of services changing).
    changing: tokio::sync::Mutex<()>,
    stopping: AtomicBool,
    /// The components of deploys and upgrades being built, counted: the
    /// sweep keeps them though no record names them yet.
    incoming: Mutex<BTreeMap<Digest, usize>>,
    /// Held while blobs are swept, and while one is checked or stored, so
    /// a blob a client was just told is there is not deleted under it.
    blobs: Mutex<()>,
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
            stopping: AtomicBool::new(false),
            incoming: Mutex::new(BTreeMap::new()),
            blobs: Mutex::new(()),
        })
    }

    fn service(&self, name: &str) -> Result<Arc<Service>, ControllerError> {
        lock(&self.services)
            .get(name)
            .cloned()
            .ok_or_else(|| ControllerError::NotFound(format!("no service '{name}' on this host")))
    }

    fn open_for_changes(&self) -> Result<(), ControllerError> {
        if self.stopping.load(Ordering::Acquire) {
            return Err(ControllerError::Unavailable(
                "the host is shutting down".into(),
            ));
        }
        Ok(())
    }

    /// Redeploys every service the state folder has a record of; returns
    /// each one's name and outcome.
    pub async fn restore(&self) -> Vec<(String, Result<(), ControllerError>)> {
        let mut outcomes = Vec::new();
        for (name, record) in self.host.state.records() {
            let outcome = match record {
                Ok(record) => self.start(&name, record).await.map(|_| ()),
                Err(why) => Err(ControllerError::Internal(why)),
            };
            if let Err(e) = &outcome {
                tracing::error!(service = %name, error = %e, "cannot redeploy the service");
            } else {
                tracing::info!(service = %name, "redeployed from the state folder");
            }
            outcomes.push((name, outcome));
        }
        outcomes
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
        self.sweep_blobs();
        Ok(started?.status(&self.host.runtime.usage()).await)
    }

    async fn start(
        &self,
        name: &str,
        record: DeploymentRecord,
    ) -> Result<Arc<Service>, ControllerError> {
        let _changing = self.changing.lock().await;
        // Shutdown may have begun while this waited its turn.
        self.open_for_changes()?;
        if lock(&self.services).contains_key(name) {
            return Err(ControllerError::Conflict(format!(
                "service '{name}' is already deployed: upgrade it, or remove it first"
            )));
        }
        let manifest = record.manifest().map_err(ControllerError::Invalid)?;
        let need = slots::slots_needed(&manifest, |role| self.host.runs(role));
        self.host.slots.reserve(name, need)?;
        let service = match Service::start(&self.host, name, record.clone()).await {
            Ok(service) => service,
            Err(e) => {
                self.host.slots.release(name);
                return Err(e);
            }
        };
        if let Err(e) = self.host.state.save_record(name, &record) {
            service.stop().await;
            self.host.slots.release(name);
            return Err(ControllerError::Internal(format!(
                "cannot save the deployment record: {e}"
            )));
        }
        lock(&self.services).insert(name.to_owned(), service.clone());
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
        detached(async move { this.upgrade_now(&name, source).await }).await
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
        self.sweep_blobs();
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
        let (service, role) = (self.service(name)?, role.to_owned());
        detached(async move { service.set_settings(&role, settings).await }).await
    }

    /// Sets worker role `role`'s instance count.
    pub fn scale(
        &self,
        name: &str,
        role: &str,
        count: u32,
    ) -> Result<OperationStatus, ControllerError> {
        self.open_for_changes()?;
        self.service(name)?.scale(role, count)
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
            tracing::info!(service = %name, "removed the record of a service that was not running");
            self.sweep_blobs();
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
        self.sweep_blobs();
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
        Ok(HostStatus { services: statuses })
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

    /// Whether blob `digest` is stored (which gives it a fresh grace period).
    pub fn has_blob(&self, digest: &Digest) -> bool {
        let _blobs = lock(&self.blobs);
        self.host.state.has_blob(digest)
    }

    /// Stores `bytes`, which must hash to `digest`.
    pub fn put_blob(&self, digest: &Digest, bytes: &[u8]) -> Result<(), ControllerError> {
        let actual = Digest::of(bytes);
        if &actual != digest {
            return Err(ControllerError::Invalid(format!(
                "the body's digest is {actual}, not {digest}"
            )));
        }
        let _blobs = lock(&self.blobs);
        self.host
            .state
            .put_blob(bytes)
            .map(|_| ())
            .map_err(|e| ControllerError::Internal(format!("cannot store the blob: {e}")))
    }

    /// Drains and stops every service (shutdown); changes are refused from now.
    pub async fn shutdown(&self) {
        self.stopping.store(true, Ordering::Release);
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
    /// client could be about to name them.
    fn sweep_blobs(&self) {
        let mut used: BTreeSet<Digest> = lock(&self.incoming).keys().cloned().collect();
        for (name, record) in self.host.state.records() {
            match record {
                Ok(record) => used.extend(record.source.components.into_values()),
                Err(why) => {
                    // Its blobs are unknown: keep every blob.
                    tracing::warn!(service = %name, error = %why, "cannot read a record; no blob is swept");
                    return;
                }
            }
        }
        let services: Vec<Arc<Service>> = lock(&self.services).values().cloned().collect();
        for service in services {
            used.extend(service.components());
        }
        let _blobs = lock(&self.blobs);
        for digest in self.host.state.blobs() {
            let old_enough = self
                .host
                .state
                .blob_age(&digest)
                .is_some_and(|age| age >= BLOB_GRACE);
            if old_enough && !used.contains(&digest) {
                self.host.state.remove_blob(&digest);
            }
        }
    }
}
