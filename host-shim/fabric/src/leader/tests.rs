//! The leader against a real `nats-server`: it judges members by their
//! beats, places only what verifies against the trusted keys, moves the
//! instances of a member gone silent, and removes the placement of a
//! service that is gone.

use super::*;
use crate::lease::spawn_elector;
use crate::model::{
    Assignment, Beat, Capacity, Desired, HostRecord, HostState, HostStateRecord, SignedDesired,
};
use crate::names::{assignment_key, beat_key, host_key, host_state_key, service_key};
use crate::signing::{SigningKey, keygen};
use crate::store::ConnectOptions;
use crate::test_support::NatsServer;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use tokio::time::Instant;
use weft_host::controller::store::{DeploymentRecord, DeploymentSource, Digest};

const MANIFEST: &str = "[service]\nname = \"shop\"\n\
    [roles.worker]\nkind = \"worker\"\ncomponent = \"worker.wasm\"\ninstances = 2\n";

pub(super) fn desired(service: &str) -> Desired {
    Desired {
        service: service.into(),
        record: DeploymentRecord {
            source: DeploymentSource {
                manifest_file: "weft.toml".into(),
                manifest: MANIFEST.into(),
                environment: None,
                components: BTreeMap::from([("worker".into(), Digest::of(b"worker"))]),
            },
            overrides: Default::default(),
            generation: 1,
            local: None,
        },
        replaces: 0,
        signed_at_ms: 0,
    }
}

pub(super) fn member(id: &str, domain: &str) -> HostRecord {
    HostRecord {
        id: id.into(),
        boot: format!("{id}-boot"),
        advertise: "127.0.0.1".parse().unwrap(),
        admin: None,
        fault_domain: domain.into(),
        labels: BTreeMap::new(),
        capacity: Capacity {
            slots: 10,
            memory_mib: 1024,
            cpus: 2,
        },
        drain: false,
        version: "test".into(),
    }
}

