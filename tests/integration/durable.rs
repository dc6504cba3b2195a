//! The embedded backend through the real `weft` binary: nothing
//! acknowledged is lost when the host is killed -9 under load, again and
//! again; a locked or damaged state folder, or one other users can write
//! to, is a one-line error at start; and
//! worker failures on a durable queue end in redelivery and the poison queue.

use crate::ledger::{self, Dice, Sent};
use crate::support::{Weft, cache_dir, error_line, eventually, http, run_weft, runtime};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use weft_broker::{EmbeddedBroker, QueueSettings, SendOptions};
use weft_broker::{KvStore, QueueBroker};
use weft_sandbox::{CpuShare, Grants, GuestFailure, RateLimits, RoleSpec, SandboxLimits};
use weft_test_artifacts::CHAOS_WORKER;

/// How many times the crash test kills the host.
const KILLS: u32 = 20;

fn up_args<'a>(manifest: &'a str, state: &'a str, cache: &'a str) -> [&'a str; 7] {
    [
        "up",
        "--no-build",
        "--cache-dir",
        cache,
        "--state-dir",
        state,
        manifest,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_when_the_host_is_killed_repeatedly() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("weft.toml");
    std::fs::write(&manifest, ledger::manifest(2, "backend = \"embedded\"")).unwrap();
    let state = dir.path().join("state");
    let (manifest, state, cache) = (
        manifest.to_str().unwrap().to_owned(),
        state.to_str().unwrap().to_owned(),
        cache_dir().display().to_string(),
    );
    let sent = Arc::new(Mutex::new(Sent::default()));
    let mut dice = Dice::new();
    // Each delivery on record, with the life that first recorded it.
    let mut lives: BTreeMap<String, (u32, ledger::Delivery)> = BTreeMap::new();
    let mut note = |life: u32, deliveries: Vec<ledger::Delivery>| {
        for delivery in deliveries {
            lives
                .entry(delivery.key.clone())
                .or_insert((life, delivery));
        }
    };
    for life in 0..KILLS {
        let weft = Weft::start(&up_args(&manifest, &state, &cache)).unwrap();
        let before = sent.lock().unwrap().acknowledged.len();
        let stop = Arc::new(AtomicBool::new(false));
        let load = tokio::spawn(ledger::load(
            weft.url("web"),
            sent.clone(),
            stop.clone(),
            10,
        ));
        // Killed at a random moment of steady sending and receiving, once
        // this life's sends are being acknowledged.
        eventually(Duration::from_secs(60), "a send to be acknowledged", || {
            let sent = sent.clone();
            async move { (sent.lock().unwrap().acknowledged.len() > before).then_some(()) }
        })
        .await;
        tokio::time::sleep(Duration::from_millis(dice.between(200, 1500))).await;
        drop(weft); // SIGKILL, then reaped
        stop.store(true, Ordering::Relaxed);
        load.await.unwrap();
        // Note what this life's workers recorded, from a copy of the store
        // as the kill left it: the next life must recover the file itself.
        let copy = tempfile::tempdir().unwrap();
        std::fs::copy(
            Path::new(&state).join("queues.redb"),
            copy.path().join("queues.redb"),
        )
        .unwrap();
        let store = EmbeddedBroker::open(copy.path(), QueueSettings::default()).unwrap();
        note(life, ledger::deliveries(&store, "ledger/ledger").await);
        drop(store);
        eprintln!(
            "life {life}: {} acknowledged so far",
            sent.lock().unwrap().acknowledged.len()
        );
    }
    // One last life, without load, until every message is done.
    let mut weft = Weft::start(&up_args(&manifest, &state, &cache)).unwrap();
    let length = format!("{}/length/jobs", weft.url("web"));
    eventually(Duration::from_secs(120), "the queue to drain", || {
        let length = length.clone();
        async move { (http("GET", &length, "").await.ok()?.body == "0").then_some(()) }
    })
    .await;
    assert!(weft.terminate().unwrap().success(), "{}", weft.log());

    let store = EmbeddedBroker::open(Path::new(&state), QueueSettings::default()).unwrap();
    note(KILLS, ledger::deliveries(&store, "ledger/ledger").await);
    let sent = std::mem::take(&mut *sent.lock().unwrap());
    let report = ledger::check(&store, "ledger/ledger", &sent).await;
    eprintln!(
        "kills={KILLS} acknowledged={} attempted={} delivered={} lost={} unexpected={} duplicates={}",
        sent.acknowledged.len(),
        sent.attempted.len(),
        report.delivered,
        report.lost.len(),
        report.unexpected.len(),
        report.duplicates
    );
    ledger::assert_sound(&report);
    assert!(
        sent.acknowledged.len() >= usize::try_from(KILLS).unwrap(),
        "too little load to mean anything"
    );

    // Every message is done and its deliveries have rising dequeue counts,
    // so a message's last delivery is the one that completed it: count, per
    // life, the messages completed in it.
    let mut last: BTreeMap<&str, (u32, u32)> = BTreeMap::new();
    let mut first_life: BTreeMap<&str, u32> = BTreeMap::new();
    for (life, delivery) in lives.values() {
        let entry = last
            .entry(&delivery.body)
            .or_insert((delivery.count, *life));
        if delivery.count > entry.0 {
            *entry = (delivery.count, *life);
        }
        let first = first_life.entry(&delivery.body).or_insert(*life);
        *first = (*first).min(*life);
    }
    let mut completed = vec![0usize; usize::try_from(KILLS).unwrap() + 1];
    for (_, life) in last.values() {
        completed[usize::try_from(*life).unwrap()] += 1;
    }
    // Messages delivered in one life and again in a later one: leased (or
    // done but not yet settled) when the host was killed, and back after
    // the restart.
    let came_back = lives
        .values()
        .filter(|(life, delivery)| first_life[delivery.body.as_str()] < *life)
        .count();
    eprintln!("completed per life: {completed:?}; delivered again after a kill: {came_back}");
    for (life, done) in completed.iter().take(completed.len() - 1).enumerate() {
        assert!(*done > 0, "life {life} completed nothing before its kill");
    }
    assert!(came_back > 0, "no kill caught a message in flight");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_or_damaged_state_dir_is_a_one_line_error_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("weft.toml");
    std::fs::write(&manifest, ledger::manifest(1, "")).unwrap();
    let state = dir.path().join("state");
    let cache = cache_dir().display().to_string();
    let args = up_args(manifest.to_str().unwrap(), state.to_str().unwrap(), &cache);

    // Locked: a host already runs the service with this state folder.
    let first = Weft::start(&args).unwrap();
    let (ok, stderr) = run_weft(&args);
    assert!(!ok);
    let line = error_line(&stderr);
    assert!(
        line.contains("queues.redb") && line.contains("in use by another process"),
        "{line}"
    );
    drop(first);

    // Damaged: the store file is garbage.
    std::fs::write(state.join("queues.redb"), vec![0x42; 100_000]).unwrap();
    let (ok, stderr) = run_weft(&args);
    assert!(!ok);
    let line = error_line(&stderr);
    assert!(
        line.contains("queues.redb") && line.contains("damaged"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_dir_others_can_write_is_refused_on_one_line() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("weft.toml");
    std::fs::write(&manifest, ledger::manifest(1, "")).unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    let cache = cache_dir().display().to_string();
    let args = up_args(manifest.to_str().unwrap(), state.to_str().unwrap(), &cache);
    let (ok, stderr) = run_weft(&args);
    assert!(!ok);
    let line = error_line(&stderr);
    assert!(
        line.contains(state.to_str().unwrap()) && line.contains("writable by other users"),
        "{line}"
    );
    assert!(!state.join("queues.redb").exists(), "the store was opened");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_embedded_backend_a_trapping_worker_gets_its_message_back_until_it_is_poisoned() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedBroker::open(dir.path(), QueueSettings::default()).unwrap());
    let spec = RoleSpec {
        grants: Grants {
            service: "test".into(),
            role: "worker".into(),
            queues: ["tasks".to_owned()].into(),
            buckets: ["results".to_owned()].into(),
            ..Grants::default()
        },
        limits: SandboxLimits::default(),
        rate_limits: RateLimits::default(),
        cpu: CpuShare::default(),
        queues: store.clone(),
        kv: store.clone(),
    };
    let role = Arc::new(
        runtime()
            .worker_role(Path::new(CHAOS_WORKER), spec)
            .unwrap(),
    );
    let failures = Arc::new(Mutex::new(Vec::new()));
    let task = {
        let (role, failures) = (role.clone(), failures.clone());
        tokio::spawn(async move {
            loop {
                if let Err(failure) = role.run_instance(0, std::future::pending()).await {
                    failures.lock().unwrap().push(failure);
                }
            }
        })
    };
    let id = store
        .send("test/tasks", b"panic".to_vec(), SendOptions::now())
        .await
        .unwrap();
    let ok = store
        .send("test/tasks", b"ok".to_vec(), SendOptions::now())
        .await
        .unwrap();
    eventually(
        Duration::from_secs(60),
        "the message to reach the poison queue",
        || async { (store.len("test/tasks-poison").await.unwrap() == 1).then_some(()) },
    )
    .await;
    task.abort();
    // Delivered five times, once more each time (the instance trapped and
    // the message came back), then moved with its reason; its neighbour done.
    let seen = store
        .get("test/results", &format!("seen/{id}"))
        .await
        .unwrap();
    assert_eq!(seen.as_deref(), Some(&b"5"[..]));
    assert_eq!(
        store.get("test/results", &ok).await.unwrap().as_deref(),
        Some(&b"done dequeue=1"[..])
    );
    let poisoned = store.peek("test/tasks-poison", 1).await.unwrap();
    assert_eq!(poisoned[0].id, id);
    assert!(
        poisoned[0]
            .poison_reason
            .as_deref()
            .is_some_and(|r| r.contains("5 times")),
        "{poisoned:?}"
    );
    let failures = failures.lock().unwrap();
    assert!(failures.len() >= 5, "{failures:?}");
    assert!(
        failures.iter().all(|f| matches!(f, GuestFailure::Trap(_))),
        "{failures:?}"
    );
}
