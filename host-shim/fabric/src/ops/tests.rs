//! The operator's pure parts: reports merged from records built here, the
//! HAProxy backend's text, and what a change is refused for.

use super::*;
use crate::model::{
    Assignment, Beat, Capacity, HostState, HostStateRecord, LeaderRecord, RolePart, ServicePart,
};
use std::net::SocketAddr;

const MANIFEST: &str = r#"
[service]
name = "shop"

[roles.web]
kind = "web"
component = "web.wasm"
listen = "127.0.0.1:8080"
instances = 2
health = "/healthz"

[roles.worker]
kind = "worker"
component = "worker.wasm"
instances = 3
"#;

fn source(manifest: &str) -> DeploymentSource {
    DeploymentSource {
        manifest_file: "weft.toml".into(),
        manifest: manifest.into(),
        environment: None,
        components: BTreeMap::from([
            ("web".to_owned(), Digest::of(b"web")),
            ("worker".to_owned(), Digest::of(b"worker")),
        ]),
    }
}

fn signed(service: &str, generation: u64) -> SignedDesired {
    let desired = Desired {
        service: service.into(),
        record: DeploymentRecord {
            source: source(MANIFEST),
            overrides: Overrides::default(),
            generation,
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

fn host(id: &str, drain: bool) -> Versioned<HostRecord> {
    Versioned {
        value: HostRecord {
            id: id.into(),
            boot: "b".into(),
            advertise: "10.0.0.1".parse().unwrap(),
            admin: None,
            fault_domain: format!("rack-{id}"),
            labels: BTreeMap::from([("zone".into(), "a".into())]),
            capacity: Capacity {
                slots: 2000,
                memory_mib: 1024,
                cpus: 2,
            },
            drain,
            version: "1".into(),
        },
        revision: 1,
    }
}

fn part(revision: u64, roles: &[(&str, u32, u32, Option<&str>)]) -> ServicePart {
    ServicePart {
        desired_revision: revision,
        generation: 1,
        operation: None,
        roles: roles
            .iter()
            .map(|(role, declared, ready, listen)| {
                (
                    (*role).to_owned(),
                    RolePart {
                        declared: *declared,
                        ready: *ready,
                        listen: listen.map(|l| l.parse().unwrap()),
                        health: None,
                    },
                )
            })
            .collect(),
    }
}

fn beat(services: Vec<(&str, ServicePart)>) -> Beat {
    Beat {
        boot: "b".into(),
        seq: 1,
        sent_ms: 5,
        slots_used: 7,
        services: services
            .into_iter()
            .map(|(name, part)| (name.to_owned(), part))
            .collect(),
        refused: BTreeMap::new(),
        retrying: BTreeMap::new(),
        apply_rounds: 0,
    }
}

/// `shop` at revision 7, placed on a (web 0, worker 0 and 2) and b (web
/// 1, worker 1); a runs revision 7 and is ready, b still runs revision 6.
fn snapshot() -> Snapshot {
    let assignment = Assignment {
        term: 2,
        desired_revision: 7,
        roles: BTreeMap::from([
            (
                "web".into(),
                BTreeMap::from([(0, "a".into()), (1, "b".into())]),
            ),
            (
                "worker".into(),
                BTreeMap::from([(0, "a".into()), (1, "b".into()), (2, "a".into())]),
            ),
        ]),
        unplaced: BTreeMap::new(),
        held: BTreeMap::new(),
        rollout: None,
    };
    Snapshot {
        hosts: BTreeMap::from([
            ("a".into(), host("a", false)),
            ("b".into(), host("b", false)),
            ("c".into(), host("c", true)),
        ]),
        host_states: BTreeMap::from([(
            "b".into(),
            HostStateRecord {
                term: 2,
                state: HostState::Suspect,
            },
        )]),
        services: BTreeMap::from([(
            "shop".into(),
            Versioned {
                value: signed("shop", 2),
                revision: 7,
            },
        )]),
        assignments: BTreeMap::from([("shop".into(), assignment)]),
        beats: BTreeMap::from([
            (
                "a".into(),
                beat(vec![(
                    "shop",
                    part(
                        7,
                        &[("web", 1, 1, Some("10.0.0.1:8080")), ("worker", 2, 2, None)],
                    ),
                )]),
            ),
            (
                "b".into(),
                beat(vec![(
                    "shop",
                    part(
                        6,
                        &[("web", 1, 1, Some("10.0.0.2:8080")), ("worker", 1, 1, None)],
                    ),
                )]),
            ),
        ]),
        leader: Some(LeaderRecord {
            holder: "a".into(),
            boot: "b".into(),
            term: 2,
            renewal: 0,
        }),
    }
}

#[test]
fn status_merges_desired_state_placement_and_beats() {
    let mut snapshot = snapshot();
    let report = status::service_report(&snapshot, "shop");
    assert_eq!(report.generation, 2);
    assert_eq!(report.desired_revision, 7);
    assert_eq!(report.placed_revision, Some(7));
    let web = &report.roles[0];
    assert_eq!((web.name.as_str(), web.declared, web.ready), ("web", 2, 1));
    assert_eq!(web.placed["a"], vec![0]);
    assert_eq!(web.hosts["b"].revision, Some(6));
    assert_eq!(
        web.hosts["a"].listen,
        Some("10.0.0.1:8080".parse().unwrap())
    );
    let worker = &report.roles[1];
    assert_eq!(worker.placed["a"], vec![0, 2]);
    assert_eq!((worker.declared, worker.ready), (3, 2));
    assert!(!report.converged);
    assert!(status::is_changing(&report));
    assert_eq!(report.progress(), "web 1/2 ready, worker 2/3 ready");
    assert!(
        report
            .missing()
            .contains("host b does not run revision 7 of web yet"),
        "{}",
        report.missing()
    );

    // b catches up: converged, and no longer changing.
    snapshot
        .beats
        .get_mut("b")
        .unwrap()
        .services
        .get_mut("shop")
        .unwrap()
        .desired_revision = 7;
    let report = status::service_report(&snapshot, "shop");
    assert!(report.converged, "{}", report.missing());
    assert!(!status::is_changing(&report));

    // A host that refuses it holds the service back but does not keep it
    // "changing" (an upgrade must be able to fix what it refused).
    let b = snapshot.beats.get_mut("b").unwrap();
    b.services.clear();
    b.refused.insert(
        "shop".into(),
        crate::model::refusal(7, "svc.shop: signature\ndoes not verify"),
    );
    let report = status::service_report(&snapshot, "shop");
    assert!(!report.converged);
    assert!(!status::is_changing(&report));
    assert_eq!(report.refused["b"], "svc.shop: signature does not verify");
    assert!(report.progress().contains("host b refused it"));

    // Unplaced instances hold convergence back.
    snapshot.beats.get_mut("b").unwrap().refused.clear();
    let assignment = snapshot.assignments.get_mut("shop").unwrap();
    assignment.unplaced.insert("worker".into(), 1);
    let report = status::service_report(&snapshot, "shop");
    assert!(!report.converged);
    assert!(
        report
            .missing()
            .contains("1 instances of worker have no host")
    );
}

#[test]
fn status_of_an_unknown_or_unplaced_service() {
    let mut snapshot = snapshot();
    let missing = status::fabric_status(&snapshot, Some("nope")).unwrap_err();
    assert_eq!(
        missing.to_string(),
        "service nope is not deployed in the fabric"
    );
    snapshot.assignments.clear();
    let all = status::fabric_status(&snapshot, None).unwrap();
    let report = &all.services[0];
    assert_eq!(report.placed_revision, None);
    assert!(status::is_changing(report));
    assert!(report.roles.iter().all(|role| role.hosts.is_empty()));
    assert!(
        report
            .progress()
            .ends_with("waiting for the leader to place it")
    );
    let json = serde_json::to_string(&all).unwrap();
    assert_eq!(serde_json::from_str::<FabricStatus>(&json).unwrap(), all);
}

#[test]
fn hosts_report_states_runs_and_the_leader() {
    let report = hosts::fabric_hosts(&snapshot());
    let leader = report.leader.as_ref().unwrap();
    assert_eq!((leader.host.as_str(), leader.term), ("a", 2));
    let by_id: BTreeMap<&str, &HostReport> =
        report.hosts.iter().map(|h| (h.id.as_str(), h)).collect();
    assert_eq!(by_id["a"].state, HostState::Ready);
    assert_eq!(by_id["b"].state, HostState::Suspect);
    // c never beat: down, whatever else it says.
    assert_eq!(by_id["c"].state, HostState::Down);
    assert!(by_id["c"].drain);
    assert_eq!(by_id["a"].runs, ["shop/web", "shop/worker"]);
    assert_eq!(by_id["a"].slots_used, 7);
    assert_eq!(by_id["c"].slots_used, 0);
}

#[test]
fn endpoints_are_the_ready_hosts_of_a_web_role() {
    let mut snapshot = snapshot();
    snapshot.hosts.get_mut("b").unwrap().value.advertise = "10.0.0.2".parse().unwrap();
    let found = endpoints::web_endpoints(&snapshot, "shop", "web").unwrap();
    let expected: Vec<SocketAddr> = vec![
        "10.0.0.1:8080".parse().unwrap(),
        "10.0.0.2:8080".parse().unwrap(),
    ];
    assert_eq!(found.addrs, expected);
    // A beat naming another IP steers nothing: the host record's IP counts.
    let mut forged = snapshot.clone();
    let web = forged
        .beats
        .get_mut("b")
        .unwrap()
        .services
        .get_mut("shop")
        .unwrap();
    web.roles.get_mut("web").unwrap().listen = Some("192.0.2.9:8080".parse().unwrap());
    let found = endpoints::web_endpoints(&forged, "shop", "web").unwrap();
    assert_eq!(found.addrs, expected);
    assert_eq!(found.health.as_deref(), Some("/healthz"));
    // A host whose instance is not ready is left out.
    let b = snapshot.beats.get_mut("b").unwrap();
    b.services
        .get_mut("shop")
        .unwrap()
        .roles
        .get_mut("web")
        .unwrap()
        .ready = 0;
    let found = endpoints::web_endpoints(&snapshot, "shop", "web").unwrap();
    assert_eq!(found.addrs, expected[..1]);
    let worker = endpoints::web_endpoints(&snapshot, "shop", "worker").unwrap_err();
    assert_eq!(
        worker.to_string(),
        "shop/worker is a worker role: only a web role has endpoints"
    );
    let unknown = endpoints::web_endpoints(&snapshot, "shop", "api").unwrap_err();
    assert_eq!(unknown.to_string(), "service shop has no role api");
    assert!(endpoints::web_endpoints(&snapshot, "nope", "web").is_err());
}

#[test]
fn haproxy_backend_text() {
    let addrs: Vec<SocketAddr> = vec![
        "10.0.0.1:8080".parse().unwrap(),
        "[2001:db8::1]:8080".parse().unwrap(),
    ];
    assert_eq!(
        haproxy_backend("shop_web", &addrs, Some("/healthz")),
        "backend shop_web\n    balance roundrobin\n    option httpchk\n    http-check send meth GET uri /healthz\n    http-check expect status 200\n    default-server inter 500ms fall 2 rise 2\n    server h0 10.0.0.1:8080 check\n    server h1 [2001:db8::1]:8080 check\n"
    );
    let plain = haproxy_backend("b", &addrs[..1], None);
    assert_eq!(
        plain,
        "backend b\n    balance roundrobin\n    default-server inter 500ms fall 2 rise 2\n    server h0 10.0.0.1:8080 check\n"
    );
    assert!(check_backend_name("shop-web.v1:a_b").is_ok());
    for bad in ["", "a b", "a\nserver", &"a".repeat(64)] {
        assert!(check_backend_name(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn a_manifest_keeping_its_queues_on_one_disk_is_refused() {
    let embedded = format!("{MANIFEST}\n[queues]\nbackend = \"embedded\"\n");
    let refused = resolved(&source(&embedded), &Overrides::default()).unwrap_err();
    assert_eq!(
        refused.to_string(),
        "service shop: [queues] backend \"embedded\" cannot run in a fabric (a queue on one host's disk strands its messages with that host)"
    );
    // Naming no backend is fine: hosts put the queues on the fabric's server.
    assert!(resolved(&source(MANIFEST), &Overrides::default()).is_ok());
    let broken = resolved(&source("[service]\n"), &Overrides::default()).unwrap_err();
    assert!(matches!(broken, FabricError::Refused(_)), "{broken:?}");
    assert!(!broken.to_string().contains('\n'));
}

#[test]
fn scaling_a_web_role_or_past_the_limit_is_refused_by_the_overrides() {
    let mut overrides = Overrides::default();
    overrides.instances.insert("web".into(), 3);
    let web = resolved(&source(MANIFEST), &overrides).unwrap_err();
    assert!(
        web.to_string()
            .starts_with("roles.web.instances: applies to worker roles"),
        "{web}"
    );
    overrides.instances.clear();
    overrides.instances.insert("worker".into(), 0);
    assert!(resolved(&source(MANIFEST), &overrides).is_err());
    overrides.instances.insert("worker".into(), 5);
    assert_eq!(
        resolved(&source(MANIFEST), &overrides).unwrap().roles["worker"].instances(),
        5
    );
}

#[test]
fn an_upgrade_keeps_the_changes_that_still_apply() {
    let mut overrides = Overrides::default();
    overrides.instances.insert("worker".into(), 5);
    overrides.instances.insert("gone".into(), 2);
    overrides
        .settings
        .insert("gone".into(), BTreeMap::from([("k".into(), "v".into())]));
    let manifest = resolved(&source(MANIFEST), &Overrides::default()).unwrap();
    let kept = carried(overrides, &manifest);
    assert_eq!(kept.instances, BTreeMap::from([("worker".into(), 5)]));
    assert!(kept.settings.is_empty());
    assert_eq!(
        resolved(&source(MANIFEST), &kept).unwrap().roles["worker"].instances(),
        5
    );
}

#[test]
fn capacity_counts_every_service_and_names_the_shortfall() {
    let mut snapshot = snapshot();
    let views = capacity::host_views(&snapshot);
    let states: BTreeMap<&str, HostState> =
        views.iter().map(|v| (v.id.as_str(), v.state)).collect();
    // c asked to drain: no room there even before the leader says so.
    assert_eq!(states["c"], HostState::Draining);
    assert_eq!(states["b"], HostState::Suspect);
    let manifest = resolved(&source(MANIFEST), &Overrides::default()).unwrap();
    let demands = crate::placement::Demand::of_manifest("shop", &manifest);
    let web = demands.iter().find(|d| d.role == "web").unwrap();
    assert!(web.one_per_host && web.count == 2 && web.slots_each >= 1);
    let worker = demands.iter().find(|d| d.role == "worker").unwrap();
    assert!(!worker.one_per_host && worker.count == 3 && worker.slots_each == 1);
    // Its own current placement fits.
    capacity::check_fits(&snapshot, "shop", &manifest).unwrap();
    // A second service wanting 3 web hosts: only a is ready, b is suspect.
    let big = MANIFEST
        .replace("name = \"shop\"", "name = \"big\"")
        .replace("instances = 2", "instances = 3");
    let big = resolved(&source(&big), &Overrides::default()).unwrap();
    let refused = capacity::check_fits(&snapshot, "big", &big).unwrap_err();
    assert!(matches!(refused, FabricError::Refused(_)), "{refused:?}");
    assert!(refused.to_string().contains("big"), "{refused}");
    // Ready hosts with room: it fits.
    snapshot.host_states.clear();
    snapshot.hosts.get_mut("c").unwrap().value.drain = false;
    capacity::check_fits(&snapshot, "big", &big).unwrap();
}
