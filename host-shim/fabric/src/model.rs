//! The records the fabric keeps in JetStream, as JSON: who leads, who is a
//! member, what each service should run (signed by an operator), where the
//! leader placed it, and what each host says it runs.
//!
//! | key | bucket | written by | record |
//! | --- | --- | --- | --- |
//! | `leader` | state | the leader (compare-and-set) | [`LeaderRecord`] |
//! | `host.<id>` | state | that host | [`HostRecord`] |
//! | `hstate.<id>` | state | the leader | [`HostStateRecord`] |
//! | `svc.<name>` | state | an operator (the CLI), compare-and-set | [`SignedDesired`] of a [`Desired`] |
//! | `assign.<name>` | state | the leader | [`Assignment`] (with any [`FabricRollout`]) |
//! | `beat.<id>` | beats | that host, every second | [`Beat`] |

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use weft_host::controller::store::DeploymentRecord;

/// `leader`: the lease of the host that places work now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaderRecord {
    /// The leading host's id.
    pub holder: String,
    /// Its process (a fresh random id per start), so a restarted host does
    /// not mistake its predecessor's lease for its own.
    pub boot: String,
    /// The fencing term: the KV revision of the write that won the lease.
    /// Terms only grow; hosts act only on assignments of the current term.
    pub term: u64,
    /// Counts renewals within the term.
    pub renewal: u64,
}

/// What a host offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capacity {
    /// Sandboxes it can hold at once (`--max-instances`).
    pub slots: u32,
    /// Its memory, in MiB.
    pub memory_mib: u64,
    /// Its CPUs.
    pub cpus: u32,
}

/// `host.<id>`: a member, as it registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostRecord {
    /// Its id (`--host-id`, default the machine's host name).
    pub id: String,
    /// Its process (a fresh random id per start).
    pub boot: String,
    /// The address its web roles listen on (`--advertise`).
    pub advertise: IpAddr,
    /// Its admin API.
    pub admin: Option<SocketAddr>,
    /// Its fault domain (`--fault-domain`): hosts that can fail together.
    pub fault_domain: String,
    /// Its labels (`--label key=value`), which a role's `placement` may require.
    pub labels: BTreeMap<String, String>,
    /// What it offers.
    pub capacity: Capacity,
    /// Set to empty the host before maintenance: the leader moves its
    /// instances elsewhere and places nothing new on it.
    pub drain: bool,
    /// The Weft version it runs.
    pub version: String,
}

/// A member's state, as the leader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostState {
    /// Beating: it gets work.
    Ready,
    /// Silent for a few seconds: it keeps what it has, gets nothing new.
    Suspect,
    /// Silent past `--fabric-down-after`: its instances run elsewhere.
    Down,
    /// Being emptied (`weft fabric drain`): its instances move elsewhere.
    Draining,
}

impl HostState {
    /// Its name in the JSON and in `weft fabric hosts`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Suspect => "suspect",
            Self::Down => "down",
            Self::Draining => "draining",
        }
    }
}

impl std::fmt::Display for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `hstate.<id>`: the leader's view of a member, written when it changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostStateRecord {
    /// The term of the leader that wrote it.
    pub term: u64,
    /// The state.
    pub state: HostState,
}

/// What an operator wants a service to be: the record a single host would
/// keep (source, overrides, generation), with no host's part in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Desired {
    /// The service's name (the key's, repeated inside what is signed, so a
    /// signed body cannot be replayed under another name).
    pub service: String,
    /// What to run.
    pub record: DeploymentRecord,
    /// The KV revision of `svc.<name>`'s last change (a delete included;
    /// 0: none) that this write replaces, written by compare-and-set
    /// against exactly that revision. It chains each signed revision to
    /// the one before, so an old signed body put again as a new revision,
    /// or an old revision named by an assignment, is refused
    /// ([`crate::desired`]).
    pub replaces: u64,
    /// When the operator signed it, in milliseconds since the Unix epoch.
    pub signed_at_ms: u64,
}

/// `svc.<name>`: a [`Desired`] and an operator's signature over it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedDesired {
    /// The [`Desired`] as JSON text: exactly the bytes signed.
    pub body: String,
    /// Which key signed it: its public key, base64 (standard, padded).
    pub key_id: String,
    /// The Ed25519 signature of `body`, base64 (standard, padded).
    pub signature: String,
}

impl SignedDesired {
    /// The [`Desired`] in `body`, its signature NOT checked: for reports
    /// and capacity counts only, never to run or re-sign anything (that
    /// is [`crate::signing::TrustedKeys::verify`]'s and
    /// [`crate::desired`]'s). `service` names the key in the error.
    pub fn desired_unverified(&self, service: &str) -> Result<Desired, crate::FabricError> {
        serde_json::from_str(&self.body).map_err(|e| crate::FabricError::Malformed {
            key: crate::names::service_key(service),
            reason: crate::error::one_line(&e.to_string()),
        })
    }
}

