//! The real `weft` binary: serving components, running the pipeline
//! example end to end, shutting down gracefully, and one-line errors.

use crate::support::{
    cache_dir, error_line, eventually, http, http_as, pipeline_manifest, run_weft, serve, up,
};
use sha2::{Digest, Sha256};
use std::time::Duration;
use weft_test_artifacts::{HELLO_WEB, INTRUDER_WORKER, PROBE, WSTD_HELLO};

fn cache_arg() -> String {
    cache_dir().display().to_string()
}

/// Writes a manifest into a fresh folder and returns both.
fn manifest(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weft.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

#[tokio::test]
async fn hello_web_answers_200() {
    let weft = serve(HELLO_WEB, &[]);
    let reply = http("GET", &format!("{}/", weft.url("web")), "")
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body.trim(), "Hello from Weft!");
}

#[tokio::test]
async fn weft_serve_answers_404_to_every_admin_api_path() {
    let weft = serve(HELLO_WEB, &[]);
    let admin = weft.admin.clone().unwrap();
    // Whatever the method, the parameters or the token: serve has no API,
    // and publishes no document of one.
    for (method, path) in [
        ("GET", "/v1/openapi.json"),
        ("GET", "/v1/services"),
        ("PUT", "/v1/services/Not-A-Name"),
        ("POST", "/v1/services/shop"),
        ("GET", "/v1/services/shop/roles/web/logs?limit=x"),
        ("HEAD", "/v1/blobs/sha256:00"),
    ] {
        for token in [None, Some("any-token-0123456789")] {
            let reply = http_as(token, method, &format!("{admin}{path}"), "")
                .await
                .unwrap();
            assert_eq!(reply.status, 404, "{method} {path}: {reply:?}");
        }
    }
    let metrics = http("GET", &format!("{admin}/metrics"), "").await.unwrap();
    assert_eq!(metrics.status, 200, "{metrics:?}");
}

#[tokio::test]
async fn a_wasi_http_component_built_without_the_sdk_is_served_unchanged() {
    let weft = serve(WSTD_HELLO, &[]);
    let reply = http("GET", &format!("{}/", weft.url("web")), "")
        .await
        .unwrap();
    assert_eq!(
        (reply.status, reply.body.trim()),
        (200, "hello from wstd"),
        "{reply:?}"
    );
    let echo = http("GET", &format!("{}/some/path", weft.url("web")), "")
        .await
        .unwrap();
    assert_eq!(echo.body.trim(), "path: /some/path");
}

