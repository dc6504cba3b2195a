//! Placement's tests: spreading, stability, labels, capacity and its
//! refusal, healing, scaling, draining, and invariants over random fabrics.

use super::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;

fn host(id: &str, domain: &str, capacity: u32) -> HostView {
    HostView {
        id: id.into(),
        fault_domain: domain.into(),
        labels: BTreeMap::new(),
        capacity,
        state: HostState::Ready,
    }
}

fn labelled(id: &str, domain: &str, capacity: u32, key: &str, value: &str) -> HostView {
    let mut view = host(id, domain, capacity);
    view.labels.insert(key.into(), value.into());
    view
}

fn worker(service: &str, count: u32) -> Demand {
    Demand {
        service: service.into(),
        role: "worker".into(),
        count,
        slots_each: 1,
        one_per_host: false,
        requires: BTreeMap::new(),
    }
}

fn web(service: &str, count: u32, slots_each: u32) -> Demand {
    Demand {
        role: "web".into(),
        slots_each,
        one_per_host: true,
        ..worker(service, count)
    }
}

fn requiring(mut demand: Demand, key: &str, value: &str) -> Demand {
    demand.requires.insert(key.into(), value.into());
    demand
}

fn key(service: &str, role: &str) -> RoleKey {
    (service.into(), role.into())
}

fn set_state(hosts: &mut [HostView], id: &str, state: HostState) {
    for view in hosts.iter_mut().filter(|view| view.id == id) {
        view.state = state;
    }
}

fn on_host(placement: &RolePlacement, id: &str) -> usize {
    placement.values().filter(|host| *host == id).count()
}

#[test]
fn three_workers_spread_over_three_fault_domains() {
    let hosts = [
        host("a1", "a", 10),
        host("a2", "a", 10),
        host("b1", "b", 10),
        host("b2", "b", 10),
        host("c1", "c", 10),
    ];
    let plan = place(&hosts, &[worker("shop", 3)], &Current::new());
    let placement = &plan.placements[&key("shop", "worker")];
    let domains: BTreeSet<&str> = placement
        .values()
        .map(|id| {
            &hosts
                .iter()
                .find(|view| &view.id == id)
                .unwrap()
                .fault_domain
        })
        .map(String::as_str)
        .collect();
    assert_eq!(placement.len(), 3);
    assert_eq!(domains, BTreeSet::from(["a", "b", "c"]));
    assert!(plan.unplaced.is_empty());
}

#[test]
fn a_reconcile_with_nothing_to_do_moves_nothing() {
    let hosts: Vec<HostView> = (0..6)
        .map(|n| host(&format!("h{n}"), &format!("d{}", n % 3), 8))
        .collect();
    let demands = [worker("shop", 11), web("shop", 4, 2), worker("mail", 5)];
    let plan = place(&hosts, &demands, &Current::new());
    assert_eq!(place(&hosts, &demands, &plan.placements), plan);
}

#[test]
fn roles_run_only_on_hosts_with_the_labels_they_require() {
    let hosts = [
        labelled("a1", "1", 10, "zone", "a"),
        labelled("a2", "2", 10, "zone", "a"),
        labelled("b1", "3", 10, "zone", "b"),
        host("plain", "4", 10),
    ];
    let demand = requiring(worker("shop", 6), "zone", "a");
    let plan = place(&hosts, &[demand], &Current::new());
    let placement = &plan.placements[&key("shop", "worker")];
    assert_eq!(placement.len(), 6);
    assert!(placement.values().all(|id| id == "a1" || id == "a2"));
    assert_eq!(on_host(placement, "a1"), 3);
}