/// Where one role's instances run: instance index → host id. A worker
/// role has one index per instance; a web role one per host serving it.
/// Instance `i` is in upgrade domain `i mod domains` wherever it runs.
pub type RolePlacement = BTreeMap<u32, String>;

/// `assign.<name>`: where the leader placed a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assignment {
    /// The term of the leader that wrote it; hosts act on it only while
    /// that leader holds the lease.
    pub term: u64,
    /// The KV revision of the `svc.<name>` entry it places: hosts run that
    /// signed desired state, and no other.
    pub desired_revision: u64,
    /// Each role's placement.
    pub roles: BTreeMap<String, RolePlacement>,
    /// Instances no host could take now, by role (healing places them
    /// when capacity returns).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unplaced: BTreeMap<String, u32>,
    /// Hosts kept at an earlier `svc.<name>` revision while a fabric-wide
    /// rollout walks the hosts (host id → the revision they keep running).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub held: BTreeMap<String, u64>,
    /// The fabric-wide rollout of the service's last upgrade, while it
    /// walks the hosts and after it ended (until the next new revision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<FabricRollout>,
}

/// Where a fabric-wide rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RolloutState {
    /// It walks the hosts, one at a time.
    Moving,
    /// Every host runs the new revision.
    Done,
    /// A host failed to move: every host runs the old revision again.
    RolledBack,
}

impl RolloutState {
    /// Its name in the JSON and in `weft status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Moving => "moving",
            Self::Done => "done",
            Self::RolledBack => "rolled-back",
        }
    }
}

impl std::fmt::Display for RolloutState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An upgrade of a service moving across the fabric one host at a time,
/// each host's own rolling upgrade health-gated, the whole fabric rolled
/// back if one host fails. Kept in the assignment, so a new leader
/// continues it where its predecessor left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FabricRollout {
    /// The `svc.<name>` revision the hosts ran before.
    pub from_revision: u64,
    /// The `svc.<name>` revision they move to.
    pub to_revision: u64,
    /// The hosts to move, in order: one fault domain after another, then by id.
    pub hosts: Vec<String>,
    /// How many of `hosts` run the new revision, ready.
    pub hosts_done: u32,
    /// Where it is.
    pub state: RolloutState,
    /// What it is doing, or how it ended, for people (`host b (2 of 3)`).
    pub step: String,
    /// Why it was rolled back.
    pub reason: Option<String>,
    /// When the host moving now (`hosts[hosts_done]`) was released, in
    /// milliseconds since the Unix epoch on the clock of the leader that
    /// released it. A new leader counts that host's timeout from here, so
    /// a rollout stuck under a leader that keeps changing still times
    /// out; across leaders it is as exact as their clocks agree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_at_ms: Option<u64>,
}

impl Assignment {
    /// The `svc.<name>` revision host `id` runs: the one it is held at
    /// during a rollout, else the desired one.
    pub fn revision_for(&self, id: &str) -> u64 {
        self.held.get(id).copied().unwrap_or(self.desired_revision)
    }

    /// Role → instances on host `id`, for the roles with any there.
    pub fn part_of(&self, id: &str) -> BTreeMap<String, u32> {
        let mut part = BTreeMap::new();
        for (role, placement) in &self.roles {
            let here = placement.values().filter(|host| *host == id).count();
            if let Ok(here @ 1..) = u32::try_from(here) {
                part.insert(role.clone(), here);
            }
        }
        part
    }
}

/// What a host runs of one role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolePart {
    /// Instances it runs (a web role: 1).
    pub declared: u32,
    /// Instances ready now.
    pub ready: u32,
    /// Where a web role listens on this host.
    pub listen: Option<SocketAddr>,
    /// A web role's health path.
    pub health: Option<String>,
}

/// What a host runs of one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicePart {
    /// The `svc.<name>` revision it runs.
    pub desired_revision: u64,
    /// The service's generation it runs.
    pub generation: u64,
    /// Its roles here.
    pub roles: BTreeMap<String, RolePart>,
    /// The local operation under way or last ended here, for people and
    /// the leader (`upgrade: domain 2 of 2: waiting for health`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
}