#[tokio::test]
async fn the_pipeline_runs_end_to_end() {
    let (_dir, path) = manifest(&pipeline_manifest("pipeline", "", ""));
    let mut weft = up(&path);
    let base = weft.url("web");
    let text = "the quick brown fox jumps over the lazy dog\nthe end";
    let accepted = http("POST", &format!("{base}/jobs"), text).await.unwrap();
    assert_eq!(accepted.status, 202, "{accepted:?}");
    let job: serde_json::Value = serde_json::from_str(&accepted.body).unwrap();
    let id = job["id"].as_str().unwrap().to_owned();
    assert_eq!(job["status"], "pending");
    assert_eq!(accepted.headers["location"], format!("/jobs/{id}"));

    let done = eventually(Duration::from_secs(30), "the job to be done", || {
        let url = format!("{base}/jobs/{id}");
        async move {
            let reply = http("GET", &url, "").await.ok()?;
            let value: serde_json::Value = serde_json::from_str(&reply.body).ok()?;
            (value["status"] == "done").then_some(value)
        }
    })
    .await;
    let result = &done["result"];
    assert_eq!(result["words"], 11);
    assert_eq!(result["lines"], 2);
    assert_eq!(result["bytes"], text.len());
    let digest: String = Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(result["sha256"], digest);
    assert_eq!(result["top_words"][0]["word"], "the");
    assert_eq!(result["top_words"][0]["count"], 3);
    assert_eq!(result["unique_words"], 9);

    // `weft up` is a host with the service deployed: its admin API reports
    // it, with the token it made in the state folder.
    let token = std::fs::read_to_string(path.with_file_name("state").join("admin-token")).unwrap();
    let admin = weft.admin.clone().unwrap();
    let status = http_as(
        Some(token.trim()),
        "GET",
        &format!("{admin}/v1/services/pipeline"),
        "",
    )
    .await
    .unwrap();
    assert_eq!(status.status, 200, "{status:?}");
    let status: serde_json::Value = serde_json::from_str(&status.body).unwrap();
    assert_eq!(status["roles"][1]["ready"], 2, "{status}");
    assert_eq!(status["roles"][1]["queues"][0]["length"], 0, "{status}");

    let missing = http("GET", &format!("{base}/jobs/nope"), "").await.unwrap();
    assert_eq!(missing.status, 404);
    let empty = http("POST", &format!("{base}/jobs"), "").await.unwrap();
    assert_eq!(empty.status, 400);

    let status = weft.terminate().unwrap();
    assert!(status.success(), "{status:?}\n{}", weft.log());
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let mut weft = serve(PROBE, &[]);
    let url = format!("{}/sleep/1500", weft.url("web"));
    let in_flight = tokio::spawn(async move { http("GET", &url, "").await });
    eventually(
        Duration::from_secs(30),
        "the request to be in flight",
        || {
            let log = weft.log();
            async move { log.contains("probe: sleeping 1500 ms").then_some(()) }
        },
    )
    .await;
    let status = weft.terminate().unwrap();
    let reply = in_flight.await.unwrap().unwrap();
    assert_eq!(
        (reply.status, reply.body.trim()),
        (200, "slept"),
        "{reply:?}"
    );
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn a_declared_body_over_the_limit_is_refused_before_the_guest_runs() {
    let weft = serve(PROBE, &["--max-request-body-kib", "1"]);
    let url = format!("{}/print/should-not-run", weft.url("web"));
    let reply = http("GET", &url, &"x".repeat(4096)).await.unwrap();
    assert_eq!(reply.status, 413, "{reply:?}");
    assert_eq!(reply.headers["x-weft-failure"], "body");
    // A body far larger than the socket buffers: the client is still sending
    // when the answer comes, and must get it rather than a reset.
    let flood = http("POST", &url, &"x".repeat(16 * 1024 * 1024))
        .await
        .unwrap();
    assert_eq!(flood.status, 413, "{flood:?}");
    let fits = http("GET", &url.replace("should-not-run", "fits"), "small")
        .await
        .unwrap();
    assert_eq!(fits.status, 200, "{fits:?}");
    assert!(
        !weft.log().contains("should-not-run"),
        "the guest ran for a refused request"
    );
}

#[tokio::test]
async fn guest_output_lands_in_the_host_log_tagged_with_its_role() {
    let (_dir, path) = manifest(&format!(
        r#"
[service]
name = "svc"

[roles.intruder]
kind = "worker"
component = "{INTRUDER_WORKER}"
queues = ["tasks"]
buckets = ["results"]

[roles.front]
kind = "web"
component = "{PROBE}"
listen = "127.0.0.1:0"
"#
    ));
    let weft = up(&path);
    let reply = http(
        "GET",
        &format!("{}/print/marker-1234", weft.url("front")),
        "",
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200);
    let log = eventually(
        Duration::from_secs(30),
        "the guests' output in the log",
        || {
            let log = weft.log();
            async move {
                (log.contains("marker-1234") && log.contains("intruder: send forbidden"))
                    .then_some(log)
            }
        },
    )
    .await;
    let marker = log.lines().find(|l| l.contains("marker-1234")).unwrap();
    assert!(
        marker.contains("role=front") && marker.contains("service=svc"),
        "{marker}"
    );
    let intruder = log
        .lines()
        .find(|l| l.contains("intruder: send forbidden"))
        .unwrap();
    assert!(
        intruder.contains("denied") && intruder.contains("role=intruder"),
        "{intruder}"
    );
}

#[test]
fn a_malformed_component_is_a_one_line_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.wasm");
    std::fs::write(&bad, b"\0asm garbage").unwrap();
    let (ok, stderr) = run_weft(&["serve", "--addr", "127.0.0.1:0", bad.to_str().unwrap()]);
    assert!(!ok);
    let line = error_line(&stderr);
    assert!(
        line.contains("bad.wasm") && line.contains("not a valid Wasm component"),
        "{line}"
    );

    let (_dir, path) = manifest(&format!(
        "[service]\nname = \"s\"\n[roles.w]\nkind = \"worker\"\ncomponent = \"{}\"\n",
        bad.display()
    ));
    let (ok, stderr) = run_weft(&["check", "--no-build", path.to_str().unwrap()]);
    assert!(!ok);
    assert!(error_line(&stderr).contains("bad.wasm"), "{stderr}");
}

