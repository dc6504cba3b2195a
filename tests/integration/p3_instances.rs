//! WASIp3 instances serving more than one request: with
//! `concurrent-requests-per-instance` one instance serves several requests
//! at once, without it never; a kept instance serves up to
//! `requests-per-instance` and ends when idle past
//! `instance-idle-timeout-ms`; a request past its deadline, or a trap, in a
//! shared instance; and what a p3 request costs beside a p2 one.

use crate::p3_web::{counters, limits};
use crate::support::{call, eventually, http, runtime, serve, spec, web_role};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weft_sandbox::{SandboxLimits, WebRole};
use weft_test_artifacts::{HELLO_WEB, P3_HELLO};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weft_serve_lets_a_p3_instance_take_two_requests_at_once() {
    let weft = serve(
        P3_HELLO,
        &[
            "--requests-per-instance",
            "2",
            "--concurrent-requests-per-instance",
            "2",
        ],
    );
    let url = format!("{}/sleep?ms=400", weft.url("web"));
    let first = {
        let url = url.clone();
        tokio::spawn(async move { http("GET", &url, "").await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = http("GET", &url, "").await.unwrap();
    let first = first.await.unwrap();
    assert_eq!(
        (first.status, second.status),
        (200, 200),
        "{first:?} {second:?}"
    );
    assert_eq!(counters(&first), (2, 2), "{first:?}");
    assert_eq!(counters(&second), (2, 2), "{second:?}");
}

/// Two `/sleep` requests at once; their replies.
async fn two_slow_requests(role: &Arc<WebRole>) -> [crate::support::Reply; 2] {
    let first = {
        let role = role.clone();
        tokio::spawn(async move { call(&role, "GET", "/sleep?ms=400", "").await })
    };
    // The second arrives while the first waits on its timer.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = call(role, "GET", "/sleep?ms=400", "").await;
    [first.await.unwrap(), second]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_slow_p3_requests_share_one_instance_only_when_the_role_allows_it() {
    let shared = Arc::new(web_role(
        P3_HELLO,
        SandboxLimits {
            concurrent_requests_per_instance: 2,
            requests_per_instance: 2,
            ..limits()
        },
    ));
    let [first, second] = two_slow_requests(&shared).await;
    assert_eq!(
        (first.status, second.status),
        (200, 200),
        "{first:?} {second:?}"
    );
    assert_eq!(counters(&first), (2, 2), "{first:?}");
    assert_eq!(counters(&second), (2, 2), "{second:?}");

    // By default, each has an instance of its own.
    let alone = Arc::new(web_role(P3_HELLO, limits()));
    let [first, second] = two_slow_requests(&alone).await;
    assert_eq!(
        (first.status, second.status),
        (200, 200),
        "{first:?} {second:?}"
    );
    assert_eq!(counters(&first), (1, 1), "{first:?}");
    assert_eq!(counters(&second), (1, 1), "{second:?}");

    // Reused in sequence but not at once: one instance, one at a time.
    let sequential = Arc::new(web_role(
        P3_HELLO,
        SandboxLimits {
            requests_per_instance: 2,
            ..limits()
        },
    ));
    let [first, second] = two_slow_requests(&sequential).await;
    assert_eq!(
        (first.status, second.status),
        (200, 200),
        "{first:?} {second:?}"
    );
    assert_eq!(counters(&first).1, 1, "{first:?}");
    assert_eq!(counters(&second).1, 1, "{second:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_deadline_in_a_shared_instance_ends_alone_and_retires_it() {
    let role = Arc::new(web_role(
        P3_HELLO,
        SandboxLimits {
            concurrent_requests_per_instance: 2,
            requests_per_instance: 10,
            deadline_ms: 1000,
            ..SandboxLimits::default()
        },
    ));
    let late = {
        let role = role.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let reply = call(&role, "GET", "/sleep?ms=5000", "").await;
            (reply, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Its neighbour in the same instance answers, unharmed.
    let quick = call(&role, "GET", "/", "").await;
    assert_eq!((quick.status, counters(&quick)), (200, (2, 2)), "{quick:?}");
    let (late, took) = late.await.unwrap();
    assert_eq!(late.status, 504, "{late:?}");
    assert_eq!(late.headers["x-weft-failure"], "deadline");
    assert!(took < Duration::from_millis(1250), "cut after {took:?}");
    // wasmtime cannot cancel the late task alone: the instance takes no
    // more requests and ends, its sleeping task with it.
    eventually(Duration::from_secs(2), "the instance retired", || {
        let gone = role.usage().counters.instances_live == 0;
        async move { gone.then_some(()) }
    })
    .await;
    let next = call(&role, "GET", "/", "").await;
    assert_eq!((next.status, counters(&next).0), (200, 1), "{next:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_in_a_shared_instance_ends_the_requests_it_carries() {
    let role = Arc::new(web_role(
        P3_HELLO,
        SandboxLimits {
            concurrent_requests_per_instance: 2,
            requests_per_instance: 10,
            memory_mib: 32,
            ..limits()
        },
    ));
    let waiting = {
        let role = role.clone();
        tokio::spawn(async move { call(&role, "GET", "/sleep?ms=600", "").await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let trapped = call(&role, "GET", "/grow?mib=64", "").await;
    assert_eq!(trapped.status, 500, "{trapped:?}");
    assert_eq!(trapped.headers["x-weft-failure"], "memory");
    // The store is wasmtime's unit of failure: the request waiting in the
    // same instance ends with it.
    let waiting = waiting.await.unwrap();
    assert_eq!(waiting.status, 500, "{waiting:?}");
    assert_eq!(waiting.headers["x-weft-failure"], "memory");
    // The role goes on, in a fresh instance.
    let next = call(&role, "GET", "/", "").await;
    assert_eq!((next.status, counters(&next).0), (200, 1), "{next:?}");
}

#[tokio::test]
async fn a_kept_p3_instance_serves_up_to_its_count_and_ends_when_idle() {
    let role = web_role(
        P3_HELLO,
        SandboxLimits {
            requests_per_instance: 3,
            instance_idle_timeout_ms: 300,
            ..limits()
        },
    );
    for served in 1..=3 {
        let reply = call(&role, "GET", "/", "").await;
        assert_eq!(
            (reply.status, counters(&reply).0),
            (200, served),
            "{reply:?}"
        );
    }
    // Its count served, the next request gets a fresh instance...
    let fresh = call(&role, "GET", "/", "").await;
    assert_eq!(counters(&fresh).0, 1, "{fresh:?}");
    // ...which waits, idle, for the idle timeout, then ends.
    eventually(Duration::from_secs(2), "an idle instance", || {
        let idle = role.idle_instances() == 1;
        async move { idle.then_some(()) }
    })
    .await;
    eventually(Duration::from_secs(5), "the idle instance ended", || {
        let gone = role.usage().counters.instances_live == 0 && role.idle_instances() == 0;
        async move { gone.then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn a_released_p3_role_frees_its_idle_instances() {
    let role = web_role(
        P3_HELLO,
        SandboxLimits {
            requests_per_instance: 10,
            ..limits()
        },
    );
    let reply = call(&role, "GET", "/", "").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    eventually(Duration::from_secs(2), "an idle instance", || {
        let idle = role.idle_instances() == 1;
        async move { idle.then_some(()) }
    })
    .await;
    assert_eq!(role.release_idle(), 1);
    eventually(Duration::from_secs(2), "the instance freed", || {
        let gone = role.usage().counters.instances_live == 0;
        async move { gone.then_some(()) }
    })
    .await;
    // A request after the release still runs, in an instance not kept.
    let after = call(&role, "GET", "/", "").await;
    assert_eq!((after.status, counters(&after).0), (200, 1), "{after:?}");
}

#[test]
fn the_p3_instance_limits_need_a_p3_component_and_room_in_requests_per_instance() {
    let (spec_p2, _) = spec(
        "web",
        &[],
        &[],
        SandboxLimits {
            concurrent_requests_per_instance: 2,
            requests_per_instance: 2,
            ..limits()
        },
    );
    let error = runtime()
        .web_role(Path::new(HELLO_WEB), spec_p2)
        .err()
        .expect("a p2 role refuses concurrency")
        .to_string();
    assert!(
        error.contains("concurrent-requests-per-instance"),
        "{error}"
    );
    let (spec_idle, _) = spec(
        "web",
        &[],
        &[],
        SandboxLimits {
            instance_idle_timeout_ms: 1000,
            ..limits()
        },
    );
    let error = runtime()
        .web_role(Path::new(HELLO_WEB), spec_idle)
        .err()
        .expect("a p2 role refuses an idle timeout it would not keep")
        .to_string();
    assert!(error.contains("instance-idle-timeout-ms"), "{error}");
    let (spec_over, _) = spec(
        "web",
        &[],
        &[],
        SandboxLimits {
            concurrent_requests_per_instance: 4,
            requests_per_instance: 2,
            ..limits()
        },
    );
    let error = runtime()
        .web_role(Path::new(P3_HELLO), spec_over)
        .err()
        .expect("more at once than in all is refused")
        .to_string();
    assert!(
        error.contains("concurrent-requests-per-instance"),
        "{error}"
    );
}

/// Not a test of a promise: the cost of a request to a p3 guest beside a
/// p2 one (both plain wasi:http components, neither with Weft's SDK), in
/// this build, in the same run. Run it alone:
/// `cargo test -p weft-cli --test integration p3_instances::side_by_side -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn side_by_side_cost_of_p3_and_p2_requests() {
    use weft_test_artifacts::WSTD_HELLO;
    for (label, reuse) in [("fresh instance", 1), ("reused instance", 1000)] {
        let limits = SandboxLimits {
            requests_per_instance: reuse,
            ..SandboxLimits::default()
        };
        let p2 = web_role(WSTD_HELLO, limits);
        let p3 = web_role(P3_HELLO, limits);
        let mut medians = Vec::new();
        for role in [&p2, &p3] {
            for _ in 0..50 {
                assert_eq!(call(role, "GET", "/", "").await.status, 200);
            }
            let mut times = Vec::new();
            for _ in 0..500 {
                let started = Instant::now();
                assert_eq!(call(role, "GET", "/", "").await.status, 200);
                times.push(started.elapsed());
            }
            times.sort();
            medians.push(times[times.len() / 2]);
        }
        eprintln!(
            "{label}: median p2 {:?}, p3 {:?}, p3/p2 {:.2}",
            medians[0],
            medians[1],
            medians[1].as_secs_f64() / medians[0].as_secs_f64()
        );
    }
}
