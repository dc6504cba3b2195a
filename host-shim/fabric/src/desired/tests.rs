//! The signed chain against a real `nats-server`: a replayed body is
//! refused, an older revision runs only as the one the newest replaced
//! during that rollout, and the operator refuses to re-sign a forgery.

use super::*;
use crate::model::{FabricRollout, RolloutState};
use crate::ops::Operator;
use crate::signing::{SigningKey, keygen};
use crate::test_support::NatsServer;
use std::collections::BTreeMap;
use weft_host::controller::store::{DeploymentRecord, DeploymentSource, Digest};

const MANIFEST: &str = "[service]\nname = \"shop\"\n\
    [roles.worker]\nkind = \"worker\"\ncomponent = \"worker.wasm\"\ninstances = 2\n";

fn desired(generation: u64, replaces: u64) -> Desired {
    Desired {
        service: "shop".into(),
        record: DeploymentRecord {
            source: DeploymentSource {
                manifest_file: "weft.toml".into(),
                manifest: MANIFEST.into(),
                environment: None,
                components: BTreeMap::from([("worker".into(), Digest::of(b"worker"))]),
            },
            overrides: Default::default(),
            generation,
            local: None,
        },
        replaces,
        signed_at_ms: 0,
    }
}

fn assignment(desired_revision: u64, rollout: Option<(u64, u64)>) -> Assignment {
    Assignment {
        term: 1,
        desired_revision,
        roles: BTreeMap::new(),
        unplaced: BTreeMap::new(),
        held: BTreeMap::new(),
        rollout: rollout.map(|(from_revision, to_revision)| FabricRollout {
            from_revision,
            to_revision,
            hosts: vec!["a".into()],
            hosts_done: 0,
            state: RolloutState::Moving,
            step: String::new(),
            reason: None,
            released_at_ms: None,
        }),
    }
}

fn refusal(error: FabricError) -> String {
    assert!(matches!(error, FabricError::Signature(_)), "{error:?}");
    error.to_string()
}

