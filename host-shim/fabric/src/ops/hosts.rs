//! `weft fabric hosts`: each member, with the leader's view of it, what it
//! offers and what it runs, and who leads.

use super::snapshot::Snapshot;
use crate::model::{Capacity, HostState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

/// The members and the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FabricHosts {
    /// The host holding the leader's lease, if any.
    pub leader: Option<LeaderReport>,
    /// The members, by id.
    pub hosts: Vec<HostReport>,
}

/// Who leads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderReport {
    /// The leading host's id.
    pub host: String,
    /// Its fencing term.
    pub term: u64,
}

/// One member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostReport {
    /// Its id.
    pub id: String,
    /// Its state: the leader's view, or `down` if it never beat (or its
    /// last beat has expired).
    pub state: HostState,
    /// Whether an operator asked to empty it.
    pub drain: bool,
    /// Its fault domain.
    pub fault_domain: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// What it offers.
    pub capacity: Capacity,
    /// Sandbox slots its services reserved (its last beat's word).
    pub slots_used: u32,
    /// The address its web roles listen on.
    pub advertise: IpAddr,
    /// Its admin API.
    pub admin: Option<SocketAddr>,
    /// The Weft version it runs.
    pub version: String,
    /// The roles it runs, as `SERVICE/ROLE`.
    pub runs: Vec<String>,
    /// When its last beat was sent (its clock), in ms since the epoch.
    pub last_beat_ms: Option<u64>,
}

/// The members and the leader in `snapshot`.
pub fn fabric_hosts(snapshot: &Snapshot) -> FabricHosts {
    let hosts = snapshot
        .hosts
        .iter()
        .map(|(id, record)| {
            let host = &record.value;
            let beat = snapshot.beats.get(id);
            let state = match (beat, snapshot.host_states.get(id)) {
                (None, _) => HostState::Down,
                (Some(_), Some(seen)) => seen.state,
                (Some(_), None) if host.drain => HostState::Draining,
                (Some(_), None) => HostState::Ready,
            };
            let runs = beat
                .iter()
                .flat_map(|beat| &beat.services)
                .flat_map(|(service, part)| {
                    part.roles
                        .iter()
                        .filter(|(_, role)| role.declared > 0)
                        .map(move |(role, _)| format!("{service}/{role}"))
                })
                .collect();
            HostReport {
                id: id.clone(),
                state,
                drain: host.drain,
                fault_domain: host.fault_domain.clone(),
                labels: host.labels.clone(),
                capacity: host.capacity,
                slots_used: beat.map_or(0, |beat| beat.slots_used),
                advertise: host.advertise,
                admin: host.admin,
                version: host.version.clone(),
                runs,
                last_beat_ms: beat.map(|beat| beat.sent_ms),
            }
        })
        .collect();
    FabricHosts {
        leader: snapshot.leader.as_ref().map(|leader| LeaderReport {
            host: leader.holder.clone(),
            term: leader.term,
        }),
        hosts,
    }
}
