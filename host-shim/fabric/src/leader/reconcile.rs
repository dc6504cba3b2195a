//! One reconcile round of the leader: read the members, their beats, the
//! signed desired state and the current placement; judge each member;
//! place what the verified services ask for; move each service's
//! fabric-wide rollout on (`super::rollout`); write what changed.
//!
//! Every write is a compare-and-set or the leader's own key, and each is
//! made only after checking that this host still leads the term it
//! reconciles for, so a deposed leader stops writing at once (and hosts
//! ignore anything stamped with a term that no longer holds the lease).

use super::assignment::{Service, assignment_of, moves};
use super::failures::{Failures, Loudness};
use super::health::{Health, Thresholds};
use super::rollout::{self, Inputs, Released};
use crate::FabricError;
use crate::model::{Assignment, Beat, HostRecord, HostStateRecord, SignedDesired};
use crate::names::{
    ASSIGNMENT_PREFIX, BEAT_PREFIX, HOST_PREFIX, HOST_STATE_PREFIX, SERVICE_PREFIX, assignment_key,
    host_state_key, service_key,
};
use crate::placement::{self, Current, Demand, HostView, Plan};
use crate::signing::TrustedKeys;
use crate::store::{Bucket, FabricStore, Versioned};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio::time::Instant;
use weft_host::controller::store::DeploymentRecord;

/// The part of a round that writes the members' states, as [`Failures`]
/// names it (not a service name: those have no spaces).
const MEMBER_STATES: &str = "member states";

/// What the leader remembers from round to round within one term.
#[derive(Debug, Default)]
pub(super) struct Memory {
    /// Beats seen, for judging silence.
    pub(super) health: Health,
    /// Services whose desired state was refused (it does not verify, or
    /// its manifest does not resolve), by the revision already logged, so
    /// each bad revision is logged once.
    refused: BTreeMap<String, u64>,
    /// The host each service's fabric-wide rollout moves now, and how long
    /// it has been, on this leader's clock.
    released: BTreeMap<String, Released>,
    /// What the placement of each kept service (see [`Round::kept`]) holds,
    /// by the revision its assignment runs.
    kept: BTreeMap<String, (u64, Vec<Demand>)>,
    /// The failures of each service (and of the members' states).
    failures: Failures,
}

/// A round's inputs that do not change within a term.
pub(super) struct Round<'a> {
    pub(super) store: &'a FabricStore,
    pub(super) trust: &'a TrustedKeys,
    pub(super) leadership: &'a watch::Receiver<Option<u64>>,
    pub(super) term: u64,
    pub(super) thresholds: Thresholds,
}

/// What every service's step in a round shares.
struct Shared<'a> {
    plan: &'a Plan,
    beats: &'a BTreeMap<String, Beat>,
    domains: &'a BTreeMap<String, String>,
    now: Instant,
    now_ms: u64,
}

