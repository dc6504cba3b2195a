//! Worker roles: messages that fail come back with a higher dequeue count,
//! end in the poison queue, and a worker reaches only its granted queues.

use crate::support::{eventually, runtime, spec_on};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use weft_broker::SendOptions;
use weft_broker::{KvStore, MemoryBroker, QueueBroker};
use weft_sandbox::{GuestFailure, SandboxLimits, WorkerRole};
use weft_test_artifacts::{CHAOS_WORKER, INTRUDER_WORKER};

/// Runs `role`'s instance 0 over and over, as the supervisor would, and
/// reports how each run ended.
fn keep_running(
    role: Arc<WorkerRole>,
) -> (
    tokio::task::JoinHandle<()>,
    Arc<std::sync::Mutex<Vec<GuestFailure>>>,
) {
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = failures.clone();
    let task = tokio::spawn(async move {
        loop {
            if let Err(failure) = role.run_instance(0, std::future::pending()).await {
                seen.lock().unwrap().push(failure);
            }
        }
    });
    (task, failures)
}

async fn kv(broker: &MemoryBroker, key: &str) -> Option<String> {
    broker
        .get("test/results", key)
        .await
        .unwrap()
        .map(|v| String::from_utf8_lossy(&v).into_owned())
}

/// How many times the chaos worker has seen message `id` (0: never).
async fn seen(broker: &MemoryBroker, id: &str) -> u32 {
    kv(broker, &format!("seen/{id}"))
        .await
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Waits until message `id` has been delivered at least twice.
async fn until_redelivered(broker: &MemoryBroker, id: &str) {
    eventually(
        Duration::from_secs(60),
        "the message to be delivered again",
        || async { (seen(broker, id).await >= 2).then_some(()) },
    )
    .await;
}

/// Asserts every failure is a deadline, and there were no more of them
/// than deliveries of the one bad message (so no idle instance was cut).
fn only_deadlines(failures: &[GuestFailure], deliveries: u32) {
    assert!(!failures.is_empty());
    assert!(
        failures
            .iter()
            .all(|f| matches!(f, GuestFailure::Deadline(_))),
        "{failures:?}"
    );
    assert!(
        failures.len() <= usize::try_from(deliveries).unwrap(),
        "{failures:?} for {deliveries} deliveries"
    );
}

fn chaos(broker: Arc<MemoryBroker>, limits: SandboxLimits) -> Arc<WorkerRole> {
    let (spec, _) = spec_on(broker, "worker", &["tasks"], &["results"], limits);
    Arc::new(
        runtime()
            .worker_role(Path::new(CHAOS_WORKER), spec)
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completed_messages_are_done_once() {
    let broker = Arc::new(MemoryBroker::default());
    let (task, failures) = keep_running(chaos(broker.clone(), SandboxLimits::default()));
    let id = broker
        .send("test/tasks", b"ok".to_vec(), SendOptions::now())
        .await
        .unwrap();
    let done = eventually(
        Duration::from_secs(30),
        "the message to be done",
        || async { kv(&broker, &id).await },
    )
    .await;
    assert_eq!(done, "done dequeue=1");
    eventually(Duration::from_secs(10), "the queue to empty", || async {
        (broker.len("test/tasks").await.unwrap() == 0).then_some(())
    })
    .await;
    task.abort();
    assert!(
        failures.lock().unwrap().is_empty(),
        "{:?}",
        failures.lock().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_worker_gets_its_message_back_until_it_is_poisoned() {
    let broker = Arc::new(MemoryBroker::default());
    let (task, failures) = keep_running(chaos(broker.clone(), SandboxLimits::default()));
    let id = broker
        .send("test/tasks", b"panic".to_vec(), SendOptions::now())
        .await
        .unwrap();
    // Delivered five times (the default maximum), each time to a fresh
    // instance after the previous one trapped, then moved to the poison queue.
    eventually(
        Duration::from_secs(60),
        "the message to reach the poison queue",
        || async { (broker.len("test/tasks-poison").await.unwrap() == 1).then_some(()) },
    )
    .await;
    task.abort();
    assert_eq!(
        kv(&broker, &format!("seen/{id}")).await.as_deref(),
        Some("5")
    );
    assert_eq!(broker.len("test/tasks").await.unwrap(), 0);
    let failures = failures.lock().unwrap();
    assert!(failures.len() >= 5, "{failures:?}");
    assert!(
        failures
            .iter()
            .all(|f| matches!(f, GuestFailure::Trap(why) if why.contains("unreachable"))),
        "{failures:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spinning_worker_is_stopped_at_its_batch_deadline_and_the_message_returns() {
    let broker = Arc::new(MemoryBroker::default());
    let limits = SandboxLimits {
        deadline_ms: 300,
        ..SandboxLimits::default()
    };
    let (task, failures) = keep_running(chaos(broker.clone(), limits));
    let id = broker
        .send("test/tasks", b"spin".to_vec(), SendOptions::now())
        .await
        .unwrap();
    // Meanwhile an ordinary message still gets done by later instances.
    let ok = broker
        .send("test/tasks", b"ok".to_vec(), SendOptions::now())
        .await
        .unwrap();
    until_redelivered(&broker, &id).await;
    eventually(
        Duration::from_secs(60),
        "the ordinary message to be done",
        || async { kv(&broker, &ok).await },
    )
    .await;
    task.abort();
    let deliveries = seen(&broker, &id).await;
    only_deadlines(&failures.lock().unwrap(), deliveries);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_blocked_in_a_host_call_is_stopped_at_its_batch_deadline() {
    let broker = Arc::new(MemoryBroker::default());
    let limits = SandboxLimits {
        deadline_ms: 300,
        ..SandboxLimits::default()
    };
    let (task, failures) = keep_running(chaos(broker.clone(), limits));
    let id = broker
        .send("test/tasks", b"sleep:600000".to_vec(), SendOptions::now())
        .await
        .unwrap();
    until_redelivered(&broker, &id).await;
    task.abort();
    assert!(
        kv(&broker, &id).await.is_none(),
        "the sleeper was not cut off"
    );
    let deliveries = seen(&broker, &id).await;
    only_deadlines(&failures.lock().unwrap(), deliveries);
}

/// Steps of the chaos worker's `burn` loop that take about a third of
/// [`BURN_BUDGET`] (calibrated by `burn_calibration_holds`).
const BURN_STEPS: u64 = 5_000_000;
/// The fuel budget per batch in the fuel tests.
const BURN_BUDGET: u64 = 200_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuel_is_per_batch_a_spinning_batch_runs_out_and_a_busy_worker_does_not() {
    let broker = Arc::new(MemoryBroker::default());
    let limits = SandboxLimits {
        fuel: BURN_BUDGET,
        deadline_ms: 60_000,
        ..SandboxLimits::default()
    };
    let (task, failures) = keep_running(chaos(broker.clone(), limits));
    // Six messages, each burning about a third of the budget: twice the
    // budget in all, so only a per-batch budget lets them all through.
    let burn = format!("burn:{BURN_STEPS}");
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(
            broker
                .send("test/tasks", burn.clone().into_bytes(), SendOptions::now())
                .await
                .unwrap(),
        );
    }
    for id in &ids {
        let done = eventually(Duration::from_secs(60), "the burn to be done", || async {
            kv(&broker, id).await
        })
        .await;
        assert_eq!(done, "done dequeue=1");
    }
    assert!(
        failures.lock().unwrap().is_empty(),
        "{:?}",
        failures.lock().unwrap()
    );
    // A message that never finishes runs out of fuel, and comes back.
    let spin = broker
        .send("test/tasks", b"spin".to_vec(), SendOptions::now())
        .await
        .unwrap();
    until_redelivered(&broker, &spin).await;
    task.abort();
    let failures = failures.lock().unwrap();
    assert!(!failures.is_empty());
    assert!(
        failures.iter().all(|f| *f == GuestFailure::OutOfFuel),
        "{failures:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burn_calibration_holds() {
    // One burn fits a batch's budget; three in one batch would not. This
    // keeps the per-batch test above meaningful if the guest's code changes.
    let broker = Arc::new(MemoryBroker::default());
    let limits = SandboxLimits {
        fuel: BURN_BUDGET / 3 * 2,
        deadline_ms: 60_000,
        ..SandboxLimits::default()
    };
    let (task, failures) = keep_running(chaos(broker.clone(), limits));
    let fits = broker
        .send(
            "test/tasks",
            format!("burn:{BURN_STEPS}").into_bytes(),
            SendOptions::now(),
        )
        .await
        .unwrap();
    eventually(
        Duration::from_secs(60),
        "one burn to fit two thirds of the budget",
        || async { kv(&broker, &fits).await },
    )
    .await;
    let too_much = broker
        .send(
            "test/tasks",
            format!("burn:{}", BURN_STEPS * 2).into_bytes(),
            SendOptions::now(),
        )
        .await
        .unwrap();
    until_redelivered(&broker, &too_much).await;
    task.abort();
    assert!(kv(&broker, &too_much).await.is_none());
    assert!(
        failures
            .lock()
            .unwrap()
            .iter()
            .all(|f| *f == GuestFailure::OutOfFuel)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_receive_refills_no_fuel() {
    // A worker holding nothing that burns between empty receives: only a
    // delivered batch brings fuel, so one budget is all it gets. By the
    // calibration above two burns take more than two thirds of the budget,
    // so a third round never ends; refilled at each empty receive, it would
    // go on for ever.
    let broker = Arc::new(MemoryBroker::default());
    let limits = SandboxLimits {
        fuel: BURN_BUDGET,
        deadline_ms: 60_000,
        ..SandboxLimits::default()
    };
    let (mut spec, _) = spec_on(broker.clone(), "worker", &["tasks"], &["results"], limits);
    spec.grants
        .settings
        .insert("idle-burn".into(), BURN_STEPS.to_string());
    let role = Arc::new(
        runtime()
            .worker_role(Path::new(CHAOS_WORKER), spec)
            .unwrap(),
    );
    let (task, failures) = keep_running(role);
    let failure = eventually(
        Duration::from_secs(30),
        "the idle worker to run out of fuel",
        || async { failures.lock().unwrap().first().cloned() },
    )
    .await;
    task.abort();
    assert_eq!(failure, GuestFailure::OutOfFuel);
    let rounds: u32 = kv(&broker, "idle-round")
        .await
        .map_or(0, |r| r.parse().unwrap());
    assert!(
        (1..3).contains(&rounds),
        "{rounds} rounds of burning on one budget"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cannot_use_queues_or_buckets_its_manifest_does_not_list() {
    let broker = Arc::new(MemoryBroker::default());
    let (spec, _) = spec_on(
        broker.clone(),
        "intruder",
        &["tasks"],
        &["results"],
        SandboxLimits::default(),
    );
    let role = Arc::new(
        runtime()
            .worker_role(Path::new(INTRUDER_WORKER), spec)
            .unwrap(),
    );
    let (task, _) = keep_running(role);
    let report = eventually(Duration::from_secs(30), "the intruder's report", || async {
        kv(&broker, "intruder").await
    })
    .await;
    task.abort();
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines.len(), 3, "{report}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains("denied") || l.contains("AccessDenied")),
        "{report}"
    );
    assert_eq!(broker.len("test/forbidden").await.unwrap(), 0);
}
