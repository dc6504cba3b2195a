//! The fabric controller of one host: it deploys services into the host,
//! keeps each role's declared instances running, scales, reconfigures and
//! upgrades them one upgrade domain at a time, and removes them, as the
//! classic cloud fabric's controller did for the guests on each of its
//! hosts. The admin API ([`crate::admin`]) and `weft up` drive it.
//!
//! - [`store`]: the state folder: component blobs by SHA-256, and each
//!   service's deployment record, from which a restarted host redeploys.
//!   `blobs` keeps and sweeps the blobs.
//! - `running`: a service running on this host, the live state of one
//!   deployment: its queue store, its roles and the operation changing it.
//! - `role`: a role, web or worker: what a rollout, a status and a stop
//!   ask of it, answered once per kind; and a role's change of version.
//! - `build`: a role's version built from a record.
//! - [`web`]: a web role's versions and the share of requests each serves
//!   (its listener is [`crate::http_server::WebServer`]).
//! - [`workers`]: a worker role's instance slots, their lifecycle and restarts.
//! - [`instance`]: an instance's lifecycle states; [`version`]: what a
//!   version was built from.
//! - `rollout`: upgrades and settings changes, domain by domain.
//! - [`slots`]: the engine's instance pool, and what each service reserved.
//! - [`status`]: what the API reports, with the operations' kinds and states.
//! - [`data`]: a running service's data (its queues and buckets), as an
//!   operator's tools reach them.
//! - [`context`]: what every service on the host shares; [`error`]: why an
//!   operation was refused.
//!
//! Modules depend one way, with no loop (`tests/module-loops.sh`): this
//! file (the [`Controller`]) on `rollout` and `running`; `rollout` on
//! `running`; both on `role` and `build`; `role` on [`web`] and
//! [`workers`] (and [`crate::http_server`], a web role's listener, which
//! uses [`web`]); every one on the leaves: [`instance`], [`version`],
//! [`status`], [`store`], [`slots`], [`context`] and [`error`].
//!
//! One operation changes a service at a time (another gets 409 Conflict);
//! status is read at any time. Each service starts on its own: a deploy or
//! a restore claims its name and slots under a short lock and builds (and
//! connects to its queue backend) without it, so one slow service holds up
//! no other; status lists the services starting, and those whose redeploy
//! failed. Shutdown cancels every start and every change that has not
//! begun its rollout, giving back what it reserved.

mod blobs;
mod build;
pub mod context;
pub mod data;
pub mod error;
pub mod instance;
mod lock;
mod role;
mod rollout;
mod running;
pub mod slots;
pub mod status;
pub mod store;
pub mod version;
pub mod web;
pub mod workers;

#[cfg(test)]
mod local_tests;
#[cfg(test)]
mod test_support;

pub(crate) use build::LoadedRole;
pub use context::HostContext;
pub use error::{ComponentError, ComponentFault, ControllerError};
pub use version::VersionInfo;

use crate::environment::Overrides;
use blobs::Blobs;
use lock::lock;
use rollout::Rollout;
use running::RunningService;
use status::{HostStatus, OperationStatus, PendingService, PendingState, ServiceStatus};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use store::{DeploymentRecord, DeploymentSource, Digest};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weft_broker::BackendKind;

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
    services: Mutex<BTreeMap<String, Arc<RunningService>>>,
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
    /// The component blobs, and those deploys and upgrades being built need.
    blobs: Blobs,
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

impl Controller {
    /// A controller with no services yet.
    pub fn new(host: HostContext) -> Arc<Self> {
        Arc::new(Self {
            services: Mutex::new(BTreeMap::new()),
            changing: tokio::sync::Mutex::new(()),
            stopping: watch::Sender::new(false),
            starting: watch::Sender::new(BTreeSet::new()),
            failed: Mutex::new(BTreeMap::new()),
            blobs: Blobs::new(host.state.clone()),
            host,
        })
    }

    fn service(&self, name: &str) -> Result<Arc<RunningService>, ControllerError> {
        lock(&self.services)
            .get(name)
            .cloned()
            .ok_or_else(|| ControllerError::NotFound(format!("no service '{name}' on this host")))
    }

