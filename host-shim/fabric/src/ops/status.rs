//! `weft status --fabric`: each service as the fabric runs it, merged from
//! what the operator asked (`svc.<name>`), where the leader placed it
//! (`assign.<name>`) and what each host says it runs (`beat.<id>`).
//!
//! During a fabric-wide rollout some hosts are held at the earlier
//! revision: each host's part is judged against the revision it should
//! run ([`Assignment::revision_for`]), and the rollout itself says whether
//! the service is still changing.

use super::snapshot::Snapshot;
use crate::error::{FabricError, one_line};
use crate::model::{Assignment, FabricRollout, HostState, RolloutState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Every service in the fabric (or the one asked for).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FabricStatus {
    /// The services, by name.
    pub services: Vec<ServiceReport>,
}

/// One service across the fabric.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceReport {
    /// Its name.
    pub name: String,
    /// Its generation, as the operator last wrote it (0 if unreadable).
    pub generation: u64,
    /// The revision of `svc.<name>` hosts must run.
    pub desired_revision: u64,
    /// The revision the leader's placement is for; none: not placed yet.
    pub placed_revision: Option<u64>,
    /// Whether every instance is placed, on a host running the desired
    /// revision, and ready (never while a rollout moves).
    pub converged: bool,
    /// Each role, by name.
    pub roles: Vec<RoleReport>,
    /// Instances no host can take now, by role.
    pub unplaced: BTreeMap<String, u32>,
    /// Hosts that were assigned the service and refuse to run it, with why.
    pub refused: BTreeMap<String, String>,
    /// Why the desired state cannot be read, if it cannot.
    pub error: Option<String>,
    /// Hosts kept at an earlier revision while a rollout moves, with it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub held: BTreeMap<String, u64>,
    /// The fabric-wide rollout of the service's last upgrade: while it
    /// moves, and how it ended.
    #[serde(default)]
    pub rollout: Option<FabricRollout>,
}

/// One role of a service across the fabric.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleReport {
    /// Its name.
    pub name: String,
    /// Instances the manifest asks for (a web role: hosts).
    pub declared: u32,
    /// Instances ready on hosts running the revision each should run.
    pub ready: u32,
    /// Where the leader placed it: host → instance indices.
    pub placed: BTreeMap<String, Vec<u32>>,
    /// What each host it was placed on says it runs of it.
    pub hosts: BTreeMap<String, HostRolePart>,
}

/// What one host runs of one role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRolePart {
    /// Instances the leader placed there.
    pub assigned: u32,
    /// The `svc.<name>` revision the host runs; none: not running it.
    pub revision: Option<u64>,
    /// Instances ready there.
    pub ready: u32,
    /// Where a web role listens there.
    pub listen: Option<SocketAddr>,
}

impl ServiceReport {
    /// One line of progress: `web 1/2 ready, worker 3/3 ready` and what holds it back.
    pub fn progress(&self) -> String {
        let mut parts: Vec<String> = self
            .roles
            .iter()
            .map(|role| format!("{} {}/{} ready", role.name, role.ready, role.declared))
            .collect();
        if let Some(rollout) = self.moving() {
            parts.push(format!("rolling out: {}", rollout.step));
        } else if let Some(rollout) = self.rolled_back() {
            parts.push(rolled_back_text(rollout));
        } else if self.placed_revision != Some(self.desired_revision) {
            parts.push("waiting for the leader to place it".into());
        }
        for (role, count) in &self.unplaced {
            parts.push(format!("{count} of {role} unplaced"));
        }
        for (host, why) in &self.refused {
            parts.push(format!("host {host} refused it: {why}"));
        }
        parts.join(", ")
    }

