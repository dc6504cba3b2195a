//! Changing a running service: rolling upgrades (a new manifest, overlay or
//! component), settings changes, and scaling.
//!
//! An upgrade or a settings change builds the new version of every role it
//! changes before anything moves (a malformed component or manifest is
//! refused with nothing disturbed), then rolls it out by upgrade domain:
//!
//! 1. Each changed web role's new version is started (its start hook, then
//!    its health path) while the old one serves every request.
//! 2. For each domain in turn: the domain's share of each changed web
//!    role's requests, and the domain's worker instances (each drained
//!    first: it finishes its batch, returns, runs its stop hook), move to
//!    the new version. The rollout then waits until the domain is healthy
//!    for the settle time: each moved worker instance ready, none failed,
//!    and each changed web role's health path answering 2xx.
//! 3. If a domain is not healthy within the timeout, or fails, every moved
//!    domain moves back to the old version, and the new one is drained and
//!    dropped: the upgrade is *rolled back*, and the record is unchanged.
//! 4. Otherwise the new record is saved (if it cannot be, the upgrade is
//!    rolled back as in 3), the old web versions drain (in-flight requests
//!    finish) and stop, every role splits into the new number of upgrade
//!    domains, and worker pools take their new instance counts: the
//!    upgrade is *done*.
//!
//! A settings change is an upgrade of one role to a version with the same
//! component and new setting values: web requests read them from the next
//! request on, worker instances are recycled domain by domain. Roles an
//! upgrade does not change keep running untouched. Scaling starts new
//! worker instances at once, or drains the highest-numbered ones, once the
//! record saying so is saved.
//!
//! Every operation first reserves the sandbox slots the service will need
//! ([`super::slots`]); one that does not fit the engine's pool is refused.

use super::ControllerError;
use super::service::{RoleRunner, Service, Version, build_version, lock};
use super::slots::slots_needed;
use super::status::OperationStatus;
use super::store::{DeploymentRecord, DeploymentSource};
use super::workers::DomainHealth;
use crate::manifest::{Manifest, Role};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::OwnedMutexGuard;

/// How often a moving domain's health is checked.
const HEALTH_INTERVAL: Duration = Duration::from_millis(100);

/// The longest a domain is ever given to become healthy, whatever the
/// manifest says (it allows at most a day).
const MAX_DOMAIN_WAIT: Duration = Duration::from_secs(24 * 60 * 60);

/// Sets a service's reservation back to what it held before an operation,
/// when dropped before the operation's rollout began.
struct SlotsBack<'a> {
    service: &'a Service,
    /// `None` once the rollout owns the reservation.
    old_slots: Option<u32>,
}

impl Drop for SlotsBack<'_> {
    fn drop(&mut self) {
        if let Some(old_slots) = self.old_slots {
            let service = self.service;
            service.host.slots.set(&service.name, old_slots);
        }
    }
}

/// Runs `rollout` in a task of its own and awaits it; if it panics,
/// `on_panic` is told why. Dropping (aborting) the caller aborts the
/// rollout with it, as [`Service::stop`] expects.
async fn contained(
    rollout: impl Future<Output = ()> + Send + 'static,
    on_panic: impl FnOnce(String),
) {
    struct AbortOnDrop(tokio::task::AbortHandle);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let task = tokio::spawn(rollout);
    let _abort = AbortOnDrop(task.abort_handle());
    if let Err(e) = task.await
        && e.is_panic()
    {
        let payload = e.into_panic();
        let why = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_owned());
        on_panic(why);
    }
}

/// What an operation does to one role.
struct RoleChange {
    name: String,
    old: Version,
    new: Version,
}

/// An operation ready to roll out.
struct Plan {
    kind: &'static str,
    record: DeploymentRecord,
    manifest: Manifest,
    /// The upgrade domains before it (restored if it is rolled back).
    old_domains: u32,
    /// The slots the service reserved before it, and will need after it.
    old_slots: u32,
    new_slots: u32,
    changes: Vec<RoleChange>,
}

