//! Lifecycle hooks and draining, in process with real guests: a worker's
//! `start` runs before it is ready and `stop` after it drained, and the fuel
//! `start` burns is charged to the role; a failing
//! `start` keeps it from running; a draining worker finishes its batch and
//! takes nothing new; one that ignores the stop is dropped after its grace
//! period; a web role runs its hooks in sandboxes of their own; a component
//! without hooks runs unchanged.

use crate::support::{eventually, runtime, spec};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use weft_broker::SendOptions;
use weft_broker::{KvStore, MemoryBroker, QueueBroker};
use weft_sandbox::{GuestFailure, InstancePhase, SandboxLimits, WorkerExit, WorkerRole};
use weft_test_artifacts::{HELLO_WEB, LEDGER_WORKER, ROLLOUT_WEB, ROLLOUT_WORKER};

/// A rollout worker with these settings, over a fresh broker.
fn worker(
    settings: &[(&str, &str)],
    limits: SandboxLimits,
) -> (Arc<WorkerRole>, Arc<MemoryBroker>) {
    let (mut spec, broker) = spec("worker", &["jobs"], &["ledger"], limits);
    spec.grants.settings = settings
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let role = runtime()
        .worker_role(Path::new(ROLLOUT_WORKER), spec)
        .expect("the guest loads");
    (Arc::new(role), broker)
}

async fn keys(broker: &MemoryBroker, prefix: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut cursor = None;
    loop {
        let page = broker.list_keys("test/ledger", cursor).await.unwrap();
        found.extend(page.keys.into_iter().filter(|k| k.starts_with(prefix)));
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => return found,
        }
    }
}

async fn send(broker: &MemoryBroker, bodies: impl IntoIterator<Item = String>) {
    for body in bodies {
        broker
            .send("test/jobs", body.into_bytes(), SendOptions::now())
            .await
            .unwrap();
    }
}

/// Runs instance 0 of `role` in a task; returns its phases, a stop switch
/// and the task.
type Run = tokio::task::JoinHandle<Result<WorkerExit, GuestFailure>>;
fn run(role: &Arc<WorkerRole>) -> (Arc<Mutex<Vec<InstancePhase>>>, watch::Sender<bool>, Run) {
    let phases = Arc::new(Mutex::new(Vec::new()));
    let (stop, mut stopped) = watch::channel(false);
    let role = role.clone();
    let seen = phases.clone();
    let task = tokio::spawn(async move {
        role.run_instance_with(
            0,
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            },
            move |phase| seen.lock().unwrap().push(phase),
        )
        .await
    });
    (phases, stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_runs_start_before_it_is_ready_and_stop_after_it_drains() {
    let (role, broker) = worker(&[("version", "1")], SandboxLimits::default());
    assert!(role.has_hooks());
    send(&broker, (0..20).map(|i| format!("m{i}"))).await;
    let (phases, stop, task) = run(&role);
    eventually(Duration::from_secs(30), "every job to be done", || async {
        (keys(&broker, "d/").await.len() == 20).then_some(())
    })
    .await;
    assert_eq!(*phases.lock().unwrap(), [InstancePhase::Ready]);
    assert_eq!(keys(&broker, "hook/start/1/").await.len(), 1);
    assert!(
        keys(&broker, "hook/stop/").await.is_empty(),
        "stop ran early"
    );
    stop.send_replace(true);
    let exit = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit, Ok(WorkerExit::Stopped));
    assert_eq!(
        *phases.lock().unwrap(),
        [InstancePhase::Ready, InstancePhase::Draining]
    );
    assert_eq!(keys(&broker, "hook/stop/1/").await.len(), 1);
}