/// Polls `check` until it holds, failing after `limit`.
pub(super) async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let give_up = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < give_up, "not in time: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_places_verified_services_and_heals_a_silent_member() {
    let server = NatsServer::start();
    let store = FabricStore::connect(&ConnectOptions::new(&server.url()))
        .await
        .unwrap();
    let keys = tempfile::tempdir().unwrap();
    let (key_file, public_file) = keygen(keys.path()).unwrap();
    let operator = SigningKey::load(&key_file).unwrap();
    let trust = Arc::new(TrustedKeys::load(&public_file).unwrap());
    let strangers = tempfile::tempdir().unwrap();
    let (stranger_file, _) = keygen(strangers.path()).unwrap();
    let stranger = SigningKey::load(&stranger_file).unwrap();

    for (id, domain) in [("a", "d1"), ("b", "d2")] {
        store
            .put(Bucket::State, &host_key(id), &member(id, domain))
            .await
            .unwrap();
    }
    // Both members beat until one is silenced.
    let beating = Arc::new(Mutex::new(vec!["a", "b"]));
    let beats = {
        let store = store.clone();
        let beating = beating.clone();
        tokio::spawn(async move {
            for seq in 0u64.. {
                let ids = beating.lock().unwrap().clone();
                for id in ids {
                    let beat = Beat {
                        boot: format!("{id}-boot"),
                        seq,
                        sent_ms: 0,
                        slots_used: 0,
                        services: BTreeMap::new(),
                        refused: BTreeMap::new(),
                        retrying: BTreeMap::new(),
                        apply_rounds: 0,
                    };
                    store
                        .put(Bucket::Beats, &beat_key(id), &beat)
                        .await
                        .unwrap();
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };

    let (stop, shutdown) = watch::channel(false);
    let (leadership, elector) =
        spawn_elector(store.clone(), "a".into(), "a-boot".into(), shutdown.clone());
    let settings = LeaderSettings {
        suspect_after: Duration::from_secs(1),
        down_after: Duration::from_secs(2),
    };
    let leader = spawn_leader(store.clone(), trust, leadership.clone(), settings, shutdown);

    let shop_revision = store
        .create(
            Bucket::State,
            &service_key("shop"),
            &operator.sign(&desired("shop")).unwrap(),
        )
        .await
        .unwrap();
    let forged: SignedDesired = stranger.sign(&desired("evil")).unwrap();
    store
        .create(Bucket::State, &service_key("evil"), &forged)
        .await
        .unwrap();

    let placed = || async {
        store
            .get::<Assignment>(Bucket::State, &assignment_key("shop"))
            .await
            .unwrap()
            .map(|entry| entry.value)
    };
    eventually(Duration::from_secs(5), "shop is placed", || async {
        placed().await.is_some_and(|shop| {
            Some(shop.term) == *leadership.borrow()
                && shop.desired_revision == shop_revision
                && shop.roles["worker"].len() == 2
        })
    })
    .await;
    let state_of = |id: &'static str| {
        let store = store.clone();
        async move {
            store
                .get::<HostStateRecord>(Bucket::State, &host_state_key(id))
                .await
                .unwrap()
                .map(|entry| entry.value.state)
        }
    };
    assert_eq!(state_of("a").await, Some(HostState::Ready));
    assert_eq!(state_of("b").await, Some(HostState::Ready));

    // b falls silent: suspect, then down, and its instance moves to a.
    beating.lock().unwrap().retain(|id| *id != "b");
    eventually(
        Duration::from_secs(5),
        "b is down and shop runs on a",
        || async {
            state_of("b").await == Some(HostState::Down)
                && placed()
                    .await
                    .is_some_and(|shop| shop.roles["worker"].values().all(|host| host == "a"))
        },
    )
    .await;
    // The forged service was never placed.
    assert!(
        store
            .get::<Assignment>(Bucket::State, &assignment_key("evil"))
            .await
            .unwrap()
            .is_none()
    );

    // shop is removed: so is its placement.
    let current = store
        .last_revision(Bucket::State, &service_key("shop"))
        .await
        .unwrap();
    store
        .delete(Bucket::State, &service_key("shop"), current)
        .await
        .unwrap();
    eventually(
        Duration::from_secs(3),
        "shop's placement is removed",
        || async { placed().await.is_none() },
    )
    .await;

    stop.send_replace(true);
    leader.await.unwrap();
    elector.await.unwrap();
    beats.abort();
}

/// What a fake host does with the revision its assignment gives it.
#[derive(Debug, Clone, Copy, Default)]
struct FakeHost {
    /// The `svc.shop` revision it reports running, ready.
    runs: u64,
    /// It stays at what it runs (a slow rollout).
    frozen: bool,
    /// It refuses every revision newer than this one (its local rollouts roll back).
    refuses_after: Option<u64>,
}

/// Beats for hosts a and b every 200 ms, as `hosts` say, from `assign.shop`.
fn fake_beats(
    store: FabricStore,
    hosts: Arc<Mutex<BTreeMap<&'static str, FakeHost>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for seq in 0u64.. {
            let assignment = store
                .get::<Assignment>(Bucket::State, &assignment_key("shop"))
                .await
                .unwrap()
                .map(|entry| entry.value);
            let beats: Vec<(&str, Beat)> = {
                let mut hosts = hosts.lock().unwrap();
                hosts
                    .iter_mut()
                    .map(|(id, fake)| {
                        let mut refused = BTreeMap::new();
                        let wanted = assignment.as_ref().map(|a| a.revision_for(id));
                        match wanted {
                            Some(wanted)
                                if fake.refuses_after.is_some_and(|after| wanted > after) =>
                            {
                                refused.insert(
                                    "shop".into(),
                                    crate::model::refusal(wanted, "it rolled back"),
                                );
                            }
                            Some(wanted) if !fake.frozen => fake.runs = wanted,
                            _ => {}
                        }
                        let services = (fake.runs > 0)
                            .then(|| {
                                let worker = crate::model::RolePart {
                                    declared: 1,
                                    ready: 1,
                                    listen: None,
                                    health: None,
                                };
                                let part = crate::model::ServicePart {
                                    desired_revision: fake.runs,
                                    generation: 1,
                                    operation: None,
                                    roles: BTreeMap::from([("worker".into(), worker)]),
                                };
                                ("shop".to_owned(), part)
                            })
                            .into_iter()
                            .collect();
                        let beat = Beat {
                            boot: format!("{id}-boot"),
                            seq,
                            sent_ms: 0,
                            slots_used: 0,
                            services,
                            refused,
                            retrying: BTreeMap::new(),
                            apply_rounds: 0,
                        };
                        (*id, beat)
                    })
                    .collect()
            };
            for (id, beat) in beats {
                store
                    .put(Bucket::Beats, &beat_key(id), &beat)
                    .await
                    .unwrap();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

/// `desired("shop")` with another component (an upgrade) or worker count (a scale).
fn changed(component: &[u8], instances: Option<u32>) -> Desired {
    let mut desired = desired("shop");
    desired
        .record
        .source
        .components
        .insert("worker".into(), Digest::of(component));
    if let Some(count) = instances {
        desired
            .record
            .overrides
            .instances
            .insert("worker".into(), count);
    }
    desired
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_walks_the_hosts_one_at_a_time_and_a_refusal_rolls_it_back() {
    use crate::model::RolloutState;
    let server = NatsServer::start();
    let store = FabricStore::connect(&ConnectOptions::new(&server.url()))
        .await
        .unwrap();
    let keys = tempfile::tempdir().unwrap();
    let (key_file, public_file) = keygen(keys.path()).unwrap();
    let operator = SigningKey::load(&key_file).unwrap();
    let trust = Arc::new(TrustedKeys::load(&public_file).unwrap());
    // b's fault domain comes first.
    for (id, domain) in [("a", "d2"), ("b", "d1")] {
        store
            .put(Bucket::State, &host_key(id), &member(id, domain))
            .await
            .unwrap();
    }
    let hosts = Arc::new(Mutex::new(BTreeMap::from([
        ("a", FakeHost::default()),
        ("b", FakeHost::default()),
    ])));
    let beats = fake_beats(store.clone(), hosts.clone());
    let (stop, shutdown) = watch::channel(false);
    let (leadership, elector) =
        spawn_elector(store.clone(), "a".into(), "a-boot".into(), shutdown.clone());
    let settings = LeaderSettings {
        suspect_after: Duration::from_secs(3),
        down_after: Duration::from_secs(6),
    };
    let leader = spawn_leader(store.clone(), trust, leadership, settings, shutdown);
    let placed = || async {
        store
            .get::<Assignment>(Bucket::State, &assignment_key("shop"))
            .await
            .unwrap()
            .map(|entry| entry.value)
    };
    // Each signed over the revision it replaces, as the operator does.
    let sign = |desired: &Desired, replaces: u64| {
        let mut desired = desired.clone();
        desired.replaces = replaces;
        operator.sign(&desired).unwrap()
    };
    let key = service_key("shop");

    let first = store
        .create(Bucket::State, &key, &sign(&desired("shop"), 0))
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "shop runs on a and b", || async {
        placed().await.is_some_and(|shop| {
            shop.desired_revision == first
                && shop.rollout.is_none()
                && shop.roles["worker"].values().collect::<Vec<_>>() != [&"a", &"a"]
                && shop.roles["worker"].len() == 2
        })
    })
    .await;
    // b is slow: it holds the rollout at its first host, a waits.
    hosts.lock().unwrap().get_mut("b").unwrap().frozen = true;
    let upgraded = store
        .update(
            Bucket::State,
            &key,
            &sign(&changed(b"worker-2", None), first),
            first,
        )
        .await
        .unwrap();
    eventually(
        Duration::from_secs(5),
        "b moves first, a is held",
        || async {
            placed().await.is_some_and(|shop| {
                let rollout = shop.rollout.as_ref();
                shop.desired_revision == upgraded
                    && shop.held == BTreeMap::from([("a".into(), first)])
                    && rollout.is_some_and(|r| {
                        r.state == RolloutState::Moving
                            && r.hosts == ["b", "a"]
                            && r.step == "host b (1 of 2)"
                    })
            })
        },
    )
    .await;
    hosts.lock().unwrap().get_mut("b").unwrap().frozen = false;
    eventually(Duration::from_secs(5), "the rollout is done", || async {
        placed().await.is_some_and(|shop| {
            shop.desired_revision == upgraded
                && shop.held.is_empty()
                && shop.rollout.as_ref().is_some_and(|r| {
                    (r.state, r.hosts_done, r.from_revision, r.to_revision)
                        == (RolloutState::Done, 2, first, upgraded)
                })
        })
    })
    .await;

    // A scale (the old revision read from the bucket's history): no rollout.
    let scaled = store
        .update(
            Bucket::State,
            &key,
            &sign(&changed(b"worker-2", Some(3)), upgraded),
            upgraded,
        )
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "scaled at once", || async {
        placed().await.is_some_and(|shop| {
            shop.desired_revision == scaled
                && shop.rollout.is_none()
                && shop.held.is_empty()
                && shop.roles["worker"].len() == 3
        })
    })
    .await;

    // The next upgrade is refused by b, the first host: rolled back.
    hosts.lock().unwrap().get_mut("b").unwrap().refuses_after = Some(scaled);
    let refused = store
        .update(
            Bucket::State,
            &key,
            &sign(&changed(b"worker-3", Some(3)), scaled),
            scaled,
        )
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "the fabric rolled back", || async {
        placed().await.is_some_and(|shop| {
            shop.desired_revision == scaled
                && shop.held.is_empty()
                && shop.rollout.as_ref().is_some_and(|r| {
                    r.state == RolloutState::RolledBack
                        && r.to_revision == refused
                        && r.reason.as_deref()
                            == Some(
                                format!("host b refused revision {refused}: it rolled back")
                                    .as_str(),
                            )
                })
        })
    })
    .await;
    // Earlier revisions are read from the bucket's history, by key.
    let earlier = store
        .get_at::<SignedDesired>(Bucket::State, &key, first)
        .await
        .unwrap();
    assert_eq!(earlier.map(|entry| entry.revision), Some(first));
    let hosts_revision = store
        .last_revision(Bucket::State, &host_key("a"))
        .await
        .unwrap();
    let elsewhere = store
        .get_at::<SignedDesired>(Bucket::State, &key, hosts_revision)
        .await
        .unwrap();
    assert!(
        elsewhere.is_none(),
        "a revision of another key is not this key's"
    );
    // It stays rolled back while the desired state stays.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let shop = placed().await.unwrap();
    assert_eq!(shop.desired_revision, scaled);
    assert_eq!(
        shop.rollout.map(|r| r.state),
        Some(RolloutState::RolledBack)
    );

    stop.send_replace(true);
    leader.await.unwrap();
    elector.await.unwrap();
    beats.abort();
}