#[test]
fn a_component_of_the_wrong_kind_is_refused() {
    let (_dir, path) = manifest(&format!(
        "[service]\nname = \"s\"\n[roles.w]\nkind = \"worker\"\ncomponent = \"{HELLO_WEB}\"\n"
    ));
    let cache = cache_arg();
    let (ok, stderr) = run_weft(&[
        "check",
        "--no-build",
        "--cache-dir",
        &cache,
        path.to_str().unwrap(),
    ]);
    assert!(!ok);
    let line = error_line(&stderr);
    assert!(line.contains("cannot run as a worker role"), "{line}");
}

#[test]
fn a_malformed_manifest_is_a_one_line_error_naming_file_and_line() {
    let (_dir, path) =
        manifest("[service]\nname = \"s\"\n\n[roles.web]\nkind = \"web\"\ncomponent = 12\n");
    let (ok, stderr) = run_weft(&["up", path.to_str().unwrap()]);
    assert!(!ok);
    let line = error_line(&stderr);
    assert!(line.contains("weft.toml: line 6"), "{line}");

    let (_dir, path) =
        manifest("[service]\nname = \"s\"\n[roles.web]\nkind = \"web\"\ncomponent = \"x.wasm\"\n");
    let (ok, stderr) = run_weft(&["up", path.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        error_line(&stderr).contains("roles.web.listen: required"),
        "{stderr}"
    );

    let (ok, stderr) = run_weft(&["up", "/nonexistent/weft.toml"]);
    assert!(!ok);
    assert!(
        error_line(&stderr).contains("/nonexistent/weft.toml: cannot read"),
        "{stderr}"
    );
}

/// The guest output lines the host reported dropped for `role`, added up
/// over every report in the log (a slow run may report one flood in parts).
fn dropped_lines(log: &str, role: &str) -> usize {
    let tag = format!("role={role}");
    log.lines()
        .filter(|l| l.contains("lines dropped") && l.contains(&tag))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("dropped=")?.parse::<usize>().ok())
        })
        .sum()
}