/// The fuel a worker's start hook burns is charged to its role, not lost
/// when the instance gets a fresh budget for its first batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fuel_a_start_hook_burns_is_charged_to_its_role() {
    let (role, broker) = worker(&[("start", "burn")], SandboxLimits::default());
    let (phases, stop, task) = run(&role);
    let burnt: u64 = eventually(Duration::from_secs(30), "the start hook's burn", || async {
        keys(&broker, "burnt/")
            .await
            .first()
            .and_then(|key| key.strip_prefix("burnt/")?.parse().ok())
    })
    .await;
    assert!(burnt > 1_000_000, "the spin took only {burnt} fuel");
    eventually(Duration::from_secs(30), "the instance to be ready", || {
        let ready = phases.lock().unwrap().contains(&InstancePhase::Ready);
        async move { ready.then_some(()) }
    })
    .await;
    let charged = role.usage().counters.fuel_used;
    assert!(
        charged >= burnt,
        "the role was charged {charged} fuel; its start hook alone burnt {burnt}"
    );
    stop.send_replace(true);
    let exit = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit, Ok(WorkerExit::Stopped));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_start_hook_fails_never_runs() {
    let (role, broker) = worker(&[("start", "fail")], SandboxLimits::default());
    send(&broker, ["m0".to_owned()]).await;
    let (phases, _stop, task) = run(&role);
    let exit = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .unwrap()
        .unwrap();
    match exit {
        Err(GuestFailure::Start(why)) => assert!(why.contains("asked to fail"), "{why}"),
        other => panic!("expected a start failure, got {other:?}"),
    }
    assert!(phases.lock().unwrap().is_empty(), "it never became ready");
    assert!(keys(&broker, "d/").await.is_empty(), "run never ran");
    assert_eq!(broker.len("test/jobs").await.unwrap(), 1);
    let failures = role.usage().counters.failures;
    assert!(failures.contains(&("start", 1)), "{failures:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_worker_finishes_its_batch_and_takes_nothing_new() {
    let (role, broker) = worker(&[], SandboxLimits::default());
    // One batch of 8 slow jobs (200 ms each): the stop lands in the middle.
    send(&broker, (0..8).map(|i| format!("slow{i}"))).await;
    let (phases, stop, task) = run(&role);
    eventually(
        Duration::from_secs(30),
        "the batch to be under way",
        || async { (!keys(&broker, "d/").await.is_empty()).then_some(()) },
    )
    .await;
    stop.send_replace(true);
    send(&broker, (0..3).map(|i| format!("late{i}"))).await;
    let exit = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit, Ok(WorkerExit::Stopped));
    assert_eq!(
        keys(&broker, "d/slow").await.len(),
        8,
        "the batch was finished"
    );
    assert!(
        keys(&broker, "d/late").await.is_empty(),
        "nothing new was taken"
    );
    assert_eq!(broker.len("test/jobs").await.unwrap(), 3);
    assert_eq!(keys(&broker, "hook/stop/").await.len(), 1);
    assert_eq!(
        phases.lock().unwrap().last(),
        Some(&InstancePhase::Draining)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_ignores_the_stop_is_dropped_after_its_grace_period() {
    let limits = SandboxLimits {
        stop_grace_ms: 300,
        ..SandboxLimits::default()
    };
    let (role, broker) = worker(&[("mode", "ignore-stop")], limits);
    let (phases, stop, task) = run(&role);
    eventually(
        Duration::from_secs(30),
        "the worker to be ready",
        || async { (!phases.lock().unwrap().is_empty()).then_some(()) },
    )
    .await;
    stop.send_replace(true);
    let stopped_at = std::time::Instant::now();
    let exit = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit, Ok(WorkerExit::Stopped));
    assert!(
        stopped_at.elapsed() >= Duration::from_millis(300),
        "it had its grace period"
    );
    assert!(
        keys(&broker, "hook/stop/").await.is_empty(),
        "no stop hook after a drop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_role_runs_its_hooks_in_sandboxes_of_their_own() {
    let load = |settings: &[(&str, &str)], guest: &str| {
        let (mut spec, _) = spec("web", &[], &[], SandboxLimits::default());
        spec.grants.settings = settings
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        runtime().web_role(Path::new(guest), spec).unwrap()
    };
    let web = load(&[("version", "3")], ROLLOUT_WEB);
    assert!(web.has_hooks());
    web.start_hook().await.unwrap();
    web.stop_hook().await.unwrap();
    let refusing = load(&[("start", "fail")], ROLLOUT_WEB);
    match refusing.start_hook().await {
        Err(GuestFailure::Start(why)) => assert!(why.contains("asked to fail"), "{why}"),
        other => panic!("expected a start failure, got {other:?}"),
    }
    // Components without hooks: nothing to call, and they run as before.
    let plain = load(&[], HELLO_WEB);
    assert!(!plain.has_hooks());
    plain.start_hook().await.unwrap();
    let reply = crate::support::call(&plain, "GET", "/", "").await;
    assert_eq!(reply.status, 200);
    let (spec, _) = spec("worker", &["jobs"], &["ledger"], SandboxLimits::default());
    let ledger = runtime()
        .worker_role(Path::new(LEDGER_WORKER), spec)
        .unwrap();
    assert!(!ledger.has_hooks());
}
