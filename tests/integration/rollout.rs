//! Rolling upgrades through the real binary: under steady client load
//! every response is 2xx and every queued job completes; a new version that
//! fails its health check, or whose workers crash, is rolled back and the
//! old one keeps serving.

use crate::controller::service_dir;
use crate::hosting::{Host, marked_copy, token_file};
use crate::ledger::{self, Sent};
use crate::support::http;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use weft_broker::{EmbeddedBroker, QueueSettings};
use weft_test_artifacts::{ROLLOUT_WEB, ROLLOUT_WORKER};

/// What steady GET traffic saw: status codes and bodies, counted.
#[derive(Debug, Default)]
struct Seen {
    statuses: BTreeMap<u16, u64>,
    bodies: BTreeMap<String, u64>,
    errors: u64,
}

/// Clients sending `GET /` and `GET /sleep/150` (a request in flight across
/// each switch) in a loop until `stop`.
fn steady_load(
    url: String,
    clients: usize,
    stop: Arc<AtomicBool>,
) -> (Arc<Mutex<Seen>>, Vec<tokio::task::JoinHandle<()>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let tasks = (0..clients)
        .map(|client| {
            let (url, stop, seen) = (url.clone(), stop.clone(), seen.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let path = if (n + client as u64).is_multiple_of(4) {
                        "/sleep/150"
                    } else {
                        "/"
                    };
                    let reply = http("GET", &format!("{url}{path}"), "").await;
                    let mut seen = seen.lock().unwrap();
                    match reply {
                        Ok(reply) => {
                            *seen.statuses.entry(reply.status).or_default() += 1;
                            let version = reply.body.rsplit(' ').next().unwrap_or("").to_owned();
                            *seen.bodies.entry(version).or_default() += 1;
                        }
                        Err(_) => seen.errors += 1,
                    }
                }
            })
        })
        .collect();
    (seen, tasks)
}

/// Stops the load and returns what it saw.
async fn finish(
    stop: &AtomicBool,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    seen: &Mutex<Seen>,
) -> Seen {
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    std::mem::take(&mut *seen.lock().unwrap())
}

fn assert_only_2xx(seen: &Seen) {
    let total: u64 = seen.statuses.values().sum();
    let ok: u64 = seen
        .statuses
        .iter()
        .filter(|(s, _)| (200..300).contains(*s))
        .map(|(_, n)| n)
        .sum();
    eprintln!(
        "steady load: {total} responses {:?}, versions {:?}, errors {}",
        seen.statuses, seen.bodies, seen.errors
    );
    assert!(total >= 50, "too little load to tell: {seen:?}");
    assert_eq!(ok, total, "non-2xx answers: {seen:?}");
    assert_eq!(seen.errors, 0, "connection errors: {seen:?}");
}

