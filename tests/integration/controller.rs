//! The fabric controller through the real binary: `weft host` and its admin
//! API, driven directly and through the CLI. Auth (no token, a wrong token,
//! crafted names), deploys that survive a restart, malformed deploys refused
//! with the running version undisturbed, scaling, settings, logs, status,
//! and crash-looping workers.

use crate::hosting::{Host, TOKEN, token_file};
use crate::support::{eventually, http, http_bytes, write_manifest};
use std::path::Path;
use std::time::Duration;
use weft_test_artifacts::{ROLLOUT_WEB, ROLLOUT_WORKER};

/// A service folder: `weft.toml` for service `name` (web and worker
/// roles from the rollout guests, `instances` workers), and the overlay
/// `weft.crash.toml`, which makes the workers crash.
pub fn service_dir(dir: &Path, name: &str, web: &str, worker: &str, instances: u32) {
    write_manifest(
        dir,
        &format!(
            r#"
[service]
name = "{name}"
upgrade-domains = 2
upgrade-settle-ms = 300
upgrade-timeout-secs = 30

[roles.web]
kind = "web"
component = "{web}"
listen = "127.0.0.1:0"
queues = ["jobs"]
health = "/health"
# Small enough that several services fit a test host's instance slots.
[roles.web.limits]
max-in-flight = 64
[roles.web.settings]
version = "1"
healthy = "true"
start = "ok"

[roles.worker]
kind = "worker"
component = "{worker}"
instances = {instances}
queues = ["jobs"]
buckets = ["ledger"]
[roles.worker.limits]
stop-grace-ms = 5000
[roles.worker.settings]
version = "1"
mode = "work"
start = "ok"
"#
        ),
    );
    std::fs::write(
        dir.join("weft.crash.toml"),
        "[roles.worker.settings]\nmode = \"crash\"\n",
    )
    .unwrap();
}

