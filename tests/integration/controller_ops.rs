//! The controller's operations where they meet the rest of the host: the
//! blob sweep keeps every component a record or an operation under way
//! needs, a removal finishes when its client goes away, the instance pool
//! bounds what services may declare (and an upgrade's manifest replaces
//! the counts and settings set through the API), a record that cannot be
//! saved leaves the service as it was, and an upgrade still being built
//! when the host stops is refused, not rolled out.

use crate::controller::service_dir;
use crate::hosting::{Host, TOKEN, marked_copy, token_file};
use crate::support::{eventually, http, http_as};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tokio::io::AsyncWriteExt as _;
use weft_test_artifacts::{ROLLOUT_WEB, ROLLOUT_WORKER};

/// Where blob `digest` (`sha256:HEX`) is kept.
fn blob(state: &Path, digest: &str) -> PathBuf {
    state
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

/// Makes every stored blob look two hours old, past the sweep's grace.
fn age_blobs(state: &Path) {
    let long_ago = SystemTime::now() - Duration::from_secs(2 * 60 * 60);
    for entry in std::fs::read_dir(state.join("blobs/sha256")).unwrap() {
        std::fs::File::options()
            .write(true)
            .open(entry.unwrap().path())
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
    }
}

fn record(state: &Path, service: &str) -> PathBuf {
    state.join("services").join(service).join("deployment.json")
}

fn read_record(state: &Path, service: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(record(state, service)).unwrap()).unwrap()
}

