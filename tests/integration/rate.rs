//! VMBus rate limits: a role flooding a host call is held to its rate,
//! neighbours are not slowed, and calls past the wait bound get
//! `rate-limited` rather than a trap.

use crate::support::{call, runtime, spec_on};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use weft_runtime::rate_limit::{BucketConfig, InterfaceLimits};
use weft_runtime::{MemoryBroker, RateLimits, SandboxLimits, WebRole};
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
    RateLimits {
        queue: InterfaceLimits {
            ops: Some(BucketConfig {
                size,
                refill_ms: 1000 * size / per_second,
                burst: 0,
            }),
            bytes: None,
        },
        max_wait_ms,
        ..RateLimits::default()
    }
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
    let reply = call(&role, "POST", "/flood/tasks?n=50", "x").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let (sent, limited, other) = counts(&reply.body);
    assert_eq!(other, 0, "{reply:?}");
    assert_eq!(sent + limited, 50);
    // The bucket's 5, and at most a few earned while the guest looped.
    assert!((5..=8).contains(&sent), "{reply:?}");
    use weft_runtime::QueueBroker;
    assert_eq!(
        broker.len("test/tasks").await.unwrap(),
        usize::try_from(sent).unwrap()
    );
}