#[test]
fn capacity_is_respected_and_the_refusal_names_the_numbers() {
    let hosts = [
        labelled("a1", "1", 3, "zone", "a"),
        labelled("a2", "2", 3, "zone", "a"),
        labelled("a3", "3", 2, "zone", "a"),
        labelled("b1", "4", 50, "zone", "b"),
    ];
    let demand = requiring(worker("shop", 12), "zone", "a");
    let plan = place(&hosts, std::slice::from_ref(&demand), &Current::new());
    let placement = &plan.placements[&key("shop", "worker")];
    assert_eq!(
        (
            on_host(placement, "a1"),
            on_host(placement, "a2"),
            on_host(placement, "a3")
        ),
        (3, 3, 2)
    );
    assert_eq!(plan.unplaced[&key("shop", "worker")], 4);
    let refusal = check_fits(&hosts, &[demand], &Current::new()).unwrap_err();
    assert!(matches!(refusal, FabricError::Refused(_)));
    assert_eq!(
        refusal.to_string(),
        "service shop role worker needs 12 slots on hosts with zone=a; the fabric has 8 free there (3 hosts)"
    );

    let small = [host("h1", "1", 3), host("h2", "2", 3), host("h3", "3", 2)];
    let refusal = check_fits(&small, &[worker("shop", 12)], &Current::new()).unwrap_err();
    assert_eq!(
        refusal.to_string(),
        "service shop role worker needs 12 slots on ready hosts; the fabric has 8 free (3 hosts)"
    );
    check_fits(&small, &[worker("shop", 8)], &Current::new()).unwrap();
}

#[test]
fn a_web_role_short_of_hosts_is_refused_with_the_host_count() {
    let hosts = [
        labelled("a1", "1", 10, "zone", "a"),
        labelled("a2", "2", 10, "zone", "a"),
        labelled("b1", "3", 10, "zone", "b"),
    ];
    let demand = requiring(web("shop", 3, 2), "zone", "a");
    let refusal = check_fits(&hosts, &[demand], &Current::new()).unwrap_err();
    assert_eq!(
        refusal.to_string(),
        "service shop role web needs 3 hosts with zone=a; the fabric has 2 ready there"
    );
    let refusal = check_fits(&hosts, &[web("shop", 4, 2)], &Current::new()).unwrap_err();
    assert_eq!(
        refusal.to_string(),
        "service shop role web needs 4 hosts; the fabric has 3 ready"
    );
}

#[test]
fn slots_split_too_thin_are_refused_as_such() {
    let hosts = [host("h1", "1", 3), host("h2", "2", 3)];
    let mut demand = worker("shop", 1);
    demand.slots_each = 4;
    let refusal = check_fits(&hosts, &[demand, worker("mail", 1)], &Current::new()).unwrap_err();
    assert_eq!(
        refusal.to_string(),
        "service shop role worker needs 4 slots on ready hosts; the fabric has 5 free (2 hosts), room for only 0 of its 1 instances of 4 slots"
    );
}

#[test]
fn a_down_host_instances_move_and_the_others_stay() {
    let mut hosts = vec![host("a", "1", 10), host("b", "2", 10), host("c", "3", 10)];
    let demands = [worker("shop", 6)];
    let before = place(&hosts, &demands, &Current::new());
    let was = &before.placements[&key("shop", "worker")];
    assert_eq!(on_host(was, "b"), 2);
    set_state(&mut hosts, "b", HostState::Down);
    let after = place(&hosts, &demands, &before.placements);
    let now = &after.placements[&key("shop", "worker")];
    assert_eq!(now.len(), 6);
    for (index, host_id) in was {
        if host_id == "b" {
            assert_ne!(&now[index], "b");
        } else {
            assert_eq!(&now[index], host_id, "index {index} moved");
        }
    }
    assert!(after.unplaced.is_empty());
}

