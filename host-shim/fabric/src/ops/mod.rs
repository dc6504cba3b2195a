//! [`Operator`]: what the operator CLI does to a fabric. It writes desired
//! state (`svc.<name>`, signed with the operator's key, by compare-and-set)
//! and members' drain flags, and reads everything else to report: status,
//! members, endpoints. It never writes a placement: that is the leader's.
//!
//! A change is refused before anything is written when it cannot be run:
//! a manifest that does not resolve, queues kept on one host's disk, more
//! than the members can hold, or a service still converging on its last
//! change (one change at a time keeps every host's rollout simple). A
//! change over the current record (upgrade, scale, settings) is signed
//! only once that record verifies against the operator's trusted keys and
//! chains to the change before it ([`crate::desired`]): the CLI never
//! re-signs what someone else planted.
//!
//! - `snapshot`: one read of every record.
//! - `capacity`: the placement's view, to refuse what cannot fit.
//! - [`status`], [`hosts`], [`endpoints`]: the reports, pure over a snapshot.
//! - `wait`: following a change until the fabric runs it.
//! - [`logs`]: guest output, asked of each host that runs the service.

mod capacity;
pub mod endpoints;
pub mod hosts;
pub mod logs;
mod snapshot;
pub mod status;
mod wait;

pub use endpoints::{Endpoints, check_backend_name, haproxy_backend};
pub use hosts::{FabricHosts, HostReport, LeaderReport};
pub use snapshot::Snapshot;
pub use status::{FabricStatus, HostRolePart, RoleReport, ServiceReport};

use crate::blobs;
use crate::desired;
use crate::error::{FabricError, one_line};
use crate::model::{Desired, HostRecord, SignedDesired};
use crate::names::{host_key, service_key};
use crate::signing::{SigningKey, TrustedKeys};
use crate::store::{Bucket, FabricStore, Versioned};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};
use weft_host::controller::store::{DeploymentRecord, DeploymentSource, Digest};
use weft_host::environment::Overrides;
use weft_host::local_part::check_fabric_queues;
use weft_host::manifest::Manifest;

/// An operator's hold on a fabric: its store, the key that signs desired
/// state (needed to deploy, upgrade and scale), and the keys whose
/// signatures it builds on (a change re-signs the current record, which
/// must verify first).
pub struct Operator {
    store: FabricStore,
    key: Option<SigningKey>,
    trust: Option<TrustedKeys>,
}

/// A change of desired state that was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The service.
    pub service: String,
    /// The revision of `svc.<name>` written: the one hosts will run.
    pub revision: u64,
    /// The service's generation.
    pub generation: u64,
    /// The components uploaded to the object store (those already there
    /// are not).
    pub uploaded: Vec<Digest>,
}

impl Operator {
    /// An operator over `store`, signing with `key` if given, and
    /// building only on what that key signed.
    pub fn new(store: FabricStore, key: Option<SigningKey>) -> Self {
        Self::with_trust(store, key, None)
    }

    /// An operator over `store`, signing with `key` if given, and building
    /// only on desired state signed by a key in `trust` (none given: by
    /// `key` itself).
    pub fn with_trust(
        store: FabricStore,
        key: Option<SigningKey>,
        trust: Option<TrustedKeys>,
    ) -> Self {
        let trust = trust.or_else(|| key.as_ref().map(TrustedKeys::of_key));
        Self { store, key, trust }
    }

    /// The fabric's store.
    pub fn store(&self) -> &FabricStore {
        &self.store
    }

