//! Every limit of a web role's sandbox bites, and its neighbours do not notice.

use crate::support::{call, runtime, spec, web_role};
use std::time::Duration;
use weft_sandbox::SandboxLimits;
use weft_test_artifacts::{HELLO_WEB, PROBE};

fn limits() -> SandboxLimits {
    SandboxLimits {
        deadline_ms: 1500,
        ..SandboxLimits::default()
    }
}

/// Asserts that a request started at `started` and cut at its deadline
/// ended no sooner than the deadline and no later than the deadline plus
/// the scheduling slack one epoch tick (10 ms) and a busy test machine
/// need: the larger of 50 ms and a quarter of the deadline. A deadline is a
/// promised time, so it is measured against itself, in the same run.
fn assert_cut_at_deadline(started: std::time::Instant, deadline_ms: u64) {
    let took = started.elapsed();
    let deadline = Duration::from_millis(deadline_ms);
    let slack = Duration::from_millis(50).max(deadline / 4);
    eprintln!("deadline {deadline:?}: cut after {took:?}");
    assert!(
        took >= deadline && took <= deadline + slack,
        "cut after {took:?}; the deadline is {deadline:?} (allowed up to {:?})",
        deadline + slack
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infinite_loop_is_cut_at_its_deadline_while_a_neighbour_keeps_answering() {
    let hog = std::sync::Arc::new(web_role(PROBE, limits()));
    let neighbour = web_role(HELLO_WEB, SandboxLimits::default());
    let spinning = {
        let hog = hog.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let reply = call(&hog, "GET", "/spin", "").await;
            (reply, started)
        })
    };
    // While the hog spins, the neighbour answers every request.
    let mut answered = 0;
    while !spinning.is_finished() {
        let reply = call(&neighbour, "GET", "/", "").await;
        assert_eq!(reply.status, 200, "{reply:?}");
        answered += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (cut, started) = spinning.await.unwrap();
    assert_eq!(cut.status, 504, "{cut:?}");
    assert_eq!(cut.headers["x-weft-failure"], "deadline");
    assert_cut_at_deadline(started, limits().deadline_ms);
    assert!(
        answered >= 5,
        "the neighbour answered only {answered} requests"
    );
    // The hog's own role still serves its next request.
    assert_eq!(call(&hog, "GET", "/ok", "").await.status, 200);
}

#[tokio::test]
async fn an_infinite_loop_runs_out_of_fuel() {
    let limits = SandboxLimits {
        fuel: 200_000_000,
        deadline_ms: 60_000,
        ..SandboxLimits::default()
    };
    let role = web_role(PROBE, limits);
    let ok = call(&role, "GET", "/ok", "").await;
    assert_eq!(ok.status, 200, "a normal request fits the budget: {ok:?}");
    let cut = call(&role, "GET", "/spin", "").await;
    assert_eq!(cut.status, 500, "{cut:?}");
    assert_eq!(cut.headers["x-weft-failure"], "fuel");
    assert!(cut.body.contains("fuel"), "{cut:?}");
}

#[tokio::test]
async fn memory_growth_past_the_cap_is_refused() {
    let role = web_role(
        PROBE,
        SandboxLimits {
            memory_mib: 32,
            ..limits()
        },
    );
    let refused = call(&role, "GET", "/grow/64", "").await;
    assert_eq!(
        (refused.status, refused.body.trim()),
        (200, "refused"),
        "{refused:?}"
    );
    let granted = call(&role, "GET", "/grow/4", "").await;
    assert_eq!(
        (granted.status, granted.body.trim()),
        (200, "granted"),
        "{granted:?}"
    );
    // An allocation the guest cannot survive ends only its own request.
    let aborted = call(&role, "GET", "/alloc/64", "").await;
    assert_eq!(aborted.status, 500, "{aborted:?}");
    assert_eq!(aborted.headers["x-weft-failure"], "memory");
    let small = call(&role, "GET", "/alloc/8", "").await;
    assert_eq!(
        (small.status, small.body.trim()),
        (200, "allocated 8 MiB"),
        "{small:?}"
    );
}

#[tokio::test]
async fn a_guest_cannot_read_host_files_list_folders_or_see_the_environment() {
    let role = web_role(PROBE, limits());
    for path in [
        "/read?path=/etc/hostname",
        "/read?path=/etc/passwd",
        "/read?path=Cargo.toml",
    ] {
        let reply = call(&role, "GET", path, "").await;
        assert!(reply.body.starts_with("error"), "{path}: {reply:?}");
    }
    let listing = call(&role, "GET", "/list-dir?path=/", "").await;
    assert!(listing.body.starts_with("error"), "{listing:?}");
    let env = call(&role, "GET", "/env", "").await;
    assert!(
        env.body.starts_with('0'),
        "the guest sees environment variables: {env:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_cannot_open_sockets_or_send_http() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let role = web_role(PROBE, limits());
    let connect = call(&role, "GET", &format!("/connect?addr={addr}"), "").await;
    assert!(connect.body.starts_with("error"), "{connect:?}");
    let fetch = call(&role, "GET", &format!("/fetch?url=http://{addr}/"), "").await;
    assert!(fetch.body.starts_with("error"), "{fetch:?}");
    // Nothing reached the listener.
    let accepted = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
    assert!(accepted.is_err(), "the guest reached a host socket");
}

#[tokio::test]
async fn the_deadline_covers_time_blocked_in_host_calls() {
    let role = web_role(
        PROBE,
        SandboxLimits {
            deadline_ms: 400,
            ..SandboxLimits::default()
        },
    );
    let started = std::time::Instant::now();
    let reply = call(&role, "GET", "/sleep/30000", "").await;
    assert_eq!(reply.status, 504, "{reply:?}");
    assert_cut_at_deadline(started, 400);
    let quick = call(&role, "GET", "/sleep/10", "").await;
    assert_eq!((quick.status, quick.body.trim()), (200, "slept"));
}

#[tokio::test]
async fn request_bodies_over_the_limit_are_refused() {
    let role = web_role(
        PROBE,
        SandboxLimits {
            max_request_body_kib: 1,
            ..limits()
        },
    );
    let big = "x".repeat(2048);
    let reply = call(&role, "POST", "/queue/tasks", &big).await;
    assert_eq!(reply.status, 413, "{reply:?}");
    let small = call(&role, "POST", "/queue/tasks", "small").await;
    assert_eq!(small.status, 200, "{small:?}");
}

#[tokio::test]
async fn queues_and_buckets_not_granted_are_denied() {
    let (spec, broker) = spec("web", &["tasks"], &["results"], limits());
    let role = runtime()
        .web_role(std::path::Path::new(PROBE), spec)
        .unwrap();
    let denied = call(&role, "POST", "/queue/secrets", "x").await;
    assert_eq!(denied.status, 403, "{denied:?}");
    assert!(denied.body.contains("not granted"), "{denied:?}");
    let kv_denied = call(&role, "GET", "/kv/secrets/key", "").await;
    assert_eq!(kv_denied.status, 403, "{kv_denied:?}");
    use weft_broker::{KvStore, QueueBroker};
    assert_eq!(broker.len("test/secrets").await.unwrap(), 0);
    // The granted ones work, and the guest's names are scoped by service.
    assert_eq!(call(&role, "POST", "/queue/tasks", "x").await.status, 200);
    assert_eq!(broker.len("test/tasks").await.unwrap(), 1);
    assert_eq!(call(&role, "PUT", "/kv/results/k", "v").await.status, 204);
    assert_eq!(
        broker.get("test/results", "k").await.unwrap(),
        Some(b"v".to_vec())
    );
    assert_eq!(call(&role, "GET", "/kv/results/k", "").await.body, "v");
}

#[tokio::test]
async fn a_granted_scratch_folder_is_the_only_folder_a_guest_sees() {
    let scratch = tempfile::tempdir().unwrap();
    std::fs::write(scratch.path().join("note.txt"), b"hello").unwrap();
    let (mut spec, _) = spec("web", &[], &[], limits());
    spec.grants.scratch_dir = Some(scratch.path().to_path_buf());
    let role = runtime()
        .web_role(std::path::Path::new(PROBE), spec)
        .unwrap();
    let read = call(&role, "GET", "/read?path=/scratch/note.txt", "").await;
    assert_eq!(read.body.trim(), "read 5 bytes", "{read:?}");
    let listing = call(&role, "GET", "/list-dir?path=/scratch", "").await;
    assert!(listing.body.contains("note.txt"), "{listing:?}");
    for escape in [
        "/scratch/../etc/hostname",
        "/etc/hostname",
        "/scratch/../../../../etc/passwd",
    ] {
        let reply = call(&role, "GET", &format!("/read?path={escape}"), "").await;
        assert!(reply.body.starts_with("error"), "{escape}: {reply:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_concurrency_a_role_answers_503_with_retry_after_and_recovers() {
    let limits = SandboxLimits {
        max_in_flight: 2,
        max_queued: 1,
        ..limits()
    };
    let role = std::sync::Arc::new(web_role(PROBE, limits));
    // Two run, one waits, the fourth is turned away at once.
    let requests: Vec<_> = (0..4)
        .map(|_| {
            let role = role.clone();
            tokio::spawn(async move { call(&role, "GET", "/sleep/800", "").await })
        })
        .collect();
    let mut replies = Vec::new();
    for request in requests {
        replies.push(request.await.unwrap());
    }
    let turned_away: Vec<_> = replies.iter().filter(|r| r.status == 503).collect();
    assert_eq!(turned_away.len(), 1, "{replies:?}");
    assert_eq!(turned_away[0].headers["retry-after"], "1");
    assert_eq!(turned_away[0].headers["x-weft-failure"], "capacity");
    assert_eq!(
        replies
            .iter()
            .filter(|r| r.status == 200 && r.body == "slept")
            .count(),
        3,
        "{replies:?}"
    );
    // Once the load is gone, the role serves again.
    assert_eq!(call(&role, "GET", "/ok", "").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_memory_cap_spans_its_instances_and_frees_on_exit() {
    let limits = SandboxLimits {
        memory_mib: 16,
        role_memory_mib: Some(20),
        deadline_ms: 10_000,
        ..limits()
    };
    let role = std::sync::Arc::new(web_role(PROBE, limits));
    // One request grows by 10 MiB and holds it.
    let holder = {
        let role = role.clone();
        tokio::spawn(async move { call(&role, "GET", "/hold/10?ms=3000", "").await })
    };
    crate::support::eventually(
        Duration::from_secs(20),
        "the first request to hold 10 MiB",
        || {
            let role = role.clone();
            async move { (role.usage().memory.bytes >= 10 << 20).then_some(()) }
        },
    )
    .await;
    // A second fits its own 16 MiB cap but not the role's 20 MiB.
    let second = call(&role, "GET", "/hold/10?ms=0", "").await;
    assert_eq!(second.body, "refused", "{second:?}");
    assert_eq!(holder.await.unwrap().body, "granted");
    // The first one's memory goes back to the role when its sandbox is
    // dropped, just after its response is out.
    let all_back = || async {
        crate::support::eventually(Duration::from_secs(10), "all memory back", || {
            let memory = role.usage().memory;
            async move { (memory.bytes == 0).then_some(memory) }
        })
        .await
    };
    all_back().await;
    let third = call(&role, "GET", "/hold/10?ms=0", "").await;
    assert_eq!(third.body, "granted", "{third:?}");
    let memory = all_back().await;
    assert!(memory.high_water <= 20 << 20, "{memory:?}");
    assert!(memory.instance_high_water >= 10 << 20, "{memory:?}");
}

#[tokio::test]
async fn a_flood_of_resource_handles_is_stopped_and_the_next_request_served() {
    let role = web_role(PROBE, limits());
    let many = call(&role, "GET", "/handles/100", "").await;
    assert_eq!((many.status, many.body.as_str()), (200, "created 100"));
    let flood = call(&role, "GET", "/handles/100000", "").await;
    assert_eq!(flood.status, 500, "{flood:?}");
    assert_eq!(flood.headers["x-weft-failure"], "trap");
    assert_eq!(call(&role, "GET", "/ok", "").await.status, 200);
}

#[tokio::test]
async fn a_guest_passing_more_than_a_host_call_allows_is_stopped_before_the_host_copies_it() {
    let role = web_role(
        PROBE,
        SandboxLimits {
            max_request_body_kib: 16 * 1024,
            ..limits()
        },
    );
    // A 1 MiB value, the largest the key-value interface takes, passes.
    let value = "v".repeat(1 << 20);
    let stored = call(&role, "PUT", "/kv/results/big", &value).await;
    assert_eq!(stored.status, 204, "{stored:?}");
    // 8 MiB in one call is refused while wasmtime lifts it: the guest traps.
    let flood = call(&role, "PUT", "/kv/results/huge", &"v".repeat(8 << 20)).await;
    assert_eq!(flood.status, 500, "{flood:?}");
    assert_eq!(flood.headers["x-weft-failure"], "trap");
    assert_eq!(call(&role, "GET", "/kv/results/huge", "").await.status, 404);
    assert_eq!(call(&role, "GET", "/ok", "").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_while_queued_gives_its_place_back() {
    let limits = SandboxLimits {
        max_in_flight: 1,
        max_queued: 1,
        ..limits()
    };
    let role = std::sync::Arc::new(web_role(PROBE, limits));
    let busy = {
        let role = role.clone();
        tokio::spawn(async move { call(&role, "GET", "/sleep/1000", "").await })
    };
    crate::support::eventually(Duration::from_secs(20), "the slot to be taken", || {
        let role = role.clone();
        async move { (role.usage().counters.instances_live == 1).then_some(()) }
    })
    .await;
    // Three clients queue behind it in turn and give up before their turn.
    for _ in 0..3 {
        let gave_up =
            tokio::time::timeout(Duration::from_millis(100), call(&role, "GET", "/ok", "")).await;
        assert!(gave_up.is_err(), "it queued: {gave_up:?}");
    }
    // The queue's one place is free again: this one waits and is served.
    let served = call(&role, "GET", "/ok", "").await;
    assert_eq!(served.status, 200, "{served:?}");
    assert_eq!(busy.await.unwrap().status, 200);
}