impl Round<'_> {
    /// Fails with a [`FabricError::Conflict`] once this host no longer
    /// leads the round's term.
    fn still_leading(&self) -> Result<(), FabricError> {
        if *self.leadership.borrow() == Some(self.term) {
            Ok(())
        } else {
            Err(FabricError::Conflict(format!(
                "this host no longer leads term {}",
                self.term
            )))
        }
    }

    /// Runs one round. Each service is placed and written on its own: one
    /// that fails (a write that conflicts, an entry that cannot be read)
    /// is logged and the round goes on with the others. The round stops
    /// early only if the fabric's state cannot be read at all or this host
    /// no longer leads.
    pub(super) async fn run(&self, memory: &mut Memory) -> Result<(), FabricError> {
        let store = self.store;
        let hosts = store.list::<HostRecord>(Bucket::State, HOST_PREFIX).await?;
        let beats = store.list::<Beat>(Bucket::Beats, BEAT_PREFIX).await?;
        let now = Instant::now();
        let beat_revisions = hosts
            .keys()
            .map(|id| (id.clone(), beats.get(id).map_or(0, |beat| beat.revision)))
            .collect();
        memory.health.observe(&beat_revisions, now);
        let views: Vec<HostView> = hosts
            .iter()
            .map(|(id, host)| HostView {
                id: id.clone(),
                fault_domain: host.value.fault_domain.clone(),
                labels: host.value.labels.clone(),
                capacity: host.value.capacity.slots,
                state: memory
                    .health
                    .state(id, host.value.drain, now, self.thresholds),
            })
            .collect();
        let written = self.write_host_states(&views).await;
        self.settle(MEMBER_STATES, written, memory)?;

        let signed = store
            .list::<SignedDesired>(Bucket::State, SERVICE_PREFIX)
            .await?;
        let assignments = store
            .list::<Assignment>(Bucket::State, ASSIGNMENT_PREFIX)
            .await?;
        let services = self.verified_demands(&signed, memory).await?;
        let (kept, gone) = self.kept(&signed, &services, &assignments, memory).await?;
        let demands: Vec<Demand> = services
            .values()
            .flat_map(|service| service.demands.iter().cloned())
            .collect();
        let current = placements(&assignments, |name| services.contains_key(name));
        // A kept service stays where it runs: its slots are not free.
        let kept_demands: Vec<Demand> = kept.values().flatten().cloned().collect();
        let kept_placements = placements(&assignments, |name| kept.contains_key(name));
        let held = placement::slots_held(&kept_demands, &kept_placements);
        let plan = placement::place_beside(&views, &held, &demands, &current);
        let domains: BTreeMap<String, String> = hosts
            .iter()
            .map(|(id, host)| (id.clone(), host.value.fault_domain.clone()))
            .collect();
        let beats: BTreeMap<String, Beat> = beats
            .into_iter()
            .map(|(id, beat)| (id, beat.value))
            .collect();
        let shared = Shared {
            plan: &plan,
            beats: &beats,
            domains: &domains,
            now,
            now_ms: wall_clock_ms(),
        };
        memory
            .released
            .retain(|name, _| services.contains_key(name));
        for (name, service) in &services {
            let stored = assignments.get(name);
            let placed = self
                .place_service(name, service, stored, &shared, memory)
                .await;
            self.settle(name, placed, memory)?;
        }
        for name in kept.keys() {
            if let Some(stored) = assignments.get(name) {
                let restamped = self.restamp(name, stored).await;
                self.settle(name, restamped, memory)?;
            }
        }
        for name in &gone {
            if let Some(stale) = assignments.get(name) {
                let removed = self.remove_placement(name, stale).await;
                self.settle(name, removed, memory)?;
            }
        }
        memory.failures.retain(|part| {
            part == MEMBER_STATES || signed.contains_key(part) || assignments.contains_key(part)
        });
        Ok(())
    }

    /// Logs how one part of the round ended; an error once this host no
    /// longer leads ends the round.
    fn settle(
        &self,
        part: &str,
        outcome: Result<(), FabricError>,
        memory: &mut Memory,
    ) -> Result<(), FabricError> {
        let error = match outcome {
            Ok(()) => {
                if memory.failures.succeeded(part) {
                    tracing::info!(part, "the leader writes it again");
                }
                return Ok(());
            }
            Err(error) => error,
        };
        self.still_leading()?;
        match memory.failures.failed(part, &error) {
            Loudness::Warn if matches!(error, FabricError::Conflict(_)) => tracing::warn!(
                part,
                rounds = super::failures::CONFLICTS_BEFORE_WARNING,
                %error,
                "the leader's writes conflicted round after round; retrying"
            ),
            Loudness::Warn => {
                tracing::warn!(part, %error, "the leader cannot reconcile it; retrying, the others go on")
            }
            Loudness::Quiet => tracing::debug!(part, %error, "the leader cannot reconcile it yet"),
        }
        Ok(())
    }

    /// Places service `name` and writes its assignment if it changed,
    /// moving its fabric-wide rollout on.
    async fn place_service(
        &self,
        name: &str,
        service: &Service,
        stored: Option<&Versioned<Assignment>>,
        shared: &Shared<'_>,
        memory: &mut Memory,
    ) -> Result<(), FabricError> {
        let placed = assignment_of(name, service, self.term, shared.plan);
        let stored_value = stored.map(|stored| &stored.value);
        let upgrade = match rollout::compared_revision(stored_value, service.revision) {
            Some(old) => self.upgrades(name, old, &service.record).await?,
            None => false,
        };
        let inputs = Inputs {
            service: name,
            upgrade,
            beats: shared.beats,
            domains: shared.domains,
            host_timeout: service.host_timeout,
            now: shared.now,
            now_ms: shared.now_ms,
            released: memory.released.get(name),
        };
        let stepped = rollout::step(stored_value, placed, &inputs);
        self.write_assignment(name, stepped.assignment, stored)
            .await?;
        // Only once written: a write that failed released nobody.
        match stepped.released {
            Some(released) => memory.released.insert(name.to_owned(), released),
            None => memory.released.remove(name),
        };
        Ok(())
    }

    /// Writes `hstate.<id>` for every member whose state (or the term
    /// judging it) changed, and removes those of members gone.
    async fn write_host_states(&self, views: &[HostView]) -> Result<(), FabricError> {
        let stored = self
            .store
            .list::<HostStateRecord>(Bucket::State, HOST_STATE_PREFIX)
            .await?;
        for view in views {
            let record = HostStateRecord {
                term: self.term,
                state: view.state,
            };
            let before = stored.get(&view.id).map(|stored| &stored.value);
            if before == Some(&record) {
                continue;
            }
            self.still_leading()?;
            self.store
                .put(Bucket::State, &host_state_key(&view.id), &record)
                .await?;
            let was = before.map(|before| before.state);
            if was != Some(view.state) {
                tracing::info!(host = %view.id, state = %view.state, was = ?was.map(|s| s.as_str()), "member state changed");
            }
        }
        for (id, stale) in &stored {
            if !views.iter().any(|view| &view.id == id) {
                self.still_leading()?;
                self.store
                    .delete(Bucket::State, &host_state_key(id), stale.revision)
                    .await?;
            }
        }
        Ok(())
    }

    /// The services whose desired state verifies and resolves, with what
    /// they ask of placement. The others are logged (once per revision)
    /// and kept as they are placed (see [`Round::kept`]).
    async fn verified_demands(
        &self,
        signed: &BTreeMap<String, Versioned<SignedDesired>>,
        memory: &mut Memory,
    ) -> Result<BTreeMap<String, Service>, FabricError> {
        memory.refused.retain(|name, _| signed.contains_key(name));
        let mut services = BTreeMap::new();
        for (name, entry) in signed {
            // The newest entry must verify and chain to the change before it.
            let verified =
                crate::desired::verified_newest(self.store, self.trust, name, entry).await;
            let manifest = verified.and_then(|desired| {
                let manifest = desired.record.manifest().map_err(|e| {
                    FabricError::Refused(format!(
                        "svc.{name}: its manifest does not resolve: {}",
                        crate::error::one_line(&e.to_string())
                    ))
                })?;
                Ok((desired.record, manifest))
            });
            match manifest {
                Ok((record, manifest)) => {
                    memory.refused.remove(name);
                    services.insert(
                        name.clone(),
                        Service {
                            revision: entry.revision,
                            demands: Demand::of_manifest(name, &manifest),
                            host_timeout: rollout::host_timeout(&manifest.upgrade),
                            record,
                        },
                    );
                }
                // Not a refusal: the store failed reading its history.
                Err(e @ (FabricError::Store(_) | FabricError::Conflict(_))) => {
                    self.settle(name, Err(e), memory)?;
                }
                Err(e) => {
                    if memory.refused.insert(name.clone(), entry.revision) != Some(entry.revision) {
                        tracing::warn!(service = %name, revision = entry.revision, error = %e, "refused to place a service's desired state; it keeps running as placed");
                    }
                }
            }
        }
        Ok(services)
    }

    /// The services with a placement that stays as it is this round, with
    /// what each instance of it holds; and those whose `svc.<name>` is
    /// gone. Kept: a service whose desired state is there but refused (it
    /// does not verify, or cannot be read): its hosts keep running the
    /// revision it was placed at, so it is neither moved nor are its slots
    /// given to others until an operator signs a new revision or removes it.
    async fn kept(
        &self,
        signed: &BTreeMap<String, Versioned<SignedDesired>>,
        services: &BTreeMap<String, Service>,
        assignments: &BTreeMap<String, Versioned<Assignment>>,
        memory: &mut Memory,
    ) -> Result<(BTreeMap<String, Vec<Demand>>, BTreeSet<String>), FabricError> {
        let mut kept = BTreeMap::new();
        let mut gone = BTreeSet::new();
        for (name, assignment) in assignments {
            if services.contains_key(name) {
                continue;
            }
            if !signed.contains_key(name) {
                // Listed as absent: gone, unless it is there but cannot be read.
                match self
                    .store
                    .get::<SignedDesired>(Bucket::State, &service_key(name))
                    .await
                {
                    Ok(None) => {
                        gone.insert(name.clone());
                        continue;
                    }
                    Ok(Some(_)) | Err(FabricError::Malformed { .. }) => {}
                    Err(e) => {
                        self.settle(name, Err(e), memory)?;
                    }
                }
            }
            let revision = assignment.value.desired_revision;
            let demands = match memory.kept.get(name) {
                Some((at, demands)) if *at == revision => demands.clone(),
                _ => {
                    let demands = self.demands_at(name, revision).await;
                    memory
                        .kept
                        .insert(name.clone(), (revision, demands.clone()));
                    demands
                }
            };
            kept.insert(name.clone(), demands);
        }
        memory.kept.retain(|name, _| kept.contains_key(name));
        Ok((kept, gone))
    }

    /// What revision `revision` of service `name` asks of placement, read
    /// from the bucket's history; none if it cannot be read or verified
    /// (each of its instances then holds one slot).
    async fn demands_at(&self, name: &str, revision: u64) -> Vec<Demand> {
        let key = service_key(name);
        let entry = match self
            .store
            .get_at::<SignedDesired>(Bucket::State, &key, revision)
            .await
        {
            Ok(Some(entry)) => entry,
            Ok(None) => return Vec::new(),
            Err(e) => {
                tracing::debug!(service = %name, revision, error = %e, "cannot read the revision a kept service runs");
                return Vec::new();
            }
        };
        // Only to count its slots: it was verified when it was placed.
        let Ok(desired) = self.trust.verify(name, &entry.value) else {
            return Vec::new();
        };
        match desired.record.manifest() {
            Ok(manifest) => Demand::of_manifest(name, &manifest),
            Err(_) => Vec::new(),
        }
    }

    /// Stamps a kept service's assignment with this term, changing nothing
    /// else, so its hosts go on acting on it.
    async fn restamp(&self, name: &str, stored: &Versioned<Assignment>) -> Result<(), FabricError> {
        if stored.value.term == self.term {
            return Ok(());
        }
        self.still_leading()?;
        let restamped = Assignment {
            term: self.term,
            ..stored.value.clone()
        };
        self.store
            .update(
                Bucket::State,
                &assignment_key(name),
                &restamped,
                stored.revision,
            )
            .await?;
        Ok(())
    }

    /// Removes the placement of a service that is gone.
    async fn remove_placement(
        &self,
        name: &str,
        stale: &Versioned<Assignment>,
    ) -> Result<(), FabricError> {
        self.still_leading()?;
        self.store
            .delete(Bucket::State, &assignment_key(name), stale.revision)
            .await?;
        tracing::info!(service = %name, "removed the placement of a service that is gone");
        Ok(())
    }

    /// Whether `record` (the verified `svc.<name>` now) upgrades revision
    /// `old` of it, which the stored assignment runs: true unless the two
    /// differ only by a scale. An old revision the store no longer keeps,
    /// that cannot be read, or that does not verify, cannot be held at: no
    /// rollout then.
    async fn upgrades(
        &self,
        name: &str,
        old: u64,
        record: &DeploymentRecord,
    ) -> Result<bool, FabricError> {
        let key = service_key(name);
        let entry = match self
            .store
            .get_at::<SignedDesired>(Bucket::State, &key, old)
            .await
        {
            Ok(Some(entry)) => entry,
            Ok(None) => {
                tracing::warn!(service = %name, revision = old, "the revision the service runs is no longer in the fabric's store: the new one reaches every host at once");
                return Ok(false);
            }
            Err(e @ FabricError::Malformed { .. }) => {
                tracing::warn!(service = %name, revision = old, error = %e, "the revision the service runs cannot be read: the new one reaches every host at once");
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        match self.trust.verify(name, &entry.value) {
            Ok(desired) => Ok(!rollout::only_scaled(&desired.record, record)),
            Err(e) => {
                tracing::warn!(service = %name, revision = old, error = %e, "the revision the service runs does not verify: the new one reaches every host at once");
                Ok(false)
            }
        }
    }

    /// Writes `assign.<name>` if `wanted` differs from what is stored (a
    /// conflict means someone wrote it meanwhile: the next round re-reads).
    /// An entry there that is not an assignment is written over.
    async fn write_assignment(
        &self,
        name: &str,
        wanted: Assignment,
        stored: Option<&Versioned<Assignment>>,
    ) -> Result<(), FabricError> {
        if stored.is_some_and(|stored| stored.value == wanted) {
            return Ok(());
        }
        self.still_leading()?;
        let key = assignment_key(name);
        match stored {
            Some(stored) => {
                self.store
                    .update(Bucket::State, &key, &wanted, stored.revision)
                    .await?
            }
            None => self.create_assignment(&key, &wanted).await?,
        };
        rollout::log_change(
            name,
            stored.and_then(|stored| stored.value.rollout.as_ref()),
            wanted.rollout.as_ref(),
        );
        for moved in moves(stored.map(|stored| &stored.value), &wanted) {
            tracing::info!(
                service = %name,
                role = %moved.role,
                index = moved.index,
                from = moved.from.as_deref().unwrap_or("-"),
                to = moved.to.as_deref().unwrap_or("-"),
                "placement changed"
            );
        }
        Ok(())
    }

    /// Creates `key` (an `assign.<name>` not listed), or writes over what
    /// is there if it is not an assignment: listing leaves such an entry
    /// out, and creating over it would conflict every round.
    async fn create_assignment(&self, key: &str, wanted: &Assignment) -> Result<u64, FabricError> {
        let conflict = match self.store.create(Bucket::State, key, wanted).await {
            Err(conflict @ FabricError::Conflict(_)) => conflict,
            created => return created,
        };
        match self.store.get::<Assignment>(Bucket::State, key).await {
            Err(FabricError::Malformed { reason, .. }) => {
                let revision = self.store.last_revision(Bucket::State, key).await?;
                self.still_leading()?;
                let written = self
                    .store
                    .update(Bucket::State, key, wanted, revision)
                    .await?;
                tracing::warn!(%key, %reason, "wrote over a malformed assignment");
                Ok(written)
            }
            // Written meanwhile: the next round re-reads it.
            _ => Err(conflict),
        }
    }
}

/// Every role's placement in `assignments`, of the services `wanted` names.
fn placements(
    assignments: &BTreeMap<String, Versioned<Assignment>>,
    wanted: impl Fn(&str) -> bool,
) -> Current {
    assignments
        .iter()
        .filter(|(name, _)| wanted(name))
        .flat_map(|(name, assignment)| {
            assignment
                .value
                .roles
                .iter()
                .map(|(role, at)| ((name.clone(), role.clone()), at.clone()))
        })
        .collect()
}

/// Now on this host's wall clock, in milliseconds since the Unix epoch (0
/// if the clock is set before it).
fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}
