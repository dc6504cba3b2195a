//! Roles in Python and JavaScript beside Rust ones, through the real `weft`
//! binary and components built by the real tool chains
//! ([`crate::guest_builds`]):
//!
//! - the pipeline's three languages interoperate: the JS web role feeding
//!   the Rust worker, the Rust web role feeding the Python worker, and the
//!   JS web role feeding the Python worker store byte-identical records for
//!   the same texts, and the JS web role answers every request as the Rust
//!   one does;
//! - a Python worker that raises gets its message back, delivery after
//!   delivery, until the host moves it to the poison queue, and keeps
//!   running;
//! - a Python worker cannot open a queue its manifest does not grant: it is
//!   told `denied`, fails, is restarted, and the queue is never touched.

use crate::guest_builds::{pipeline_web_js, pipeline_worker_py, py_worker};
use crate::hosting::{Host, token_file};
use crate::support::{Reply, eventually, http, http_bytes, up_with, write_manifest};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::Duration;
use weft_test_artifacts::{PIPELINE_WEB, PIPELINE_WORKER};

/// Runs `weft up` on `manifest`, written into `dir`, serving the test token,
/// so the `weft` CLI and the admin API can be used against it.
fn up_service(dir: &Path, manifest: &str) -> Host {
    write_manifest(dir, manifest);
    let token = token_file(dir);
    let weft = up_with(
        &dir.join("weft.toml"),
        &["--token-file", token.to_str().unwrap()],
    );
    let admin = weft
        .admin
        .clone()
        .expect("weft up announces its admin address");
    Host {
        weft,
        token_file: token,
        admin,
    }
}

/// The pipeline's JS web role and Python worker, built at once.
fn polyglot_components() -> (&'static str, &'static str) {
    std::thread::scope(|scope| {
        let web = scope.spawn(pipeline_web_js);
        let worker = pipeline_worker_py();
        let web = web
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (web, worker)
    })
}

/// `weft ARGS` against `host`, which must succeed; its stdout.
fn ok(host: &Host, args: &[&str]) -> String {
    let (ok, stdout, stderr) = host.cli(args);
    assert!(ok, "weft {args:?}: {stdout}{stderr}");
    stdout
}

/// The texts every pipeline analyses, each with what it exercises: word
/// splitting, case folding, line counting and JSON escaping, where
/// languages' standard libraries differ.
fn texts() -> Vec<(&'static str, String)> {
    let mut long = String::new();
    let mut line = 0;
    while long.len() < 60 * 1024 {
        line += 1;
        long.push_str(&format!(
            "Line {line}: the quick brown fox number {} jumps over the lazy dog's {} bones.\n",
            line % 17,
            line % 5
        ));
    }
    long.truncate(60 * 1024);
    vec![
        (
            "plain ASCII",
            "the quick brown fox jumps over the lazy dog\nthe end".to_owned(),
        ),
        (
            "empty lines",
            "\n\nfirst line\n\n\nsecond line\n\n".to_owned(),
        ),
        ("CRLF", "one two\r\nthree\r\n\r\nfour two\r\n".to_owned()),
        (
            "punctuation only",
            "-- ... !? ;: '' \"\" () [] {} / \\ ''' -".to_owned(),
        ),
        (
            "accented Latin",
            "Crème brûlée à la française: déjà vu, naïve café. Ça va? Élan ÉLAN élan Œuvre œuvre"
                .to_owned(),
        ),
        (
            "Greek with a final sigma",
            "ΟΔΥΣΣΕΥΣ Οδυσσεύς σοφός ΣΟΦΟΣ σοφος ΣΟΦΟΣ. Σ ς σ".to_owned(),
        ),
        (
            "CJK",
            "日本語のテキスト、中文文本。한국어 텍스트 日本語 中文文本".to_owned(),
        ),
        (
            "digits",
            "1 22 333 4,444 5.55 1 22 0x1F ٣٤ ½ ² 22".to_owned(),
        ),
        (
            "apostrophes",
            "don't 'quoted' rock'n'roll ''' it's O'Brien's 'twas DON'T don't'".to_owned(),
        ),
        // Only `\n` ends a line for the Rust worker; Python's splitlines()
        // and JS's line terminators count these too.
        (
            "other line separators",
            "a\u{b}b\u{c}c\u{1c}d\u{85}e\u{2028}f\u{2029}g\rh\r\n".to_owned(),
        ),
        ("60 KiB", long),
    ]
}