    /// Deploys a new service from `source`, its components' bytes by
    /// digest in `components`. Refused if it is deployed already.
    pub async fn deploy(
        &self,
        source: DeploymentSource,
        components: BTreeMap<Digest, Bytes>,
    ) -> Result<Written, FabricError> {
        let manifest = resolved(&source, &Overrides::default())?;
        let key = self.key()?;
        let name = manifest.service.clone();
        // Read before the snapshot: a deploy that lands in between makes
        // the compare-and-set below fail instead of being overwritten.
        let replaces = self
            .store
            .last_revision(Bucket::State, &service_key(&name))
            .await?;
        let snapshot = Snapshot::read(&self.store).await?;
        if snapshot.services.contains_key(&name) {
            return Err(already_deployed(&name));
        }
        capacity::check_fits(&snapshot, &name, &manifest)?;
        let uploaded = self.upload(&source, &components).await?;
        let record = DeploymentRecord {
            source,
            overrides: Overrides::default(),
            generation: 1,
            local: None,
        };
        let signed = sign(key, &name, record, replaces)?;
        let service = service_key(&name);
        let written = if replaces == 0 {
            self.store.create(Bucket::State, &service, &signed).await
        } else {
            // A removed service's delete marker is what this replaces.
            self.store
                .update(Bucket::State, &service, &signed, replaces)
                .await
        };
        let revision = written.map_err(|e| match e {
            FabricError::Conflict(_) => already_deployed(&name),
            other => other,
        })?;
        Ok(Written {
            service: name,
            revision,
            generation: 1,
            uploaded,
        })
    }

    /// Upgrades a deployed service to `source` (its scale kept), once it
    /// has converged on its last change.
    pub async fn upgrade(
        &self,
        source: DeploymentSource,
        components: BTreeMap<Digest, Bytes>,
    ) -> Result<Written, FabricError> {
        let declared = resolved(&source, &Overrides::default())?;
        let name = declared.service.clone();
        let key = self.key()?;
        let snapshot = Snapshot::read(&self.store).await?;
        let (current, revision) = self.settled_desired(&snapshot, &name).await?;
        let record = DeploymentRecord {
            source,
            overrides: carried(current.record.overrides, &declared),
            generation: current.record.generation.saturating_add(1),
            local: None,
        };
        let manifest = resolved(&record.source, &record.overrides)?;
        capacity::check_fits(&snapshot, &name, &manifest)?;
        let uploaded = self.upload(&record.source, &components).await?;
        let written = self.replace(key, &name, record, revision).await?;
        Ok(Written {
            uploaded,
            ..written
        })
    }

    /// Sets worker role `role` of service `name` to `count` instances
    /// across the fabric, once the service has converged on its last change.
    pub async fn scale(&self, name: &str, role: &str, count: u32) -> Result<Written, FabricError> {
        let key = self.key()?;
        let snapshot = Snapshot::read(&self.store).await?;
        let (current, revision) = self.settled_desired(&snapshot, name).await?;
        let mut record = current.record;
        record.overrides.instances.insert(role.to_owned(), count);
        // The overrides' own check refuses a web role, an unknown role and
        // a count out of range, each by name.
        let manifest = resolved(&record.source, &record.overrides)?;
        capacity::check_fits(&snapshot, name, &manifest)?;
        self.replace(key, name, record, revision).await
    }

    /// Sets settings `settings` (key → value) of role `role` of service
    /// `name` across the fabric, a new generation the leader rolls out
    /// host by host, once the service has converged on its last change.
    /// A key the role does not declare is refused by name, as is a change
    /// that changes nothing.
    pub async fn settings(
        &self,
        name: &str,
        role: &str,
        settings: &BTreeMap<String, String>,
    ) -> Result<Written, FabricError> {
        let key = self.key()?;
        let snapshot = Snapshot::read(&self.store).await?;
        let (current, revision) = self.settled_desired(&snapshot, name).await?;
        let record = with_settings(current.record, name, role, settings)?;
        self.replace(key, name, record, revision).await
    }

    /// Removes service `name` from the fabric: every host stops it.
    pub async fn remove(&self, name: &str) -> Result<(), FabricError> {
        let key = service_key(name);
        let current = self
            .store
            .get::<SignedDesired>(Bucket::State, &key)
            .await?
            .ok_or_else(|| status::not_deployed(name))?;
        self.store
            .delete(Bucket::State, &key, current.revision)
            .await
            .map_err(|e| match e {
                FabricError::Conflict(_) => changed_meanwhile(name),
                other => other,
            })
    }

    /// Every service's status, or service `name`'s.
    pub async fn status(&self, name: Option<&str>) -> Result<FabricStatus, FabricError> {
        status::fabric_status(&Snapshot::read(&self.store).await?, name)
    }

    /// The members, and who leads.
    pub async fn hosts(&self) -> Result<FabricHosts, FabricError> {
        Ok(hosts::fabric_hosts(&Snapshot::read(&self.store).await?))
    }