    /// What keeps the service from having converged, on one line.
    pub fn missing(&self) -> String {
        if let Some(error) = &self.error {
            return error.clone();
        }
        let mut missing = Vec::new();
        if let Some(rollout) = self.moving() {
            missing.push(format!("rolling out: {}", rollout.step));
        } else if let Some(rollout) = self.rolled_back() {
            missing.push(format!(
                "{}; sign a fixed revision (weft upgrade)",
                rolled_back_text(rollout)
            ));
        } else if self.placed_revision != Some(self.desired_revision) {
            missing.push(
                "the leader has not placed its latest desired state (is any host up?)".to_owned(),
            );
        }
        for (role, count) in &self.unplaced {
            missing.push(format!(
                "{count} instances of {role} have no host that can take them"
            ));
        }
        for role in &self.roles {
            for (host, part) in &role.hosts {
                let due = self.revision_for(host);
                if part.revision != due {
                    missing.push(format!(
                        "host {host} does not run revision {} of {} yet",
                        due.unwrap_or(self.desired_revision),
                        role.name
                    ));
                } else if part.ready < part.assigned {
                    missing.push(format!(
                        "host {host} has {}/{} of {} ready",
                        part.ready, part.assigned, role.name
                    ));
                }
            }
        }
        for (host, why) in &self.refused {
            missing.push(format!("host {host} refused it: {why}"));
        }
        if missing.is_empty() {
            "nothing".into()
        } else {
            missing.join("; ")
        }
    }

    /// The `svc.<name>` revision host `host` should run: the one it is
    /// held at during a rollout, else the one placed (none: not placed).
    pub fn revision_for(&self, host: &str) -> Option<u64> {
        self.held.get(host).copied().or(self.placed_revision)
    }

    /// The rollout, while it moves.
    pub fn moving(&self) -> Option<&FabricRollout> {
        self.rollout
            .as_ref()
            .filter(|rollout| rollout.state == RolloutState::Moving)
    }

    /// The rollout, if it rolled back the desired revision (the hosts run
    /// the one before until the operator signs another).
    pub fn rolled_back(&self) -> Option<&FabricRollout> {
        self.rollout.as_ref().filter(|rollout| {
            rollout.state == RolloutState::RolledBack
                && rollout.to_revision == self.desired_revision
        })
    }
}

/// `revision R was rolled back: REASON`.
fn rolled_back_text(rollout: &FabricRollout) -> String {
    format!(
        "revision {} was rolled back: {}",
        rollout.to_revision,
        rollout_reason(rollout)
    )
}

/// Why `rollout` ended as it did (its step if it names no reason).
pub fn rollout_reason(rollout: &FabricRollout) -> &str {
    rollout.reason.as_deref().unwrap_or(&rollout.step)
}

/// The status of service `only`, or of every service.
pub fn fabric_status(snapshot: &Snapshot, only: Option<&str>) -> Result<FabricStatus, FabricError> {
    let services = match only {
        Some(name) => {
            if !snapshot.services.contains_key(name) {
                return Err(not_deployed(name));
            }
            vec![service_report(snapshot, name)]
        }
        None => snapshot
            .services
            .keys()
            .map(|name| service_report(snapshot, name))
            .collect(),
    };
    Ok(FabricStatus { services })
}

/// `service NAME is not deployed in the fabric`.
pub fn not_deployed(name: &str) -> FabricError {
    FabricError::NotFound(format!("service {name} is not deployed in the fabric"))
}