#[test]
fn a_returning_host_gets_nothing_back_unless_something_is_unplaced() {
    let mut hosts = vec![host("a", "1", 10), host("b", "2", 10), host("c", "3", 10)];
    let demands = [worker("shop", 6)];
    let before = place(&hosts, &demands, &Current::new());
    set_state(&mut hosts, "b", HostState::Down);
    let healed = place(&hosts, &demands, &before.placements);
    set_state(&mut hosts, "b", HostState::Ready);
    let back = place(&hosts, &demands, &healed.placements);
    assert_eq!(back, healed);
    assert_eq!(on_host(&back.placements[&key("shop", "worker")], "b"), 0);

    // Too little room without b: what was unplaced goes back to it.
    let mut hosts = vec![host("a", "1", 2), host("b", "2", 2), host("c", "3", 2)];
    let before = place(&hosts, &demands, &Current::new());
    set_state(&mut hosts, "b", HostState::Down);
    let short = place(&hosts, &demands, &before.placements);
    assert_eq!(short.unplaced[&key("shop", "worker")], 2);
    set_state(&mut hosts, "b", HostState::Ready);
    let whole = place(&hosts, &demands, &short.placements);
    assert!(whole.unplaced.is_empty());
    assert_eq!(on_host(&whole.placements[&key("shop", "worker")], "b"), 2);
}

#[test]
fn a_web_role_runs_once_per_host() {
    let hosts = [host("a", "1", 10), host("b", "1", 10), host("c", "2", 10)];
    let plan = place(&hosts, &[web("shop", 5, 2)], &Current::new());
    let placement = &plan.placements[&key("shop", "web")];
    let distinct: BTreeSet<&String> = placement.values().collect();
    assert_eq!((placement.len(), distinct.len()), (3, 3));
    assert_eq!(plan.unplaced[&key("shop", "web")], 2);

    // Two indices on one host: the lower stays, the other moves.
    let current = Current::from([(
        key("shop", "web"),
        RolePlacement::from([(0, "a".into()), (1, "a".into())]),
    )]);
    let plan = place(&hosts, &[web("shop", 2, 2)], &current);
    let placement = &plan.placements[&key("shop", "web")];
    assert_eq!(placement[&0], "a");
    assert_eq!(placement[&1], "c", "the other fault domain first");
}

#[test]
fn scaling_down_drops_the_highest_indices() {
    let hosts = [host("a", "1", 10), host("b", "2", 10), host("c", "3", 10)];
    let five = place(&hosts, &[worker("shop", 5)], &Current::new());
    let three = place(&hosts, &[worker("shop", 3)], &five.placements);
    let was = &five.placements[&key("shop", "worker")];
    let expected: RolePlacement = was.range(..3).map(|(i, h)| (*i, h.clone())).collect();
    assert_eq!(three.placements[&key("shop", "worker")], expected);
}

#[test]
fn a_draining_host_is_emptied_and_a_suspect_one_keeps_what_it_has() {
    let mut hosts = vec![host("a", "1", 10), host("b", "2", 10), host("c", "3", 10)];
    let demands = [worker("shop", 6), web("shop", 2, 1)];
    let before = place(&hosts, &demands, &Current::new());
    set_state(&mut hosts, "b", HostState::Draining);
    set_state(&mut hosts, "c", HostState::Suspect);
    let after = place(&hosts, &demands, &before.placements);
    for (role, placement) in &after.placements {
        assert_eq!(on_host(placement, "b"), 0, "{role:?} left on b");
        let was = &before.placements[role];
        assert_eq!(on_host(placement, "c"), on_host(was, "c"), "{role:?} on c");
    }
    assert_eq!(on_host(&after.placements[&key("shop", "worker")], "a"), 4);
    // b's web instance has nowhere to go: a serves the role already and
    // suspect c gets nothing new.
    assert_eq!(after.unplaced, BTreeMap::from([(key("shop", "web"), 1)]));
}

#[test]
fn a_host_whose_capacity_shrank_sheds_its_highest_indices() {
    let current = Current::from([(
        key("shop", "worker"),
        (0..4).map(|index| (index, "a".to_owned())).collect(),
    )]);
    let hosts = [host("a", "1", 2), host("b", "2", 10)];
    let plan = place(&hosts, &[worker("shop", 4)], &current);
    assert_eq!(
        plan.placements[&key("shop", "worker")],
        RolePlacement::from([
            (0, "a".into()),
            (1, "a".into()),
            (2, "b".into()),
            (3, "b".into())
        ])
    );
}

