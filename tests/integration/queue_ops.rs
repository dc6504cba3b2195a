//! An operator's hands on a running service's queues and buckets, through
//! the real `weft` binary: `weft queue send` feeds a worker that fails
//! every message it is given (`fail`) until the message reaches the
//! poison queue; `weft queue peek` reads it there (and another queue's
//! message) while the service runs on the embedded store; `weft queue
//! redrive` moves it back and the worker takes it again; `weft queue
//! purge` empties a queue; `weft bucket keys/get/delete/purge` work on the
//! worker's results. Without the token each change is 401 and changes
//! nothing; a queue or bucket no role is granted is 404; a message over
//! the limit is 413 and bad base64 400, the queue untouched.

use crate::hosting::{Host, token_file};
use crate::support::{error_line, eventually, write_manifest};
use std::path::Path;
use std::time::Duration;
use weft_test_artifacts::CHAOS_WORKER;

/// A service of one chaos worker pulling from `tasks`; `jobs` is granted
/// but read by nobody, so what is sent there stays to be peeked at.
fn write_service(dir: &Path) {
    write_manifest(
        dir,
        &format!(
            r#"
[service]
name = "ops"

[roles.worker]
kind = "worker"
component = "{CHAOS_WORKER}"
queues = ["tasks", "jobs"]
buckets = ["results"]

[buckets.results]
ttl-seconds = 3600

[queues]
max-deliveries = 1
"#
        ),
    );
}

/// `weft ARGS` against `host`, which must succeed; its stdout.
fn ok(host: &Host, args: &[&str]) -> String {
    let (ok, stdout, stderr) = host.cli(args);
    assert!(ok, "weft {args:?}: {stdout}{stderr}");
    stdout
}

/// `weft ARGS` against `host`, which must fail; its one error line.
fn refused(host: &Host, args: &[&str]) -> String {
    let (ok, stdout, stderr) = host.cli(args);
    assert!(!ok, "weft {args:?} succeeded: {stdout}");
    error_line(&stderr).to_owned()
}

/// The peeked lines of `queue` (`id=... body=...`).
fn peek(host: &Host, queue: &str) -> Vec<String> {
    ok(host, &["queue", "peek", "ops", queue])
        .lines()
        .map(str::to_owned)
        .collect()
}

