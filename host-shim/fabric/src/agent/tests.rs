//! The agent against a real `nats-server` and a real controller running a
//! test component. The test plays the leader itself (it writes `leader`
//! and `assign.*`), so what it checks is the agent's part alone: which
//! assignments it acts on, what it runs (an earlier revision while held
//! back), what it refuses, what its beat says, and when it removes.

use super::{AgentIdentity, spawn};
use crate::blobs;
use crate::model::{
    Assignment, Beat, Desired, FabricRollout, LeaderRecord, RolePlacement, RolloutState,
    SignedDesired,
};
use crate::names::{LEADER_KEY, assignment_key, beat_key, service_key};
use crate::signing::{SigningKey, TrustedKeys, keygen};
use crate::store::{Bucket, ConnectOptions, FabricStore};
use crate::test_support::NatsServer;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use weft_host::Controller;
use weft_host::connections::{ConnectionLimits, Listening};
use weft_host::controller::store::{DeploymentRecord, DeploymentSource, Digest, Layout, StateDir};
use weft_host::environment::Overrides;
use weft_sandbox::{EngineConfig, Runtime};

const HOST: &str = "h1";
const TERM: u64 = 7;

const MANIFEST: &str = r#"
[service]
name = "part"
upgrade-settle-ms = 100
upgrade-timeout-secs = 2

[roles.worker]
kind = "worker"
component = "worker.wasm"
queues = ["jobs"]
buckets = ["ledger"]
[roles.worker.settings]
version = "1"
mode = "work"
start = "ok"
"#;

/// A controller on a fabric-layout state folder in `dir`.
pub(crate) fn controller(dir: &std::path::Path) -> Arc<Controller> {
    let runtime = Arc::new(
        Runtime::new(EngineConfig {
            max_instances: 16,
            ..EngineConfig::default()
        })
        .unwrap(),
    );
    weft_host::launch::controller(
        runtime,
        StateDir::open(dir, Layout::Fabric).unwrap(),
        Duration::from_secs(5),
        Vec::new(),
        Listening::new(ConnectionLimits {
            max_connections: 16,
            idle_timeout: Duration::from_secs(5),
            min_body_rate: None,
        }),
    )
}

/// Service `service`, running the test worker, with setting `version`.
pub(crate) fn desired(service: &str, digest: &Digest, version: Option<&str>) -> Desired {
    let mut overrides = Overrides::default();
    if let Some(version) = version {
        overrides.settings.insert(
            "worker".into(),
            BTreeMap::from([("version".into(), version.into())]),
        );
    }
    Desired {
        service: service.into(),
        record: DeploymentRecord {
            source: DeploymentSource {
                manifest_file: "weft.toml".into(),
                manifest: MANIFEST.into(),
                environment: None,
                components: BTreeMap::from([("worker".into(), digest.clone())]),
            },
            overrides,
            generation: 1,
            local: None,
        },
        replaces: 0,
        signed_at_ms: 0,
    }
}

fn assignment(term: u64, desired_revision: u64, hosts: &[&str]) -> Assignment {
    let placement: RolePlacement = (0u32..)
        .zip(hosts)
        .map(|(index, host)| (index, (*host).to_owned()))
        .collect();
    Assignment {
        term,
        desired_revision,
        roles: BTreeMap::from([("worker".into(), placement)]),
        unplaced: BTreeMap::new(),
        held: BTreeMap::new(),
        rollout: None,
    }
}

/// `assignment` within a fabric-wide rollout from revision `from` to
/// `to` (the only way a host is given a revision older than the newest).
fn rolling(mut assignment: Assignment, from: u64, to: u64, state: RolloutState) -> Assignment {
    assignment.rollout = Some(FabricRollout {
        from_revision: from,
        to_revision: to,
        hosts: vec![HOST.into()],
        hosts_done: 0,
        state,
        step: String::new(),
        reason: None,
        released_at_ms: None,
    });
    assignment
}

/// Writes `assign.<service>` whatever it held.
async fn assign(store: &FabricStore, service: &str, assignment: &Assignment) {
    store
        .put(Bucket::State, &assignment_key(service), assignment)
        .await
        .unwrap();
}

async fn beat(store: &FabricStore) -> Option<Beat> {
    let beat = store.get::<Beat>(Bucket::Beats, &beat_key(HOST)).await;
    beat.unwrap().map(|beat| beat.value)
}

/// The `svc.part` revision this host's beat says it runs.
async fn beat_revision(store: &FabricStore) -> Option<u64> {
    let beat = beat(store).await?;
    beat.services.get("part").map(|part| part.desired_revision)
}