impl Service {
    /// Starts a rolling upgrade to `source` (overrides made through the API
    /// are dropped: the new manifest and overlay are the whole truth).
    pub async fn upgrade(
        self: &Arc<Self>,
        source: DeploymentSource,
    ) -> Result<OperationStatus, ControllerError> {
        let busy = self.claim()?;
        let generation = self.record().generation + 1;
        let record = DeploymentRecord {
            source,
            overrides: super::Overrides::default(),
            generation,
        };
        self.roll_out("upgrade", record, busy).await
    }

    /// Starts a rolling change of role `role`'s settings.
    pub async fn set_settings(
        self: &Arc<Self>,
        role: &str,
        settings: BTreeMap<String, String>,
    ) -> Result<OperationStatus, ControllerError> {
        let busy = self.claim()?;
        self.role_runner(role)?;
        let mut record = self.record();
        record.generation += 1;
        record
            .overrides
            .settings
            .entry(role.to_owned())
            .or_default()
            .extend(settings);
        self.roll_out("settings", record, busy).await
    }

    /// Sets worker role `role`'s instance count.
    pub async fn scale(&self, role: &str, count: u32) -> Result<OperationStatus, ControllerError> {
        let _busy = self.claim()?;
        self.still_running()?;
        let RoleRunner::Worker(pool) = self.role_runner(role)? else {
            return Err(ControllerError::Invalid(format!(
                "roles.{role}: a web role gets a fresh instance per request; only worker roles scale"
            )));
        };
        let mut record = self.record();
        record.overrides.instances.insert(role.to_owned(), count);
        let manifest = record.manifest().map_err(ControllerError::Invalid)?;
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
            return Err(ControllerError::Internal(format!(
                "cannot save the deployment record: {e}"
            )));
        }
        pool.scale(count);
        let operation = OperationStatus {
            kind: "scale".into(),
            state: "done".into(),
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

    fn claim(&self) -> Result<OwnedMutexGuard<()>, ControllerError> {
        self.busy.clone().try_lock_owned().map_err(|_| {
            ControllerError::Conflict(format!(
                "service '{}' is changing (see `weft status`); try again when it is done",
                self.name
            ))
        })
    }

    fn role_runner(&self, role: &str) -> Result<&RoleRunner, ControllerError> {
        self.roles.get(role).ok_or_else(|| {
            ControllerError::NotFound(format!("service '{}' has no role '{role}' here", self.name))
        })
    }

    /// Validates `record` against the running service, builds the versions
    /// it changes, and spawns the rollout.
    async fn roll_out(
        self: &Arc<Self>,
        kind: &'static str,
        record: DeploymentRecord,
        busy: OwnedMutexGuard<()>,
    ) -> Result<OperationStatus, ControllerError> {
        let manifest = record.manifest().map_err(ControllerError::Invalid)?;
        let (old_record, old_manifest) = {
            let state = lock(&self.state);
            (state.record.clone(), state.manifest.clone())
        };
        check_compatible(&self.name, &old_manifest, &manifest)?;
        // While it rolls out, the service may hold what either version needs.
        let old_slots = self.host.slots.held(&self.name);
        let new_slots = slots_needed(&manifest, |name| self.host.runs(name));
        self.host
            .slots
            .reserve(&self.name, old_slots.max(new_slots))?;
        // Until the rollout is spawned, a failure, or shutdown cancelling
        // the build where it waits, gives the extra slots back.
        let mut reserved = SlotsBack {
            service: self,
            old_slots: Some(old_slots),
        };
        let changes = self
            .build_changes(&old_record, &old_manifest, &record, &manifest)
            .await?;
        let operation = OperationStatus {
            kind: kind.into(),
            state: "running".into(),
            step: "starting".into(),
            steps: vec!["starting".into()],
            generation: record.generation,
            domains_done: 0,
            domains: manifest.upgrade.domains,
            reason: None,
        };
        let plan = Plan {
            kind,
            record,
            manifest,
            old_domains: old_manifest.upgrade.domains,
            old_slots,
            new_slots,
            changes,
        };
        // Building took a while: the service may have been stopped since.
        // Checked under the lock `stop` sets the flag under, so the
        // rollout is either spawned before `stop` aborts it, or never.
        let mut rollout = lock(&self.rollout);
        self.still_running()?;
        // From here the rollout gives the slots back as it ends.
        reserved.old_slots = None;
        {
            let mut state = lock(&self.state);
            state.operation = Some(operation.clone());
            state.incoming = plan.record.source.components.values().cloned().collect();
        }
        let service = self.clone();
        *rollout = Some(tokio::spawn(async move {
            let _busy = busy;
            let rolling = service.clone().roll(plan);
            contained(rolling, |why| service.rollout_failed(&why)).await;
        }));
        Ok(operation)
    }

    /// Marks the operation failed after its rollout panicked (a bug): its
    /// state and step say so, rather than `running` for ever. The service
    /// keeps the larger reservation of the two versions, which may both
    /// hold instances, until its next operation or its removal.
    fn rollout_failed(&self, why: &str) {
        tracing::error!(service = %self.name, reason = %why, "the rollout failed unexpectedly");
        let mut state = lock(&self.state);
        state.incoming.clear();
        if let Some(operation) = &mut state.operation {
            operation.state = "failed".into();
            operation.record("failed unexpectedly: see the host's log and `weft status`".into());
            operation.reason = Some(format!("the rollout failed unexpectedly: {why}"));
        }
    }

    /// Builds the new version of every role `record` changes.
    async fn build_changes(
        &self,
        old_record: &DeploymentRecord,
        old_manifest: &Manifest,
        record: &DeploymentRecord,
        manifest: &Manifest,
    ) -> Result<Vec<RoleChange>, ControllerError> {
        let mut changes = Vec::new();
        for (name, runner) in &self.roles {
            let changed = old_record.source.components.get(name)
                != record.source.components.get(name)
                || definition(&old_manifest.roles[name]) != definition(&manifest.roles[name]);
            if !changed {
                continue;
            }
            let new = build_version(&self.host, manifest, name, record, &self.backends).await?;
            let old = match runner {
                RoleRunner::Web(web) => Version::Web(lock(&web.current).clone()),
                RoleRunner::Worker(pool) => Version::Worker(pool.current()),
            };
            changes.push(RoleChange {
                name: name.clone(),
                old,
                new,
            });
        }
        Ok(changes)
    }

    fn progress(&self, step: String, domains_done: u32) {
        if let Some(operation) = &mut lock(&self.state).operation {
            tracing::info!(service = %self.name, kind = %operation.kind, %step, "rollout");
            operation.record(step);
            operation.domains_done = domains_done;
        }
    }

    async fn roll(self: Arc<Self>, plan: Plan) {
        let policy = plan.manifest.upgrade;
        let generation = plan.record.generation;
        if plan.changes.is_empty() {
            // Instance counts at most: nothing to move domain by domain.
            self.progress("no role's version changed".into(), 0);
            return self.commit(plan).await;
        }
        // New web versions start (start hook, health) before taking traffic.
        for change in &plan.changes {
            if let Version::Web(new) = &change.new {
                self.progress(
                    format!("starting role '{}' generation {generation}", change.name),
                    0,
                );
                if let Err(why) = new.start(policy.timeout).await {
                    let reason = format!("role '{}': {why}", change.name);
                    return self.roll_back(&plan, 0, reason).await;
                }
            }
        }
        for change in &plan.changes {
            match (&self.roles[&change.name], &change.old) {
                (RoleRunner::Web(web), Version::Web(old)) => {
                    web.front.route_all(old, policy.domains)
                }
                (RoleRunner::Worker(pool), _) => pool.set_domains(policy.domains),
                _ => {}
            }
        }
        for domain in 0..policy.domains {
            let of = policy.domains;
            self.progress(format!("domain {} of {of}: moving", domain + 1), domain);
            let moved_at = Instant::now();
            for change in &plan.changes {
                self.route(&change.name, domain, &change.new);
            }
            self.progress(
                format!("domain {} of {of}: waiting for health", domain + 1),
                domain,
            );
            if let Err(why) = self.wait_healthy(&plan, domain, moved_at).await {
                let reason = format!("domain {} of {of}: {why}", domain + 1);
                return self.roll_back(&plan, domain + 1, reason).await;
            }
        }
        self.commit(plan).await;
    }

    /// Sends domain `domain` of role `name` to `version`.
    fn route(&self, name: &str, domain: u32, version: &Version) {
        match (&self.roles[name], version) {
            (RoleRunner::Web(web), Version::Web(version)) => web.front.move_domain(domain, version),
            (RoleRunner::Worker(pool), Version::Worker(version)) => {
                pool.move_domain(domain, version);
            }
            _ => {}
        }
    }

    /// Waits until domain `domain` of every changed role is healthy at the
    /// new generation for the settle time, or says why not.
    async fn wait_healthy(
        &self,
        plan: &Plan,
        domain: u32,
        moved_at: Instant,
    ) -> Result<(), String> {
        let policy = plan.manifest.upgrade;
        // The manifest bounds the timeout; checked all the same, as an
        // overflow here would panic the rollout and leak its slots.
        let give_up = moved_at
            .checked_add(policy.timeout)
            .unwrap_or(moved_at + MAX_DOMAIN_WAIT);
        let mut healthy_since: Option<Instant> = None;
        loop {
            let mut all_healthy = true;
            for change in &plan.changes {
                match (&self.roles[&change.name], &change.new) {
                    (RoleRunner::Web(_), Version::Web(new)) => {
                        if let Err(why) = new.probe().await {
                            return Err(format!("role '{}': {why}", change.name));
                        }
                    }
                    (RoleRunner::Worker(pool), Version::Worker(new)) => {
                        match pool.domain_health(
                            domain,
                            new.info.generation,
                            moved_at,
                            Duration::ZERO,
                        ) {
                            DomainHealth::Healthy => {}
                            DomainHealth::Waiting => all_healthy = false,
                            DomainHealth::Failed(why) => {
                                return Err(format!("role '{}': {why}", change.name));
                            }
                        }
                    }
                    _ => {}
                }
            }
            let now = Instant::now();
            if all_healthy {
                let since = *healthy_since.get_or_insert(now);
                if now.saturating_duration_since(since) >= policy.settle {
                    return Ok(());
                }
            } else {
                healthy_since = None;
            }
            if now >= give_up {
                return Err(format!("not healthy within {} s", policy.timeout.as_secs()));
            }
            tokio::time::sleep(HEALTH_INTERVAL).await;
        }
    }

    async fn roll_back(&self, plan: &Plan, moved: u32, reason: String) {
        // A stopping service's fronts are closed and its pools stopped:
        // re-routing them would only reopen what the stop closed.
        if self.is_stopped() {
            return;
        }
        tracing::warn!(service = %self.name, %reason, "rolling back");
        self.progress(format!("rolling back: {reason}"), moved);
        for change in &plan.changes {
            for domain in 0..moved {
                self.route(&change.name, domain, &change.old);
            }
            // The roles it changed split again into as many domains as
            // before (the others were never re-split).
            match (&self.roles[&change.name], &change.old, &change.new) {
                (RoleRunner::Web(web), Version::Web(old), Version::Web(new)) => {
                    web.front.route_all(old, plan.old_domains);
                    web.front.retire(new.clone(), self.host.grace);
                }
                (RoleRunner::Worker(pool), _, _) => pool.set_domains(plan.old_domains),
                _ => {}
            }
        }
        self.host.slots.set(&self.name, plan.old_slots);
        let mut state = lock(&self.state);
        state.incoming.clear();
        let kept = state.record.generation;
        if let Some(operation) = &mut state.operation {
            operation.state = "rolled-back".into();
            operation.record(format!("rolled back to generation {kept}"));
            operation.reason = Some(reason);
        }
    }

    async fn commit(&self, plan: Plan) {
        // Stopping aborts the rollout; should it have got this far, the
        // stopped pools and the closing store are left alone.
        if self.is_stopped() {
            return;
        }
        // The record first: if it cannot be saved, the operation fails and
        // the service goes back to what the record on disk says, rather
        // than running a version a restart would not bring back.
        if let Err(e) = self
            .host
            .state
            .save_record_off_thread(&self.name, &plan.record)
            .await
        {
            tracing::error!(service = %self.name, error = %e, "cannot save the deployment record");
            let moved = plan.manifest.upgrade.domains;
            let reason = format!("cannot save the deployment record: {e}");
            return self.roll_back(&plan, moved, reason).await;
        }
        for change in &plan.changes {
            match (&self.roles[&change.name], &change.old, &change.new) {
                (RoleRunner::Web(web), Version::Web(old), Version::Web(new)) => {
                    *lock(&web.current) = new.clone();
                    web.front.retire(old.clone(), self.host.grace);
                }
                (RoleRunner::Worker(pool), _, Version::Worker(new)) => {
                    pool.set_current(new.clone())
                }
                _ => {}
            }
        }
        // Every role, changed or not, now splits into the new number of
        // upgrade domains; worker pools take their new instance counts.
        let domains = plan.manifest.upgrade.domains;
        for (name, runner) in &self.roles {
            match runner {
                RoleRunner::Web(web) => {
                    let current = lock(&web.current).clone();
                    web.front.route_all(&current, domains);
                }
                RoleRunner::Worker(pool) => {
                    pool.set_domains(domains);
                    pool.scale(plan.manifest.roles[name].instances);
                }
            }
        }
        self.host.slots.set(&self.name, plan.new_slots);
        let generation = plan.record.generation;
        let mut state = lock(&self.state);
        state.record = plan.record;
        state.manifest = plan.manifest;
        state.incoming.clear();
        if let Some(operation) = &mut state.operation {
            operation.state = "done".into();
            operation.record(format!("{} to generation {generation} done", plan.kind));
            operation.domains_done = operation.domains;
        }
    }
}

/// What makes two versions of a role differ, beyond its component: every
/// field but the instance count and where the component came from.
fn definition(role: &Role) -> Role {
    Role {
        component: PathBuf::new(),
        build: None,
        instances: 0,
        ..role.clone()
    }
}

/// An upgrade keeps the service's shape: the same roles, of the same kinds,
/// on the same addresses, with the same queue backend.
fn check_compatible(name: &str, old: &Manifest, new: &Manifest) -> Result<(), ControllerError> {
    let refuse = |what: String| {
        Err(ControllerError::Invalid(format!(
            "{}: {what} cannot change in an upgrade; remove service '{name}' and deploy it again",
            new.path.display()
        )))
    };
    if new.service != name {
        return Err(ControllerError::Invalid(format!(
            "{}: service.name is '{}', not '{name}'",
            new.path.display(),
            new.service
        )));
    }
    if old.roles.keys().ne(new.roles.keys()) {
        return refuse("the set of roles".into());
    }
    for (role, before) in &old.roles {
        let after = &new.roles[role];
        if before.kind != after.kind {
            return refuse(format!("roles.{role}.kind"));
        }
        if before.listen != after.listen {
            return refuse(format!("roles.{role}.listen"));
        }
    }
    if old.queues != new.queues {
        return refuse("the [queues] table".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test]
    async fn a_panicking_rollout_is_reported_not_left_running() {
        let told = Mutex::new(None);
        contained(
            async {
                let huge = Duration::from_secs(u64::MAX);
                let _ = Instant::now() + huge;
            },
            |why| *told.lock().unwrap() = Some(why),
        )
        .await;
        let why = told.lock().unwrap().take().unwrap();
        assert!(why.contains("overflow"), "{why}");
        // One that ends well tells nothing.
        contained(async {}, |why| panic!("told {why}")).await;
    }

    #[tokio::test]
    async fn aborting_the_caller_aborts_the_rollout() {
        let finished = Arc::new(AtomicBool::new(false));
        let flag = finished.clone();
        let caller = tokio::spawn(contained(
            async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                flag.store(true, Ordering::SeqCst);
            },
            |_| {},
        ));
        tokio::time::sleep(Duration::from_millis(50)).await;
        caller.abort();
        let _ = caller.await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!finished.load(Ordering::SeqCst));
    }
}
