//! The operator's reading of a fabric-wide rollout, pure over snapshots
//! built here: a moving rollout keeps the service changing and names its
//! step, one that rolled the desired revision back ends a wait and lets a
//! fix be signed, a held host is judged against its held revision.

use super::status::{self, ServiceReport};
use super::wait::{Judged, Waiting};
use super::*;
use crate::model::{Assignment, Beat, FabricRollout, RolePart, RolloutState, ServicePart};
use std::time::Duration;
use tokio::time::Instant;

const MANIFEST: &str = r#"
[service]
name = "shop"

[roles.worker]
kind = "worker"
component = "worker.wasm"
instances = 3
"#;

fn signed() -> SignedDesired {
    let desired = Desired {
        service: "shop".into(),
        record: DeploymentRecord {
            source: DeploymentSource {
                manifest_file: "weft.toml".into(),
                manifest: MANIFEST.into(),
                environment: None,
                components: BTreeMap::from([("worker".to_owned(), Digest::of(b"worker"))]),
            },
            overrides: Overrides::default(),
            generation: 2,
            local: None,
        },
        replaces: 0,
        signed_at_ms: 1,
    };
    SignedDesired {
        body: serde_json::to_string(&desired).unwrap(),
        key_id: "k".into(),
        signature: "s".into(),
    }
}

/// A beat of a host running `shop` at `revision` with its one worker
/// `ready` (or not).
fn beat(revision: u64, ready: bool) -> Beat {
    Beat {
        boot: "b".into(),
        seq: 1,
        sent_ms: 5,
        slots_used: 1,
        services: BTreeMap::from([(
            "shop".to_owned(),
            ServicePart {
                desired_revision: revision,
                generation: 2,
                operation: None,
                roles: BTreeMap::from([(
                    "worker".to_owned(),
                    RolePart {
                        declared: 1,
                        ready: u32::from(ready),
                        listen: None,
                        health: None,
                    },
                )]),
            },
        )]),
        refused: BTreeMap::new(),
        retrying: BTreeMap::new(),
        apply_rounds: 0,
    }
}

fn rollout(state: RolloutState, hosts_done: u32, step: &str) -> FabricRollout {
    FabricRollout {
        from_revision: 7,
        to_revision: 8,
        hosts: vec!["a".into(), "b".into(), "c".into()],
        hosts_done,
        state,
        step: step.into(),
        reason: None,
        released_at_ms: None,
    }
}

/// `shop` signed at revision 8 (upgraded from 7), one worker on each of
/// a, b and c, the assignment placing `placed` with `held` hosts and
/// `rollout`; a, b and c run `runs` (ready).
fn snapshot(
    placed: u64,
    held: &[(&str, u64)],
    rollout: Option<FabricRollout>,
    runs: [u64; 3],
) -> Snapshot {
    let assignment = Assignment {
        term: 3,
        desired_revision: placed,
        roles: BTreeMap::from([(
            "worker".into(),
            BTreeMap::from([(0, "a".into()), (1, "b".into()), (2, "c".into())]),
        )]),
        unplaced: BTreeMap::new(),
        held: held
            .iter()
            .map(|(host, revision)| ((*host).to_owned(), *revision))
            .collect(),
        rollout,
    };
    Snapshot {
        services: BTreeMap::from([(
            "shop".into(),
            Versioned {
                value: signed(),
                revision: 8,
            },
        )]),
        assignments: BTreeMap::from([("shop".into(), assignment)]),
        beats: ["a", "b", "c"]
            .into_iter()
            .zip(runs)
            .map(|(host, revision)| (host.to_owned(), beat(revision, true)))
            .collect(),
        ..Snapshot::default()
    }
}

/// Mid-rollout: a moved to 8, b is moving (still at 7, not ready), c is
/// held at 7.
fn moving() -> Snapshot {
    let mut snapshot = snapshot(
        8,
        &[("c", 7)],
        Some(rollout(RolloutState::Moving, 1, "host b (2 of 3)")),
        [8, 7, 7],
    );
    snapshot.beats.insert("b".into(), beat(7, false));
    snapshot
}

