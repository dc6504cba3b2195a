//! The leader against a real `nats-server`, with entries that go wrong:
//! one service's bad entry never stops the others from being placed, and
//! a service whose desired state is refused keeps its placement and its
//! slots.

use super::tests::{desired, eventually, member};
use super::*;
use crate::lease::spawn_elector;
use crate::model::{Assignment, Beat, Desired};
use crate::names::{assignment_key, beat_key, host_key, service_key};
use crate::signing::{SigningKey, keygen};
use crate::test_support::NatsServer;
use std::collections::BTreeMap;

/// `desired(service)` asking for `instances` workers.
fn workers(service: &str, instances: u32) -> Desired {
    let mut desired = desired(service);
    desired
        .record
        .overrides
        .instances
        .insert("worker".into(), instances);
    desired
}

/// A fabric of one member, `h1` (10 slots), beating; the operator's key
/// and the leader's trust; and a stranger's key.
struct Fabric {
    _server: NatsServer,
    store: FabricStore,
    operator: SigningKey,
    stranger: SigningKey,
    trust: Arc<TrustedKeys>,
    _keys: [tempfile::TempDir; 2],
    beats: tokio::task::JoinHandle<()>,
}

impl Fabric {
    async fn start() -> Self {
        let server = NatsServer::start();
        let store = server.store().await;
        let (keys, strangers) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (key_file, public_file) = keygen(keys.path()).unwrap();
        let (stranger_file, _) = keygen(strangers.path()).unwrap();
        store
            .put(Bucket::State, &host_key("h1"), &member("h1", "d1"))
            .await
            .unwrap();
        let beats = {
            let store = store.clone();
            tokio::spawn(async move {
                for seq in 0u64.. {
                    let beat = Beat {
                        boot: "h1-boot".into(),
                        seq,
                        sent_ms: 0,
                        slots_used: 0,
                        services: BTreeMap::new(),
                        refused: BTreeMap::new(),
                        retrying: BTreeMap::new(),
                        apply_rounds: 0,
                    };
                    store
                        .put(Bucket::Beats, &beat_key("h1"), &beat)
                        .await
                        .unwrap();
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            })
        };
        Fabric {
            _server: server,
            operator: SigningKey::load(&key_file).unwrap(),
            stranger: SigningKey::load(&stranger_file).unwrap(),
            trust: Arc::new(TrustedKeys::load(&public_file).unwrap()),
            store,
            _keys: [keys, strangers],
            beats,
        }
    }

    /// Starts the elector and the leader; stop with the sender.
    fn lead(&self) -> (watch::Sender<bool>, JoinHandle<()>, JoinHandle<()>) {
        let (stop, shutdown) = watch::channel(false);
        let (leadership, elector) = spawn_elector(
            self.store.clone(),
            "h1".into(),
            "h1-boot".into(),
            shutdown.clone(),
        );
        let settings = LeaderSettings {
            suspect_after: Duration::from_secs(3),
            down_after: Duration::from_secs(6),
        };
        let leader = spawn_leader(
            self.store.clone(),
            self.trust.clone(),
            leadership,
            settings,
            shutdown,
        );
        (stop, leader, elector)
    }

    async fn deploy(&self, desired: &Desired) -> u64 {
        let key = service_key(&desired.service);
        self.store
            .create(Bucket::State, &key, &self.operator.sign(desired).unwrap())
            .await
            .unwrap()
    }

    async fn placed(&self, service: &str) -> Option<Assignment> {
        self.store
            .get::<Assignment>(Bucket::State, &assignment_key(service))
            .await
            .ok()
            .flatten()
            .map(|entry| entry.value)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_assignment_stops_no_other_service_and_is_written_over() {
    let fabric = Fabric::start().await;
    let a = fabric.deploy(&workers("a", 2)).await;
    let b = fabric.deploy(&workers("b", 2)).await;
    // Not an assignment: listing leaves it out, creating over it conflicts.
    fabric
        .store
        .put(Bucket::State, &assignment_key("a"), &"garbage")
        .await
        .unwrap();
    let (stop, leader, elector) = fabric.lead();

    eventually(Duration::from_secs(10), "b is placed", || async {
        fabric.placed("b").await.is_some_and(|b_placed| {
            b_placed.desired_revision == b && b_placed.roles["worker"].len() == 2
        })
    })
    .await;
    eventually(
        Duration::from_secs(5),
        "a's malformed assignment is written over",
        || async {
            fabric.placed("a").await.is_some_and(|a_placed| {
                a_placed.desired_revision == a && a_placed.roles["worker"].len() == 2
            })
        },
    )
    .await;

    stop.send_replace(true);
    leader.await.unwrap();
    elector.await.unwrap();
    fabric.beats.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_service_keeps_its_placement_and_its_slots() {
    let fabric = Fabric::start().await;
    let kept = fabric.deploy(&workers("kept", 8)).await;
    let unreadable = fabric.deploy(&workers("unreadable", 1)).await;
    let (stop, leader, elector) = fabric.lead();
    eventually(Duration::from_secs(10), "both are placed", || async {
        let kept_placed = fabric.placed("kept").await;
        let unreadable_placed = fabric.placed("unreadable").await;
        kept_placed.is_some_and(|placed| placed.roles["worker"].len() == 8)
            && unreadable_placed.is_some_and(|placed| placed.roles["worker"].len() == 1)
    })
    .await;
    let before = fabric.placed("kept").await.unwrap();

    // A newer `svc.kept` signed by nobody trusted, and a `svc.unreadable`
    // that is not signed desired state at all: both keep running as placed.
    let forged = fabric.stranger.sign(&workers("kept", 1)).unwrap();
    fabric
        .store
        .update(Bucket::State, &service_key("kept"), &forged, kept)
        .await
        .unwrap();
    fabric
        .store
        .put(Bucket::State, &service_key("unreadable"), &"garbage")
        .await
        .unwrap();
    // Another service wants 4 workers: only the one free slot is its.
    let other = fabric.deploy(&workers("other", 4)).await;
    eventually(
        Duration::from_secs(10),
        "other gets the free slot",
        || async {
            fabric.placed("other").await.is_some_and(|placed| {
                placed.desired_revision == other
                    && placed.roles["worker"].len() == 1
                    && placed.unplaced.get("worker") == Some(&3)
            })
        },
    )
    .await;
    // Some more rounds: nothing kept moves, nothing is removed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(fabric.placed("kept").await, Some(before));
    let still = fabric.placed("unreadable").await.unwrap();
    assert_eq!(
        (still.desired_revision, still.roles["worker"].len()),
        (unreadable, 1)
    );
    assert_eq!(
        fabric.placed("other").await.unwrap().roles["worker"].len(),
        1
    );

    stop.send_replace(true);
    leader.await.unwrap();
    elector.await.unwrap();
    fabric.beats.abort();
}
