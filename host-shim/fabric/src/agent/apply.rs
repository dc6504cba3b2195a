//! The apply loop: on every change of the fabric's state (debounced) and
//! every second, while a leader holds the lease, this host reads each
//! service's assignment and signed desired state, verifies the signature,
//! and takes one step ([`super::decide`]) towards running its part of
//! each service on its own controller.
//!
//! It acts only on an assignment of the current leader's term: a deposed
//! leader's late write changes nothing here. The `svc.<name>` revision it
//! runs is the one the assignment gives this host
//! ([`Assignment::revision_for`]): the newest, or an earlier one while a
//! fabric-wide rollout holds this host back or after it rolled back (read
//! from the bucket's history, and verified like the newest). It removes a
//! service only once both its desired state and its assignment are read as
//! gone, never because a read failed.

use super::decide::{Action, decide};
use super::failure::{Failure, Kind, StepError};
use super::memory::Memory;
use crate::blobs;
use crate::error::FabricError;
use crate::model::{self, Assignment, LeaderRecord, SignedDesired};
use crate::names::{ASSIGNMENT_PREFIX, LEADER_KEY, SERVICE_PREFIX, assignment_key, service_key};
use crate::signing::TrustedKeys;
use crate::store::{Bucket, FabricStore, Versioned};
use futures::{FutureExt, Stream, StreamExt};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use weft_host::controller::status::OperationState;
use weft_host::controller::store::{DeploymentRecord, Digest};
use weft_host::local_part::LocalPart;
use weft_host::manifest::RoleKind;
use weft_host::{Controller, ControllerError};

/// Between rounds when nothing changes.
const ROUND_EVERY: Duration = Duration::from_secs(1);
/// After a change, so that a burst of changes makes one round.
const DEBOUNCE: Duration = Duration::from_millis(100);
/// The largest component the agent fetches.
pub(super) const MAX_COMPONENT_BYTES: usize = 256 * 1024 * 1024;
/// How long an operation under way may keep a step waiting (409 Conflict)
/// before the wait is reported (as a failure that may pass: a host too
/// full to take its part answers 409 too, and would otherwise wait unseen).
const CONFLICT_REPORTED_AFTER: Duration = Duration::from_secs(15);
/// The longest one step may take (its downloads are bounded apart): one
/// that hangs must not stop the loop, which the beat shows by its rounds.
const STEP_WITHIN: Duration = Duration::from_secs(300);

/// What this host is, for its part of each service.
pub(super) struct Here {
    /// Its id.
    pub(super) host_id: String,
    /// The address its web roles listen on.
    pub(super) advertise: IpAddr,
    /// The NATS server that holds the queues of services that name none.
    pub(super) queues_url: String,
}

/// The apply loop's state between rounds.
pub(super) struct Applier {
    store: FabricStore,
    controller: Arc<Controller>,
    trust: Arc<TrustedKeys>,
    here: Here,
    memory: Arc<Memory>,
    failures: BTreeMap<String, Failure>,
    /// Since when a step of each service has met an operation under way.
    conflicts: BTreeMap<String, Instant>,
    /// Rollouts this loop started, by service: the revision and the
    /// generation they move to, watched to learn how they end.
    rollouts: BTreeMap<String, (u64, u64)>,
    /// Deposed leaders' assignments already logged, by service and term.
    stale_logged: BTreeSet<(String, u64)>,
    /// Services whose removal failed (logged once).
    removals_failing: BTreeSet<String>,
    /// Whether a failed read of the store was logged (once until it reads).
    read_failing: bool,
    /// Earlier `svc.<name>` revisions read from the bucket's history (the
    /// one each service runs here while held back or rolled back), so
    /// each is read once.
    earlier: BTreeMap<String, Versioned<SignedDesired>>,
}

type Changes = Pin<Box<dyn Stream<Item = ()> + Send>>;

/// What ended the wait between rounds.
enum Waited {
    Tick,
    Change,
    WatchEnded,
    Shutdown,
}

/// The next change, or never if there is no watch.
async fn next_change(changes: &mut Option<Changes>) -> Option<()> {
    match changes.as_mut() {
        Some(stream) => stream.next().await,
        None => std::future::pending().await,
    }
}