    fn open_for_changes(&self) -> Result<(), ControllerError> {
        if *self.stopping.borrow() {
            return Err(ControllerError::shutting_down());
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
            _ = stopping.wait_for(|stopping| *stopping) => Err(ControllerError::shutting_down()),
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
                    .is_ok_and(|m| m.queues.kind() != BackendKind::Embedded)
            });
            let (this, service) = (self.clone(), name.clone());
            let task = tokio::spawn(async move {
                let outcome = match record {
                    Ok(record) => this.start(&service, record).await.map(|_| ()),
                    Err(why) => Err(ControllerError::State(why)),
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
        let record = DeploymentRecord {
            source,
            overrides: Overrides::default(),
            generation: 1,
            local: None,
        };
        self.deploy_record(name, record).await
    }

    /// Deploys a new service `name` from a whole `record`: its generation,
    /// overrides and local part as given (a service that runs on many
    /// hosts is deployed here with this host's part). Like [`Self::deploy`]
    /// it runs to its end in a task of its own.
    pub async fn deploy_record(
        self: &Arc<Self>,
        name: &str,
        record: DeploymentRecord,
    ) -> Result<ServiceStatus, ControllerError> {
        let (this, name) = (self.clone(), name.to_owned());
        detached(async move { this.deploy_now(&name, record).await }).await
    }

    async fn deploy_now(
        &self,
        name: &str,
        record: DeploymentRecord,
    ) -> Result<ServiceStatus, ControllerError> {
        self.open_for_changes()?;
        // Its components stay out of the sweep until the service runs them.
        let incoming = self.blobs.hold(&record.source);
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
    ) -> Result<Arc<RunningService>, ControllerError> {
        let manifest = record
            .manifest()
            .map_err(|e| ControllerError::Invalid(e.to_string()))?;
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
            .unless_stopping(RunningService::start(&self.host, name, record.clone()))
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
                .map(ControllerError::State),
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

    /// Starts a rolling upgrade of service `name` to `source`. Overrides
    /// made through the API are dropped (the new manifest and overlay are
    /// the whole truth); a service that runs on many hosts keeps this
    /// host's part of it.
    pub async fn upgrade(
        self: &Arc<Self>,
        name: &str,
        source: DeploymentSource,
    ) -> Result<OperationStatus, ControllerError> {
        let (this, name) = (self.clone(), name.to_owned());
        let held = source.clone();
        let target = move |running: DeploymentRecord| DeploymentRecord {
            source,
            overrides: Overrides::default(),
            ..running
        };
        detached(async move {
            this.unless_stopping(this.upgrade_now(&name, &held, target))
                .await
        })
        .await
    }

    /// Starts one rolling upgrade of service `name` to the whole `record`:
    /// its source, its overrides (settings, instance counts) and its local
    /// part, so the new version starts with the record's settings from its
    /// first request or instance on. Its generation is this host's next
    /// for the service (the record's own is not used). The roles, their
    /// addresses and the queues must stay as they are, as in every upgrade.
    pub async fn upgrade_record(
        self: &Arc<Self>,
        name: &str,
        record: DeploymentRecord,
    ) -> Result<OperationStatus, ControllerError> {
        let (this, name) = (self.clone(), name.to_owned());
        let held = record.source.clone();
        let target = move |_: DeploymentRecord| record;
        detached(async move {
            this.unless_stopping(this.upgrade_now(&name, &held, target))
                .await
        })
        .await
    }

    /// Upgrades `name` to what `target` makes of its record, keeping the
    /// components of `incoming` (the target's source) from the blob sweep
    /// until the rollout holds them.
    async fn upgrade_now(
        &self,
        name: &str,
        incoming: &DeploymentSource,
        target: impl FnOnce(DeploymentRecord) -> DeploymentRecord,
    ) -> Result<OperationStatus, ControllerError> {
        self.open_for_changes()?;
        let service = self.service(name)?;
        let incoming = self.blobs.hold(incoming);
        // Once the rollout is under way the service keeps its components
        // from the sweep itself.
        let started = Rollout::upgrade(&service, target).await;
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
            this.unless_stopping(Rollout::set_settings(&service, &role, settings))
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
                .map_err(ControllerError::State)?;
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
            .map_err(ControllerError::State)?;
        tracing::info!(service = %name, "removed");
        self.sweep_blobs().await;
        Ok(())
    }

    /// The status of service `name`, or of every service.
    pub async fn status(&self, name: Option<&str>) -> Result<HostStatus, ControllerError> {
        let services: Vec<Arc<RunningService>> = match name {
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

    /// The record service `name` runs now; `None` if it does not run here
    /// (not deployed, still starting, or removed).
    pub fn record(&self, name: &str) -> Option<DeploymentRecord> {
        let service = lock(&self.services).get(name).cloned();
        service.map(|service| service.record())
    }

    /// The names of the services running here (not those starting, nor
    /// those whose redeploy failed).
    pub fn service_names(&self) -> Vec<String> {
        lock(&self.services).keys().cloned().collect()
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
        self.blobs.has(digest).await
    }

    /// Stores `bytes`, which must hash to `digest` (replacing a damaged
    /// copy). Hashed and written on a blocking thread.
    pub async fn put_blob(
        &self,
        digest: &Digest,
        bytes: bytes::Bytes,
    ) -> Result<(), ControllerError> {
        self.blobs.put(digest, bytes, self.blobs_in_use()).await
    }

    /// Drains and stops every service (shutdown); changes are refused from
    /// now, and starts and changes that have not begun their rollout are
    /// cancelled (shutdown waits only for them to unwind).
    pub async fn shutdown(&self) {
        self.stopping.send_replace(true);
        let _ = self.starting.subscribe().wait_for(BTreeSet::is_empty).await;
        let _changing = self.changing.lock().await;
        let services: Vec<Arc<RunningService>> = lock(&self.services).values().cloned().collect();
        // Concurrently: each service's drain is bounded on its own.
        let stops: Vec<_> = services
            .into_iter()
            .map(|service| tokio::spawn(async move { service.stop().await }))
            .collect();
        for stop in stops {
            let _ = stop.await;
        }
    }

    /// Deletes the blobs nothing needs ([`Blobs::sweep`]).
    async fn sweep_blobs(&self) {
        self.blobs.sweep(self.blobs_in_use()).await;
    }

    /// The blobs running services and changes under way need (records add
    /// their own).
    fn blobs_in_use(&self) -> BTreeSet<Digest> {
        let mut used = self.blobs.held();
        let services: Vec<Arc<RunningService>> = lock(&self.services).values().cloned().collect();
        for service in services {
            used.extend(service.components());
        }
        used
    }
}