async fn queue_lengths(host: &Host) -> serde_json::Value {
    let reply = host.api("GET", "/v1/services/ops/queues", "").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    serde_json::from_str(&reply.body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_sends_peeks_redrives_and_purges_queues_and_empties_buckets() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(&dir.path().join("state"), &token_file(dir.path()));
    let service = dir.path().join("ops");
    write_service(&service);
    ok(&host, &["deploy", "--no-build", service.to_str().unwrap()]);

    // A message nobody reads, peeked at while the service runs.
    let waiting = ok(&host, &["queue", "send", "ops", "jobs", "first"]);
    let waiting = waiting.trim().to_owned();
    let lines = peek(&host, "jobs");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with(&format!("id={waiting} dequeue-count=0"))
            && lines[0].ends_with("body=\"first\""),
        "{lines:?}"
    );

    // A message the worker fails: delivered once, then poisoned.
    let failing = ok(&host, &["queue", "send", "ops", "tasks", "fail"]);
    let failing = failing.trim().to_owned();
    let poisoned = eventually(
        Duration::from_secs(60),
        "the message to be poisoned",
        || async {
            let lines = peek(&host, "tasks-poison");
            (lines.len() == 1).then(|| lines[0].clone())
        },
    )
    .await;
    assert!(
        poisoned.starts_with(&format!("id={failing} "))
            && poisoned.contains(" reason=\"delivered 1 time"),
        "{poisoned}"
    );

    // The history samples both lengths every 5 s.
    let sampled = eventually(
        Duration::from_secs(30),
        "a sample with the poison",
        || async {
            let queues = queue_lengths(&host).await;
            let tasks = queues["queues"]
                .as_array()?
                .iter()
                .find(|q| q["name"] == "tasks")?
                .clone();
            let seen = tasks["history"]
                .as_array()?
                .iter()
                .any(|s| s["poison_length"] == 1 && s["at_ms"].as_u64().is_some());
            seen.then_some(queues)
        },
    )
    .await;
    let names: Vec<&str> = sampled["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["jobs", "tasks"], "{sampled}");
    let jobs = &sampled["queues"][0];
    assert_eq!(
        (jobs["length"].as_u64(), jobs["poison_length"].as_u64()),
        (Some(1), Some(0))
    );

    // The worker's results: what it saw of the message.
    let seen_key = format!("seen/{failing}");
    let keys = ok(&host, &["bucket", "keys", "ops", "results"]);
    assert_eq!(
        keys.lines().collect::<Vec<_>>(),
        [seen_key.as_str()],
        "{keys}"
    );
    assert_eq!(
        ok(&host, &["bucket", "get", "ops", "results", &seen_key]),
        "1"
    );

    // Without the token: 401 for every change, and nothing changed.
    for (method, path) in [
        ("DELETE", "/v1/services/ops/queues/jobs/messages"),
        ("POST", "/v1/services/ops/queues/tasks/redrive"),
        ("DELETE", "/v1/services/ops/buckets/results/keys"),
        ("POST", "/v1/services/ops/buckets/results/keys/delete"),
        ("POST", "/v1/services/ops/queues/jobs/messages"),
    ] {
        let body = r#"{"keys": ["x"], "body": "intruder"}"#;
        let reply = host.api_as(None, method, path, body).await.unwrap();
        assert_eq!(reply.status, 401, "{method} {path}: {reply:?}");
        let reply = host
            .api_as(Some("wrong-token-0123456789"), method, path, body)
            .await
            .unwrap();
        assert_eq!(reply.status, 401, "{method} {path}: {reply:?}");
    }
    assert_eq!(peek(&host, "jobs").len(), 1);
    assert_eq!(peek(&host, "tasks-poison").len(), 1);
    assert_eq!(
        ok(&host, &["bucket", "keys", "ops", "results"])
            .lines()
            .count(),
        1
    );

    // What is not granted is 404; a message over the limit 413, bad base64
    // 400: one line each, and the queue keeps what it had.
    for args in [
        &["queue", "peek", "ops", "nope"][..],
        &["queue", "send", "ops", "nope-poison", "x"],
        // A poison queue has no poison queue of its own.
        &["queue", "send", "ops", "tasks-poison-poison", "x"],
        &["queue", "peek", "ops", "tasks-poison-poison"],
        &["queue", "peek", "ops", "results"],
        &["bucket", "keys", "ops", "tasks"],
        &["queue", "peek", "nobody", "jobs"],
    ] {
        let line = refused(&host, args);
        assert!(line.contains("404"), "{args:?}: {line}");
    }
    let big = serde_json::json!({ "body": "x".repeat(64 * 1024 + 1) }).to_string();
    let reply = host
        .api("POST", "/v1/services/ops/queues/jobs/messages", &big)
        .await;
    assert_eq!(reply.status, 413, "{reply:?}");
    let bad = host
        .api(
            "POST",
            "/v1/services/ops/queues/jobs/messages",
            r#"{"body_base64": "no!"}"#,
        )
        .await;
    assert_eq!(bad.status, 400, "{bad:?}");
    assert!(
        bad.body.contains("base64") && !bad.body.contains('\n'),
        "{bad:?}"
    );
    let at_limit = serde_json::json!({ "body": "x".repeat(64 * 1024), "delay_ms": 600_000 });
    let reply = host
        .api(
            "POST",
            "/v1/services/ops/queues/jobs/messages",
            &at_limit.to_string(),
        )
        .await;
    assert_eq!(reply.status, 201, "the limit itself is accepted: {reply:?}");
    let jobs = &queue_lengths(&host).await["queues"][0];
    assert_eq!(jobs["length"], 2, "{jobs}");

    // Redrive: the message goes back and the worker takes it again (it
    // writes its `seen` key anew), then poisons it again.
    ok(&host, &["bucket", "delete", "ops", "results", &seen_key]);
    let moved = ok(
        &host,
        &["queue", "redrive", "ops", "tasks", "--id", &failing],
    );
    assert!(
        moved.starts_with("moved 1 messages back to ops/tasks") && moved.contains(&failing),
        "{moved}"
    );
    eventually(
        Duration::from_secs(60),
        "the worker to take it again",
        || async {
            let (ok, value, _) = host.cli(&["bucket", "get", "ops", "results", &seen_key]);
            (ok && value == "1").then_some(())
        },
    )
    .await;
    eventually(
        Duration::from_secs(60),
        "the message to be poisoned again",
        || async { (peek(&host, "tasks-poison").len() == 1).then_some(()) },
    )
    .await;
    // A redrive naming a poison queue is refused: it names the queue the
    // messages go back to.
    let line = refused(&host, &["queue", "redrive", "ops", "tasks-poison"]);
    assert!(line.contains("400") && line.contains("'tasks'"), "{line}");

    // Purge refuses without --yes, in one line, and deletes nothing.
    let line = refused(&host, &["queue", "purge", "ops", "jobs"]);
    assert!(line.contains("--yes"), "{line}");
    assert_eq!(
        peek(&host, "jobs").len(),
        1,
        "the delayed one is not visible"
    );
    assert_eq!(
        ok(&host, &["queue", "purge", "ops", "jobs", "--yes"]).trim(),
        "purged 2 messages from ops/jobs"
    );
    assert_eq!(
        ok(&host, &["queue", "purge", "ops", "tasks-poison", "--yes"]).trim(),
        "purged 1 messages from ops/tasks-poison"
    );
    assert!(peek(&host, "jobs").is_empty() && peek(&host, "tasks-poison").is_empty());
    let queues = queue_lengths(&host).await;
    assert_eq!(queues["queues"][0]["length"], 0, "{queues}");
    assert_eq!(queues["queues"][1]["poison_length"], 0, "{queues}");

    // Buckets: delete what is missing (nothing), purge what is there.
    assert_eq!(
        ok(&host, &["bucket", "delete", "ops", "results", "missing"]).trim(),
        "deleted 0 keys from ops/results"
    );
    let buckets = host.api("GET", "/v1/services/ops/buckets", "").await;
    assert_eq!(buckets.status, 200, "{buckets:?}");
    let buckets: serde_json::Value = serde_json::from_str(&buckets.body).unwrap();
    assert_eq!(
        buckets["buckets"],
        serde_json::json!([{ "name": "results", "ttl_seconds": 3600 }])
    );
    let line = refused(&host, &["bucket", "purge", "ops", "results"]);
    assert!(line.contains("--yes"), "{line}");
    let kept = ok(&host, &["bucket", "keys", "ops", "results"]);
    assert!(!kept.is_empty(), "nothing was purged without --yes");
    let purged = ok(&host, &["bucket", "purge", "ops", "results", "--yes"]);
    assert!(
        purged.starts_with("purged ") && !purged.starts_with("purged 0 "),
        "{purged}"
    );
    assert_eq!(ok(&host, &["bucket", "keys", "ops", "results"]), "");
    let line = refused(&host, &["bucket", "get", "ops", "results", &seen_key]);
    assert!(line.contains("404"), "{line}");

    // The source in force, for an upgrade's form.
    let source = host.api("GET", "/v1/services/ops/source", "").await;
    assert_eq!(source.status, 200, "{source:?}");
    let source: serde_json::Value = serde_json::from_str(&source.body).unwrap();
    assert!(
        source["manifest"]
            .as_str()
            .unwrap()
            .contains("name = \"ops\""),
        "{source}"
    );
    assert!(
        source["components"]["worker"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
}