async fn version_of(url: &str) -> String {
    let reply = http("GET", &format!("{url}/"), "").await.unwrap();
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_needs_a_valid_token_and_refuses_crafted_names() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let host = Host::start(&state, &token_file(dir.path()));
    // The routes the server says it has, from its own OpenAPI document.
    let document = host
        .api_as(None, "GET", "/v1/openapi.json", "")
        .await
        .unwrap();
    assert_eq!(document.status, 200, "the document is open");
    let document: serde_json::Value = serde_json::from_str(&document.body).unwrap();
    let digest = format!("sha256:{}", "0".repeat(64));
    let mut protected = 0;
    for (template, operations) in document["paths"].as_object().unwrap() {
        let path = template
            .replace("{service}", "shop")
            .replace("{role}", "web")
            .replace("{queue}", "jobs")
            .replace("{bucket}", "results")
            .replace("{digest}", &digest);
        for method in operations.as_object().unwrap().keys() {
            if method == "parameters" {
                continue;
            }
            let method = method.to_uppercase();
            let open = operations[method.to_lowercase()]["security"] == serde_json::json!([]);
            for token in [None, Some("wrong-token-0123456789")] {
                let reply = host.api_as(token, &method, &path, "{}").await.unwrap();
                if open {
                    assert_eq!(reply.status, 200, "{method} {path}: {reply:?}");
                } else {
                    assert_eq!(
                        reply.status, 401,
                        "{method} {path} with {token:?}: {reply:?}"
                    );
                    protected += 1;
                }
            }
        }
    }
    assert!(protected >= 20, "{protected} protected calls tried");
    // An unknown route is 404 even without a token: the 401s above were
    // answered by real routes.
    assert_eq!(
        host.api_as(None, "GET", "/v1/nothing", "")
            .await
            .unwrap()
            .status,
        404
    );

    // Crafted names: refused before anything reads them.
    let body = serde_json::json!({
        "manifest_file": "weft.toml",
        "manifest": "[service]\nname = \"../escape\"\n",
        "components": {},
    })
    .to_string();
    for crafted in [
        "/v1/services/..%2F..%2Fescape",
        "/v1/services/..",
        "/v1/services/%2e%2e",
        "/v1/services/.hidden",
    ] {
        let without = host.api_as(None, "PUT", crafted, &body).await.unwrap();
        assert_eq!(without.status, 401, "{crafted}: {without:?}");
        let with = host.api("PUT", crafted, &body).await;
        assert_eq!(with.status, 400, "{crafted}: {with:?}");
        assert!(with.body.contains("service name"), "{with:?}");
    }
    let traversal = host
        .api(
            "PUT",
            "/v1/services/escape/roles/..%2Fweb/settings",
            r#"{"settings":{}}"#,
        )
        .await;
    assert_eq!(traversal.status, 400, "{traversal:?}");
    let blob = host
        .api("PUT", "/v1/blobs/sha256:..%2F..%2Fadmin-token", "x")
        .await;
    assert_eq!(blob.status, 400, "{blob:?}");
    // Bodies are bounded before they are read, and a client still sending
    // one far larger than the socket buffers gets its 413, not a reset.
    let huge = format!("{{\"manifest\": \"{}\"}}", "x".repeat(16 * 1024 * 1024));
    let too_large = host.api("PUT", "/v1/services/escape", &huge).await;
    assert_eq!(too_large.status, 413, "{too_large:?}");
    // A blob whose bytes do not hash to its name.
    let forged = host
        .api("PUT", &format!("/v1/blobs/{digest}"), "not those bytes")
        .await;
    assert_eq!(forged.status, 400, "{forged:?}");
    // A manifest naming another service than the URL's.
    let mismatch = host.api("PUT", "/v1/services/escape", &body).await;
    assert_eq!(mismatch.status, 400, "{mismatch:?}");

    // Nothing changed: no services, no records, no files outside the folder.
    let services = host.api("GET", "/v1/services", "").await;
    assert_eq!(services.body, r#"{"services":[]}"#);
    let recorded = std::fs::read_dir(state.join("services")).map_or(0, Iterator::count);
    assert_eq!(recorded, 0);
    assert!(!dir.path().join("escape").exists() && !state.join("escape").exists());
    assert_eq!(
        std::fs::read_dir(state.join("blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
    // The token file is not readable through the API, and still intact.
    assert_eq!(std::fs::read_to_string(&host.token_file).unwrap(), TOKEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_over_the_upload_limit_is_refused_with_413() {
    use sha2::Digest as _;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let host = Host::start_with(
        &state,
        &token_file(dir.path()),
        &["--max-component-mib", "1"],
    );
    let digest_of = |bytes: &[u8]| -> String {
        let hex: String = sha2::Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("sha256:{hex}")
    };
    let put = |bytes: Vec<u8>| {
        let url = format!("{}/v1/blobs/{}", host.admin, digest_of(&bytes));
        async move { http_bytes(Some(TOKEN), "PUT", &url, bytes).await.unwrap() }
    };
    let stored = || std::fs::read_dir(state.join("blobs/sha256")).map_or(0, Iterator::count);
    // One byte over the limit is refused, though its digest is right; so
    // is a body far past it, answered before it is read.
    let over = put(vec![1; (1 << 20) + 1]).await;
    assert_eq!(over.status, 413, "{over:?}");
    let far_over = put(vec![2; 16 << 20]).await;
    assert_eq!(far_over.status, 413, "{far_over:?}");
    assert_eq!(stored(), 0, "nothing over the limit was stored");
    // At the limit it is taken.
    let at = put(vec![3; 1 << 20]).await;
    assert_eq!(at.status, 201, "{at:?}");
    assert_eq!(stored(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployed_service_survives_a_host_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let tokens = token_file(dir.path());
    let service = dir.path().join("svc");
    service_dir(&service, "survivor", ROLLOUT_WEB, ROLLOUT_WORKER, 2);
    let mut host = Host::start(&state, &tokens);
    let (ok, stdout, stderr) = host.cli(&["deploy", "--no-build", service.to_str().unwrap()]);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("uploaded web") && stdout.contains("deployed survivor generation 1"),
        "{stdout}"
    );
    assert!(stdout.lines().any(|l| l == "ready"), "{stdout}");
    let url = host.url("survivor", "web").await;
    assert_eq!(version_of(&url).await, "version=1");
    assert!(state.join("services/survivor/deployment.json").is_file());
    // A scale is part of the record too.
    let (ok, stdout, stderr) = host.cli(&["scale", "survivor/worker", "3"]);
    assert!(ok, "{stdout}{stderr}");

    // A graceful stop runs every instance's stop hook.
    assert!(host.weft.terminate().unwrap().success());
    let log = host.weft.log();
    assert!(log.contains("rollout-web: stop version=1"), "{log}");
    assert_eq!(
        log.matches("rollout-worker: stop version=1").count(),
        3,
        "{log}"
    );

    let host = Host::start(&state, &tokens);
    let status = host.ready("survivor").await;
    assert_eq!(status["generation"], 1);
    assert_eq!(status["roles"][1]["declared"], 3, "{status}");
    let url = host.url("survivor", "web").await;
    assert_eq!(version_of(&url).await, "version=1");
    let (ok, table, stderr) = host.cli(&["status"]);
    assert!(ok, "{stderr}");
    assert!(table.contains("service survivor  generation 1"), "{table}");
    assert!(
        table.contains("worker/2") && table.contains("ready"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_deploy_is_refused_and_the_running_version_is_undisturbed() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(&dir.path().join("state"), &token_file(dir.path()));
    let good = dir.path().join("good");
    service_dir(&good, "steady", ROLLOUT_WEB, ROLLOUT_WORKER, 1);
    let (ok, stdout, stderr) = host.cli(&["deploy", "--no-build", good.to_str().unwrap()]);
    assert!(ok, "{stdout}{stderr}");
    let url = host.url("steady", "web").await;

    // A component that is not Wasm.
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"\0asm\x0d\0\x01\0 not a component").unwrap();
    let bad = dir.path().join("bad-component");
    service_dir(&bad, "steady", garbage.to_str().unwrap(), ROLLOUT_WORKER, 1);
    let (ok, _, stderr) = host.cli(&["upgrade", "--no-build", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        stderr.contains("400")
            && stderr.contains("roles.web: component sha256:")
            && stderr.contains("not a valid Wasm component"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    // A worker given a web component: the wrong kind.
    let wrong = dir.path().join("wrong-kind");
    service_dir(&wrong, "steady", ROLLOUT_WEB, ROLLOUT_WEB, 1);
    let (ok, _, stderr) = host.cli(&["upgrade", "--no-build", wrong.to_str().unwrap()]);
    assert!(
        !ok && stderr.contains("cannot run as a worker role"),
        "{stderr}"
    );
    // A manifest with an unknown key: caught by the client, and by the host.
    let typo = dir.path().join("typo");
    service_dir(&typo, "steady", ROLLOUT_WEB, ROLLOUT_WORKER, 1);
    let manifest = typo.join("weft.toml");
    let text = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace("instances = 1", "instances = 1\ncolour = \"red\"");
    std::fs::write(&manifest, &text).unwrap();
    let (ok, _, stderr) = host.cli(&["upgrade", "--no-build", typo.to_str().unwrap()]);
    assert!(
        !ok && stderr.contains("weft.toml: line 26, column 1") && stderr.contains("colour"),
        "{stderr}"
    );
    let source = serde_json::json!({
        "manifest_file": "typo/weft.toml",
        "manifest": text,
        "components": {},
    });
    let reply = host
        .api("POST", "/v1/services/steady/upgrade", &source.to_string())
        .await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert!(
        reply.body.contains("typo/weft.toml: line 26, column 1"),
        "{reply:?}"
    );
    // An overlay setting a setting the role does not declare.
    std::fs::write(
        good.join("weft.odd.toml"),
        "[roles.web.settings]\n\ncolour = \"red\"\n",
    )
    .unwrap();
    let (ok, _, stderr) = host.cli(&[
        "upgrade",
        "--no-build",
        "--env",
        "odd",
        good.to_str().unwrap(),
    ]);
    assert!(
        !ok && stderr.contains("weft.odd.toml: line 3: roles.web.settings.colour: not declared"),
        "{stderr}"
    );
    // A new service with a malformed component is not deployed at all.
    let fresh = dir.path().join("fresh");
    service_dir(
        &fresh,
        "fresh",
        garbage.to_str().unwrap(),
        ROLLOUT_WORKER,
        1,
    );
    let (ok, _, stderr) = host.cli(&["deploy", "--no-build", fresh.to_str().unwrap()]);
    assert!(
        !ok && stderr.contains("not a valid Wasm component"),
        "{stderr}"
    );
    assert_eq!(host.api("GET", "/v1/services/fresh", "").await.status, 404);

    // The running version never noticed.
    let status = host.service("steady").await;
    assert_eq!(status["generation"], 1, "{status}");
    assert!(status["operation"].is_null(), "{status}");
    assert_eq!(version_of(&url).await, "version=1");
    let log = host.weft.log();
    assert_eq!(
        log.matches("rollout-web: start version=1").count(),
        1,
        "{log}"
    );
    assert!(!log.contains("rollout-web: stop"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_settings_logs_and_status_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(&dir.path().join("state"), &token_file(dir.path()));
    let folder = dir.path().join("svc");
    service_dir(&folder, "tuned", ROLLOUT_WEB, ROLLOUT_WORKER, 1);
    let (ok, stdout, stderr) = host.cli(&["deploy", "--no-build", folder.to_str().unwrap()]);
    assert!(ok, "{stdout}{stderr}");

    let (ok, stdout, stderr) = host.cli(&["scale", "tuned/worker", "3"]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("worker 3/3 ready"), "{stdout}");
    let instances = |status: &serde_json::Value| {
        status["roles"][1]["instances"]
            .as_array()
            .map_or(0, Vec::len)
    };
    assert_eq!(instances(&host.service("tuned").await), 3);
    let (ok, stdout, stderr) = host.cli(&["scale", "worker", "1"]);
    assert!(ok, "{stdout}{stderr}");
    // The two retired instances drain, run their stop hooks, and go.
    eventually(
        Duration::from_secs(30),
        "the retired instances to stop",
        || async { (instances(&host.service("tuned").await) == 1).then_some(()) },
    )
    .await;
    assert_eq!(
        host.weft
            .log()
            .matches("rollout-worker: stop version=1")
            .count(),
        2
    );
    // Web roles have no instance count.
    let (ok, _, stderr) = host.cli(&["scale", "web", "2"]);
    assert!(
        !ok && stderr.contains("only worker roles scale"),
        "{stderr}"
    );

    // Following the web role's log while its settings change.
    let mut follow = crate::support::weft_command()
        .args(["logs", "-f", "web", "--admin", &host.admin, "--token-file"])
        .arg(&host.token_file)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (ok, stdout, stderr) = host.cli(&["settings", "web", "version=7"]);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("domain 2 of 2") && stdout.contains("settings to generation 2 done"),
        "{stdout}"
    );
    let url = host.url("tuned", "web").await;
    assert_eq!(version_of(&url).await, "version=7");
    let stdout = follow.stdout.take().unwrap();
    let lines = std::thread::spawn(move || {
        use std::io::BufRead as _;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.contains("rollout-web: start version=7"))
    });
    eventually(
        Duration::from_secs(30),
        "weft logs -f to print the new line",
        || async { lines.is_finished().then_some(()) },
    )
    .await;
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(lines.join().unwrap().is_some());
    // The worker kept its settings and its instance.
    let status = host.service("tuned").await;
    assert_eq!(status["roles"][1]["generation"], 1, "{status}");
    assert_eq!(status["roles"][0]["settings"]["version"], "7", "{status}");

    let (ok, _, stderr) = host.cli(&["settings", "web", "colour=red"]);
    assert!(
        !ok && stderr.contains("roles.web.settings.colour: not declared"),
        "{stderr}"
    );
    let (ok, logs, stderr) = host.cli(&["logs", "tuned/worker"]);
    assert!(ok, "{stderr}");
    assert!(logs.contains("] rollout-worker: start version=1"), "{logs}");
    let (ok, table, stderr) = host.cli(&["status", "tuned"]);
    assert!(ok, "{stderr}");
    assert!(
        table.contains("settings done") && table.contains("web/d1"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_looping_worker_is_restarted_with_backoff_and_marked() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(&dir.path().join("state"), &token_file(dir.path()));
    let folder = dir.path().join("svc");
    service_dir(&folder, "crashy", ROLLOUT_WEB, ROLLOUT_WORKER, 1);
    let (ok, stdout, stderr) = host.cli(&[
        "deploy",
        "--no-build",
        "--no-wait",
        "--env",
        "crash",
        folder.to_str().unwrap(),
    ]);
    assert!(ok, "{stdout}{stderr}");
    let first = eventually(
        Duration::from_secs(60),
        "the worker to be crash-looping",
        || async {
            let status = host.service("crashy").await;
            let instance = status["roles"][1]["instances"][0].clone();
            (instance["crash_looping"] == true).then_some(instance)
        },
    )
    .await;
    let restarts = first["restarts"].as_u64().unwrap();
    assert!(restarts >= 5, "{first}");
    assert!(
        first["last_failure"].as_str().unwrap().contains("trapped"),
        "{first}"
    );
    // Backoff: by now each restart waits over a second, so two seconds add
    // few (restarting at once would add hundreds).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = host.service("crashy").await["roles"][1]["instances"][0]["restarts"]
        .as_u64()
        .unwrap();
    assert!(later - restarts <= 3, "{restarts} then {later}");
    let status = host.service("crashy").await;
    assert_eq!(status["environment"], "crash");
    assert_eq!(status["roles"][1]["ready"], 0);
    // The web role is unaffected.
    let url = host.url("crashy", "web").await;
    assert_eq!(version_of(&url).await, "version=1");
    // Removing it stops the loop; the admin API forgets it.
    let (ok, stdout, stderr) = host.cli(&["remove", "crashy"]);
    assert!(ok && stdout.contains("removed crashy"), "{stdout}{stderr}");
    assert_eq!(host.api("GET", "/v1/services/crashy", "").await.status, 404);
    assert!(http("GET", &format!("{url}/"), "").await.is_err());
}