/// Service `name`'s report (its `svc.<name>` must be in `snapshot`).
pub fn service_report(snapshot: &Snapshot, name: &str) -> ServiceReport {
    let desired_revision = snapshot.services.get(name).map_or(0, |s| s.revision);
    let assignment = snapshot.assignments.get(name);
    let desired = snapshot.services.get(name).map(|signed| {
        signed
            .value
            .desired_unverified(name)
            .map_err(|e| e.to_string())
    });
    let (generation, declared, error) = match desired {
        Some(Ok(desired)) => match desired.record.manifest() {
            Ok(manifest) => (
                desired.record.generation,
                manifest
                    .roles
                    .iter()
                    .map(|(role, spec)| (role.clone(), spec.fabric_instances()))
                    .collect(),
                None,
            ),
            Err(e) => (
                desired.record.generation,
                BTreeMap::new(),
                Some(one_line(&e.to_string())),
            ),
        },
        Some(Err(e)) => (0, BTreeMap::new(), Some(e)),
        None => (0, BTreeMap::new(), Some(not_deployed(name).to_string())),
    };
    let mut role_names: Vec<String> = declared.keys().cloned().collect();
    if let Some(assignment) = assignment {
        for role in assignment.roles.keys() {
            if !declared.contains_key(role) {
                role_names.push(role.clone());
            }
        }
    }
    let roles: Vec<RoleReport> = role_names
        .iter()
        .map(|role| {
            role_report(
                name,
                role,
                declared.get(role).copied().unwrap_or(0),
                assignment,
                snapshot,
            )
        })
        .collect();
    // Only a refusal of the revision a host should run counts: one still
    // shown for another revision is not about what it was given now.
    let refused: BTreeMap<String, String> = assignment
        .map(|assignment| {
            assigned_hosts(assignment)
                .into_iter()
                .filter_map(|host| {
                    let due = assignment.revision_for(&host);
                    let why = snapshot.beats.get(&host)?.refusal(name, due)?;
                    Some((host, one_line(why)))
                })
                .collect()
        })
        .unwrap_or_default();
    let unplaced = assignment.map(|a| a.unplaced.clone()).unwrap_or_default();
    let placed_revision = assignment.map(|a| a.desired_revision);
    let held = assignment.map(|a| a.held.clone()).unwrap_or_default();
    let rollout = assignment.and_then(|a| a.rollout.clone());
    let moving = rollout
        .as_ref()
        .is_some_and(|rollout| rollout.state == RolloutState::Moving);
    let converged = error.is_none()
        && !moving
        && placed_revision == Some(desired_revision)
        && unplaced.values().all(|count| *count == 0)
        && refused.is_empty()
        && roles.iter().all(|role| {
            let assigned: u32 = role.hosts.values().map(|part| part.assigned).sum();
            assigned == role.declared
                && role.hosts.iter().all(|(host, part)| {
                    let due = assignment.map(|a| a.revision_for(host));
                    part.revision == due && part.ready >= part.assigned
                })
        });
    ServiceReport {
        name: name.to_owned(),
        generation,
        desired_revision,
        placed_revision,
        converged,
        roles,
        unplaced,
        refused,
        error,
        held,
        rollout,
    }
}

/// Whether the fabric is still converging on the service's last change:
/// a rollout moves, the leader has not placed that revision, or a host it
/// placed the service on runs another revision than it should (and has
/// not refused it). Readiness does not count: a change may follow one
/// whose instances are still starting. A rollout that rolled the desired
/// revision back is done changing: the fix must be deployable.
pub fn is_changing(report: &ServiceReport) -> bool {
    if report.moving().is_some() {
        return true;
    }
    if report.rolled_back().is_some() {
        return false;
    }
    report.placed_revision != Some(report.desired_revision)
        || report.roles.iter().any(|role| {
            role.hosts.iter().any(|(host, part)| {
                part.revision != report.revision_for(host) && !report.refused.contains_key(host)
            })
        })
}

/// Every host the assignment names.
fn assigned_hosts(assignment: &Assignment) -> Vec<String> {
    let mut hosts: Vec<String> = assignment
        .roles
        .values()
        .flat_map(|placement| placement.values().cloned())
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

fn role_report(
    service: &str,
    role: &str,
    declared: u32,
    assignment: Option<&Assignment>,
    snapshot: &Snapshot,
) -> RoleReport {
    let mut placed: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    if let Some(placement) = assignment.and_then(|a| a.roles.get(role)) {
        for (index, host) in placement {
            placed.entry(host.clone()).or_default().push(*index);
        }
    }
    let mut hosts = BTreeMap::new();
    let mut ready = 0u32;
    for (host, indices) in &placed {
        let running = snapshot
            .beats
            .get(host)
            .and_then(|beat| beat.services.get(service));
        let part = running.and_then(|s| s.roles.get(role));
        let revision = running.map(|s| s.desired_revision);
        // A down host's last beat still says what it ran: none of it is ready.
        let down = snapshot
            .host_states
            .get(host)
            .is_some_and(|seen| seen.state == HostState::Down);
        let host_ready = if down { 0 } else { part.map_or(0, |p| p.ready) };
        let assigned = u32::try_from(indices.len()).unwrap_or(u32::MAX);
        if revision == assignment.map(|a| a.revision_for(host)) {
            ready = ready.saturating_add(host_ready.min(assigned));
        }
        hosts.insert(
            host.clone(),
            HostRolePart {
                assigned,
                revision,
                ready: host_ready,
                listen: part.and_then(|p| p.listen),
            },
        );
    }
    RoleReport {
        name: role.to_owned(),
        declared,
        ready,
        placed,
        hosts,
    }
}