    /// Asks the leader to empty host `id`: its instances move elsewhere
    /// and nothing new is placed on it. Its record keeps the flag until
    /// the host joins again.
    pub async fn drain(&self, id: &str) -> Result<(), FabricError> {
        let key = host_key(id);
        // The host rewrites its own record when it joins: retry a race.
        for _ in 0..5 {
            let Some(Versioned {
                value: mut host,
                revision,
            }) = self.store.get::<HostRecord>(Bucket::State, &key).await?
            else {
                return Err(FabricError::NotFound(format!(
                    "host {id} is not a member of the fabric (see weft fabric hosts)"
                )));
            };
            if host.drain {
                return Ok(());
            }
            host.drain = true;
            match self
                .store
                .update(Bucket::State, &key, &host, revision)
                .await
            {
                Ok(_) => return Ok(()),
                Err(FabricError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Err(FabricError::Conflict(format!(
            "host {id}'s record keeps changing; try again"
        )))
    }

    /// Where web role `role` of `service` is ready now, and its health path.
    pub async fn endpoints(&self, service: &str, role: &str) -> Result<Endpoints, FabricError> {
        endpoints::web_endpoints(&Snapshot::read(&self.store).await?, service, role)
    }

    /// Service `name`'s desired state and its revision, refused unless it
    /// verifies (signed by a trusted key, chained to the change before
    /// it: this change re-signs it) and while the fabric is still
    /// converging on it: the leader has not placed that revision, or a
    /// host it placed the service on does not run it yet (and has not
    /// refused it).
    async fn settled_desired(
        &self,
        snapshot: &Snapshot,
        name: &str,
    ) -> Result<(Desired, u64), FabricError> {
        let signed = snapshot
            .services
            .get(name)
            .ok_or_else(|| not_deployed(name))?;
        let trust = self.trust.as_ref().ok_or_else(|| {
            FabricError::Signature(
                "a change to the fabric's desired state must be signed: pass --fabric-key FILE"
                    .into(),
            )
        })?;
        let desired = match desired::verified_newest(&self.store, trust, name, signed).await {
            Ok(desired) => desired,
            Err(e @ FabricError::Signature(_)) => return Err(does_not_verify(name, &e)),
            Err(e) => return Err(e),
        };
        settled(snapshot, name)?;
        Ok((desired, signed.revision))
    }

    fn key(&self) -> Result<&SigningKey, FabricError> {
        self.key.as_ref().ok_or_else(|| {
            FabricError::Signature(
                "a change to the fabric's desired state must be signed: pass --fabric-key FILE"
                    .into(),
            )
        })
    }

    /// Uploads each component `source` names from `components`.
    async fn upload(
        &self,
        source: &DeploymentSource,
        components: &BTreeMap<Digest, Bytes>,
    ) -> Result<Vec<Digest>, FabricError> {
        let mut uploaded = Vec::new();
        for (role, digest) in &source.components {
            let bytes = components.get(digest).ok_or_else(|| {
                FabricError::Refused(format!(
                    "role {role}'s component {digest} was not given to upload"
                ))
            })?;
            if !uploaded.contains(digest)
                && blobs::upload(&self.store, digest, bytes.clone()).await?
            {
                uploaded.push(digest.clone());
            }
        }
        Ok(uploaded)
    }

    /// Signs `record` as replacing revision `revision` of `svc.<name>` and
    /// writes it over exactly that revision.
    async fn replace(
        &self,
        key: &SigningKey,
        name: &str,
        record: DeploymentRecord,
        revision: u64,
    ) -> Result<Written, FabricError> {
        let generation = record.generation;
        let signed = sign(key, name, record, revision)?;
        let revision = self
            .store
            .update(Bucket::State, &service_key(name), &signed, revision)
            .await
            .map_err(|e| match e {
                FabricError::Conflict(_) => changed_meanwhile(name),
                other => other,
            })?;
        Ok(Written {
            service: name.to_owned(),
            revision,
            generation,
            uploaded: Vec::new(),
        })
    }
}

/// The manifest `source` declares with `overrides`, refused if it cannot
/// run in a fabric.
fn resolved(source: &DeploymentSource, overrides: &Overrides) -> Result<Manifest, FabricError> {
    let manifest = source
        .resolve(overrides)
        .map_err(|e| FabricError::Refused(one_line(&e.to_string())))?;
    check_fabric_queues(&manifest.queues)
        .map_err(|e| FabricError::Refused(format!("service {}: {e}", manifest.service)))?;
    Ok(manifest)
}

/// `record` with role `role`'s `settings` set, as the next generation;
/// refused (nothing written) if the manifest does not declare one of the
/// keys, or if every value is already set.
fn with_settings(
    mut record: DeploymentRecord,
    name: &str,
    role: &str,
    settings: &BTreeMap<String, String>,
) -> Result<DeploymentRecord, FabricError> {
    if settings.is_empty() {
        return Err(FabricError::Refused(
            "no setting to change: give KEY=VALUE".into(),
        ));
    }
    let before = resolved(&record.source, &record.overrides)?;
    let unchanged = before.roles.get(role).is_some_and(|spec| {
        settings
            .iter()
            .all(|(key, value)| spec.settings.get(key) == Some(value))
    });
    let role_settings = record
        .overrides
        .settings
        .entry(role.to_owned())
        .or_default();
    role_settings.extend(settings.iter().map(|(k, v)| (k.clone(), v.clone())));
    // The overrides' own check refuses an unknown role and an undeclared
    // key, each by name.
    resolved(&record.source, &record.overrides)?;
    if unchanged {
        return Err(FabricError::Refused(format!(
            "service {name} role {role} has those settings already; nothing was written"
        )));
    }
    record.generation = record.generation.saturating_add(1);
    Ok(record)
}

/// The scale and settings changes that still apply to `manifest` (an
/// upgrade keeps them): a worker role's count, a declared setting's value.
/// Those of roles (or settings) the new manifest dropped go with them.
fn carried(mut overrides: Overrides, manifest: &Manifest) -> Overrides {
    overrides.instances.retain(|role, _| {
        manifest
            .roles
            .get(role)
            .is_some_and(|spec| spec.web().is_none())
    });
    overrides.settings.retain(|role, settings| {
        let Some(spec) = manifest.roles.get(role) else {
            return false;
        };
        settings.retain(|key, _| spec.settings.contains_key(key));
        !settings.is_empty()
    });
    overrides
}

/// Service `name`'s current `svc.<name>` entry (unverified), refused while
/// the fabric is still converging on it.
fn settled<'a>(
    snapshot: &'a Snapshot,
    name: &str,
) -> Result<&'a Versioned<SignedDesired>, FabricError> {
    let signed = snapshot
        .services
        .get(name)
        .ok_or_else(|| not_deployed(name))?;
    if status::is_changing(&status::service_report(snapshot, name)) {
        return Err(FabricError::Conflict(format!(
            "service {name} is changing (see weft status --fabric); try again when it is done"
        )));
    }
    Ok(signed)
}

/// Why service `name`'s current desired state cannot be built on.
fn does_not_verify(name: &str, error: &FabricError) -> FabricError {
    let why = error.to_string();
    let prefix = format!("{}: ", service_key(name));
    let reason = why.strip_prefix(&prefix).unwrap_or(&why);
    FabricError::Signature(format!(
        "{} does not verify ({reason}): deploy it again with a trusted key, or remove it",
        service_key(name)
    ))
}

fn sign(
    key: &SigningKey,
    name: &str,
    record: DeploymentRecord,
    replaces: u64,
) -> Result<SignedDesired, FabricError> {
    let signed_at_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        });
    key.sign(&Desired {
        service: name.to_owned(),
        record,
        replaces,
        signed_at_ms,
    })
}

fn not_deployed(name: &str) -> FabricError {
    FabricError::NotFound(format!(
        "service {name} is not deployed in the fabric: deploy it first"
    ))
}

fn already_deployed(name: &str) -> FabricError {
    FabricError::Conflict(format!(
        "service {name} is already deployed in the fabric: upgrade it, or remove it first"
    ))
}

fn changed_meanwhile(name: &str) -> FabricError {
    FabricError::Conflict(format!(
        "service {name} was changed by someone else meanwhile; nothing was written: look (weft status --fabric) and try again"
    ))
}

#[cfg(test)]
mod rollout_tests;
#[cfg(test)]
mod settings_tests;
#[cfg(test)]
mod tests;
