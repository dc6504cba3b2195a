//! The fabric-wide rollout of an upgrade: instead of every host starting
//! its own rolling upgrade at once, the leader releases the new `svc.<name>`
//! revision to one host at a time (one fault domain after another), keeps
//! the others `held` at the old one, waits for the released host's beat to
//! show the new revision with every role ready, and rolls the whole fabric
//! back to the old revision if that host refuses it or does not finish in
//! time. Each host's own move is weft-host's rolling upgrade, health-gated
//! across the host's upgrade domains.
//!
//! The rollout lives in the assignment ([`FabricRollout`]), so a new leader
//! continues it from `hosts_done` (never half-applied, never run twice).
//! So does when the current host was released (`released_at_ms`, the
//! releasing leader's wall clock): a new leader counts that host's timeout
//! on from there, so a rollout stuck under a leader that keeps changing
//! still times out. Within a term the leader counts on its own monotonic
//! clock from where it took over ([`Released`]); only the hand-over from
//! one leader to the next rests on the two machines' clocks agreeing.
//!
//! Pure: [`step`] maps the stored assignment, the freshly placed one, the
//! beats and the clock to the assignment to write.

use crate::model::{Assignment, Beat, FabricRollout, RolloutState};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::time::Instant;
use weft_host::controller::store::DeploymentRecord;
use weft_host::manifest::UpgradePolicy;

/// Added to a host's own rollout time: fetching the components, starting
/// the first instances and the beat that reports them.
const HOST_SLACK: Duration = Duration::from_secs(30);

/// How long one host may take to move: each of its upgrade domains may
/// take the service's `upgrade-timeout-secs`, plus [`HOST_SLACK`].
pub(super) fn host_timeout(policy: &UpgradePolicy) -> Duration {
    policy
        .timeout
        .saturating_mul(policy.domains)
        .saturating_add(HOST_SLACK)
}

/// The host being moved, and how long it has been, as this leader counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Released {
    /// The host's id.
    pub(super) host: String,
    /// When this leader first wrote (or, new to its term, first saw) it released.
    pub(super) at: Instant,
    /// How long it had been released already at `at`: zero if this leader
    /// released it, else the time since its `released_at_ms` (wall clocks).
    pub(super) waited_before: Duration,
}

impl Released {
    /// How long the host has been released at `now`.
    pub(super) fn waited(&self, now: Instant) -> Duration {
        self.waited_before
            .saturating_add(now.saturating_duration_since(self.at))
    }
}

/// What a round knows besides the two assignments.
#[derive(Debug, Clone, Copy)]
pub(super) struct Inputs<'a> {
    /// The service.
    pub(super) service: &'a str,
    /// Whether the revision placed differs from the stored assignment's by
    /// more than a scale (asked only when [`compared_revision`] says so;
    /// false otherwise).
    pub(super) upgrade: bool,
    /// Every host's last beat.
    pub(super) beats: &'a BTreeMap<String, Beat>,
    /// Every member's fault domain.
    pub(super) domains: &'a BTreeMap<String, String>,
    /// How long one host may take ([`host_timeout`]).
    pub(super) host_timeout: Duration,
    /// Now, on the leader's monotonic clock.
    pub(super) now: Instant,
    /// Now, on the leader's wall clock (milliseconds since the Unix epoch),
    /// for `released_at_ms`.
    pub(super) now_ms: u64,
    /// The host this leader released for this service, if any.
    pub(super) released: Option<&'a Released>,
}

/// The assignment to write, and the host now being moved, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Stepped {
    /// The assignment to write.
    pub(super) assignment: Assignment,
    /// The host released and not done yet, and how long it has been.
    pub(super) released: Option<Released>,
}

/// The stored assignment's revision, if the round must compare it with
/// `revision` (the verified `svc.<name>` revision now) to know whether a
/// new rollout starts: a new revision, no rollout under way, not the
/// revision a rollout already rolled back, and something placed.
pub(super) fn compared_revision(stored: Option<&Assignment>, revision: u64) -> Option<u64> {
    let stored = stored?;
    let settled = match &stored.rollout {
        Some(rollout) => match rollout.state {
            RolloutState::Moving => false,
            RolloutState::RolledBack => rollout.to_revision != revision,
            RolloutState::Done => true,
        },
        None => true,
    };
    let placed = !hosts_of(stored).is_empty();
    (settled && placed && stored.desired_revision != revision).then_some(stored.desired_revision)
}