/// Waits (at most a minute) until `done` holds.
pub(crate) async fn until<F: Future<Output = bool>>(what: &str, mut done: impl FnMut() -> F) {
    let give_up = Instant::now() + Duration::from_secs(60);
    while !done().await {
        assert!(Instant::now() < give_up, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn worker_count(controller: &Controller) -> Option<u32> {
    let record = controller.record("part")?;
    record.local?.roles.get("worker").copied()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_runs_its_part_of_verified_current_assignments_only() {
    let server = NatsServer::start();
    let (keys, others, state) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let (key_file, trust_file) = keygen(keys.path()).unwrap();
    let (forger_file, _) = keygen(others.path()).unwrap();
    let key = SigningKey::load(&key_file).unwrap();
    let forger = SigningKey::load(&forger_file).unwrap();
    let trust = Arc::new(TrustedKeys::load(&trust_file).unwrap());
    let store = FabricStore::connect(&ConnectOptions::new(&server.url()))
        .await
        .unwrap();
    let controller = controller(state.path());

    let component = std::fs::read(weft_test_artifacts::ROLLOUT_WORKER).unwrap();
    let digest = Digest::of(&component);
    blobs::upload(&store, &digest, component.into())
        .await
        .unwrap();
    let leader = LeaderRecord {
        holder: "h0".into(),
        boot: "b0".into(),
        term: TERM,
        renewal: 0,
    };
    store
        .create(Bucket::State, LEADER_KEY, &leader)
        .await
        .unwrap();
    let signed = key.sign(&desired("part", &digest, None)).unwrap();
    let revision = store
        .create(Bucket::State, &service_key("part"), &signed)
        .await
        .unwrap();
    // Written by a deposed leader: ignored.
    assign(
        &store,
        "part",
        &assignment(TERM - 1, revision, &[HOST, HOST]),
    )
    .await;

    let (shutdown, stop) = watch::channel(false);
    let identity = AgentIdentity {
        host_id: HOST.into(),
        boot: "b1".into(),
        advertise: "127.0.0.1".parse().unwrap(),
        queues_url: server.url(),
    };
    let agent = spawn(store.clone(), controller.clone(), trust, identity, stop);
    until("a first beat", || async { beat(&store).await.is_some() }).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        controller.service_names().is_empty(),
        "a deposed leader's assignment runs nothing"
    );
    assert_eq!(
        beat(&store).await.unwrap().apply_rounds,
        0,
        "a round that skipped an assignment of another term applied nothing"
    );

    // The current term's: this host's part runs, fetched from the store.
    assign(
        &store,
        "part",
        &assignment(TERM, revision, &[HOST, HOST, "h2"]),
    )
    .await;
    until("the part runs and the beat says so", || async {
        let Some(beat) = beat(&store).await else {
            return false;
        };
        beat.services.get("part").is_some_and(|part| {
            part.desired_revision == revision && part.roles["worker"].ready == 2
        })
    })
    .await;
    let first = beat(&store).await.unwrap();
    assert!(
        first.apply_rounds > 0 && first.retrying.is_empty(),
        "{first:?}"
    );
    until("the beat counts the apply rounds", || async {
        beat(&store)
            .await
            .is_some_and(|beat| beat.apply_rounds > first.apply_rounds)
    })
    .await;
    let running = controller.record("part").unwrap();
    let local = running.local.unwrap();
    assert_eq!(local.roles, BTreeMap::from([("worker".into(), 2)]));
    assert_eq!(local.queues_url, Some(server.url()));
    assert_eq!(local.listen_ip, Some("127.0.0.1".parse().unwrap()));

    // More instances here: scaled.
    assign(
        &store,
        "part",
        &assignment(TERM, revision, &[HOST, HOST, HOST]),
    )
    .await;
    until("scaled to 3", || async {
        worker_count(&controller) == Some(3)
    })
    .await;

    // A new signed desired state with another setting: rolled out here.
    let mut changed = desired("part", &digest, Some("2"));
    changed.replaces = revision;
    let changed = key.sign(&changed).unwrap();
    let changed_revision = store
        .update(Bucket::State, &service_key("part"), &changed, revision)
        .await
        .unwrap();
    assign(
        &store,
        "part",
        &assignment(TERM, changed_revision, &[HOST, HOST, HOST]),
    )
    .await;
    until("the setting rolled out", || async {
        controller.record("part").is_some_and(|record| {
            record
                .overrides
                .settings
                .get("worker")
                .and_then(|s| s.get("version"))
                == Some(&"2".to_owned())
        })
    })
    .await;
    until("the beat names the new revision", || async {
        beat(&store).await.is_some_and(|beat| {
            beat.services.get("part").map(|part| part.desired_revision) == Some(changed_revision)
        })
    })
    .await;

    // Held back by a fabric-wide rollout: this host runs the earlier
    // revision, read from the bucket's history, while the desired is newer.
    let mut held = rolling(
        assignment(TERM, changed_revision, &[HOST, HOST, HOST]),
        revision,
        changed_revision,
        RolloutState::Moving,
    );
    held.held.insert(HOST.into(), revision);
    assign(&store, "part", &held).await;
    until("the held host runs the earlier revision", || async {
        let setting = controller.record("part").and_then(|record| {
            record
                .overrides
                .settings
                .get("worker")?
                .get("version")
                .cloned()
        });
        setting.is_none() && beat_revision(&store).await == Some(revision)
    })
    .await;
    // Released: it moves to the desired revision.
    assign(
        &store,
        "part",
        &assignment(TERM, changed_revision, &[HOST, HOST, HOST]),
    )
    .await;
    until("the released host runs the desired revision", || async {
        beat_revision(&store).await == Some(changed_revision)
    })
    .await;

    // A revision whose local rollout rolls back: refused for that revision
    // in the beat, which still names the revision that runs.
    let mut failing = desired("part", &digest, Some("3"));
    failing.replaces = changed_revision;
    if let Some(worker) = failing.record.overrides.settings.get_mut("worker") {
        worker.insert("start".into(), "fail".into());
    }
    let failing_revision = store
        .update(
            Bucket::State,
            &service_key("part"),
            &key.sign(&failing).unwrap(),
            changed_revision,
        )
        .await
        .unwrap();
    assign(
        &store,
        "part",
        &assignment(TERM, failing_revision, &[HOST, HOST, HOST]),
    )
    .await;
    until("the rolled-back local rollout is refused", || async {
        beat(&store)
            .await
            .is_some_and(|beat| beat.refusal("part", failing_revision).is_some())
    })
    .await;
    assert_eq!(beat_revision(&store).await, Some(changed_revision));
    // The fabric rolls back: the earlier revision runs, refused no more.
    let rolled_back = |hosts: &[&str]| {
        rolling(
            assignment(TERM, changed_revision, hosts),
            changed_revision,
            failing_revision,
            RolloutState::RolledBack,
        )
    };
    assign(&store, "part", &rolled_back(&[HOST, HOST, HOST])).await;
    until("the fabric's rollback clears the refusal", || async {
        beat(&store).await.is_some_and(|beat| {
            !beat.refused.contains_key("part")
                && beat.services.get("part").map(|part| part.desired_revision)
                    == Some(changed_revision)
        })
    })
    .await;

    // Signed by a key the host does not trust: refused, and nothing runs.
    let forged = forger.sign(&desired("forged", &digest, None)).unwrap();
    let forged_revision = store
        .create(Bucket::State, &service_key("forged"), &forged)
        .await
        .unwrap();
    assign(
        &store,
        "forged",
        &assignment(TERM, forged_revision, &[HOST]),
    )
    .await;
    until("the forgery is refused in the beat", || async {
        beat(&store)
            .await
            .is_some_and(|beat| beat.refused.contains_key("forged"))
    })
    .await;
    assert_eq!(controller.service_names(), ["part"]);

    // Its part moved to another host: removed here.
    assign(&store, "part", &rolled_back(&["h2"])).await;
    until("the part is removed", || async {
        controller.service_names().is_empty()
    })
    .await;

    // Back here, then the service removed from the fabric: removed here.
    assign(&store, "part", &rolled_back(&[HOST])).await;
    until("the part runs again", || async {
        worker_count(&controller) == Some(1)
    })
    .await;
    let assigned = store
        .last_revision(Bucket::State, &assignment_key("part"))
        .await
        .unwrap();
    store
        .delete(Bucket::State, &assignment_key("part"), assigned)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        controller.service_names(),
        ["part"],
        "no assignment, but its desired state is still there"
    );
    store
        .delete(Bucket::State, &service_key("part"), failing_revision)
        .await
        .unwrap();
    until("the removed service stops here", || async {
        controller.service_names().is_empty()
    })
    .await;
    let signed_forged: Option<SignedDesired> = store
        .get(Bucket::State, &service_key("forged"))
        .await
        .unwrap()
        .map(|entry| entry.value);
    assert!(signed_forged.is_some(), "refusing leaves the store alone");

    shutdown.send_replace(true);
    for task in [agent.beat, agent.apply] {
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }
    controller.shutdown().await;
}