#[tokio::test]
async fn guest_output_over_its_rate_limit_is_dropped_and_counted() {
    let (_dir, path) = manifest(&format!(
        r#"
[service]
name = "svc"

[roles.noisy]
kind = "web"
component = "{PROBE}"
listen = "127.0.0.1:0"
[roles.noisy.rate-limits.log]
bytes = {{ size = 1000, refill-ms = 1000 }}

[roles.quiet]
kind = "web"
component = "{PROBE}"
listen = "127.0.0.1:0"
"#
    ));
    let weft = up(&path);
    let spam = http("GET", &format!("{}/spam/500", weft.url("noisy")), "")
        .await
        .unwrap();
    assert_eq!(spam.body, "printed 500 lines", "{spam:?}");
    let quiet = http(
        "GET",
        &format!("{}/print/quiet-marker", weft.url("quiet")),
        "",
    )
    .await
    .unwrap();
    assert_eq!(quiet.status, 200);
    // Once tokens are back, the next line that gets through reports the
    // loss; a slow flood may see tokens return midway, so the loss can come
    // in several reports. Every spam line is accounted for, printed or
    // reported dropped (the probes' own lines may be dropped too), and the
    // quiet role's line is there.
    let noisy = weft.url("noisy");
    let spam_lines = |log: &str| log.lines().filter(|l| l.contains("spam-line")).count();
    let dropped = |log: &str| dropped_lines(log, "noisy");
    let log = eventually(
        Duration::from_secs(30),
        "every spam line printed or reported dropped, and the quiet line",
        || {
            let url = format!("{noisy}/print/after-the-flood");
            let log = weft.log();
            async move {
                let _ = http("GET", &url, "").await;
                (spam_lines(&log) + dropped(&log) >= 500 && log.contains("quiet-marker"))
                    .then_some(log)
            }
        },
    )
    .await;
    // 1,000 bytes of bucket at ~100 bytes a line, plus what refilled meanwhile.
    let printed = spam_lines(&log);
    assert!(
        (5..=30).contains(&printed),
        "{printed} spam lines got through"
    );
    assert!(dropped(&log) >= 470, "{} dropped", dropped(&log));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_flooding_newlines_is_held_to_its_line_rate_and_a_neighbour_still_lands() {
    // Both roles keep the default log limits: short lines, far within the
    // bytes rate, so only the line rate can hold the flood.
    let (_dir, path) = manifest(&format!(
        r#"
[service]
name = "svc"

[roles.flood]
kind = "web"
component = "{PROBE}"
listen = "127.0.0.1:0"

[roles.quiet]
kind = "web"
component = "{PROBE}"
listen = "127.0.0.1:0"
"#
    ));
    let weft = up(&path);
    const LINES: usize = 200_000;
    let started = std::time::Instant::now();
    let flood = http(
        "GET",
        &format!("{}/lines/{LINES}/flood-line", weft.url("flood")),
        "",
    )
    .await
    .unwrap();
    assert_eq!(flood.body, format!("wrote {LINES} lines"), "{flood:?}");
    let quiet = http(
        "GET",
        &format!("{}/print/quiet-marker", weft.url("quiet")),
        "",
    )
    .await
    .unwrap();
    assert_eq!(quiet.status, 200);
    let printed = |log: &str| log.lines().filter(|l| l.contains("flood-line")).count();
    let dropped = dropped_lines;
    // The loss is reported when the request's sandbox goes away.
    let log = eventually(
        Duration::from_secs(30),
        "every flood line printed or reported dropped, and the quiet line",
        || {
            let log = weft.log();
            async move {
                (printed(&log) + dropped(&log, "flood") >= LINES && log.contains("quiet-marker"))
                    .then_some(log)
            }
        },
    )
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    // What the default line bucket allows: its burst, a full bucket, and
    // its refill over the whole run (the flood began after `started`).
    let ops = weft_sandbox::RateLimits::default()[weft_sandbox::rate_limit::Interface::Log]
        .ops
        .expect("a default line rate");
    let most = (ops.burst + ops.size) as f64 + ops.size as f64 * elapsed;
    let lines = printed(&log);
    assert!(
        lines as f64 <= most,
        "{lines} flood lines reached the host log in {elapsed:.2} s; the limit allows {most:.0}"
    );
    assert!(
        lines >= usize::try_from(ops.burst + ops.size).unwrap(),
        "{lines}: the line bucket's burst got through"
    );
    // Every line is accounted for, and the neighbour lost nothing.
    assert_eq!(lines + dropped(&log, "flood"), LINES);
    assert_eq!(dropped(&log, "quiet"), 0, "{log}");
}