async fn entry(store: &FabricStore, revision: u64) -> Versioned<SignedDesired> {
    store
        .get_at::<SignedDesired>(Bucket::State, &service_key("shop"), revision)
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chain_refuses_replays_and_revisions_no_rollout_names() {
    let server = NatsServer::start();
    let store = server.store().await;
    let keys = tempfile::tempdir().unwrap();
    let (key_file, _) = keygen(keys.path()).unwrap();
    let operator = SigningKey::load(&key_file).unwrap();
    let trust = TrustedKeys::of_key(&operator);
    let key = service_key("shop");
    // Something else in the bucket, so revisions of the key are not 1, 2, 3.
    store.put(Bucket::State, "host.x", &1u32).await.unwrap();

    let one = store
        .create(Bucket::State, &key, &operator.sign(&desired(1, 0)).unwrap())
        .await
        .unwrap();
    let first = entry(&store, one).await;
    assert_eq!(
        verified_newest(&store, &trust, "shop", &first)
            .await
            .unwrap()
            .record
            .generation,
        1
    );
    let two = store
        .update(
            Bucket::State,
            &key,
            &operator.sign(&desired(2, one)).unwrap(),
            one,
        )
        .await
        .unwrap();
    let second = entry(&store, two).await;
    assert_eq!(
        verified_newest(&store, &trust, "shop", &second)
            .await
            .unwrap()
            .replaces,
        one
    );
    store.put(Bucket::State, "host.x", &2u32).await.unwrap();
    let three = store
        .update(
            Bucket::State,
            &key,
            &operator.sign(&desired(3, two)).unwrap(),
            two,
        )
        .await
        .unwrap();
    let third = entry(&store, three).await;

    // The rollout from two to three: a host held at two runs it.
    let rolling = assignment(three, Some((two, three)));
    let held = verified_at(&store, &trust, "shop", two, &second.value, &third, &rolling)
        .await
        .unwrap();
    assert_eq!(held.record.generation, 2);
    let newest = verified_at(
        &store,
        &trust,
        "shop",
        three,
        &third.value,
        &third,
        &rolling,
    );
    assert_eq!(newest.await.unwrap().record.generation, 3);

    // Revision one, which three did not replace: refused, rollout or not.
    for rollout in [None, Some((one, three))] {
        let named = assignment(one, rollout);
        let refused = verified_at(&store, &trust, "shop", one, &first.value, &third, &named);
        assert_eq!(
            refusal(refused.await.unwrap_err()),
            format!("svc.shop revision {one} is not the one revision {three} replaced")
        );
    }
    // Revision two without the rollout that names it: not placed yet (wait,
    // refuse nothing); with another rollout: the same.
    for rollout in [None, Some((one, two))] {
        let lagging = assignment(two, rollout);
        let waiting = verified_at(&store, &trust, "shop", two, &second.value, &third, &lagging);
        let error = waiting.await.unwrap_err();
        assert!(matches!(error, FabricError::Conflict(_)), "{error:?}");
    }

    // The first body, signed and intact, put again as a new revision: the
    // newest no longer chains, and nothing of the service runs.
    let replayed = store.put(Bucket::State, &key, &first.value).await.unwrap();
    let replay = entry(&store, replayed).await;
    assert_eq!(
        refusal(
            verified_newest(&store, &trust, "shop", &replay)
                .await
                .unwrap_err()
        ),
        format!(
            "svc.shop revision {replayed}: its signed body replaces revision 0, but the change before it is revision {three} (an old body written again?)"
        )
    );
    let back = assignment(three, Some((three, replayed)));
    let refused = verified_at(&store, &trust, "shop", three, &third.value, &replay, &back);
    assert!(matches!(
        refused.await.unwrap_err(),
        FabricError::Signature(_)
    ));
    // The second body replayed over the third: it names two, not three.
    let again = store.put(Bucket::State, &key, &second.value).await.unwrap();
    let again = entry(&store, again).await;
    assert!(matches!(
        verified_newest(&store, &trust, "shop", &again)
            .await
            .unwrap_err(),
        FabricError::Signature(_)
    ));

    // Deleted, then deployed again: the new body replaces the delete marker.
    let last = store.last_revision(Bucket::State, &key).await.unwrap();
    store.delete(Bucket::State, &key, last).await.unwrap();
    let marker = store.last_revision(Bucket::State, &key).await.unwrap();
    assert!(marker > last);
    let redeployed = store
        .update(
            Bucket::State,
            &key,
            &operator.sign(&desired(1, marker)).unwrap(),
            marker,
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .previous_revision(Bucket::State, &key, redeployed)
            .await
            .unwrap(),
        marker
    );
    let redeployed = entry(&store, redeployed).await;
    verified_newest(&store, &trust, "shop", &redeployed)
        .await
        .unwrap();
    assert_eq!(
        store
            .previous_revision(Bucket::State, "svc.none", 5)
            .await
            .unwrap(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_refuses_to_re_sign_a_forged_desired_state() {
    let server = NatsServer::start();
    let store = server.store().await;
    let (keys, strangers) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (key_file, _) = keygen(keys.path()).unwrap();
    let (stranger_file, _) = keygen(strangers.path()).unwrap();
    let stranger = SigningKey::load(&stranger_file).unwrap();
    let key = service_key("shop");
    let forged = stranger.sign(&desired(1, 0)).unwrap();
    let revision = store.create(Bucket::State, &key, &forged).await.unwrap();

    let operator = Operator::new(store.clone(), Some(SigningKey::load(&key_file).unwrap()));
    let refused = operator.scale("shop", "worker", 5).await.unwrap_err();
    assert_eq!(
        refusal(refused),
        format!(
            "svc.shop does not verify (signed by key {}, which is not among the trusted keys): deploy it again with a trusted key, or remove it",
            stranger.public_key()
        )
    );
    let refused = operator
        .settings(
            "shop",
            "worker",
            &BTreeMap::from([("k".into(), "v".into())]),
        )
        .await
        .unwrap_err();
    assert!(matches!(refused, FabricError::Signature(_)), "{refused:?}");
    // Nothing was written.
    assert_eq!(
        store.last_revision(Bucket::State, &key).await.unwrap(),
        revision
    );

    // Signed by the stranger, whom a trust file names: built on, then
    // (not settled: no leader placed it) refused for that reason instead.
    let trusting = Operator::with_trust(
        store.clone(),
        Some(SigningKey::load(&key_file).unwrap()),
        Some(TrustedKeys::of_key(&stranger)),
    );
    let waiting = trusting.scale("shop", "worker", 5).await.unwrap_err();
    assert!(matches!(waiting, FabricError::Conflict(_)), "{waiting:?}");
}
