//! Changing a running service domain by domain: rolling upgrades (a new
//! manifest, overlay or component) and settings changes. (Scaling moves no
//! domain: [`RunningService::scale`] does it at once.)
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
//! An upgrade to a whole record (a fabric host's part of a signed service)
//! rolls out its overrides and local part with its source, so the new
//! version starts with the record's settings. A domain's health check is
//! bounded by the timeout too: one that never answers is not healthy.
//!
//! A settings change is an upgrade of one role to a version with the same
//! component and new setting values: web requests read them from the next
//! request on, worker instances are recycled domain by domain. Roles an
//! upgrade does not change keep running untouched.
//!
//! Every operation first reserves the sandbox slots the service will need
//! ([`super::slots`]); one that does not fit the engine's pool is refused.
//!
//! A [`Rollout`] walks the domains; what each step does to a role, web or
//! worker, the role's [`RoleChange`] does.

use super::build::VersionBuilder;
use super::error::ControllerError;
use super::lock::lock;
use super::role::RoleChange;
use super::running::RunningService;
use super::slots::slots_needed;
use super::status::{OperationKind, OperationState, OperationStatus};
use super::store::DeploymentRecord;
use super::workers::DomainHealth;
use crate::manifest::Manifest;
use std::collections::BTreeMap;
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
    service: &'a RunningService,
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
/// rollout with it, as [`RunningService::stop`] expects.
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

/// An operation rolling out over a service.
pub(super) struct Rollout {
    service: Arc<RunningService>,
    kind: OperationKind,
    record: DeploymentRecord,
    manifest: Manifest,
    /// The upgrade domains before it (restored if it is rolled back).
    old_domains: u32,
    /// The slots the service reserved before it, and will need after it.
    old_slots: u32,
    new_slots: u32,
    changes: Vec<RoleChange>,
}

impl Rollout {
    /// Starts a rolling upgrade to the record `target` makes of the one in
    /// force (read once the service is claimed, so no change slips in
    /// between): its source, overrides and local part all roll out
    /// together, so the new version starts as the target says. Its
    /// generation is the service's next, whatever `target` gives.
    pub(super) async fn upgrade(
        service: &Arc<RunningService>,
        target: impl FnOnce(DeploymentRecord) -> DeploymentRecord,
    ) -> Result<OperationStatus, ControllerError> {
        let busy = service.claim()?;
        let running = service.record();
        let generation = running.generation + 1;
        let record = DeploymentRecord {
            generation,
            ..target(running)
        };
        Rollout::launch(service, OperationKind::Upgrade, record, busy).await
    }

    /// Starts a rolling change of role `role`'s settings.
    pub(super) async fn set_settings(
        service: &Arc<RunningService>,
        role: &str,
        settings: BTreeMap<String, String>,
    ) -> Result<OperationStatus, ControllerError> {
        let busy = service.claim()?;
        service.role(role)?;
        let mut record = service.record();
        record.generation += 1;
        record
            .overrides
            .settings
            .entry(role.to_owned())
            .or_default()
            .extend(settings);
        Rollout::launch(service, OperationKind::Settings, record, busy).await
    }

