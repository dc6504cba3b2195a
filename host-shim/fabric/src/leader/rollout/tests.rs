//! The fabric-wide rollout's rules, without a server or a clock: which
//! changes start one, how beats move it host by host, and what ends it.

use super::*;
use crate::model::{RolePart, ServicePart};
use weft_host::controller::store::{DeploymentSource, Digest};

const SERVICE: &str = "shop";
const OLD: u64 = 10;
const NEW: u64 = 14;
const TIMEOUT: Duration = Duration::from_secs(60);

/// `shop` placed on `hosts` (one worker each), at `revision`.
fn placed(revision: u64, hosts: &[&str]) -> Assignment {
    Assignment {
        term: 3,
        desired_revision: revision,
        roles: BTreeMap::from([(
            "worker".into(),
            (0u32..)
                .zip(hosts)
                .map(|(index, host)| (index, (*host).to_owned()))
                .collect(),
        )]),
        unplaced: BTreeMap::new(),
        held: BTreeMap::new(),
        rollout: None,
    }
}

/// A beat of a host running `shop` at `revision`, `ready` of 1 worker.
fn beat(revision: u64, ready: u32) -> Beat {
    Beat {
        boot: "b".into(),
        seq: 1,
        sent_ms: 0,
        slots_used: 1,
        services: BTreeMap::from([(
            SERVICE.into(),
            ServicePart {
                desired_revision: revision,
                generation: 2,
                operation: None,
                roles: BTreeMap::from([(
                    "worker".into(),
                    RolePart {
                        declared: 1,
                        ready,
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

/// A beat of a host that refused `revision` of `shop`.
fn refusing(revision: u64, why: &str) -> Beat {
    let mut beat = beat(OLD, 1);
    beat.refused
        .insert(SERVICE.into(), crate::model::refusal(revision, why));
    beat
}

/// Hosts c (domain d1), a and b (domain d2).
fn domains() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("a".into(), "d2".into()),
        ("b".into(), "d2".into()),
        ("c".into(), "d1".into()),
    ])
}

fn beats(entries: &[(&str, Beat)]) -> BTreeMap<String, Beat> {
    entries
        .iter()
        .map(|(id, beat)| ((*id).to_owned(), beat.clone()))
        .collect()
}

/// `now` on a wall clock (milliseconds since the Unix epoch) that runs
/// exactly with the monotonic one, as the leader's does between jumps.
fn wall_ms(now: Instant) -> u64 {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    const BASE_MS: u64 = 1_700_000_000_000;
    let origin = *ORIGIN.get_or_init(Instant::now);
    let ms = |elapsed: Duration| u64::try_from(elapsed.as_millis()).unwrap();
    if now >= origin {
        BASE_MS + ms(now - origin)
    } else {
        BASE_MS - ms(origin - now)
    }
}

/// One step of `stored` towards `shop` at `NEW` on a, b and c.
fn run(
    stored: &Assignment,
    upgrade: bool,
    beats: &BTreeMap<String, Beat>,
    now: Instant,
    released: Option<&Released>,
) -> Stepped {
    let domains = domains();
    let inputs = Inputs {
        service: SERVICE,
        upgrade,
        beats,
        domains: &domains,
        host_timeout: TIMEOUT,
        now,
        now_ms: wall_ms(now),
        released,
    };
    step(Some(stored), placed(NEW, &["a", "b", "c"]), &inputs)
}

fn rollout_of(assignment: &Assignment) -> &FabricRollout {
    assignment.rollout.as_ref().unwrap()
}

#[test]
fn the_timeout_covers_every_domain_and_some_slack() {
    let policy = UpgradePolicy {
        domains: 3,
        settle: Duration::from_secs(2),
        timeout: Duration::from_secs(120),
    };
    assert_eq!(host_timeout(&policy), Duration::from_secs(390));
}

#[test]
fn a_scale_starts_no_rollout() {
    let stored = placed(OLD, &["a", "b", "c"]);
    assert_eq!(compared_revision(Some(&stored), NEW), Some(OLD));
    let stepped = run(&stored, false, &BTreeMap::new(), Instant::now(), None);
    assert_eq!(stepped.assignment, placed(NEW, &["a", "b", "c"]));
    assert_eq!(stepped.released, None);

    let old = DeploymentRecord {
        source: DeploymentSource {
            manifest_file: "weft.toml".into(),
            manifest: "[service]\nname = \"shop\"\n".into(),
            environment: None,
            components: BTreeMap::from([("worker".into(), Digest::of(b"v1"))]),
        },
        overrides: Default::default(),
        generation: 1,
        local: None,
    };
    let mut scaled = old.clone();
    scaled.overrides.instances.insert("worker".into(), 9);
    scaled.generation += 1;
    assert!(only_scaled(&old, &scaled));
    let mut set = scaled.clone();
    set.overrides.settings.insert(
        "worker".into(),
        BTreeMap::from([("version".into(), "2".into())]),
    );
    assert!(!only_scaled(&old, &set));
    let mut upgraded = old.clone();
    upgraded
        .source
        .components
        .insert("worker".into(), Digest::of(b"v2"));
    assert!(!only_scaled(&old, &upgraded));
}

#[test]
fn nothing_placed_or_nothing_stored_starts_no_rollout() {
    assert_eq!(compared_revision(None, NEW), None);
    let empty = placed(OLD, &[]);
    assert_eq!(compared_revision(Some(&empty), NEW), None);
    let domains = domains();
    let inputs = Inputs {
        service: SERVICE,
        upgrade: false,
        beats: &BTreeMap::new(),
        domains: &domains,
        host_timeout: TIMEOUT,
        now: Instant::now(),
        now_ms: wall_ms(Instant::now()),
        released: None,
    };
    let first = step(None, placed(NEW, &["a"]), &inputs);
    assert_eq!(first.assignment, placed(NEW, &["a"]));
}

#[test]
fn an_upgrade_holds_every_host_but_the_first_in_domain_order() {
    let stored = placed(OLD, &["a", "b", "c"]);
    let now = Instant::now();
    let stepped = run(&stored, true, &BTreeMap::new(), now, None);
    let assignment = &stepped.assignment;
    assert_eq!(assignment.desired_revision, NEW);
    let rollout = rollout_of(assignment);
    assert_eq!(
        rollout.hosts,
        ["c", "a", "b"],
        "domain d1 first, then by id"
    );
    assert_eq!(
        (
            rollout.from_revision,
            rollout.to_revision,
            rollout.hosts_done
        ),
        (OLD, NEW, 0)
    );
    assert_eq!(rollout.state, RolloutState::Moving);
    assert_eq!(rollout.step, "host c (1 of 3)");
    assert_eq!(
        assignment.held,
        BTreeMap::from([("a".into(), OLD), ("b".into(), OLD)])
    );
    assert_eq!(assignment.revision_for("c"), NEW);
    assert_eq!(assignment.revision_for("a"), OLD);
    assert_eq!(
        stepped.released,
        Some(Released {
            host: "c".into(),
            at: now,
            waited_before: Duration::ZERO,
        })
    );
}

#[test]
fn a_host_done_releases_the_next_and_the_last_done_ends_it() {
    let start = Instant::now();
    let moving = run(
        &placed(OLD, &["a", "b", "c"]),
        true,
        &BTreeMap::new(),
        start,
        None,
    );
    let released = moving.released.clone();
    // c is still moving: not ready yet.
    let waiting = run(
        &moving.assignment,
        false,
        &beats(&[("c", beat(NEW, 0)), ("a", beat(OLD, 1))]),
        start + Duration::from_secs(5),
        released.as_ref(),
    );
    assert_eq!(waiting, moving);

    let later = start + Duration::from_secs(10);
    let next = run(
        &moving.assignment,
        false,
        &beats(&[("c", beat(NEW, 1)), ("a", beat(OLD, 1))]),
        later,
        released.as_ref(),
    );
    let rollout = rollout_of(&next.assignment);
    assert_eq!(
        (rollout.hosts_done, rollout.step.as_str()),
        (1, "host a (2 of 3)")
    );
    assert_eq!(next.assignment.held, BTreeMap::from([("b".into(), OLD)]));
    assert_eq!(
        next.released,
        Some(Released {
            host: "a".into(),
            at: later,
            waited_before: Duration::ZERO,
        }),
        "a's clock starts when it is released"
    );

    let all = beats(&[
        ("c", beat(NEW, 1)),
        ("a", beat(NEW, 1)),
        ("b", beat(NEW, 1)),
    ]);
    let done = run(&next.assignment, false, &all, later, next.released.as_ref());
    let assignment = &done.assignment;
    assert_eq!(assignment.desired_revision, NEW);
    assert!(assignment.held.is_empty());
    let rollout = rollout_of(assignment);
    assert_eq!(
        (rollout.state, rollout.hosts_done, rollout.step.as_str()),
        (RolloutState::Done, 3, "done")
    );
    assert_eq!(done.released, None);
    // Done stays done, and starts nothing while the revision stays.
    assert_eq!(compared_revision(Some(assignment), NEW), None);
    assert_eq!(
        run(assignment, false, &all, later, None).assignment,
        *assignment
    );
}

#[test]
fn a_refusal_rolls_the_fabric_back() {
    let start = Instant::now();
    let moving = run(
        &placed(OLD, &["a", "b", "c"]),
        true,
        &BTreeMap::new(),
        start,
        None,
    );
    // A refusal of the old revision, still shown, is not one of the new.
    let stale = beats(&[("c", refusing(OLD, "no room"))]);
    let waiting = run(
        &moving.assignment,
        false,
        &stale,
        start,
        moving.released.as_ref(),
    );
    assert_eq!(waiting, moving);
    let refused = beats(&[(
        "c",
        refusing(
            NEW,
            "the rolling upgrade to generation 3 rolled-back: worker not ready",
        ),
    )]);
    let back = run(
        &moving.assignment,
        false,
        &refused,
        start,
        moving.released.as_ref(),
    );
    let assignment = &back.assignment;
    assert_eq!(assignment.desired_revision, OLD);
    assert!(assignment.held.is_empty());
    let rollout = rollout_of(assignment);
    assert_eq!(rollout.state, RolloutState::RolledBack);
    assert_eq!(
        rollout.reason.as_deref(),
        Some(
            "host c refused revision 14: the rolling upgrade to generation 3 rolled-back: worker not ready"
        )
    );
    assert_eq!(back.released, None);
    // The same revision again is left alone: no new rollout.
    assert_eq!(compared_revision(Some(assignment), NEW), None);
    let again = run(assignment, true, &refused, start, None);
    assert_eq!(again.assignment, *assignment);
    // A newer one is compared again.
    assert_eq!(compared_revision(Some(assignment), NEW + 1), Some(OLD));
}

#[test]
fn a_host_that_does_not_finish_in_time_rolls_the_fabric_back() {
    let start = Instant::now();
    let moving = run(
        &placed(OLD, &["a", "b", "c"]),
        true,
        &BTreeMap::new(),
        start,
        None,
    );
    let slow = beats(&[("c", beat(NEW, 0))]);
    let almost = start + TIMEOUT - Duration::from_millis(1);
    let still = run(
        &moving.assignment,
        false,
        &slow,
        almost,
        moving.released.as_ref(),
    );
    assert_eq!(still.assignment, moving.assignment);
    let back = run(
        &moving.assignment,
        false,
        &slow,
        start + TIMEOUT,
        moving.released.as_ref(),
    );
    let rollout = rollout_of(&back.assignment);
    assert_eq!(rollout.state, RolloutState::RolledBack);
    assert_eq!(
        rollout.reason.as_deref(),
        Some("host c did not finish within 60 s")
    );
    assert_eq!(back.assignment.desired_revision, OLD);
    assert!(back.assignment.held.is_empty());
}

#[test]
fn a_new_leader_continues_from_hosts_done_and_the_released_hosts_clock() {
    let start = Instant::now();
    let moving = run(
        &placed(OLD, &["a", "b", "c"]),
        true,
        &BTreeMap::new(),
        start,
        None,
    );
    assert_eq!(
        rollout_of(&moving.assignment).released_at_ms,
        Some(wall_ms(start))
    );
    // c is done 10 s in: a is released then, and the time is kept.
    let released_a = start + Duration::from_secs(10);
    let second = run(
        &moving.assignment,
        false,
        &beats(&[("c", beat(NEW, 1))]),
        released_a,
        moving.released.as_ref(),
    );
    assert_eq!(
        rollout_of(&second.assignment).released_at_ms,
        Some(wall_ms(released_a))
    );
    // Another leader, another term, 20 s after a was released: it has
    // released nobody itself, but a's clock runs on.
    let mut stored = second.assignment.clone();
    stored.term = 4;
    let taken_over = released_a + Duration::from_secs(20);
    let continued = run(
        &stored,
        false,
        &beats(&[("c", beat(NEW, 1))]),
        taken_over,
        None,
    );
    let assignment = &continued.assignment;
    assert_eq!(assignment.term, 3, "stamped with the term placing it");
    let rollout = rollout_of(assignment);
    assert_eq!(
        (rollout.state, rollout.hosts_done),
        (RolloutState::Moving, 1),
        "c is not moved again"
    );
    assert_eq!(
        rollout.released_at_ms,
        Some(wall_ms(released_a)),
        "not released again"
    );
    assert_eq!(assignment.held, BTreeMap::from([("b".into(), OLD)]));
    let memory = continued.released.clone().unwrap();
    assert_eq!((memory.host.as_str(), memory.at), ("a", taken_over));
    let waited = memory.waited_before.as_millis();
    assert!((19_999..=20_001).contains(&waited), "{waited} ms");
    // The new leader's own clock goes on from there: a times out 60 s
    // after it was released, not 60 s after the new term began.
    let almost = released_a + TIMEOUT - Duration::from_millis(100);
    let still = run(
        &stored,
        false,
        &BTreeMap::new(),
        almost,
        continued.released.as_ref(),
    );
    assert_eq!(rollout_of(&still.assignment).state, RolloutState::Moving);
    let late = released_a + TIMEOUT + Duration::from_millis(100);
    let back = run(
        &stored,
        false,
        &BTreeMap::new(),
        late,
        continued.released.as_ref(),
    );
    let rollout = rollout_of(&back.assignment);
    assert_eq!(rollout.state, RolloutState::RolledBack);
    assert_eq!(
        rollout.reason.as_deref(),
        Some("host a did not finish within 60 s")
    );
    assert_eq!(rollout.released_at_ms, None);
    // A leader taking over long after times it out at once.
    let much_later = run(&stored, false, &BTreeMap::new(), start + TIMEOUT * 10, None);
    assert_eq!(
        rollout_of(&much_later.assignment).state,
        RolloutState::RolledBack
    );
}

#[test]
fn a_newer_revision_waits_for_the_rollout_and_new_hosts_are_not_held() {
    let start = Instant::now();
    let moving = run(
        &placed(OLD, &["a", "b"]),
        true,
        &BTreeMap::new(),
        start,
        None,
    );
    assert_eq!(rollout_of(&moving.assignment).hosts, ["a", "b"]);
    assert_eq!(compared_revision(Some(&moving.assignment), NEW + 1), None);
    let domains = domains();
    let no_beats = BTreeMap::new();
    let inputs = Inputs {
        service: SERVICE,
        upgrade: false,
        beats: &no_beats,
        domains: &domains,
        host_timeout: TIMEOUT,
        now: start,
        now_ms: wall_ms(start),
        released: moving.released.as_ref(),
    };
    // b went down: its instance moved to c, which runs the new revision.
    let healed = step(
        Some(&moving.assignment),
        placed(NEW + 1, &["a", "c"]),
        &inputs,
    );
    let assignment = &healed.assignment;
    assert_eq!(assignment.desired_revision, NEW, "the rollout's revision");
    assert!(
        assignment.held.is_empty(),
        "neither b (gone) nor c (new) is held"
    );
    assert_eq!(rollout_of(assignment).step, "host a (1 of 2)");
}