#[test]
fn roles_no_longer_demanded_and_unknown_hosts_are_dropped() {
    let hosts = [host("a", "1", 2)];
    let current = Current::from([
        (
            key("gone", "worker"),
            RolePlacement::from([(0, "a".into()), (1, "a".into())]),
        ),
        (
            key("shop", "worker"),
            RolePlacement::from([(0, "vanished".into())]),
        ),
    ]);
    let plan = place(&hosts, &[worker("shop", 2)], &current);
    assert_eq!(
        plan.placements,
        BTreeMap::from([(
            key("shop", "worker"),
            RolePlacement::from([(0, "a".into()), (1, "a".into())])
        )])
    );
}

/// A random fabric: 1–20 hosts in 1–5 domains, some labelled, some not
/// ready; 1–8 demands, some web, some requiring a label.
fn random_fabric(rng: &mut StdRng) -> (Vec<HostView>, Vec<Demand>) {
    let domains = rng.random_range(1..=5);
    let hosts = (0..rng.random_range(1..=20))
        .map(|n| {
            let mut view = host(
                &format!("h{n:02}"),
                &format!("d{}", rng.random_range(0..domains)),
                rng.random_range(0..=12),
            );
            if rng.random_bool(0.5) {
                view.labels
                    .insert("zone".into(), format!("z{}", rng.random_range(0..2)));
            }
            view.state = random_state(rng);
            view
        })
        .collect();
    let demands = (0..rng.random_range(1..=8))
        .map(|n| {
            let service = format!("s{}", n / 2);
            let mut demand = if n % 2 == 0 {
                worker(&service, rng.random_range(0..=15))
            } else {
                web(&service, rng.random_range(0..=6), rng.random_range(0..=4))
            };
            demand.slots_each = rng.random_range(0..=3).max(u32::from(demand.one_per_host));
            if rng.random_bool(0.3) {
                demand
                    .requires
                    .insert("zone".into(), format!("z{}", rng.random_range(0..2)));
            }
            demand
        })
        .collect();
    (hosts, demands)
}

fn random_state(rng: &mut StdRng) -> HostState {
    match rng.random_range(0..10) {
        0 => HostState::Down,
        1 => HostState::Draining,
        2 => HostState::Suspect,
        _ => HostState::Ready,
    }
}

/// Every promise a plan keeps, whatever the input.
fn check_invariants(hosts: &[HostView], demands: &[Demand], current: &Current, plan: &Plan) {
    let mut used: BTreeMap<&str, u64> = BTreeMap::new();
    for demand in demands {
        let placement = &plan.placements[&demand.key()];
        let missing = plan.unplaced.get(&demand.key()).copied().unwrap_or(0);
        assert_eq!(
            u32::try_from(placement.len()).unwrap() + missing,
            demand.count
        );
        let mut serving = BTreeSet::new();
        for (index, id) in placement {
            assert!(*index < demand.count, "index {index} of {}", demand.count);
            let view = hosts.iter().find(|view| &view.id == id).unwrap();
            assert!(demand.admits(view), "{id} lacks {:?}", demand.requires);
            let was_there = current.get(&demand.key()).and_then(|now| now.get(index)) == Some(id);
            match view.state {
                HostState::Ready => {}
                HostState::Suspect => assert!(was_there, "new instance on suspect {id}"),
                state => panic!("instance on {state} host {id}"),
            }
            assert!(
                serving.insert(id) || !demand.one_per_host,
                "second web instance on {id}"
            );
            *used.entry(id).or_default() += u64::from(demand.slots_each.max(1));
        }
    }
    for (id, used) in used {
        let view = hosts.iter().find(|view| view.id == id).unwrap();
        assert!(
            used <= u64::from(view.capacity),
            "{id}: {used} > {}",
            view.capacity
        );
    }
}

