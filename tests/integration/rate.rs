//! VMBus rate limits: a role flooding a host call is held to its rate,
//! neighbours are not slowed, and calls past the wait bound get
//! `rate-limited` rather than a trap.

use crate::support::{call, runtime, spec_on};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use weft_broker::MemoryBroker;
use weft_sandbox::rate_limit::{BucketConfig, Interface, InterfaceLimits};
use weft_sandbox::{RateLimits, SandboxLimits, WebRole};
use weft_test_artifacts::PROBE;

fn probe(broker: &Arc<MemoryBroker>, rate_limits: RateLimits) -> WebRole {
    let (mut spec, _) = spec_on(
        broker.clone(),
        "web",
        &["tasks"],
        &[],
        SandboxLimits::default(),
    );
    spec.rate_limits = rate_limits;
    runtime().web_role(Path::new(PROBE), spec).unwrap()
}

fn queue_ops(per_second: u64, size: u64, max_wait_ms: u64) -> RateLimits {
    RateLimits::default()
        .with(
            Interface::Queue,
            InterfaceLimits {
                ops: Some(BucketConfig {
                    size,
                    refill_ms: 1000 * size / per_second,
                    burst: 0,
                }),
                bytes: None,
            },
        )
        .with_max_wait_ms(max_wait_ms)
}