    /// Validates `record` against `service`, builds the versions it
    /// changes, and starts rolling them out, holding `busy` until done.
    pub(super) async fn launch(
        service: &Arc<RunningService>,
        kind: OperationKind,
        record: DeploymentRecord,
        busy: OwnedMutexGuard<()>,
    ) -> Result<OperationStatus, ControllerError> {
        let manifest = record
            .manifest()
            .map_err(|e| ControllerError::Invalid(e.to_string()))?;
        let (old_record, old_manifest) = {
            let state = lock(&service.state);
            (state.record.clone(), state.manifest.clone())
        };
        check_compatible(&service.name, &old_manifest, &manifest)?;
        let host = &service.host;
        // While it rolls out, the service may hold what either version needs.
        let old_slots = host.slots.held(&service.name);
        let new_slots = slots_needed(&manifest, |name| host.runs(name));
        host.slots
            .reserve(&service.name, old_slots.max(new_slots))?;
        // Until the rollout is spawned, a failure, or shutdown cancelling
        // the build where it waits, gives the extra slots back.
        let mut reserved = SlotsBack {
            service,
            old_slots: Some(old_slots),
        };
        let builder = VersionBuilder {
            host,
            manifest: &manifest,
            record: &record,
            backends: &service.backends,
        };
        let mut changes = Vec::new();
        for (name, role) in &service.roles {
            let changed = old_record.source.components.get(name)
                != record.source.components.get(name)
                || old_manifest.roles[name].definition() != manifest.roles[name].definition();
            if changed {
                changes.push(role.change(name, &builder).await?);
            }
        }
        let operation = OperationStatus {
            kind,
            state: OperationState::Running,
            step: "starting".into(),
            steps: vec!["starting".into()],
            generation: record.generation,
            domains_done: 0,
            domains: manifest.upgrade.domains,
            reason: None,
        };
        let incoming = record.source.components.values().cloned().collect();
        let rollout = Rollout {
            service: service.clone(),
            kind,
            record,
            manifest,
            old_domains: old_manifest.upgrade.domains,
            old_slots,
            new_slots,
            changes,
        };
        let failing = service.clone();
        service.begin(operation.clone(), incoming, async move {
            let _busy = busy;
            contained(rollout.run(), |why| failing.rollout_failed(&why)).await;
        })?;
        // From here the rollout gives the slots back as it ends.
        reserved.old_slots = None;
        Ok(operation)
    }

    fn progress(&self, step: String, domains_done: u32) {
        self.service.progress(step, domains_done);
    }

    async fn run(self) {
        let policy = self.manifest.upgrade;
        let generation = self.record.generation;
        if self.changes.is_empty() {
            // Instance counts at most: nothing to move domain by domain.
            self.progress("no role's version changed".into(), 0);
            return self.commit().await;
        }
        // New web versions start (start hook, health) before taking traffic.
        for change in &self.changes {
            if change.starts() {
                self.progress(
                    format!("starting role '{}' generation {generation}", change.name()),
                    0,
                );
            }
            if let Err(why) = change.start(policy.timeout).await {
                let reason = format!("role '{}': {why}", change.name());
                return self.roll_back(0, reason).await;
            }
        }
        for change in &self.changes {
            change.split(policy.domains);
        }
        for domain in 0..policy.domains {
            let of = policy.domains;
            self.progress(format!("domain {} of {of}: moving", domain + 1), domain);
            let moved_at = Instant::now();
            for change in &self.changes {
                change.move_domain(domain);
            }
            self.progress(
                format!("domain {} of {of}: waiting for health", domain + 1),
                domain,
            );
            if let Err(why) = self.wait_healthy(domain, moved_at).await {
                let reason = format!("domain {} of {of}: {why}", domain + 1);
                return self.roll_back(domain + 1, reason).await;
            }
        }
        self.commit().await;
    }