#[test]
fn random_fabrics_keep_every_invariant_and_settle_at_once() {
    let mut rng = StdRng::seed_from_u64(12);
    for _ in 0..400 {
        let (mut hosts, demands) = random_fabric(&mut rng);
        let mut current = Current::new();
        // Place, then let hosts fail, drain and return, reconciling each time.
        for _ in 0..4 {
            let plan = place(&hosts, &demands, &current);
            check_invariants(&hosts, &demands, &current, &plan);
            assert_eq!(
                place(&hosts, &demands, &plan.placements),
                plan,
                "not a fixed point"
            );
            assert_eq!(
                check_fits(&hosts, &demands, &current).is_ok(),
                plan.unplaced.is_empty()
            );
            current = plan.placements;
            for view in &mut hosts {
                if rng.random_bool(0.3) {
                    view.state = random_state(&mut rng);
                }
                if rng.random_bool(0.1) {
                    view.capacity = rng.random_range(0..=12);
                }
            }
        }
    }
}

#[test]
fn roles_become_demands() {
    let manifest = weft_host::manifest::Manifest::parse(
        std::path::Path::new("weft.toml"),
        "[service]\nname = \"shop\"\n\
         [roles.web]\nkind = \"web\"\ncomponent = \"web.wasm\"\nlisten = \"127.0.0.1:0\"\ninstances = 2\n\
         [roles.web.limits]\nmax-in-flight = 4\n\
         [roles.worker]\nkind = \"worker\"\ncomponent = \"worker.wasm\"\ninstances = 3\nplacement = { zone = \"a\" }\n",
    )
    .unwrap();
    let demands = Demand::of_manifest("shop", &manifest);
    let web = demands.iter().find(|d| d.role == "web").unwrap();
    assert_eq!((web.count, web.slots_each, web.one_per_host), (2, 8, true));
    assert!(web.requires.is_empty());
    let worker = demands.iter().find(|d| d.role == "worker").unwrap();
    assert_eq!(
        (worker.count, worker.slots_each, worker.one_per_host),
        (3, 1, false)
    );
    assert_eq!(worker.requires["zone"], "a");
    assert!(demands.iter().all(|d| d.service == "shop"));
}

#[test]
fn slots_held_by_fixed_placements_are_not_given_to_others() {
    // `kept` runs 3 web instances of 4 slots on a, b, c (its desired state
    // refused: it stays). Each host has 5 slots: 1 left for anything else.
    let hosts = vec![host("a", "d1", 5), host("b", "d2", 5), host("c", "d3", 5)];
    let kept_demand = web("kept", 3, 4);
    let kept: Current = BTreeMap::from([(
        key("kept", "web"),
        BTreeMap::from([(0, "a".into()), (1, "b".into()), (2, "c".into())]),
    )]);
    let held = slots_held(&[kept_demand], &kept);
    assert_eq!(
        held,
        BTreeMap::from([("a".into(), 4), ("b".into(), 4), ("c".into(), 4)])
    );
    let plan = place_beside(&hosts, &held, &[worker("shop", 5)], &Current::new());
    assert_eq!(plan.placements[&key("shop", "worker")].len(), 3);
    assert_eq!(plan.unplaced[&key("shop", "worker")], 2);
    // Without them held, the slots look free.
    let unaware = place(&hosts, &[worker("shop", 5)], &Current::new());
    assert!(unaware.unplaced.is_empty());
    // An instance whose demand is unknown holds one slot; unknown hosts
    // are ignored by placement.
    let unknown: Current = BTreeMap::from([(
        key("lost", "worker"),
        BTreeMap::from([(0, "a".into()), (1, "a".into()), (2, "gone".into())]),
    )]);
    let held = slots_held(&[], &unknown);
    assert_eq!(held, BTreeMap::from([("a".into(), 2), ("gone".into(), 1)]));
    let plan = place_beside(&hosts, &held, &[worker("shop", 15)], &Current::new());
    assert_eq!(plan.unplaced[&key("shop", "worker")], 2);
}