/// b refused 8, so the leader rolled every host back to 7.
fn rolled_back() -> Snapshot {
    let mut ended = rollout(
        RolloutState::RolledBack,
        1,
        "rolled back to revision 7 at host b (2 of 3)",
    );
    ended.reason = Some("host b refused revision 8: boom".into());
    let mut snapshot = snapshot(7, &[], Some(ended), [7, 7, 7]);
    snapshot
        .beats
        .get_mut("b")
        .unwrap()
        .refused
        .insert("shop".into(), crate::model::refusal(8, "boom"));
    snapshot
}

fn report(snapshot: &Snapshot) -> ServiceReport {
    status::service_report(snapshot, "shop")
}

/// The wait for revision `revision` judging `report` at `now`, a wait of
/// 60 s that began at `start`.
fn judged(report: ServiceReport, start: Instant, now: Instant) -> Result<Judged, FabricError> {
    Waiting::new("shop", 8, Duration::from_secs(60), start).judge(Some(report), now)
}

#[test]
fn a_moving_rollout_is_changing_not_converged_and_names_its_step() {
    let snapshot = moving();
    let report = report(&snapshot);
    assert_eq!(report.held, BTreeMap::from([("c".into(), 7)]));
    assert_eq!(report.rollout.as_ref().unwrap().state, RolloutState::Moving);
    assert!(!report.converged);
    assert!(status::is_changing(&report));
    // a at 8 and c at its held 7 count as ready; b is still moving.
    assert_eq!(report.roles[0].ready, 2);
    assert_eq!(
        report.progress(),
        "worker 2/3 ready, rolling out: host b (2 of 3)"
    );
    let missing = report.missing();
    assert!(
        missing.starts_with("rolling out: host b (2 of 3)"),
        "{missing}"
    );
    assert!(
        missing.contains("host b does not run revision 8 of worker yet"),
        "{missing}"
    );
    assert!(!missing.contains("host c"), "{missing}");
    // Another change waits for the rollout.
    let refused = settled(&snapshot, "shop").unwrap_err();
    assert!(matches!(refused, FabricError::Conflict(_)), "{refused:?}");

    // Waiting: not done, and a timeout names the step.
    let start = Instant::now();
    assert!(matches!(
        judged(report.clone(), start, start),
        Ok(Judged::Waiting(_))
    ));
    let late = judged(report, start, start + Duration::from_secs(61)).unwrap_err();
    assert!(matches!(late, FabricError::Refused(_)), "{late:?}");
    assert!(
        late.to_string()
            .starts_with("service shop has not converged after 60 s: rolling out: host b (2 of 3)"),
        "{late}"
    );
}

#[test]
fn while_a_rollout_moves_the_leader_judges_a_refusal_not_the_wait() {
    let mut snapshot = moving();
    snapshot
        .beats
        .get_mut("b")
        .unwrap()
        .refused
        .insert("shop".into(), crate::model::refusal(8, "boom"));
    let report = report(&snapshot);
    assert_eq!(report.refused["b"], "boom");
    let start = Instant::now();
    let mut waiting = Waiting::new("shop", 8, Duration::from_secs(60), start);
    for seconds in [0, 6, 12] {
        let now = start + Duration::from_secs(seconds);
        let judged = waiting.judge(Some(report.clone()), now);
        assert!(matches!(judged, Ok(Judged::Waiting(_))), "{judged:?}");
    }
}