/// Waits until service `name`'s operation is no longer running.
async fn operation_ended(host: &Host, name: &str) -> serde_json::Value {
    eventually(Duration::from_secs(60), "the operation to end", || async {
        let status = host.service(name).await;
        (status["operation"]["state"] != "running").then_some(status)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_a_record_or_an_operation_needs_are_never_swept() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let tokens = token_file(dir.path());
    let mut host = Host::start(&state, &tokens);
    let steady = dir.path().join("steady");
    service_dir(&steady, "steady", ROLLOUT_WEB, ROLLOUT_WORKER, 1);
    let (ok, stdout, stderr) = host.cli(&["deploy", "--no-build", steady.to_str().unwrap()]);
    assert!(ok, "{stdout}{stderr}");
    let first = read_record(&state, "steady");
    let first_web = first["source"]["components"]["web"]
        .as_str()
        .unwrap()
        .to_owned();

    // A service whose record is kept but whose redeploy fails when the
    // host starts again (the record names another service).
    let ghost_web = host
        .put_blob(&marked_copy(ROLLOUT_WEB, dir.path(), "ghost"))
        .await;
    let mut ghost = first.clone();
    ghost["source"]["components"]["web"] = ghost_web.clone().into();
    std::fs::create_dir_all(state.join("services/ghost")).unwrap();
    std::fs::write(record(&state, "ghost"), ghost.to_string()).unwrap();
    assert!(host.weft.terminate().unwrap().success());
    let host = Host::start(&state, &tokens);
    eventually(
        Duration::from_secs(10),
        "the failed redeploy in the log",
        || async {
            host.weft
                .log()
                .contains("cannot redeploy the service")
                .then_some(())
        },
    )
    .await;
    assert_eq!(host.api("GET", "/v1/services/ghost", "").await.status, 404);

    // Two components no record names: one an upgrade is about to use, one
    // a client asks about (and so will not upload again). All of them old.
    let next = host
        .put_blob(&marked_copy(ROLLOUT_WEB, dir.path(), "next"))
        .await;
    let asked = host
        .put_blob(&marked_copy(ROLLOUT_WEB, dir.path(), "asked"))
        .await;
    age_blobs(&state);
    let head = host.api("HEAD", &format!("/v1/blobs/{asked}"), "").await;
    assert_eq!(head.status, 200, "{head:?}");

    // The upgrade sweeps once it has started, not before it was built.
    let mut source = first["source"].clone();
    source["components"]["web"] = next.clone().into();
    let upgrade = host
        .api("POST", "/v1/services/steady/upgrade", &source.to_string())
        .await;
    assert_eq!(upgrade.status, 202, "{upgrade:?}");
    let status = operation_ended(&host, "steady").await;
    assert_eq!(status["operation"]["state"], "done", "{status}");
    for (what, digest) in [
        ("the failed service's", &ghost_web),
        ("the upgrade's", &next),
        ("the one asked about", &asked),
        ("the old version's (still in its record then)", &first_web),
    ] {
        assert!(blob(&state, digest).is_file(), "{what} blob was swept");
    }

    // A service that failed to redeploy can be removed: its record goes,
    // and with the next sweep the components nothing needs any more.
    let removed = host.api("DELETE", "/v1/services/ghost", "").await;
    assert_eq!(removed.status, 200, "{removed:?}");
    assert!(!record(&state, "ghost").exists());
    assert!(!blob(&state, &ghost_web).exists());
    assert!(!blob(&state, &first_web).exists());
    assert!(blob(&state, &next).is_file() && blob(&state, &asked).is_file());
    assert_eq!(
        host.api("DELETE", "/v1/services/ghost", "").await.status,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_finishes_when_its_client_goes_away() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let host = Host::start(&state, &token_file(dir.path()));
    let folder = dir.path().join("svc");
    service_dir(&folder, "leaving", ROLLOUT_WEB, ROLLOUT_WORKER, 1);
    let (ok, stdout, stderr) = host.cli(&["deploy", "--no-build", folder.to_str().unwrap()]);
    assert!(ok, "{stdout}{stderr}");
    let url = host.url("leaving", "web").await;
    // A request in flight holds the removal up while it drains.
    let slow = tokio::spawn(async move { http("GET", &format!("{url}/sleep/3000"), "").await });
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The client sends DELETE and hangs up before the answer.
    let authority = host.admin.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&authority).await.unwrap();
    let request = format!(
        "DELETE /v1/services/leaving HTTP/1.1\r\nHost: {authority}\r\n\
         Authorization: Bearer {TOKEN}\r\nContent-Length: 0\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(stream);

    // The removal went on: the request finished, the record is gone.
    let reply = slow.await.unwrap().unwrap();
    assert_eq!(reply.status, 200, "{reply:?}");
    eventually(
        Duration::from_secs(30),
        "the record to be removed",
        || async { (!record(&state, "leaving").exists()).then_some(()) },
    )
    .await;
    assert_eq!(
        host.api("GET", "/v1/services/leaving", "").await.status,
        404
    );
    eventually(
        Duration::from_secs(30),
        "the worker's stop hook",
        || async {
            host.weft
                .log()
                .contains("rollout-worker: stop version=1")
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_may_not_declare_more_instances_than_the_pool_has_slots() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // 200 slots; each test service needs 2 × 64 for its web role (two
    // versions during an upgrade) and one per worker instance.
    let host = Host::start_with(&state, &token_file(dir.path()), &["--max-instances", "200"]);
    let first = dir.path().join("first");
    service_dir(&first, "first", ROLLOUT_WEB, ROLLOUT_WORKER, 1);
    let (ok, stdout, stderr) = host.cli(&["deploy", "--no-build", first.to_str().unwrap()]);
    assert!(ok, "{stdout}{stderr}");

    let instances = "/v1/services/first/roles/worker/instances";
    let refused = host.api("PUT", instances, r#"{"count":100}"#).await;
    assert_eq!(refused.status, 409, "{refused:?}");
    assert!(
        refused.body.contains("would need 228 sandbox slots")
            && refused.body.contains("hold 0 of the host's 200"),
        "{refused:?}"
    );
    let status = host.service("first").await;
    assert_eq!(status["roles"][1]["declared"], 1, "{status}");
    let scaled = host.api("PUT", instances, r#"{"count":3}"#).await;
    assert_eq!(scaled.status, 200, "{scaled:?}");

    // Another service does not fit beside it.
    let second = dir.path().join("second");
    service_dir(&second, "second", ROLLOUT_WEB, ROLLOUT_WORKER, 1);
    let (ok, _, stderr) = host.cli(&["deploy", "--no-build", second.to_str().unwrap()]);
    assert!(
        !ok && stderr.contains("409")
            && stderr.contains("'second' would need 129")
            && stderr.contains("hold 131 of the host's 200"),
        "{stderr}"
    );
    assert_eq!(host.api("GET", "/v1/services/second", "").await.status, 404);

    // Nor does an upgrade to more instances.
    let bigger = dir.path().join("bigger");
    service_dir(&bigger, "first", ROLLOUT_WEB, ROLLOUT_WORKER, 80);
    let (ok, _, stderr) = host.cli(&["upgrade", "--no-build", bigger.to_str().unwrap()]);
    assert!(
        !ok && stderr.contains("409") && stderr.contains("would need 208"),
        "{stderr}"
    );
    let status = host.service("first").await;
    assert_eq!(status["generation"], 1, "{status}");
    assert_eq!(status["roles"][1]["declared"], 3, "{status}");
    // An upgrade to the manifest as deployed: its one instance replaces
    // the three the API asked for.
    let (ok, stdout, stderr) = host.cli(&["upgrade", "--no-build", first.to_str().unwrap()]);
    assert!(ok, "{stdout}{stderr}");
    let status = host.service("first").await;
    assert_eq!(status["generation"], 2, "{status}");
    assert_eq!(status["roles"][1]["declared"], 1, "{status}");

    // Removing the first gives its slots back.
    let (ok, stdout, stderr) = host.cli(&["remove", "first"]);
    assert!(ok, "{stdout}{stderr}");
    let (ok, stdout, stderr) = host.cli(&["deploy", "--no-build", second.to_str().unwrap()]);
    assert!(ok, "{stdout}{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_whose_record_cannot_be_saved_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let host = Host::start(&state, &token_file(dir.path()));
    let folder = dir.path().join("svc");
    service_dir(&folder, "stubborn", ROLLOUT_WEB, ROLLOUT_WORKER, 1);
    let (ok, stdout, stderr) = host.cli(&["deploy", "--no-build", folder.to_str().unwrap()]);
    assert!(ok, "{stdout}{stderr}");
    let url = host.url("stubborn", "web").await;

    // A folder where the record would be renamed to: no save succeeds
    // (even as root, which file modes would not stop).
    let path = record(&state, "stubborn");
    let saved = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    std::fs::write(path.join("in-the-way"), "").unwrap();

    let instances = "/v1/services/stubborn/roles/worker/instances";
    let scale = host.api("PUT", instances, r#"{"count":2}"#).await;
    assert_eq!(scale.status, 500, "{scale:?}");
    assert!(
        scale.body.contains("cannot save the deployment record"),
        "{scale:?}"
    );
    let status = host.service("stubborn").await;
    assert_eq!(status["roles"][1]["declared"], 1, "{status}");
    assert_eq!(
        status["roles"][1]["instances"].as_array().unwrap().len(),
        1,
        "{status}"
    );

    let settings = host
        .api(
            "PUT",
            "/v1/services/stubborn/roles/web/settings",
            r#"{"settings":{"version":"9"}}"#,
        )
        .await;
    assert_eq!(settings.status, 202, "{settings:?}");
    let status = operation_ended(&host, "stubborn").await;
    assert_eq!(status["operation"]["state"], "rolled-back", "{status}");
    assert!(
        status["operation"]["reason"]
            .as_str()
            .unwrap()
            .contains("cannot save the deployment record"),
        "{status}"
    );
    assert_eq!(status["generation"], 1, "{status}");
    for _ in 0..10 {
        let reply = http("GET", &format!("{url}/"), "").await.unwrap();
        assert_eq!((reply.status, reply.body.as_str()), (200, "version=1"));
    }

    // Once the record can be written again, so can changes.
    std::fs::remove_dir_all(&path).unwrap();
    std::fs::write(&path, saved).unwrap();
    let scale = host.api("PUT", instances, r#"{"count":2}"#).await;
    assert_eq!(scale.status, 200, "{scale:?}");
    assert_eq!(
        read_record(&state, "stubborn")["overrides"]["instances"]["worker"],
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_being_built_when_its_service_begins_to_stop_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // A compiled-component cache of its own, empty: the upgrade's build
    // compiles (for a good part of a second), whatever ran before.
    let cache = dir.path().join("cache");
    let tokens = token_file(dir.path());
    let weft = crate::support::Weft::start(&[
        "host",
        "--state-dir",
        state.to_str().unwrap(),
        "--token-file",
        tokens.to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
        "--grace-secs",
        "10",
    ])
    .unwrap();
    let admin = weft
        .admin
        .clone()
        .expect("the host announces its admin address");
    let mut host = Host {
        weft,
        token_file: tokens,
        admin,
    };
    let folder = dir.path().join("svc");
    service_dir(&folder, "late", ROLLOUT_WEB, ROLLOUT_WORKER, 1);
    let (ok, stdout, stderr) = host.cli(&["deploy", "--no-build", folder.to_str().unwrap()]);
    assert!(ok, "{stdout}{stderr}");
    let url = host.url("late", "web").await;
    // New components for both roles: compiling them is the build the stop
    // lands in.
    let web = host
        .put_blob(&marked_copy(ROLLOUT_WEB, dir.path(), "late"))
        .await;
    let worker = host
        .put_blob(&marked_copy(ROLLOUT_WORKER, dir.path(), "late"))
        .await;
    let mut source = read_record(&state, "late")["source"].clone();
    source["components"]["web"] = web.into();
    source["components"]["worker"] = worker.into();
    // A request in flight keeps the stopping host up (it drains) until the
    // build is done and answered.
    let in_flight = {
        let url = format!("{url}/sleep/8000");
        tokio::spawn(async move { http("GET", &url, "").await })
    };
    // Served, not just sent: a connection still in the listener's backlog
    // when the stop closes it would be reset, which is not what is tested.
    // Nothing else reaches the role now, and it keeps no idle instances,
    // so one live sandbox is this request's.
    let serving = "weft_role_instances{service=\"late\",role=\"web\",kind=\"web\"} 1\n";
    eventually(
        Duration::from_secs(30),
        "the request to be served",
        || async {
            let metrics = http("GET", &format!("{}/metrics", host.admin), "")
                .await
                .ok()?;
            metrics.body.contains(serving).then_some(())
        },
    )
    .await;
    let upgrade = {
        let url = format!("{}/v1/services/late/upgrade", host.admin);
        tokio::spawn(async move { http_as(Some(TOKEN), "POST", &url, &source.to_string()).await })
    };
    // The upgrade holds the service from before its build: a settings
    // change meanwhile is turned away (409) before it looks at its role
    // (404). Then the host is told to stop.
    let give_up = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let probe = host
            .api(
                "PUT",
                "/v1/services/late/roles/nope/settings",
                r#"{"settings":{}}"#,
            )
            .await;
        if probe.status == 409 {
            break;
        }
        assert_eq!(probe.status, 404, "{probe:?}");
        assert!(!upgrade.is_finished(), "the upgrade ended before the stop");
        assert!(
            std::time::Instant::now() < give_up,
            "the upgrade never began"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let pid = libc::pid_t::try_from(host.weft.pid()).unwrap();
    // SAFETY: kill(2) on the child this test started and still owns.
    #[allow(unsafe_code)]
    let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(sent, 0);
    // Refused whether the stop cut the build short or the build ended
    // first and found its service stopping; either way, never rolled out.
    let refused = upgrade.await.unwrap().unwrap();
    assert_eq!(refused.status, 503, "{refused:?}\n{}", host.weft.log());
    assert!(
        refused.body.contains("'late' is stopping") || refused.body.contains("shutting down"),
        "{refused:?}"
    );
    let drained = in_flight.await.unwrap().unwrap();
    assert_eq!(
        (drained.status, drained.body.as_str()),
        (200, "slept version=1")
    );
    eventually(Duration::from_secs(30), "the host to exit", || {
        let running = host.weft.child_running();
        async move { (!running).then_some(()) }
    })
    .await;
    // Nothing was rolled out: the record is still generation 1, and no
    // version 2 instance started.
    assert_eq!(read_record(&state, "late")["generation"], 1);
    let log = host.weft.log();
    assert!(!log.contains("generation 2"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_replaces_the_settings_changed_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let host = Host::start(&state, &token_file(dir.path()));
    let folder = dir.path().join("svc");
    service_dir(&folder, "tuned", ROLLOUT_WEB, ROLLOUT_WORKER, 1);
    let (ok, stdout, stderr) = host.cli(&["deploy", "--no-build", folder.to_str().unwrap()]);
    assert!(ok, "{stdout}{stderr}");
    let url = host.url("tuned", "web").await;
    let version = || async {
        let reply = http("GET", &format!("{url}/"), "").await.unwrap();
        assert_eq!(reply.status, 200, "{reply:?}");
        reply.body
    };
    // Settings changed through the API, for both roles.
    for (role, value) in [("web", "api"), ("worker", "api")] {
        let (ok, stdout, stderr) = host.cli(&["settings", role, &format!("version={value}")]);
        assert!(ok, "{stdout}{stderr}");
    }
    assert_eq!(version().await, "version=api");
    let status = host.service("tuned").await;
    assert_eq!(status["roles"][0]["settings"]["version"], "api", "{status}");
    assert_eq!(status["roles"][1]["settings"]["version"], "api", "{status}");
    assert!(
        read_record(&state, "tuned")["overrides"]
            .to_string()
            .contains("api")
    );

    // An upgrade to a manifest setting version 2: its settings replace
    // those, and its record keeps no override.
    let text = std::fs::read_to_string(folder.join("weft.toml"))
        .unwrap()
        .replace("version = \"1\"", "version = \"2\"");
    std::fs::write(folder.join("weft.toml"), text).unwrap();
    let (ok, stdout, stderr) = host.cli(&["upgrade", "--no-build", folder.to_str().unwrap()]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("upgrade to generation 4 done"), "{stdout}");
    for _ in 0..10 {
        assert_eq!(version().await, "version=2");
    }
    let status = host.service("tuned").await;
    assert_eq!(status["roles"][0]["settings"]["version"], "2", "{status}");
    assert_eq!(status["roles"][1]["settings"]["version"], "2", "{status}");
    let record = read_record(&state, "tuned");
    assert!(!record["overrides"].to_string().contains("api"), "{record}");
}
