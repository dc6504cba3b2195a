//! Hosts sharing one NATS JetStream server, through the real `weft` binary:
//! a web role on one host enqueues, worker instances on two others drain,
//! and nothing is lost when a worker host is killed -9 mid-batch; a server
//! that is down at start is retried, then reported on one line; a server
//! lost mid-run makes queue calls answer `unavailable` until it is back.
//!
//! Each test starts its own `nats-server` on a free port (never the shared
//! one `.ci/run` starts), and fails if the binary is missing.

use crate::ledger::{self, Sent};
use crate::support::{Weft, cache_dir, eventually, http, weft_command};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use weft_broker::QueueBroker;
use weft_broker::{BackendKind, NatsBroker, QueuesConfig};

/// A `nats-server` with JetStream on loopback, killed on drop.
pub(crate) struct NatsServer {
    child: Child,
    port: u16,
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl NatsServer {
    /// Starts a server on `port` keeping its streams in `store`, and waits
    /// until it accepts connections.
    pub(crate) fn start(port: u16, store: &Path) -> Self {
        let child = Command::new("nats-server")
            .args([
                "--jetstream",
                "--addr",
                "127.0.0.1",
                "--port",
                &port.to_string(),
            ])
            .arg("--store_dir")
            .arg(store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server is not installed: `apt-get install nats-server` (.ci/run does)");
        let give_up = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < give_up,
                "nats-server did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, port }
    }

    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn queues_table(url: &str, extra: &str) -> String {
    format!("backend = \"nats\"\nurl = \"{url}\"\n{extra}")
}

/// Starts `weft up` for the ledger manifest in `dir`, running only `roles`.
fn host(dir: &Path, name: &str, roles: &[&str]) -> Weft {
    let state = dir.join(format!("state-{name}"));
    let cache = cache_dir().display().to_string();
    let manifest = dir.join("weft.toml");
    let mut args = vec![
        "up".to_owned(),
        "--no-build".to_owned(),
        "--cache-dir".to_owned(),
        cache,
        "--state-dir".to_owned(),
        state.display().to_string(),
    ];
    for role in roles {
        args.push("--role".to_owned());
        args.push((*role).to_owned());
    }
    args.push(manifest.display().to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Weft::start(&args).unwrap()
}

async fn client(url: &str) -> NatsBroker {
    NatsBroker::connect(&QueuesConfig {
        backend: Some(BackendKind::Nats),
        url: Some(url.to_owned()),
        connect_timeout_secs: 10,
        ..QueuesConfig::default()
    })
    .await
    .unwrap()
}

/// Sends `count` numbered messages through the web role at `base`, in
/// batches of 20; every fifth is slow to handle.
async fn send_all(base: &str, sent: &mut Sent, count: u64) {
    for start in (0..count).step_by(20) {
        let bodies: Vec<String> = (start..(start + 20).min(count))
            .map(|n| {
                if n % 5 == 0 {
                    format!("slow-m{n}")
                } else {
                    format!("m{n}")
                }
            })
            .collect();
        sent.attempted.extend(bodies.iter().cloned());
        let reply = http("POST", &format!("{base}/send/jobs"), &bodies.join("\n"))
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "{reply:?}");
        sent.acknowledged.extend(bodies);
    }
}

/// Waits until every acknowledged message has a delivery on record.
async fn until_all_delivered(nats: &NatsBroker, sent: &Sent) -> ledger::Report {
    eventually(
        Duration::from_secs(120),
        "every message to be delivered",
        || async {
            let report = ledger::check(nats, "ledger/ledger", sent).await;
            report.lost.is_empty().then_some(report)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_sharing_nats_lose_nothing_when_a_worker_host_is_killed_mid_batch() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(free_port(), &dir.path().join("nats"));
    // A host that vanishes holds its messages for the 2 s ack wait only.
    let table = queues_table(&server.url(), "ack-wait-ms = 2000");
    std::fs::write(dir.path().join("weft.toml"), ledger::manifest(2, &table)).unwrap();
    let web = host(dir.path(), "a", &["web"]);
    let worker_b = host(dir.path(), "b", &["worker"]);
    let worker_c = host(dir.path(), "c", &["worker"]);
    let nats = client(&server.url()).await;

    let mut sent = Sent::default();
    send_all(&web.url("web"), &mut sent, 300).await;
    // Kill B -9 while both worker hosts are busy with batches.
    eventually(
        Duration::from_secs(60),
        "the workers to be under way",
        || async {
            let report = ledger::check(&nats, "ledger/ledger", &sent).await;
            (report.delivered >= 40).then_some(())
        },
    )
    .await;
    drop(worker_b);
    // What was on record at the kill: with both hosts alive, nothing was
    // delivered twice (each host holds its leases as long as it works on
    // them), so every later redelivery is a message B held when it died.
    let at_kill = ledger::deliveries(&nats, "ledger/ledger").await;
    let report = until_all_delivered(&nats, &sent).await;
    eventually(Duration::from_secs(30), "the queue to be empty", || async {
        (nats.len("ledger/jobs").await.ok()? == 0).then_some(())
    })
    .await;
    let after = ledger::deliveries(&nats, "ledger/ledger").await;
    eprintln!(
        "acknowledged={} delivered={} duplicates={}",
        sent.acknowledged.len(),
        report.delivered,
        report.duplicates
    );
    ledger::assert_sound(&report);
    let again_before_kill: Vec<_> = at_kill.iter().filter(|d| d.count > 1).collect();
    assert!(
        again_before_kill.is_empty(),
        "redelivered while both hosts lived: {again_before_kill:?}"
    );
    // B held leases when it was killed (its batch in progress), and each
    // came back to C with a higher dequeue count.
    let held: std::collections::BTreeSet<&str> = after
        .iter()
        .filter(|d| d.count > 1)
        .map(|d| d.body.as_str())
        .collect();
    eprintln!(
        "held by the killed host and delivered again: {}",
        held.len()
    );
    assert!(!held.is_empty(), "the killed host held no message");
    drop((web, worker_c));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_server_down_at_start_is_retried_then_reported_on_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let manifest = dir.path().join("weft.toml");
    let cache = cache_dir().display().to_string();
    let state = dir.path().join("state").display().to_string();
    let args = |manifest: &Path| {
        vec![
            "up".to_owned(),
            "--no-build".to_owned(),
            "--cache-dir".to_owned(),
            cache.clone(),
            "--state-dir".to_owned(),
            state.clone(),
            manifest.display().to_string(),
        ]
    };

    // Nothing that speaks NATS answers: a few retries, then one line naming
    // the server. The port is held meanwhile by a listener that hangs up at
    // once, so no other test's server can take it and be connected to (the
    // host would then start and run on, and this wait never end).
    let holder = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let holding = tokio::spawn(async move {
        loop {
            let _ = holder.accept().await;
        }
    });
    let table = queues_table(&url, "connect-timeout-secs = 2");
    std::fs::write(&manifest, ledger::manifest(1, &table)).unwrap();
    let output = weft_command().args(args(&manifest)).output().unwrap();
    holding.abort();
    let _ = holding.await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("weft: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains(&format!("cannot reach the NATS server at {url}")),
        "{stderr}"
    );
    assert!(
        stderr.contains("retrying"),
        "no retry was logged:\n{stderr}"
    );

    // The server comes up while the host retries: the host starts.
    let table = queues_table(&url, "connect-timeout-secs = 60");
    std::fs::write(&manifest, ledger::manifest(1, &table)).unwrap();
    let store = dir.path().join("nats");
    let later = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        NatsServer::start(port, &store)
    });
    let args = args(&manifest);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let weft = Weft::start(&args).unwrap();
    let _server = later.join().unwrap();
    assert!(weft.log().contains("retrying"), "{}", weft.log());
    let reply = http("POST", &format!("{}/send/jobs", weft.url("web")), "m1")
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_nats_mid_run_answers_unavailable_and_the_service_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let store = dir.path().join("nats");
    let server = NatsServer::start(port, &store);
    let url = server.url();
    std::fs::write(
        dir.path().join("weft.toml"),
        ledger::manifest(1, &queues_table(&url, "")),
    )
    .unwrap();
    let mut weft = host(dir.path(), "a", &[]);
    let base = weft.url("web");
    let nats = client(&url).await;
    let mut sent = Sent::default();
    send_all(&base, &mut sent, 10).await;
    until_all_delivered(&nats, &sent).await;

    drop(server);
    let refused = eventually(
        Duration::from_secs(60),
        "sends to answer unavailable",
        || {
            let url = format!("{base}/send/jobs");
            async move {
                let reply = http("POST", &url, "during-outage").await.ok()?;
                (reply.status == 503).then_some(reply)
            }
        },
    )
    .await;
    assert!(refused.body.contains("unavailable"), "{refused:?}");
    assert!(weft.child_running(), "the host died with its NATS server");

    let _server = NatsServer::start(port, &store);
    eventually(Duration::from_secs(60), "sends to succeed again", || {
        let url = format!("{base}/send/jobs");
        async move { (http("POST", &url, "after").await.ok()?.status == 200).then_some(()) }
    })
    .await;
    sent.attempted
        .extend(["after".to_owned(), "during-outage".to_owned()]);
    send_all(&base, &mut sent, 10).await;
    let report = until_all_delivered(&nats, &sent).await;
    ledger::assert_sound(&report);
    assert!(
        weft.log().contains("lost the NATS server"),
        "{}",
        weft.log()
    );
    assert!(weft.terminate().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_whose_nats_server_cannot_be_reached_is_answered_503_not_400() {
    use crate::hosting::{Host, token_file};
    use weft_test_artifacts::{LEDGER_WEB, LEDGER_WORKER};
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(&dir.path().join("state"), &token_file(dir.path()));
    let web = host.put_blob(Path::new(LEDGER_WEB)).await;
    let worker = host.put_blob(Path::new(LEDGER_WORKER)).await;
    // Nobody listens there: the manifest is right, the server is down.
    let url = format!("nats://127.0.0.1:{}", free_port());
    let source = serde_json::json!({
        "manifest_file": "weft.toml",
        "manifest": ledger::manifest(1, &queues_table(&url, "connect-timeout-secs = 1")),
        "components": { "web": web, "worker": worker },
    });
    let reply = host
        .api("PUT", "/v1/services/ledger", &source.to_string())
        .await;
    assert_eq!(reply.status, 503, "{reply:?}");
    assert!(
        reply
            .body
            .contains(&format!("cannot reach the NATS server at {url}")),
        "{reply:?}"
    );
    // A refused `[queues]` table is the manifest's fault: 400.
    let source = serde_json::json!({
        "manifest_file": "weft.toml",
        "manifest": ledger::manifest(1, &queues_table(&url, "replicas = 0")),
        "components": { "web": web, "worker": worker },
    });
    let reply = host
        .api("PUT", "/v1/services/ledger", &source.to_string())
        .await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert_eq!(host.api("GET", "/v1/services/ledger", "").await.status, 404);
}