#[test]
fn a_rollback_of_the_current_revision_ends_the_wait_and_lets_a_fix_be_signed() {
    let snapshot = rolled_back();
    let report = report(&snapshot);
    assert!(!report.converged);
    assert!(!status::is_changing(&report));
    // b's refusal was of 8; b now runs 7, which it does not refuse.
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    assert_eq!(report.roles[0].ready, 3);
    assert_eq!(
        report.progress(),
        "worker 3/3 ready, revision 8 was rolled back: host b refused revision 8: boom"
    );
    assert!(
        report
            .missing()
            .starts_with("revision 8 was rolled back: host b refused revision 8: boom;"),
        "{}",
        report.missing()
    );
    // The fix may be signed over revision 8.
    let entry = settled(&snapshot, "shop").unwrap();
    let (desired, revision) = (
        entry.value.desired_unverified("shop").unwrap(),
        entry.revision,
    );
    assert_eq!((desired.record.generation, revision), (2, 8));

    let start = Instant::now();
    let ended = judged(report, start, start).unwrap_err();
    assert!(matches!(ended, FabricError::Refused(_)), "{ended:?}");
    assert_eq!(
        ended.to_string(),
        "service shop was rolled back: host b refused revision 8: boom"
    );
}

#[test]
fn a_rollback_of_an_earlier_revision_does_not_end_a_wait_for_the_fix() {
    // The fix is signed at 9; the leader has not placed it yet.
    let mut snapshot = rolled_back();
    snapshot.services.get_mut("shop").unwrap().revision = 9;
    let report = report(&snapshot);
    assert!(report.rolled_back().is_none());
    assert!(status::is_changing(&report));
    assert!(
        report
            .progress()
            .ends_with("waiting for the leader to place it"),
        "{}",
        report.progress()
    );
    let start = Instant::now();
    let judged = Waiting::new("shop", 9, Duration::from_secs(60), start).judge(Some(report), start);
    assert!(matches!(judged, Ok(Judged::Waiting(_))), "{judged:?}");
}

#[test]
fn a_done_rollout_converges() {
    let snapshot = snapshot(
        8,
        &[],
        Some(rollout(RolloutState::Done, 3, "done")),
        [8, 8, 8],
    );
    let report = report(&snapshot);
    assert!(report.converged, "{}", report.missing());
    assert!(!status::is_changing(&report));
    assert_eq!(report.progress(), "worker 3/3 ready");
    let start = Instant::now();
    assert!(matches!(
        judged(report.clone(), start, start),
        Ok(Judged::Converged(_))
    ));
    // The report carries the rollout (and no held hosts) in its JSON.
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["rollout"]["state"], "done");
    assert!(json.get("held").is_none());
    assert_eq!(
        serde_json::from_value::<ServiceReport>(json).unwrap(),
        report
    );
}

#[test]
fn a_held_host_is_judged_against_its_held_revision() {
    // c is held at 7 but runs 8: it is not where it should be.
    let mut snapshot = moving();
    snapshot.beats.insert("b".into(), beat(8, true));
    snapshot.beats.insert("c".into(), beat(8, true));
    let report = report(&snapshot);
    assert_eq!(report.revision_for("c"), Some(7));
    assert_eq!(report.revision_for("a"), Some(8));
    assert_eq!(report.roles[0].ready, 2);
    assert!(
        report
            .missing()
            .contains("host c does not run revision 7 of worker yet"),
        "{}",
        report.missing()
    );
    // Its refusal of 8 (a revision it was not given) is stale: not shown;
    // a refusal of its held 7 is.
    let c = snapshot.beats.get_mut("c").unwrap();
    c.refused
        .insert("shop".into(), crate::model::refusal(8, "old"));
    assert!(status::service_report(&snapshot, "shop").refused.is_empty());
    let c = snapshot.beats.get_mut("c").unwrap();
    c.refused
        .insert("shop".into(), crate::model::refusal(7, "disk full"));
    assert_eq!(
        status::service_report(&snapshot, "shop").refused["c"],
        "disk full"
    );
    // With the rollout's JSON: the held hosts are in it.
    let json = serde_json::to_value(report).unwrap();
    assert_eq!(json["held"]["c"], 7);
    assert_eq!(json["rollout"]["step"], "host b (2 of 3)");
}