/// Checks, with the host stopped, that every acknowledged job was done.
async fn assert_every_job_done(state: &Path, service: &str, sent: &Sent) {
    let store = EmbeddedBroker::open(
        &state.join("services").join(service),
        QueueSettings::default(),
    )
    .unwrap();
    let report = ledger::check(&store, &format!("{service}/ledger"), sent).await;
    eprintln!(
        "jobs: acknowledged={} delivered={} lost={} duplicates={}",
        sent.acknowledged.len(),
        report.delivered,
        report.lost.len(),
        report.duplicates
    );
    assert!(!sent.acknowledged.is_empty());
    ledger::assert_sound(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_upgrade_under_load_answers_only_2xx_and_completes_every_job() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut host = Host::start(&state, &token_file(dir.path()));
    let v1 = dir.path().join("v1");
    service_dir(&v1, "rolling", ROLLOUT_WEB, ROLLOUT_WORKER, 2);
    let (ok, stdout, stderr) = host.cli(&["deploy", "--no-build", v1.to_str().unwrap()]);
    assert!(ok, "{stdout}{stderr}");
    let url = host.url("rolling", "web").await;

    let stop = Arc::new(AtomicBool::new(false));
    let (seen, clients) = steady_load(url.clone(), 4, stop.clone());
    let sent = Arc::new(Mutex::new(Sent::default()));
    let jobs = tokio::spawn(ledger::load(url.clone(), sent.clone(), stop.clone(), 8));
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Version 2: new components (same code, another digest) and settings.
    let v2 = dir.path().join("v2");
    let web = marked_copy(ROLLOUT_WEB, dir.path(), "v2");
    let worker = marked_copy(ROLLOUT_WORKER, dir.path(), "v2");
    service_dir(
        &v2,
        "rolling",
        web.to_str().unwrap(),
        worker.to_str().unwrap(),
        2,
    );
    let manifest = v2.join("weft.toml");
    let text = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace("version = \"1\"", "version = \"2\"");
    std::fs::write(&manifest, text).unwrap();
    let (ok, stdout, stderr) = host.cli(&["upgrade", "--no-build", v2.to_str().unwrap()]);
    assert!(ok, "{stdout}{stderr}\n{}", host.weft.log());
    assert!(
        stdout.contains("domain 1 of 2: waiting for health"),
        "{stdout}"
    );
    assert!(
        stdout.contains("domain 2 of 2: waiting for health"),
        "{stdout}"
    );
    assert!(stdout.contains("upgrade to generation 2 done"), "{stdout}");

    // Load goes on across a scale-down too: the retired instance drains.
    let (ok, stdout, stderr) = host.cli(&["scale", "rolling/worker", "1"]);
    assert!(ok, "{stdout}{stderr}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = finish(&stop, clients, &seen).await;
    jobs.await.unwrap();
    assert_only_2xx(&during);
    assert!(
        during.bodies.get("version=1").copied().unwrap_or(0) > 0,
        "{during:?}"
    );
    assert!(
        during.bodies.get("version=2").copied().unwrap_or(0) > 0,
        "{during:?}"
    );
    // After the upgrade, only version 2 answers.
    for _ in 0..20 {
        let reply = http("GET", &format!("{url}/"), "").await.unwrap();
        assert_eq!((reply.status, reply.body.as_str()), (200, "version=2"));
    }
    let status = host.ready("rolling").await;
    for role in status["roles"].as_array().unwrap() {
        assert_eq!(role["generation"], 2, "{status}");
        for instance in role["instances"].as_array().unwrap() {
            assert_eq!(instance["generation"], 2, "{status}");
        }
    }
    // Every old instance ran its stop hook when it was moved; the old web
    // version, once drained.
    let log = host.weft.log();
    assert_eq!(
        log.matches("rollout-worker: stop version=1").count(),
        2,
        "{log}"
    );
    crate::support::eventually(
        Duration::from_secs(30),
        "the old web version to stop",
        || async {
            host.weft
                .log()
                .contains("rollout-web: stop version=1")
                .then_some(())
        },
    )
    .await;

    // Every job the web role accepted is done, once the queue drains.
    crate::support::eventually(Duration::from_secs(60), "the queue to drain", || async {
        let status = host.service("rolling").await;
        (status["roles"][1]["queues"][0]["length"] == 0).then_some(())
    })
    .await;
    assert!(host.weft.terminate().unwrap().success());
    let sent = std::mem::take(&mut *sent.lock().unwrap());
    assert_every_job_done(&state, "rolling", &sent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_whose_new_version_fails_health_is_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(&dir.path().join("state"), &token_file(dir.path()));
    let v1 = dir.path().join("v1");
    service_dir(&v1, "careful", ROLLOUT_WEB, ROLLOUT_WORKER, 1);
    let (ok, stdout, stderr) = host.cli(&["deploy", "--no-build", v1.to_str().unwrap()]);
    assert!(ok, "{stdout}{stderr}");
    let url = host.url("careful", "web").await;
    let stop = Arc::new(AtomicBool::new(false));
    let (seen, clients) = steady_load(url.clone(), 3, stop.clone());

    // Version 2 answers 503 on its health path.
    let v2 = dir.path().join("v2");
    let web = marked_copy(ROLLOUT_WEB, dir.path(), "sick");
    service_dir(&v2, "careful", web.to_str().unwrap(), ROLLOUT_WORKER, 1);
    let manifest = v2.join("weft.toml");
    // A short timeout: the new version never becomes healthy.
    let text = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace(
            "version = \"1\"\nhealthy = \"true\"",
            "version = \"2\"\nhealthy = \"false\"",
        )
        .replace("upgrade-timeout-secs = 30", "upgrade-timeout-secs = 3");
    std::fs::write(&manifest, text).unwrap();
    let (ok, stdout, stderr) = host.cli(&["upgrade", "--no-build", v2.to_str().unwrap()]);
    assert!(!ok, "{stdout}");
    assert!(
        stderr.contains("rolled back") && stderr.contains("GET /health answered 503"),
        "{stderr}"
    );

    let during = finish(&stop, clients, &seen).await;
    assert_only_2xx(&during);
    assert_eq!(during.bodies.get("version=2"), None, "{during:?}");
    let status = host.service("careful").await;
    assert_eq!(status["generation"], 1, "{status}");
    assert_eq!(status["operation"]["state"], "rolled-back", "{status}");
    assert_eq!(status["roles"][0]["generation"], 1);
    // The failed version drained and stopped; its start hook ran, once.
    crate::support::eventually(
        Duration::from_secs(20),
        "the new version to stop",
        || async {
            host.weft
                .log()
                .contains("rollout-web: stop version=2")
                .then_some(())
        },
    )
    .await;
    for _ in 0..10 {
        let reply = http("GET", &format!("{url}/"), "").await.unwrap();
        assert_eq!((reply.status, reply.body.as_str()), (200, "version=1"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_whose_workers_crash_is_rolled_back_and_no_job_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut host = Host::start(&state, &token_file(dir.path()));
    let v1 = dir.path().join("v1");
    service_dir(&v1, "guarded", ROLLOUT_WEB, ROLLOUT_WORKER, 2);
    let (ok, stdout, stderr) = host.cli(&["deploy", "--no-build", v1.to_str().unwrap()]);
    assert!(ok, "{stdout}{stderr}");
    let url = host.url("guarded", "web").await;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(Mutex::new(Sent::default()));
    let jobs = tokio::spawn(ledger::load(url.clone(), sent.clone(), stop.clone(), 8));

    // Version 2's workers crash as soon as they run: domain 1's instance
    // moves, fails, and moves back.
    let (ok, stdout, stderr) = host.cli(&[
        "upgrade",
        "--no-build",
        "--env",
        "crash",
        v1.to_str().unwrap(),
    ]);
    assert!(!ok, "{stdout}");
    assert!(
        stderr.contains("rolled back: domain 1 of 2: role 'worker': instance 0"),
        "{stderr}"
    );
    assert!(
        stdout.contains("  domain 1 of 2: moving\n") && !stdout.contains("domain 2 of 2"),
        "{stdout}"
    );
    let status = host.ready("guarded").await;
    assert_eq!(status["generation"], 1, "{status}");
    assert_eq!(status["operation"]["domains_done"], 1, "{status}");
    for instance in status["roles"][1]["instances"].as_array().unwrap() {
        assert_eq!(instance["generation"], 1, "{status}");
        assert_eq!(instance["state"], "ready", "{status}");
    }
    stop.store(true, Ordering::Relaxed);
    jobs.await.unwrap();
    crate::support::eventually(Duration::from_secs(60), "the queue to drain", || async {
        let status = host.service("guarded").await;
        (status["roles"][1]["queues"][0]["length"] == 0).then_some(())
    })
    .await;
    assert!(host.weft.terminate().unwrap().success());
    let sent = std::mem::take(&mut *sent.lock().unwrap());
    assert_every_job_done(&state, "guarded", &sent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_that_changes_the_domains_splits_every_role_and_a_rollback_restores_them() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(&dir.path().join("state"), &token_file(dir.path()));
    let v1 = dir.path().join("v1");
    service_dir(&v1, "split", ROLLOUT_WEB, ROLLOUT_WORKER, 3);
    let (ok, stdout, stderr) = host.cli(&["deploy", "--no-build", v1.to_str().unwrap()]);
    assert!(ok, "{stdout}{stderr}");
    // The web role's shares and the worker slots' domains.
    let domains = |status: &serde_json::Value, role: usize| -> Vec<u64> {
        status["roles"][role]["instances"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|instance| instance["domain"].as_u64())
            .collect()
    };

    // Three domains instead of two, and workers that crash: rolled back,
    // and the worker slots split in two again.
    let v2 = dir.path().join("v2");
    service_dir(&v2, "split", ROLLOUT_WEB, ROLLOUT_WORKER, 3);
    let manifest = v2.join("weft.toml");
    let text = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace("upgrade-domains = 2", "upgrade-domains = 3");
    std::fs::write(&manifest, &text).unwrap();
    let (ok, stdout, stderr) = host.cli(&[
        "upgrade",
        "--no-build",
        "--env",
        "crash",
        v2.to_str().unwrap(),
    ]);
    assert!(!ok && stderr.contains("rolled back"), "{stdout}{stderr}");
    let status = host.ready("split").await;
    assert_eq!(status["upgrade_domains"], 2, "{status}");
    assert_eq!(domains(&status, 0), [0, 1], "{status}");
    assert_eq!(domains(&status, 1), [0, 1, 0], "{status}");

    // Three domains, and only the worker's settings change: the web role,
    // untouched, serves in three shares too.
    std::fs::write(
        &manifest,
        text.replacen("version = \"1\"\nmode", "version = \"2\"\nmode", 1),
    )
    .unwrap();
    let (ok, stdout, stderr) = host.cli(&["upgrade", "--no-build", v2.to_str().unwrap()]);
    assert!(ok, "{stdout}{stderr}");
    let status = host.ready("split").await;
    assert_eq!(status["upgrade_domains"], 3, "{status}");
    assert_eq!(status["roles"][0]["generation"], 1, "{status}");
    assert_eq!(domains(&status, 0), [0, 1, 2], "{status}");
    assert_eq!(domains(&status, 1), [0, 1, 2], "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_right_after_an_upgrade_waits_for_the_retired_version() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut host = Host::start(&state, &token_file(dir.path()));
    let folder = dir.path().join("svc");
    service_dir(&folder, "parting", ROLLOUT_WEB, ROLLOUT_WORKER, 1);
    let (ok, stdout, stderr) = host.cli(&["deploy", "--no-build", folder.to_str().unwrap()]);
    assert!(ok, "{stdout}{stderr}");
    let url = host.url("parting", "web").await;
    // A request on version 1 that outlasts the upgrade: the retired
    // version is still draining when the host is told to stop.
    let in_flight = {
        let url = format!("{url}/sleep/6000");
        tokio::spawn(async move { http("GET", &url, "").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let manifest = folder.join("weft.toml");
    let text = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace("version = \"1\"", "version = \"2\"");
    std::fs::write(&manifest, text).unwrap();
    let (ok, stdout, stderr) = host.cli(&["upgrade", "--no-build", folder.to_str().unwrap()]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("upgrade to generation 2 done"), "{stdout}");
    assert!(
        !in_flight.is_finished(),
        "the request ended before the stop"
    );
    assert!(!host.weft.log().contains("rollout-web: stop version=1"));
    let exit = host.weft.terminate().unwrap();
    assert!(exit.success(), "{exit:?}");
    // The stop waited for the retired version: its request finished, then
    // its stop hook ran; the current version stopped too.
    let drained = in_flight.await.unwrap().unwrap();
    assert_eq!(
        (drained.status, drained.body.as_str()),
        (200, "slept version=1")
    );
    // (The log is read from the pipe the exited host wrote it to.)
    let log = crate::support::eventually(Duration::from_secs(5), "the whole log", || {
        let log = host.weft.log();
        async move { log.contains("rollout-web: stop version=2").then_some(log) }
    })
    .await;
    assert_eq!(
        log.matches("rollout-web: stop version=1").count(),
        1,
        "{log}"
    );
    assert_eq!(
        log.matches("rollout-web: stop version=2").count(),
        1,
        "{log}"
    );
}