/// Whether `new` differs from `old` only in worker counts (and the
/// generation that counts changes): a scale, which each host's part
/// carries without an upgrade.
pub(super) fn only_scaled(old: &DeploymentRecord, new: &DeploymentRecord) -> bool {
    old.source == new.source
        && old.overrides.settings == new.overrides.settings
        && old.local == new.local
}

/// The assignment to write for `placed` (this round's placement of the
/// service, stamped with this term and the `svc.<name>` revision now),
/// given the `stored` one: starts, continues, finishes or rolls back a
/// fabric-wide rollout.
pub(super) fn step(stored: Option<&Assignment>, placed: Assignment, inputs: &Inputs) -> Stepped {
    let Some(stored) = stored else {
        return plain(placed);
    };
    let revision = placed.desired_revision;
    match &stored.rollout {
        Some(rollout) if rollout.state == RolloutState::Moving => {
            advance(rollout.clone(), &stored.held, placed, inputs)
        }
        // Rolled back: the hosts stay at the old revision until the
        // operator signs another one.
        Some(rollout)
            if rollout.state == RolloutState::RolledBack && rollout.to_revision == revision =>
        {
            settled(stored, placed)
        }
        _ if stored.desired_revision == revision => settled(stored, placed),
        _ if !inputs.upgrade => plain(placed),
        _ => start(stored, placed, inputs),
    }
}

/// No rollout: every host runs the revision placed.
fn plain(placed: Assignment) -> Stepped {
    Stepped {
        assignment: Assignment {
            held: BTreeMap::new(),
            rollout: None,
            ..placed
        },
        released: None,
    }
}

/// Nothing new: the stored revision and how the last rollout ended stay.
fn settled(stored: &Assignment, placed: Assignment) -> Stepped {
    Stepped {
        assignment: Assignment {
            desired_revision: stored.desired_revision,
            held: BTreeMap::new(),
            rollout: stored.rollout.clone(),
            ..placed
        },
        released: None,
    }
}

/// Starts a rollout from the stored revision to the one placed, over the
/// hosts that run the service now and keep a part of it.
fn start(stored: &Assignment, placed: Assignment, inputs: &Inputs) -> Stepped {
    let keeping = hosts_of(&placed);
    let mut hosts: Vec<String> = hosts_of(stored)
        .into_iter()
        .filter(|host| keeping.contains(host))
        .collect();
    if hosts.is_empty() {
        return plain(placed);
    }
    let domain = |host: &String| inputs.domains.get(host).cloned().unwrap_or_default();
    hosts.sort_by_cached_key(|host| (domain(host), host.clone()));
    let from_revision = stored.desired_revision;
    let held = BTreeMap::from_iter(hosts.iter().map(|host| (host.clone(), from_revision)));
    let rollout = FabricRollout {
        from_revision,
        to_revision: placed.desired_revision,
        hosts,
        hosts_done: 0,
        state: RolloutState::Moving,
        step: String::new(),
        reason: None,
        released_at_ms: None,
    };
    advance(rollout, &held, placed, inputs)
}

