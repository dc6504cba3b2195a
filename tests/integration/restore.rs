//! Starts and stops that no one service holds up, through the real binary:
//! a recorded service whose NATS server is down restores in the background
//! while the others come up and `ready` is said; SIGTERM stops a host
//! whose services are still restoring, and `weft up` whose deploy still
//! waits for its server, without waiting out the connect timeout. The
//! server's password never reaches the log.

use crate::controller::service_dir;
use crate::hosting::{Host, token_file};
use crate::support::{cache_dir, eventually, weft_command};
use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weft_test_artifacts::{ROLLOUT_WEB, ROLLOUT_WORKER};

/// A `[queues]` table naming a NATS server nobody runs (port 1), with a
/// password, and a connect timeout far past any test's patience: a host
/// that waited it out would fail the test.
const DEAD_NATS: &str = "\n[queues]\nbackend = \"nats\"\nurl = \"nats://weft:hunter2@127.0.0.1:1\"\nconnect-timeout-secs = 3600\n";

/// The line NATS retries log.
const RETRYING: &str = "cannot reach the NATS server; retrying";

fn private_dir(path: &Path) {
    std::fs::create_dir_all(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_whose_queue_server_is_down_holds_up_no_other_nor_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let tokens = token_file(dir.path());
    let steady = dir.path().join("steady");
    service_dir(&steady, "steady", ROLLOUT_WEB, ROLLOUT_WORKER, 1);
    let mut host = Host::start(&state, &tokens);
    let (ok, stdout, stderr) = host.cli(&["deploy", "--no-build", steady.to_str().unwrap()]);
    assert!(ok, "{stdout}{stderr}");
    assert!(host.weft.terminate().unwrap().success());

    // A record whose queues live on the dead server, named to restore
    // first: restored one by one, it would hold up every other service.
    let steady_record = state.join("services/steady/deployment.json");
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&steady_record).unwrap()).unwrap();
    let manifest = record["source"]["manifest"]
        .as_str()
        .unwrap()
        .replace("name = \"steady\"", "name = \"aaa-stuck\"");
    record["source"]["manifest"] = format!("{manifest}{DEAD_NATS}").into();
    let stuck = state.join("services/aaa-stuck");
    private_dir(&stuck);
    let stuck_record = stuck.join("deployment.json");
    std::fs::write(&stuck_record, record.to_string()).unwrap();
    std::fs::set_permissions(&stuck_record, std::fs::Permissions::from_mode(0o600)).unwrap();
    // And one whose redeploy fails at once (its record names another
    // service): reported, marked failed, and holding up nothing either.
    let ghost = state.join("services/ghost");
    private_dir(&ghost);
    std::fs::copy(&steady_record, ghost.join("deployment.json")).unwrap();

    // `ready` comes (Host::start waits for it) while the stuck one is
    // still trying its server; the healthy one is up.
    let mut host = Host::start(&state, &tokens);
    let status = host.ready("steady").await;
    assert_eq!(status["generation"], 1, "{status}");
    eventually(Duration::from_secs(30), "a NATS retry", || async {
        host.weft.log().contains(RETRYING).then_some(())
    })
    .await;
    assert_eq!(
        host.api("GET", "/v1/services/aaa-stuck", "").await.status,
        404
    );
    // Both are listed as not running, with why.
    let all = host.api("GET", "/v1/services", "").await;
    let all: serde_json::Value = serde_json::from_str(&all.body).unwrap();
    assert_eq!(all["services"].as_array().unwrap().len(), 1, "{all}");
    assert_eq!(all["pending"][0]["name"], "aaa-stuck", "{all}");
    assert_eq!(all["pending"][0]["state"], "starting", "{all}");
    assert_eq!(all["pending"][1]["name"], "ghost", "{all}");
    assert_eq!(all["pending"][1]["state"], "failed", "{all}");
    assert!(
        all["pending"][1]["reason"]
            .as_str()
            .unwrap()
            .contains("service.name is 'steady'"),
        "{all}"
    );
    let (ok, table, stderr) = host.cli(&["status"]);
    assert!(ok, "{stderr}");
    assert!(
        table.contains("service aaa-stuck  starting") && table.contains("service ghost  failed: "),
        "{table}"
    );
    // A failed one is removed by name, and is no longer listed.
    assert_eq!(
        host.api("DELETE", "/v1/services/ghost", "").await.status,
        200
    );
    let all = host.api("GET", "/v1/services", "").await;
    assert!(!all.body.contains("ghost"), "{all:?}");
    // The one starting keeps its name while it restores: not removed under it.
    let removing = host.api("DELETE", "/v1/services/aaa-stuck", "").await;
    assert_eq!(removing.status, 409, "{removing:?}");
    assert!(removing.body.contains("being deployed"), "{removing:?}");

    // SIGTERM mid-restore: the host cancels it and stops at once (within
    // `terminate`'s minute, far inside the hour-long connect timeout).
    assert!(host.weft.terminate().unwrap().success());
    let log = host.weft.log();
    assert!(
        log.contains("redeploy cancelled: the host is shutting down"),
        "{log}"
    );
    assert!(
        !log.lines()
            .any(|l| l.contains("cannot redeploy") && l.contains("aaa-stuck")),
        "gave up instead of being cancelled: {log}"
    );
    // The password is never logged; the URL is, with it hidden.
    assert!(!log.contains("hunter2"), "{log}");
    assert!(log.contains("nats://weft:***@127.0.0.1:1"), "{log}");
    // A cancelled restore keeps its record, to be tried at the next start.
    assert!(stuck_record.is_file());
}