    /// Waits until domain `domain` of every changed role is healthy at the
    /// new generation for the settle time, or says why not.
    async fn wait_healthy(&self, domain: u32, moved_at: Instant) -> Result<(), String> {
        let policy = self.manifest.upgrade;
        // The manifest bounds the timeout; checked all the same, as an
        // overflow here would panic the rollout and leak its slots.
        let give_up = moved_at
            .checked_add(policy.timeout)
            .unwrap_or(moved_at + MAX_DOMAIN_WAIT);
        let mut healthy_since: Option<Instant> = None;
        let timed_out = || format!("not healthy within {} s", policy.timeout.as_secs());
        loop {
            let mut all_healthy = true;
            for change in &self.changes {
                // A health check that hangs (a web version's probe that
                // never answers) must not hold the rollout past its bound.
                let health =
                    tokio::time::timeout_at(give_up.into(), change.health(domain, moved_at)).await;
                match health {
                    Ok(DomainHealth::Healthy) => {}
                    Ok(DomainHealth::Waiting) => all_healthy = false,
                    Ok(DomainHealth::Failed(why)) => {
                        return Err(format!("role '{}': {why}", change.name()));
                    }
                    Err(_) => {
                        let why = timed_out();
                        return Err(format!(
                            "role '{}': {why} (its health check did not answer)",
                            change.name()
                        ));
                    }
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
                return Err(timed_out());
            }
            tokio::time::sleep(HEALTH_INTERVAL).await;
        }
    }

    /// Moves the first `moved` domains back and ends the operation rolled
    /// back, for `reason`.
    async fn roll_back(&self, moved: u32, reason: String) {
        let service = &self.service;
        // A stopping service's fronts are closed and its pools stopped:
        // re-routing them would only reopen what the stop closed.
        if service.is_stopped() {
            return;
        }
        tracing::warn!(service = %service.name, %reason, "rolling back");
        self.progress(format!("rolling back: {reason}"), moved);
        // The roles it changed split again into as many domains as before
        // (the others were never re-split).
        for change in &self.changes {
            change.roll_back(moved, self.old_domains, service.host.grace);
        }
        service.host.slots.set(&service.name, self.old_slots);
        let mut state = lock(&service.state);
        state.incoming.clear();
        let kept = state.record.generation;
        if let Some(operation) = &mut state.operation {
            operation.state = OperationState::RolledBack;
            operation.record(format!("rolled back to generation {kept}"));
            operation.reason = Some(reason);
        }
    }

    async fn commit(self) {
        let service = &self.service;
        // Stopping aborts the rollout; should it have got this far, the
        // stopped pools and the closing store are left alone.
        if service.is_stopped() {
            return;
        }
        // The record first: if it cannot be saved, the operation fails and
        // the service goes back to what the record on disk says, rather
        // than running a version a restart would not bring back.
        if let Err(e) = service
            .host
            .state
            .save_record_off_thread(&service.name, &self.record)
            .await
        {
            tracing::error!(service = %service.name, error = %e, "cannot save the deployment record");
            let moved = self.manifest.upgrade.domains;
            let reason = e.to_string();
            return self.roll_back(moved, reason).await;
        }
        for change in &self.changes {
            change.commit(service.host.grace);
        }
        // Every role, changed or not, now splits into the new number of
        // upgrade domains; worker pools take their new instance counts.
        let domains = self.manifest.upgrade.domains;
        for (name, role) in &service.roles {
            role.settle(domains, self.manifest.roles[name].instances());
        }
        service.host.slots.set(&service.name, self.new_slots);
        // The new manifest's `[buckets.NAME]` tables apply from now on: the
        // memory and embedded backends keep each entry's deadline from its
        // write, NATS applies the new TTL to every entry at once (a shorter
        // one expires older entries now). A backend that cannot take them
        // now keeps the old ones until the service restarts.
        if let Err(e) = service.backends.configure_buckets(&self.manifest).await {
            tracing::warn!(service = %service.name, error = %e, "cannot apply the new bucket settings");
        }
        let generation = self.record.generation;
        let kind = self.kind;
        let mut state = lock(&service.state);
        state.record = self.record;
        state.manifest = self.manifest;
        state.incoming.clear();
        if let Some(operation) = &mut state.operation {
            operation.state = OperationState::Done;
            operation.record(format!("{kind} to generation {generation} done"));
            operation.domains_done = operation.domains;
        }
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
        if before.kind() != after.kind() {
            return refuse(format!("roles.{role}.kind"));
        }
        if before.listen() != after.listen() {
            return refuse(format!("roles.{role}.listen"));
        }
    }
    if old.queues.in_force() != new.queues.in_force() {
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