/// Posts `text` to `web`'s `/jobs`; the new job's id.
async fn post_job(web: &str, text: &str) -> String {
    let accepted = http("POST", &format!("{web}/jobs"), text).await.unwrap();
    assert_eq!(accepted.status, 202, "{web}: {accepted:?}");
    let job: serde_json::Value = serde_json::from_str(&accepted.body).unwrap();
    job["id"].as_str().unwrap().to_owned()
}

/// Waits until job `id` is no longer pending, as `web` reports it; its
/// record as answered.
async fn finished(web: &str, id: &str) -> String {
    let url = format!("{web}/jobs/{id}");
    eventually(Duration::from_secs(120), "the job to finish", || {
        let url = url.clone();
        async move {
            let reply = http("GET", &url, "").await.ok()?;
            let value: serde_json::Value = serde_json::from_str(&reply.body).ok()?;
            (reply.status == 200 && value["status"] != "pending").then_some(reply.body)
        }
    })
    .await
}

/// The record `service` stored for job `id`, as the bucket holds it.
fn stored(host: &Host, service: &str, id: &str) -> String {
    ok(host, &["bucket", "get", service, "jobs", id])
}

/// What a client sees of an answer: status, the headers the pipeline sets,
/// and the body, with `id` (a job's random id) replaced by `ID`.
fn seen(reply: &Reply, id: Option<&str>) -> (u16, Vec<(String, String)>, String) {
    let hide = |text: &str| match id {
        Some(id) => text.replace(id, "ID"),
        None => text.to_owned(),
    };
    let headers = ["content-type", "location", "allow", "retry-after"]
        .iter()
        .filter_map(|name| {
            let value = reply.headers.get(*name)?.to_str().ok()?;
            Some(((*name).to_owned(), hide(value)))
        })
        .collect();
    (reply.status, headers, hide(&reply.body))
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_three_languages_interoperate_and_store_the_same_records() {
    let (web_js, worker_py) = polyglot_components();
    let dir = tempfile::tempdir().unwrap();
    // Service A: the JS web role feeds the Rust worker, its only worker.
    let a = up_service(
        &dir.path().join("a"),
        &format!(
            r#"
[service]
name = "poly-a"

[roles.web-js]
kind = "web"
component = {web_js:?}
listen = "127.0.0.1:0"
queues = ["jobs"]
buckets = ["jobs"]

[roles.worker]
kind = "worker"
component = {PIPELINE_WORKER:?}
queues = ["jobs"]
buckets = ["jobs"]
"#
        ),
    );
    // Service B: the Rust and the JS web roles feed the Python worker, its
    // only worker.
    let b = up_service(
        &dir.path().join("b"),
        &format!(
            r#"
[service]
name = "poly-b"

[roles.web]
kind = "web"
component = {PIPELINE_WEB:?}
listen = "127.0.0.1:0"
queues = ["jobs"]
buckets = ["jobs"]

[roles.web-js]
kind = "web"
component = {web_js:?}
listen = "127.0.0.1:0"
queues = ["jobs"]
buckets = ["jobs"]

[roles.worker-py]
kind = "worker"
component = {worker_py:?}
queues = ["jobs"]
buckets = ["jobs"]
"#
        ),
    );
    let js_to_rust = a.weft.url("web-js");
    let rust_to_py = b.weft.url("web");
    let js_to_py = b.weft.url("web-js");

    let texts = texts();
    let mut jobs = Vec::new();
    for (what, text) in &texts {
        let id_a = post_job(&js_to_rust, text).await;
        let id_b = post_job(&rust_to_py, text).await;
        jobs.push((*what, text, id_a, id_b));
    }
    // JS to Python: the first text through B's JS web role.
    let (_, first, first_a, _) = &jobs[0];
    let id_c = post_job(&js_to_py, first).await;
    let answered_c = finished(&js_to_py, &id_c).await;

    for (what, text, id_a, id_b) in &jobs {
        let answered_a = finished(&js_to_rust, id_a).await;
        let answered_b = finished(&rust_to_py, id_b).await;
        let record_a = stored(&a, "poly-a", id_a);
        let record_b = stored(&b, "poly-b", id_b);
        // Each web role answers the record as stored, byte for byte.
        assert_eq!(answered_a, record_a, "{what}: JS web role's answer");
        assert_eq!(answered_b, record_b, "{what}: Rust web role's answer");
        let from_js = http("GET", &format!("{js_to_py}/jobs/{id_b}"), "")
            .await
            .unwrap();
        assert_eq!(from_js.body, record_b, "{what}: JS web role's answer in B");
        // The Rust worker's record checks out...
        let value: serde_json::Value = serde_json::from_str(&record_a).unwrap();
        assert_eq!(value["status"], "done", "{what}: {record_a}");
        assert_eq!(value["id"], id_a.as_str(), "{what}: {record_a}");
        assert_eq!(value["result"]["bytes"], text.len(), "{what}: {record_a}");
        assert_eq!(
            value["result"]["sha256"],
            sha256_hex(text),
            "{what}: {record_a}"
        );
        // ...and the Python worker's is the same bytes, but for the id.
        assert_eq!(
            record_b.replace(id_b.as_str(), "ID"),
            record_a.replace(id_a.as_str(), "ID"),
            "{what}: the Python worker's record (left) differs from the Rust worker's (right)"
        );
    }
    assert_eq!(
        answered_c.replace(&id_c, "ID"),
        stored(&a, "poly-a", first_a).replace(first_a.as_str(), "ID"),
        "JS to Python: the record differs from the Rust worker's"
    );

    // The JS web role answers every request as the Rust one does.
    let known = &jobs[0].3;
    let over = vec![b'a'; 64 * 1024 + 1];
    let cases: Vec<(&str, String, Vec<u8>)> = vec![
        ("POST", "/jobs".into(), b"hello world".to_vec()),
        ("POST", "/jobs".into(), Vec::new()),
        ("POST", "/jobs".into(), vec![0x66, 0xff, 0xfe, 0x6f]),
        ("POST", "/jobs".into(), over),
        // At the limit: accepted by the web role, too large for the queue
        // once wrapped in the job's JSON.
        ("POST", "/jobs".into(), vec![b'a'; 64 * 1024]),
        ("GET", format!("/jobs/{known}"), Vec::new()),
        ("GET", "/jobs/no-such-job".into(), Vec::new()),
        ("PUT", "/jobs".into(), b"x".to_vec()),
        ("GET", "/jobs".into(), Vec::new()),
        ("DELETE", format!("/jobs/{known}"), Vec::new()),
        ("GET", "/elsewhere".into(), Vec::new()),
    ];
    for (method, path, body) in cases {
        let rust = http_bytes(None, method, &format!("{rust_to_py}{path}"), body.clone())
            .await
            .unwrap();
        let js = http_bytes(None, method, &format!("{js_to_py}{path}"), body)
            .await
            .unwrap();
        // A new job's id is random: compare the answers with it hidden, and
        // check both are ids of the same shape.
        let new_id = |reply: &Reply| {
            let value: serde_json::Value = serde_json::from_str(&reply.body).ok()?;
            let id = value["id"].as_str()?.to_owned();
            (reply.status == 202).then_some(id)
        };
        let (rust_id, js_id) = (new_id(&rust), new_id(&js));
        for id in rust_id.iter().chain(&js_id) {
            assert!(
                id.len() == 32
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
                "{method} {path}: id {id:?}"
            );
        }
        assert_eq!(
            seen(&js, js_id.as_deref()),
            seen(&rust, rust_id.as_deref()),
            "{method} {path}: the JS web role's answer (left) differs from the Rust one's (right)"
        );
    }
    // What the comparison rests on: the Rust role's answers are the
    // documented ones.
    let mut statuses = Vec::new();
    for (method, path, body) in [
        ("POST", "/jobs", Vec::new()),
        ("POST", "/jobs", vec![0xff]),
        ("POST", "/jobs", vec![b'a'; 64 * 1024 + 1]),
        ("GET", "/jobs/no-such-job", Vec::new()),
        ("PUT", "/jobs", Vec::new()),
    ] {
        let url = format!("{rust_to_py}{path}");
        statuses.push(http_bytes(None, method, &url, body).await.unwrap().status);
    }
    assert_eq!(statuses, [400, 400, 413, 404, 405]);
}

/// A service of one Python test worker in `mode`, pulling from `tasks`,
/// with what else the test needs.
fn py_service(name: &str, mode: &str, extra: &str) -> String {
    let component = py_worker();
    format!(
        r#"
[service]
name = "{name}"

[roles.worker]
kind = "worker"
component = {component:?}
queues = ["tasks"]
buckets = ["results"]

[roles.worker.settings]
mode = "{mode}"
{extra}"#
    )
}

/// The deliveries of message `id` the Python test worker reported raising on.
fn raised_deliveries(log: &str, id: &str) -> Vec<u32> {
    let marker = format!("py-worker: raising on {id} (delivery ");
    log.lines()
        .filter_map(|line| {
            let rest = &line[line.find(&marker)? + marker.len()..];
            rest[..rest.find(')')?].parse().ok()
        })
        .collect()
}

/// Worker `role`'s first instance in `service`'s status.
async fn instance(host: &Host, service: &str, role: &str) -> serde_json::Value {
    let status = host.service(service).await;
    status["roles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == role)
        .unwrap_or_else(|| panic!("no role {role}: {status}"))["instances"][0]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_worker_that_raises_gets_its_message_back_until_it_is_poisoned() {
    // The manifest sets no `[queues] max-deliveries`: the host's default.
    let max = weft_broker::QueueSettings::default().max_deliveries;
    let dir = tempfile::tempdir().unwrap();
    let host = up_service(dir.path(), &py_service("py-raise", "raise", ""));
    let first = ok(&host, &["queue", "send", "py-raise", "tasks", "first"])
        .trim()
        .to_owned();
    let poisoned = eventually(
        Duration::from_secs(120),
        "the message to be poisoned",
        || async {
            let peeked = ok(&host, &["queue", "peek", "py-raise", "tasks-poison"]);
            let lines: Vec<&str> = peeked.lines().collect();
            (lines.len() == 1).then(|| lines[0].to_owned())
        },
    )
    .await;
    assert!(
        poisoned.starts_with(&format!("id={first} "))
            && poisoned.contains(&format!(" reason=\"delivered {max} time"))
            && poisoned.ends_with("body=\"first\""),
        "{poisoned}"
    );
    assert_eq!(
        ok(&host, &["queue", "peek", "py-raise", "tasks"]),
        "",
        "the message is still in its queue"
    );
    // The guest's lines may reach the log a moment after the queue moved.
    let raised = eventually(
        Duration::from_secs(10),
        "the guest's report of each delivery",
        || async {
            let raised = raised_deliveries(&host.weft.log(), &first);
            (raised.len() >= usize::try_from(max).unwrap()).then_some(raised)
        },
    )
    .await;
    let expected: Vec<u32> = (1..=max).collect();
    assert_eq!(raised, expected, "{}", host.weft.log());

    // The same instance takes the next message: raising failed a message,
    // not the worker.
    let second = ok(&host, &["queue", "send", "py-raise", "tasks", "second"])
        .trim()
        .to_owned();
    eventually(
        Duration::from_secs(60),
        "the second message to be delivered",
        || async { (!raised_deliveries(&host.weft.log(), &second).is_empty()).then_some(()) },
    )
    .await;
    assert_eq!(raised_deliveries(&host.weft.log(), &first), expected);
    let worker = instance(&host, "py-raise", "worker").await;
    assert_eq!(
        (worker["state"].as_str(), worker["restarts"].as_u64()),
        (Some("ready"), Some(0)),
        "{worker}"
    );
    assert!(
        !host.weft.log().contains("restarting it"),
        "{}",
        host.weft.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_worker_cannot_open_a_queue_it_was_not_granted() {
    // `secret` exists, granted to another role, which never uses it: the
    // queue the Python worker reaches for is real, and watched.
    let keeper = format!(
        r#"
[roles.keeper]
kind = "web"
component = {PIPELINE_WEB:?}
listen = "127.0.0.1:0"
queues = ["secret"]
"#
    );
    let dir = tempfile::tempdir().unwrap();
    let host = up_service(dir.path(), &py_service("py-deny", "ungranted", &keeper));
    let bait = ok(&host, &["queue", "send", "py-deny", "secret", "bait"])
        .trim()
        .to_owned();
    let denial = "py-worker: denied: ";
    // Denied, failed, restarted and denied again.
    let log = eventually(
        Duration::from_secs(120),
        "the worker to be denied twice",
        || async {
            let log = host.weft.log();
            (log.matches(denial).count() >= 2).then_some(log)
        },
    )
    .await;
    for line in log.lines().filter(|l| l.contains(denial)) {
        assert!(
            line.contains("queue 'secret' is not granted to role 'worker'")
                && line.contains("role=worker"),
            "{line}"
        );
    }
    assert!(
        log.lines()
            .any(|l| l.contains("worker failed; restarting it") && l.contains("role=worker")),
        "{log}"
    );
    let worker = eventually(
        Duration::from_secs(30),
        "the status to count the restarts",
        || async {
            let worker = instance(&host, "py-deny", "worker").await;
            (worker["restarts"].as_u64() >= Some(1)).then_some(worker)
        },
    )
    .await;
    assert!(worker["last_failure"].is_string(), "{worker}");
    // Nothing was received from `secret` (the bait was never delivered) and
    // nothing was sent to it.
    let peeked = ok(&host, &["queue", "peek", "py-deny", "secret"]);
    let lines: Vec<&str> = peeked.lines().collect();
    assert_eq!(lines.len(), 1, "{peeked}");
    assert!(
        lines[0].starts_with(&format!("id={bait} dequeue-count=0 ")),
        "{peeked}"
    );
}