/// `weft up` on `manifest`, its stdout and stderr collected as they come.
struct Up {
    child: std::process::Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl Up {
    fn start(manifest: &Path, state: &Path) -> Self {
        let mut child = weft_command()
            .args([
                "up",
                "--no-build",
                "--admin-addr",
                "127.0.0.1:0",
                "--cache-dir",
            ])
            .arg(cache_dir())
            .arg("--state-dir")
            .arg(state)
            .arg(manifest)
            .env("WEFT_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let collect = |from: Box<dyn std::io::Read + Send>| {
            let text = Arc::new(Mutex::new(String::new()));
            let sink = text.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(from).lines().map_while(Result::ok) {
                    let mut text = sink.lock().unwrap();
                    text.push_str(&line);
                    text.push('\n');
                }
            });
            text
        };
        let stdout = collect(Box::new(child.stdout.take().unwrap()));
        let stderr = collect(Box::new(child.stderr.take().unwrap()));
        Self {
            child,
            stdout,
            stderr,
        }
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Sends SIGTERM once the log has `line`; asserts `weft up` then stops
    /// gracefully (`stopped`, never `ready`) well inside a minute.
    async fn terminate_once_logged(mut self, line: &str) -> String {
        eventually(Duration::from_secs(60), line, || async {
            self.log().contains(line).then_some(())
        })
        .await;
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) on the child we spawned and have not reaped.
        #[allow(unsafe_code)]
        let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(sent, 0);
        let give_up = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > give_up {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "weft up ignored SIGTERM while deploying; its log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // Give the readers a moment to take the last lines.
        std::thread::sleep(Duration::from_millis(200));
        let out = self.stdout.lock().unwrap().clone();
        assert!(status.success(), "{status:?}\n{out}\n{}", self.log());
        assert!(
            out.lines().any(|l| l == "stopped") && !out.lines().any(|l| l == "ready"),
            "{out}"
        );
        self.log()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_weft_up_while_its_deploy_waits_for_the_queue_server() {
    let dir = tempfile::tempdir().unwrap();
    let service = dir.path().join("svc");
    service_dir(&service, "waiting", ROLLOUT_WEB, ROLLOUT_WORKER, 1);
    let manifest = service.join("weft.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, format!("{text}{DEAD_NATS}")).unwrap();
    let up = Up::start(&manifest, &dir.path().join("state"));
    let log = up.terminate_once_logged(RETRYING).await;
    assert!(!log.contains("hunter2"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_weft_up_while_its_web_role_waits_to_be_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let service = dir.path().join("svc");
    service_dir(&service, "unwell", ROLLOUT_WEB, ROLLOUT_WORKER, 1);
    // A health path that never answers 2xx, and an hour to wait for it.
    let manifest = service.join("weft.toml");
    let text = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace("healthy = \"true\"", "healthy = \"false\"")
        .replace("upgrade-timeout-secs = 30", "upgrade-timeout-secs = 3600");
    std::fs::write(&manifest, text).unwrap();
    let up = Up::start(&manifest, &dir.path().join("state"));
    let log = up
        .terminate_once_logged("rollout-web: start version=1")
        .await;
    assert!(
        log.contains("shutting down before the service started"),
        "{log}"
    );
}