/// `beat.<id>`: a host's heartbeat, with what it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Beat {
    /// Its process.
    pub boot: String,
    /// Counts beats of this process.
    pub seq: u64,
    /// When it was sent, in milliseconds since the Unix epoch (for people:
    /// the leader judges silence on its own clock).
    pub sent_ms: u64,
    /// Sandbox slots its services reserved.
    pub slots_used: u32,
    /// What it runs, by service.
    pub services: BTreeMap<String, ServicePart>,
    /// Services it was assigned and refused to run, with why (a signature
    /// that does not verify, a component that does not match its digest,
    /// a start that failed).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub refused: BTreeMap<String, String>,
    /// Services whose step failed for a reason that may pass (the store
    /// or the object store unreachable, an operation under way), with
    /// why: not a refusal, so a fabric-wide rollout waits for the host's
    /// timeout instead of rolling back at once.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub retrying: BTreeMap<String, String>,
    /// Apply rounds this process finished (each read the fabric and
    /// applied): one that stops advancing shows a stuck apply loop.
    #[serde(default)]
    pub apply_rounds: u64,
}

impl Beat {
    /// Why this host refused `service` at `revision`, if it did (a
    /// refusal of another revision is not one of this revision).
    pub fn refusal(&self, service: &str, revision: u64) -> Option<&str> {
        self.refused
            .get(service)?
            .strip_prefix(&refusal_prefix(revision))
    }
}

/// A beat's refusal of `revision` for `why`: `revision R: why`, so that a
/// refusal still shown for an earlier revision is not taken for one of
/// the revision a host was just given.
pub fn refusal(revision: u64, why: &str) -> String {
    format!("{}{why}", refusal_prefix(revision))
}

fn refusal_prefix(revision: u64) -> String {
    format!("revision {revision}: ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_part_counts_its_instances_per_role() {
        let assignment = Assignment {
            term: 3,
            desired_revision: 9,
            roles: BTreeMap::from([
                (
                    "worker".into(),
                    BTreeMap::from([(0, "a".into()), (1, "b".into()), (2, "a".into())]),
                ),
                ("web".into(), BTreeMap::from([(0, "b".into())])),
            ]),
            unplaced: BTreeMap::new(),
            held: BTreeMap::from([("b".into(), 8)]),
            rollout: None,
        };
        assert_eq!(assignment.revision_for("a"), 9);
        assert_eq!(assignment.revision_for("b"), 8);
        assert_eq!(
            assignment.part_of("a"),
            BTreeMap::from([("worker".into(), 2)])
        );
        assert_eq!(
            assignment.part_of("b"),
            BTreeMap::from([("web".into(), 1), ("worker".into(), 1)])
        );
        assert!(assignment.part_of("c").is_empty());
    }

    #[test]
    fn a_refusal_names_its_revision() {
        let beat = Beat {
            boot: "b".into(),
            seq: 1,
            sent_ms: 0,
            slots_used: 0,
            services: BTreeMap::new(),
            refused: BTreeMap::from([("shop".into(), refusal(7, "it rolled back"))]),
            retrying: BTreeMap::from([("cart".into(), refusal(3, "store unreachable"))]),
            apply_rounds: 4,
        };
        assert_eq!(
            beat.refusal("cart", 3),
            None,
            "a passing failure refuses nothing"
        );
        assert_eq!(beat.refused["shop"], "revision 7: it rolled back");
        assert_eq!(beat.refusal("shop", 7), Some("it rolled back"));
        assert_eq!(beat.refusal("shop", 8), None);
        assert_eq!(beat.refusal("other", 7), None);
    }

    #[test]
    fn beats_without_the_newer_fields_still_read() {
        let old: Beat = serde_json::from_str(
            r#"{"boot":"b","seq":1,"sent_ms":0,"slots_used":0,"services":{"s":{"desired_revision":2,"generation":1,"roles":{}}}}"#,
        )
        .unwrap();
        assert!(old.retrying.is_empty() && old.apply_rounds == 0);
        assert_eq!(old.services["s"].operation, None);
        let text = serde_json::to_string(&old).unwrap();
        assert!(
            !text.contains("retrying") && !text.contains("operation"),
            "{text}"
        );
    }

    #[test]
    fn a_rollout_reads_and_writes_kebab_case_and_old_assignments_still_read() {
        let old: Assignment =
            serde_json::from_str(r#"{"term":1,"desired_revision":2,"roles":{}}"#).unwrap();
        assert!(old.held.is_empty() && old.rollout.is_none());
        assert_eq!(
            serde_json::to_string(&old).unwrap(),
            r#"{"term":1,"desired_revision":2,"roles":{}}"#
        );
        let state: RolloutState = serde_json::from_str(r#""rolled-back""#).unwrap();
        assert_eq!(state, RolloutState::RolledBack);
        assert_eq!(state.to_string(), "rolled-back");
    }
}