/// Moves a rollout on as far as the beats allow.
fn advance(
    mut rollout: FabricRollout,
    held: &BTreeMap<String, u64>,
    placed: Assignment,
    inputs: &Inputs,
) -> Stepped {
    let placed_hosts = hosts_of(&placed);
    // A host that lost its part (down, drained) has nothing to keep.
    let mut held: BTreeMap<String, u64> = held
        .iter()
        .filter(|(host, _)| placed_hosts.contains(*host))
        .map(|(host, revision)| (host.clone(), *revision))
        .collect();
    let total = rollout.hosts.len();
    // Whether this step moved past a host: the next one is released now.
    let mut moved_on = false;
    loop {
        let index = usize::try_from(rollout.hosts_done).unwrap_or(usize::MAX);
        let Some(host) = rollout.hosts.get(index).cloned() else {
            rollout.state = RolloutState::Done;
            rollout.step = "done".into();
            rollout.released_at_ms = None;
            return Stepped {
                assignment: Assignment {
                    desired_revision: rollout.to_revision,
                    held: BTreeMap::new(),
                    rollout: Some(rollout),
                    ..placed
                },
                released: None,
            };
        };
        held.remove(&host);
        let beat = inputs.beats.get(&host);
        let refused = beat.and_then(|beat| beat.refusal(inputs.service, rollout.to_revision));
        if let (Some(why), true) = (refused, placed_hosts.contains(&host)) {
            let reason = format!(
                "host {host} refused revision {}: {why}",
                rollout.to_revision
            );
            return rolled_back(rollout, &host, reason, placed);
        }
        let finished =
            beat.is_some_and(|beat| runs_ready(beat, inputs.service, rollout.to_revision));
        if finished || !placed_hosts.contains(&host) {
            // Done, or it left the service's placement: nothing to move there.
            rollout.hosts_done = rollout.hosts_done.saturating_add(1);
            moved_on = true;
            continue;
        }
        if moved_on || rollout.released_at_ms.is_none() {
            rollout.released_at_ms = Some(inputs.now_ms);
        }
        let released = match inputs.released.filter(|released| released.host == host) {
            Some(released) => released.clone(),
            // Released by this leader just now, or by an earlier leader:
            // its clock runs on from when it was released.
            None => Released {
                host: host.clone(),
                at: inputs.now,
                waited_before: Duration::from_millis(
                    inputs
                        .now_ms
                        .saturating_sub(rollout.released_at_ms.unwrap_or(inputs.now_ms)),
                ),
            },
        };
        if released.waited(inputs.now) >= inputs.host_timeout {
            let reason = format!(
                "host {host} did not finish within {} s",
                inputs.host_timeout.as_secs()
            );
            return rolled_back(rollout, &host, reason, placed);
        }
        rollout.step = format!("host {host} ({} of {total})", index.saturating_add(1));
        return Stepped {
            assignment: Assignment {
                desired_revision: rollout.to_revision,
                held,
                rollout: Some(rollout),
                ..placed
            },
            released: Some(released),
        };
    }
}

/// Every host back at the old revision, for `reason`.
fn rolled_back(
    mut rollout: FabricRollout,
    host: &str,
    reason: String,
    placed: Assignment,
) -> Stepped {
    rollout.state = RolloutState::RolledBack;
    rollout.released_at_ms = None;
    rollout.step = format!(
        "rolled back to revision {} at host {host} ({} of {})",
        rollout.from_revision,
        rollout.hosts_done.saturating_add(1),
        rollout.hosts.len()
    );
    rollout.reason = Some(reason);
    Stepped {
        assignment: Assignment {
            desired_revision: rollout.from_revision,
            held: BTreeMap::new(),
            rollout: Some(rollout),
            ..placed
        },
        released: None,
    }
}

/// Whether `beat` shows `service` at `revision` with every role ready.
fn runs_ready(beat: &Beat, service: &str, revision: u64) -> bool {
    beat.services.get(service).is_some_and(|part| {
        part.desired_revision == revision
            && part.roles.values().all(|role| role.ready >= role.declared)
    })
}

/// The hosts with a part of the service in `assignment`.
fn hosts_of(assignment: &Assignment) -> BTreeSet<String> {
    assignment
        .roles
        .values()
        .flat_map(|placement| placement.values().cloned())
        .collect()
}

/// Logs a rollout's new step (after the assignment carrying it was written).
pub(super) fn log_change(
    service: &str,
    before: Option<&FabricRollout>,
    after: Option<&FabricRollout>,
) {
    let Some(after) = after else { return };
    let changed = before.is_none_or(|before| {
        (before.state, &before.step, before.to_revision)
            != (after.state, &after.step, after.to_revision)
    });
    if changed {
        tracing::info!(
            service = %service,
            from = after.from_revision,
            to = after.to_revision,
            state = %after.state,
            step = %after.step,
            reason = after.reason.as_deref().unwrap_or("-"),
            "fabric-wide rollout"
        );
    }
}

#[cfg(test)]
mod tests;
