//! What the placement sees, built from a [`Snapshot`]: the members as
//! [`HostView`]s, the placements in force, and the demands of a service's
//! manifest, so an operator's change that cannot fit is refused before it
//! is written.

use super::snapshot::Snapshot;
use crate::error::FabricError;
use crate::model::HostState;
use crate::placement::{self, Current, Demand, HostView};
use weft_host::manifest::Manifest;

/// Each member as the placement sees it: its state is the leader's view
/// (`hstate.<id>`), ready if the leader has written none yet, and draining
/// as soon as an operator asked for it.
pub fn host_views(snapshot: &Snapshot) -> Vec<HostView> {
    snapshot
        .hosts
        .iter()
        .map(|(id, host)| {
            let seen = snapshot
                .host_states
                .get(id)
                .map_or(HostState::Ready, |state| state.state);
            let state = if host.value.drain && seen == HostState::Ready {
                HostState::Draining
            } else {
                seen
            };
            HostView {
                id: id.clone(),
                fault_domain: host.value.fault_domain.clone(),
                labels: host.value.labels.clone(),
                capacity: host.value.capacity.slots,
                state,
            }
        })
        .collect()
}

/// Every role's placement in force, by (service, role).
pub fn current(snapshot: &Snapshot) -> Current {
    let mut current = Current::new();
    for (service, assignment) in &snapshot.assignments {
        for (role, placement) in &assignment.roles {
            current.insert((service.clone(), role.clone()), placement.clone());
        }
    }
    current
}

/// The demands of every service in `snapshot` but `except`, from their
/// desired state as written (unverified: this only counts what the
/// leader may place; an entry that does not parse asks for nothing).
fn other_demands(snapshot: &Snapshot, except: &str) -> Vec<Demand> {
    let mut all = Vec::new();
    for (name, signed) in &snapshot.services {
        if name == except {
            continue;
        }
        let Ok(desired) = signed.value.desired_unverified(name) else {
            continue;
        };
        if let Ok(manifest) = desired.record.manifest() {
            all.extend(Demand::of_manifest(name, &manifest));
        }
    }
    all
}

/// Refuses `manifest` for `service` if the fabric's members cannot hold
/// it beside every other service ([`placement::check_fits`] over them
/// all). Another service already short of room does not refuse this one
/// unless this one is short too.
pub fn check_fits(
    snapshot: &Snapshot,
    service: &str,
    manifest: &Manifest,
) -> Result<(), FabricError> {
    let mut wanted = other_demands(snapshot, service);
    wanted.extend(Demand::of_manifest(service, manifest));
    let (hosts, current) = (host_views(snapshot), current(snapshot));
    match placement::check_fits(&hosts, &wanted, &current) {
        Ok(()) => Ok(()),
        Err(refused) => {
            let plan = placement::place(&hosts, &wanted, &current);
            if plan.unplaced.keys().any(|(owner, _)| owner == service) {
                Err(refused)
            } else {
                Ok(())
            }
        }
    }
}