impl Applier {
    /// An apply loop for `here`.
    pub(super) fn new(
        store: FabricStore,
        controller: Arc<Controller>,
        trust: Arc<TrustedKeys>,
        here: Here,
        memory: Arc<Memory>,
    ) -> Self {
        Self {
            store,
            controller,
            trust,
            here,
            memory,
            failures: BTreeMap::new(),
            conflicts: BTreeMap::new(),
            rollouts: BTreeMap::new(),
            stale_logged: BTreeSet::new(),
            removals_failing: BTreeSet::new(),
            read_failing: false,
            earlier: BTreeMap::new(),
        }
    }

    /// Applies until `shutdown` (a step under way is dropped where it
    /// waits; the controller finishes it in its own task).
    pub(super) async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut changes: Option<Changes> = None;
        while !*shutdown.borrow() {
            if changes.is_none() {
                changes = self
                    .store
                    .changes(Bucket::State)
                    .await
                    .ok()
                    .map(|stream| Box::pin(stream) as Changes);
            }
            // Counted for the beat loop, which waits for a round that read
            // the fabric before it beats after a long silence.
            let round = self.memory.round_begins();
            let applied = tokio::select! {
                applied = self.round() => applied,
                _ = shutdown.changed() => break,
            };
            self.memory.round_ends(round, applied);
            let waited = tokio::select! {
                () = tokio::time::sleep(ROUND_EVERY) => Waited::Tick,
                change = next_change(&mut changes) => match change {
                    Some(()) => Waited::Change,
                    None => Waited::WatchEnded,
                },
                _ = shutdown.changed() => Waited::Shutdown,
            };
            match waited {
                Waited::Tick => {}
                Waited::Change => {
                    tokio::time::sleep(DEBOUNCE).await;
                    if let Some(stream) = changes.as_mut() {
                        while let Some(Some(())) = stream.next().now_or_never() {}
                    }
                }
                // The server went away: tick, and watch again next round.
                Waited::WatchEnded => changes = None,
                Waited::Shutdown => break,
            }
        }
    }

    /// One round over every service assigned or running here: whether it
    /// read the fabric in full and applied every assignment (none skipped
    /// for another term, the lease unchanged while it read).
    async fn round(&mut self) -> bool {
        let read = async {
            let leader = self
                .store
                .get::<LeaderRecord>(Bucket::State, LEADER_KEY)
                .await?;
            let assignments = self
                .store
                .list::<Assignment>(Bucket::State, ASSIGNMENT_PREFIX)
                .await?;
            let services = self
                .store
                .list::<SignedDesired>(Bucket::State, SERVICE_PREFIX)
                .await?;
            // Read again: the assignments are the term's only if the lease
            // did not change hands while they were read. The term, not the
            // entry's revision, is compared: a renewal changes the revision
            // every 2 s and no hands.
            let leader_after = self
                .store
                .get::<LeaderRecord>(Bucket::State, LEADER_KEY)
                .await?;
            let term = |l: &Option<Versioned<LeaderRecord>>| l.as_ref().map(|l| l.value.term);
            let same_lease = term(&leader) == term(&leader_after);
            Ok::<_, FabricError>((leader.filter(|_| same_lease), assignments, services))
        };
        let (leader, assignments, services) = match read.await {
            Ok(read) => {
                if self.read_failing {
                    self.read_failing = false;
                    tracing::info!("the agent reads the fabric's state again");
                }
                read
            }
            Err(e) => {
                if !self.read_failing {
                    self.read_failing = true;
                    tracing::warn!(error = %e, "cannot read the fabric's state; this host keeps what it runs");
                }
                return false;
            }
        };
        // Without a leader (or while the lease changes hands) nothing is
        // placed: keep what runs.
        let Some(leader) = leader else { return false };
        let mut applied = true;
        let mut names: BTreeSet<String> = assignments.keys().cloned().collect();
        names.extend(self.controller.service_names());
        for name in names {
            match assignments.get(&name) {
                Some(assignment) => {
                    applied &= assignment.value.term == leader.value.term;
                    self.apply_assigned(
                        &name,
                        leader.value.term,
                        &assignment.value,
                        services.get(&name),
                    )
                    .await;
                }
                None => self.remove_if_gone(&name).await,
            }
        }
        // A service no longer assigned is no longer refused.
        let unassigned: Vec<String> = self
            .failures
            .keys()
            .filter(|name| !assignments.contains_key(*name))
            .cloned()
            .collect();
        for name in unassigned {
            self.failures.remove(&name);
            self.memory.unrefuse(&name);
        }
        self.conflicts
            .retain(|name, _| assignments.contains_key(name));
        self.earlier
            .retain(|name, _| assignments.contains_key(name));
        self.rollouts
            .retain(|name, _| assignments.contains_key(name));
        self.stale_logged
            .retain(|(name, term)| assignments.get(name).is_some_and(|a| a.value.term == *term));
        applied
    }

    /// Takes one step of service `name`, assigned by `assignment`.
    async fn apply_assigned(
        &mut self,
        name: &str,
        term: u64,
        assignment: &Assignment,
        signed: Option<&Versioned<SignedDesired>>,
    ) {
        if assignment.term != term {
            if assignment.term < term
                && self.stale_logged.insert((name.to_owned(), assignment.term))
            {
                tracing::info!(service = %name, assignment_term = assignment.term, leader_term = term,
                    "ignoring an assignment written by a deposed leader until the leader rewrites it");
            }
            return;
        }
        // Its desired state is gone: it is removed once its assignment is.
        let Some(newest) = signed else { return };
        let revision = assignment.revision_for(&self.here.host_id);
        if self
            .failures
            .get(name)
            .is_some_and(|f| f.revision != revision)
        {
            self.failures.remove(name);
            self.memory.unrefuse(name);
        }
        let running = self.controller.record(name);
        let part = assignment.part_of(&self.here.host_id);
        if running.as_ref().is_some_and(|r| r.local.is_none()) {
            if !part.is_empty() {
                let why = format!(
                    "service '{name}' runs on this host outside the fabric (deployed through its admin API); remove it there first"
                );
                self.fail(name, revision, why, Kind::Refused);
            }
            return;
        }
        if part.is_empty() {
            // Stopping runs nothing new: no wait after a failure, no
            // signature to check first.
            if running.is_some() {
                let outcome = self.remove(name).await;
                self.settle(name, revision, outcome);
            }
            return;
        }
        if self.waiting(name, revision) || self.rollout_under_way(name, revision).await {
            return;
        }
        let signed = if newest.revision == revision {
            newest.value.clone()
        } else {
            match self.earlier_revision(name, revision).await {
                Ok(Some(signed)) => signed,
                Ok(None) => {
                    let why = format!(
                        "svc.{name} revision {revision} is no longer in the fabric's store"
                    );
                    return self.fail(name, revision, why, Kind::Refused);
                }
                // Not a refusal: the next round reads it again.
                Err(e) => {
                    tracing::debug!(service = %name, revision, error = %e, "cannot read an earlier desired state");
                    return;
                }
            }
        };
        let checked = crate::desired::verified_at(
            &self.store,
            &self.trust,
            name,
            revision,
            &signed,
            newest,
            assignment,
        )
        .await;
        let desired = match checked {
            Ok(desired) => desired,
            Err(e @ FabricError::Signature(_)) => {
                return self.fail(name, revision, e.to_string(), Kind::Refused);
            }
            // Not a refusal: the assignment has not caught up with the
            // desired state yet, or the history was not read; next round.
            Err(e) => {
                tracing::debug!(service = %name, revision, error = %e, "waiting to verify the desired state");
                return;
            }
        };
        // A revision held back runs the roles it has of this host's part
        // (an upgrade that adds a role places it before this host moves).
        let mut part = part;
        match desired.record.manifest() {
            Ok(manifest) => {
                part.retain(|role, _| manifest.roles.contains_key(role));
                if part.is_empty() {
                    let why =
                        format!("revision {revision} has none of the roles placed on this host");
                    return self.fail(name, revision, why, Kind::Refused);
                }
                // Every worker role is present here, with no instance if
                // none is placed here: an instance placed later (healing, a
                // scale) starts without restarting the service's other roles.
                for (role, declared) in &manifest.roles {
                    if declared.kind() == RoleKind::Worker {
                        part.entry(role.clone()).or_insert(0);
                    }
                }
            }
            Err(e) => {
                let why = format!("its manifest does not resolve: {e}");
                return self.fail(name, revision, why, Kind::Refused);
            }
        }
        let wanted = DeploymentRecord {
            local: Some(LocalPart {
                roles: part,
                listen_ip: Some(self.here.advertise),
                queues_url: Some(self.here.queues_url.clone()),
            }),
            ..desired.record
        };
        // Read again: a commit during the awaits above would otherwise look
        // like a change still to make (an extra, empty local upgrade).
        let running = self.controller.record(name);
        let action = decide(running.as_ref(), Some(&wanted));
        if action == Action::Nothing {
            self.conflicts.remove(name);
            self.memory.set_applied(name, revision);
            return;
        }
        tracing::debug!(service = %name, revision, ?action, "applying");
        let step = tokio::time::timeout(STEP_WITHIN, self.step(name, revision, action, wanted));
        let outcome = step.await.unwrap_or(Err(StepError::TimedOut(STEP_WITHIN)));
        self.settle(name, revision, outcome);
    }

    /// The signed desired state of `name` at `revision`, an earlier one
    /// than the newest, from the bucket's history (`None`: the bucket no
    /// longer keeps it).
    async fn earlier_revision(
        &mut self,
        name: &str,
        revision: u64,
    ) -> Result<Option<SignedDesired>, FabricError> {
        if let Some(kept) = self
            .earlier
            .get(name)
            .filter(|kept| kept.revision == revision)
        {
            return Ok(Some(kept.value.clone()));
        }
        let key = service_key(name);
        let entry = self
            .store
            .get_at::<SignedDesired>(Bucket::State, &key, revision)
            .await?;
        Ok(entry.map(|entry| {
            let signed = entry.value.clone();
            self.earlier.insert(name.to_owned(), entry);
            signed
        }))
    }

    /// Takes `action` towards `wanted`.
    async fn step(
        &mut self,
        name: &str,
        revision: u64,
        action: Action,
        wanted: DeploymentRecord,
    ) -> Result<(), StepError> {
        let controller = &self.controller;
        match action {
            Action::Nothing => Ok(()),
            Action::Remove => self.remove(name).await,
            Action::Deploy => {
                self.fetch_components(&wanted).await?;
                controller.deploy_record(name, wanted).await?;
                Ok(())
            }
            Action::Restart => {
                self.fetch_components(&wanted).await?;
                self.remove(name).await?;
                controller.deploy_record(name, wanted).await?;
                Ok(())
            }
            Action::Upgrade => {
                self.fetch_components(&wanted).await?;
                // The source and the signed overrides in one rollout; the
                // local part as it runs (a new count is a scale, next round).
                let local = controller.record(name).and_then(|running| running.local);
                let record = DeploymentRecord {
                    local: local.or(wanted.local),
                    ..wanted
                };
                let operation = controller.upgrade_record(name, record).await?;
                self.rollouts
                    .insert(name.to_owned(), (revision, operation.generation));
                Ok(())
            }
            Action::Scale { role, count } => {
                controller.scale(name, &role, count).await?;
                Ok(())
            }
        }
    }

    async fn remove(&self, name: &str) -> Result<(), StepError> {
        match self.controller.remove(name).await {
            Ok(()) | Err(ControllerError::NotFound(_)) => {
                self.memory.forget(name);
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Fetches from the object store each component `record` names that
    /// this host lacks, checked against its digest.
    async fn fetch_components(&self, record: &DeploymentRecord) -> Result<(), StepError> {
        let digests: BTreeSet<&Digest> = record.source.components.values().collect();
        for digest in digests {
            if self.controller.has_blob(digest).await {
                continue;
            }
            let bytes = blobs::download(&self.store, digest, MAX_COMPONENT_BYTES).await?;
            self.controller.put_blob(digest, bytes).await?;
        }
        Ok(())
    }

    /// Records how a step of `name` for `revision` ended.
    fn settle(&mut self, name: &str, revision: u64, outcome: Result<(), StepError>) {
        match outcome {
            Ok(()) => {
                self.conflicts.remove(name);
                self.memory.nudge();
            }
            Err(StepError::Controller(ControllerError::Conflict(why))) => {
                // An operation under way: try again next round, quietly
                // unless it lasts.
                let since = *self
                    .conflicts
                    .entry(name.to_owned())
                    .or_insert_with(Instant::now);
                if since.elapsed() >= CONFLICT_REPORTED_AFTER {
                    self.fail(name, revision, why, Kind::Passing);
                }
            }
            Err(e) => {
                self.conflicts.remove(name);
                let kind = e.kind();
                self.fail(name, revision, e.to_string(), kind);
            }
        }
    }

    /// Records that `name` failed at `revision` for `why`: logged once per
    /// revision and kind, reported in the beat (a refusal, or a failure
    /// that may pass, as `kind` says), tried again as `kind` allows.
    fn fail(&mut self, name: &str, revision: u64, why: String, kind: Kind) {
        let logged = self
            .failures
            .get(name)
            .is_some_and(|f| f.revision == revision && f.kind == kind);
        if !logged {
            if kind.passing() {
                tracing::warn!(service = %name, revision, reason = %why, "cannot apply this host's part of the service now; trying again");
            } else {
                tracing::warn!(service = %name, revision, reason = %why, "refused this host's part of the service");
            }
        }
        self.memory
            .refuse(name, &model::refusal(revision, &why), kind.passing());
        self.failures.insert(
            name.to_owned(),
            Failure {
                revision,
                at: Instant::now(),
                kind,
            },
        );
    }

    /// Whether `name` waits after a failure at `revision`.
    fn waiting(&self, name: &str, revision: u64) -> bool {
        self.failures.get(name).is_some_and(|failure| {
            failure.revision == revision && failure.kind.still_waits(failure.at.elapsed())
        })
    }

    /// Whether a rollout this loop started for `name` is still under way;
    /// one that rolled back refuses its revision.
    async fn rollout_under_way(&mut self, name: &str, revision: u64) -> bool {
        let Some(&(started_for, generation)) = self.rollouts.get(name) else {
            return false;
        };
        let operation = match self.controller.status(Some(name)).await {
            Ok(status) => status
                .services
                .into_iter()
                .next()
                .and_then(|service| service.operation),
            Err(_) => None,
        };
        let Some(operation) = operation.filter(|op| op.generation == generation) else {
            self.rollouts.remove(name);
            return false;
        };
        match operation.state {
            OperationState::Running => true,
            OperationState::Done => {
                self.rollouts.remove(name);
                false
            }
            OperationState::RolledBack | OperationState::Failed => {
                self.rollouts.remove(name);
                if started_for == revision {
                    let why = format!(
                        "the rolling {} to generation {generation} {}: {}",
                        operation.kind,
                        operation.state,
                        operation.reason.as_deref().unwrap_or("no reason given")
                    );
                    self.fail(name, revision, why, Kind::RolledBack);
                    return true;
                }
                false
            }
        }
    }

    /// Removes fabric service `name`, which has no assignment, if its
    /// desired state is gone too (read again, one key each, so that a
    /// listing that skipped a damaged entry removes nothing).
    async fn remove_if_gone(&mut self, name: &str) {
        let fabrics = self
            .controller
            .record(name)
            .is_some_and(|record| record.local.is_some());
        if !fabrics {
            return;
        }
        let desired = self
            .store
            .get::<SignedDesired>(Bucket::State, &service_key(name))
            .await;
        let assignment = self
            .store
            .get::<Assignment>(Bucket::State, &assignment_key(name))
            .await;
        if !matches!((desired, assignment), (Ok(None), Ok(None))) {
            return;
        }
        match self.remove(name).await {
            Ok(()) => {
                self.removals_failing.remove(name);
                tracing::info!(service = %name, "removed: the fabric no longer runs it");
                self.memory.nudge();
            }
            Err(StepError::Controller(ControllerError::Conflict(_))) => {}
            Err(e) => {
                if self.removals_failing.insert(name.to_owned()) {
                    tracing::warn!(service = %name, error = %e, "cannot remove a service the fabric no longer runs");
                }
            }
        }
    }
}