/// Parses `sent=A limited=B other=C`.
fn counts(body: &str) -> (u32, u32, u32) {
    let value = |name: &str| {
        body.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {body:?}"))
    };
    (value("sent"), value("limited"), value("other"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_role_is_held_to_its_rate_while_a_neighbour_is_not_slowed() {
    let broker = Arc::new(MemoryBroker::default());
    // 50 sends a second from a bucket of 10; waiting up to 100 ms for a
    // token (one comes every 20 ms), so every send succeeds, paced.
    let flooder = Arc::new(probe(&broker, queue_ops(50, 10, 100)));
    let neighbour = probe(&broker, RateLimits::default());

    let flooding = {
        let flooder = flooder.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let reply = call(&flooder, "POST", "/flood/tasks?n=110", "x").await;
            (reply, started.elapsed())
        })
    };
    let started = Instant::now();
    let neighbour_reply = call(&neighbour, "POST", "/flood/tasks?n=200", "y").await;
    let neighbour_took = started.elapsed();
    let (flood_reply, flood_took) = flooding.await.unwrap();

    assert_eq!(counts(&flood_reply.body), (110, 0, 0), "{flood_reply:?}");
    assert_eq!(
        counts(&neighbour_reply.body),
        (200, 0, 0),
        "{neighbour_reply:?}"
    );
    // The first 10 come from the full bucket; the other 100 at 50 a second.
    let rate = 100.0 / flood_took.as_secs_f64();
    assert!(
        (45.0..=55.0).contains(&rate),
        "held to {rate:.1}/s, not 50/s ±10%"
    );
    // The neighbour sent almost twice as much in a fraction of the time.
    assert!(
        neighbour_took * 4 < flood_took,
        "neighbour took {neighbour_took:?} while the flooder took {flood_took:?}"
    );
}

#[tokio::test]
async fn calls_past_the_wait_bound_get_rate_limited_not_a_trap() {
    let broker = Arc::new(MemoryBroker::default());
    let role = probe(&broker, queue_ops(10, 5, 0));
    let started = Instant::now();
    let reply = call(&role, "POST", "/flood/tasks?n=50", "x").await;
    let earned = u32::try_from(started.elapsed().as_millis() / 100).unwrap_or(u32::MAX);
    assert_eq!(reply.status, 200, "{reply:?}");
    let (sent, limited, other) = counts(&reply.body);
    assert_eq!(other, 0, "{reply:?}");
    assert_eq!(sent + limited, 50);
    // The bucket's 5, and one more per 100 ms the request took.
    assert!(
        sent >= 5 && sent <= 5 + earned + 1 && limited > 0,
        "{reply:?} after {earned} refills"
    );
    use weft_broker::QueueBroker;
    assert_eq!(
        broker.len("test/tasks").await.unwrap(),
        usize::try_from(sent).unwrap()
    );
}

/// A worker settling a whole batch pays one queue call for it: with three
/// calls a minute, one receive of 32 messages and one complete-batch of
/// them leave exactly one call for the next send, and the one after is
/// refused.
#[tokio::test]
async fn completing_a_batch_of_32_costs_one_queue_call() {
    use weft_broker::{QueueBroker, SendOptions};
    let broker = Arc::new(MemoryBroker::default());
    for i in 0..32 {
        broker
            .send(
                "test/tasks",
                format!("job {i}").into_bytes(),
                SendOptions::now(),
            )
            .await
            .unwrap();
    }
    // Three calls, refilled a minute later: no refill lands mid-test.
    let three_a_minute = RateLimits::default()
        .with(
            Interface::Queue,
            InterfaceLimits {
                ops: Some(BucketConfig {
                    size: 3,
                    refill_ms: 60_000,
                    burst: 0,
                }),
                bytes: None,
            },
        )
        .with_max_wait_ms(0);
    let role = probe(&broker, three_a_minute);

    let drained = call(&role, "POST", "/drain/tasks", "").await;
    assert_eq!(drained.status, 200, "{drained:?}");
    assert_eq!(drained.body, "received=32 completed=32");
    assert_eq!(broker.len("test/tasks").await.unwrap(), 0);

    let third = call(&role, "POST", "/queue/tasks", "x").await;
    assert_eq!(third.status, 200, "{third:?}");
    let fourth = call(&role, "POST", "/queue/tasks", "y").await;
    assert_eq!(fourth.status, 429, "{fourth:?}");
    assert_eq!(broker.len("test/tasks").await.unwrap(), 1);
}

fn http_limits(bytes_per_sec: Option<u64>, requests_per_sec: Option<u64>) -> RateLimits {
    RateLimits::default()
        .with(
            Interface::Http,
            InterfaceLimits {
                ops: requests_per_sec.map(BucketConfig::per_second),
                bytes: bytes_per_sec.map(BucketConfig::per_second),
            },
        )
        .with_max_wait_ms(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_response_is_held_to_its_bytes_rate_while_a_neighbour_streams_freely() {
    const RATE: u64 = 256 * 1024;
    let broker = Arc::new(MemoryBroker::default());
    let slow = probe(&broker, http_limits(Some(RATE), None));
    let free = probe(&broker, RateLimits::default());
    let started = Instant::now();
    let reply = call(&slow, "GET", "/stream/1024", "").await;
    let slow_time = started.elapsed();
    assert_eq!(
        (reply.status, reply.body.len()),
        (200, 1024 * 1024),
        "arrives whole"
    );
    // The first 256 KiB come from the full bucket; the rest at the rate.
    let measured = (1024 * 1024 - RATE) as f64 / slow_time.as_secs_f64();
    let ratio = measured / RATE as f64;
    assert!(
        (0.9..=1.1).contains(&ratio),
        "streamed at {measured:.0} B/s, {ratio:.3} of its {RATE} B/s"
    );
    let started = Instant::now();
    let reply = call(&free, "GET", "/stream/1024", "").await;
    let free_time = started.elapsed();
    assert_eq!(reply.body.len(), 1024 * 1024);
    assert!(
        free_time * 4 < slow_time,
        "the neighbour took {free_time:?}, the limited role {slow_time:?}"
    );
    let bytes = slow.usage().counters.bytes;
    assert_eq!(bytes.http_out, 1024 * 1024);
}

#[tokio::test]
async fn requests_over_the_roles_request_rate_get_429_with_retry_after() {
    let broker = Arc::new(MemoryBroker::default());
    let role = probe(&broker, http_limits(None, Some(5)));
    let mut statuses = Vec::new();
    let started = Instant::now();
    for _ in 0..10 {
        let reply = call(&role, "GET", "/ok", "").await;
        if reply.status == 429 {
            assert_eq!(reply.headers["retry-after"], "1");
            assert_eq!(reply.headers["x-weft-failure"], "rate");
        }
        statuses.push(reply.status);
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(ok + refused, 10, "{statuses:?}");
    // 5 tokens to start with, and one more per 200 ms the loop took.
    let refilled = usize::try_from(started.elapsed().as_millis() / 200).unwrap_or(usize::MAX);
    assert!(
        ok >= 5 && ok <= 5 + refilled + 1 && refused > 0,
        "{statuses:?} after {refilled} refills"
    );
}
