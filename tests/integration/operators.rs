//! What an operator sees: `weft queues` shows each granted queue's length
//! and, with `--peek`, its next messages, poison reasons included, without
//! receiving them.

use crate::support::{eventually, http, up, weft_command};
use std::time::Duration;
use weft_test_artifacts::{CHAOS_WORKER, LEDGER_WEB};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weft_queues_shows_lengths_and_peeks_at_messages_and_poison_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("weft.toml");
    // The chaos worker panics on `panic`: that message ends in the poison
    // queue after one delivery; the others wait in `jobs`, which no worker reads.
    std::fs::write(
        &manifest,
        format!(
            r#"
[service]
name = "ops"

[roles.web]
kind = "web"
component = "{LEDGER_WEB}"
listen = "127.0.0.1:0"
queues = ["jobs", "tasks", "tasks-poison"]

[roles.worker]
kind = "worker"
component = "{CHAOS_WORKER}"
queues = ["tasks"]
buckets = ["results"]

[queues]
max-deliveries = 1
"#
        ),
    )
    .unwrap();
    let state = dir.path().join("state").display().to_string();
    let path = manifest.display().to_string();
    let mut weft = up(&manifest);
    let base = weft.url("web");
    let sent = http("POST", &format!("{base}/send/jobs"), "first\nsecond\nthird")
        .await
        .unwrap();
    assert_eq!(sent.status, 200, "{sent:?}");
    http("POST", &format!("{base}/send/tasks"), "panic")
        .await
        .unwrap();
    // Delivered once, trapped, abandoned; the next receive poisons it.
    http("POST", &format!("{base}/send/tasks"), "ok")
        .await
        .unwrap();
    eventually(
        Duration::from_secs(60),
        "the message to be poisoned",
        || {
            let url = format!("{base}/length/tasks-poison");
            async move { (http("GET", &url, "").await.ok()?.body == "1").then_some(()) }
        },
    )
    .await;
    eventually(Duration::from_secs(60), "the other task to be done", || {
        let url = format!("{base}/length/tasks");
        async move { (http("GET", &url, "").await.ok()?.body == "0").then_some(()) }
    })
    .await;
    assert!(weft.terminate().unwrap().success());

    let output = weft_command()
        .args(["queues", "--state-dir", &state, "--peek", "2", &path])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.contains(&"jobs length=3"), "{stdout}");
    assert!(lines.contains(&"jobs-poison length=0"), "{stdout}");
    assert!(lines.contains(&"tasks length=0"), "{stdout}");
    assert!(lines.contains(&"tasks-poison length=1"), "{stdout}");
    let peeked: Vec<&&str> = lines.iter().filter(|l| l.starts_with("  id=")).collect();
    assert_eq!(peeked.len(), 3, "{stdout}");
    assert!(
        peeked[0].ends_with("body=\"first\"") && peeked[1].ends_with("body=\"second\""),
        "{stdout}"
    );
    assert!(peeked[2].contains("reason=\"delivered 1 time "), "{stdout}");
}
