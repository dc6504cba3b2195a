//! [`Snapshot`]: one read of every record an operator's command looks at
//! (members, the leader's view of them, desired state, placements, beats,
//! the lease), so the reports are pure functions of it.

use crate::error::FabricError;
use crate::model::{Assignment, Beat, HostRecord, HostStateRecord, LeaderRecord, SignedDesired};
use crate::names::{
    ASSIGNMENT_PREFIX, BEAT_PREFIX, HOST_PREFIX, HOST_STATE_PREFIX, LEADER_KEY, SERVICE_PREFIX,
};
use crate::store::{Bucket, FabricStore, Versioned};
use std::collections::BTreeMap;

/// The fabric's records, as read at one moment (each key read on its own:
/// the fabric has no multi-key reads, and reports need none).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// `host.<id>`, by id.
    pub hosts: BTreeMap<String, Versioned<HostRecord>>,
    /// `hstate.<id>`, by id.
    pub host_states: BTreeMap<String, HostStateRecord>,
    /// `svc.<name>`, by name, with the revision hosts run it at.
    pub services: BTreeMap<String, Versioned<SignedDesired>>,
    /// `assign.<name>`, by name.
    pub assignments: BTreeMap<String, Assignment>,
    /// `beat.<id>`, by id.
    pub beats: BTreeMap<String, Beat>,
    /// `leader`, if any host holds the lease.
    pub leader: Option<LeaderRecord>,
}

impl Snapshot {
    /// Reads every record.
    pub async fn read(store: &FabricStore) -> Result<Self, FabricError> {
        Ok(Self {
            hosts: store.list(Bucket::State, HOST_PREFIX).await?,
            host_states: values(store.list(Bucket::State, HOST_STATE_PREFIX).await?),
            services: store.list(Bucket::State, SERVICE_PREFIX).await?,
            assignments: values(store.list(Bucket::State, ASSIGNMENT_PREFIX).await?),
            beats: values(store.list(Bucket::Beats, BEAT_PREFIX).await?),
            leader: store
                .get::<LeaderRecord>(Bucket::State, LEADER_KEY)
                .await?
                .map(|leader| leader.value),
        })
    }
}

/// The records of `map` without their revisions.
fn values<T>(map: BTreeMap<String, Versioned<T>>) -> BTreeMap<String, T> {
    map.into_iter()
        .map(|(key, versioned)| (key, versioned.value))
        .collect()
}
