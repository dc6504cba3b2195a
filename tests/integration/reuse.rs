//! Instance reuse: off by default (no request sees what another left in
//! the guest's memory); when a role turns it on, an instance serves up to
//! `requests-per-instance` requests of that role and no other, and every
//! limit still holds per request.
//!
//! The probe's `GET /visit/{token}` keeps a count and the last token in
//! the instance's memory: `visits=1 last=-` means a fresh instance.

use crate::support::{cache_dir, call, http, runtime, spec, up, web_role};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use weft_runtime::{CpuShare, EngineConfig, Runtime, SandboxLimits, WebRole};
use weft_test_artifacts::PROBE;

fn reusing(requests_per_instance: u32) -> SandboxLimits {
    SandboxLimits {
        requests_per_instance,
        deadline_ms: 10_000,
        ..SandboxLimits::default()
    }
}

async fn visit(role: &WebRole, token: &str) -> String {
    let reply = call(role, "GET", &format!("/visit/{token}"), "").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body.trim().to_owned()
}

#[tokio::test]
async fn reuse_is_off_by_default_and_no_request_sees_another() {
    assert_eq!(SandboxLimits::default().requests_per_instance, 1);
    let role = web_role(PROBE, SandboxLimits::default());
    for token in ["a", "b", "c", "d"] {
        assert_eq!(visit(&role, token).await, "visits=1 last=-");
    }
    assert_eq!(role.usage().counters.instances_live, 0, "nothing is kept");
}

#[tokio::test]
async fn a_reused_instance_serves_its_role_in_sequence_up_to_its_count() {
    let role = web_role(PROBE, reusing(3));
    assert_eq!(visit(&role, "t1").await, "visits=1 last=-");
    assert_eq!(visit(&role, "t2").await, "visits=2 last=t1");
    assert_eq!(visit(&role, "t3").await, "visits=3 last=t2");
    // Its three requests served, the instance is dropped: a fresh one follows.
    assert_eq!(visit(&role, "t4").await, "visits=1 last=-");
    assert_eq!(role.usage().counters.invocations, 4);
    // The idle instance is alive (and its memory counted) between requests.
    let usage = role.usage();
    assert_eq!(usage.counters.instances_live, 1);
    assert!(usage.memory.bytes > 0, "{:?}", usage.memory);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_instance_never_serves_two_tenants() {
    // The same component as two tenants (two services' roles) on one
    // runtime, both reusing, requests interleaved and concurrent.
    let role_of = |service: &str| {
        let (mut spec, _) = spec("web", &[], &[], reusing(1000));
        spec.grants.service = service.into();
        Arc::new(runtime().web_role(Path::new(PROBE), spec).unwrap())
    };
    let tenants = [("alpha", role_of("alpha")), ("beta", role_of("beta"))];
    let mut tasks = Vec::new();
    for worker in 0..4 {
        for (name, role) in &tenants {
            let (name, role) = (*name, role.clone());
            tasks.push(tokio::spawn(async move {
                let mut seen = Vec::new();
                for i in 0..25 {
                    seen.push(visit(&role, &format!("{name}-{worker}-{i}")).await);
                }
                (name, seen)
            }));
        }
    }
    let mut most_visits = 0;
    for task in tasks {
        let (name, seen) = task.await.unwrap();
        for answer in seen {
            let (visits, last) = answer
                .strip_prefix("visits=")
                .and_then(|rest| rest.split_once(" last="))
                .unwrap_or_else(|| panic!("unexpected answer {answer:?}"));
            most_visits = most_visits.max(visits.parse::<u32>().unwrap());
            assert!(
                last == "-" || last.starts_with(&format!("{name}-")),
                "{name} was served by an instance that served {last}"
            );
        }
    }
    assert!(most_visits > 1, "instances were reused ({most_visits})");
    for (_, role) in &tenants {
        assert_eq!(role.usage().counters.invocations, 100);
    }
}

#[tokio::test]
async fn a_reused_instance_that_fails_is_dropped_and_the_deadline_still_bites() {
    let role = web_role(
        PROBE,
        SandboxLimits {
            deadline_ms: 1000,
            ..reusing(1000)
        },
    );
    assert_eq!(visit(&role, "before").await, "visits=1 last=-");
    // The spin runs in the idle instance and is cut at its deadline.
    let cut = call(&role, "GET", "/spin", "").await;
    assert_eq!(cut.status, 504, "{cut:?}");
    assert_eq!(cut.headers["x-weft-failure"], "deadline");
    // That instance is gone; the next request gets a fresh one.
    assert_eq!(visit(&role, "after").await, "visits=1 last=-");
    let failures = role.usage().counters.failures;
    assert!(failures.contains(&("deadline", 1)), "{failures:?}");
}

#[tokio::test]
async fn a_reused_instance_gets_its_fuel_budget_afresh_per_request() {
    // What one /burn/10 costs, measured first on a role with fuel to spare.
    let calibration = web_role(PROBE, reusing(1000));
    assert_eq!(call(&calibration, "GET", "/ok", "").await.status, 200);
    let before = calibration.usage().counters.fuel_used;
    assert_eq!(call(&calibration, "GET", "/burn/10", "").await.status, 200);
    let one_burn = calibration.usage().counters.fuel_used - before;
    assert!(one_burn > 10_000_000, "{one_burn}");

    // A budget of one and a half burns: three burns in one instance pass
    // only if each request starts with the whole budget.
    let role = web_role(
        PROBE,
        SandboxLimits {
            fuel: one_burn / 2 * 3,
            ..reusing(1000)
        },
    );
    assert_eq!(visit(&role, "x").await, "visits=1 last=-");
    for _ in 0..3 {
        let reply = call(&role, "GET", "/burn/10", "").await;
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    // One instance served all: the visit before the burns is remembered.
    assert_eq!(visit(&role, "y").await, "visits=2 last=x");
    // And a request over the budget still runs out, on that same instance.
    let cut = call(&role, "GET", "/burn/20", "").await;
    assert_eq!(cut.status, 500, "{cut:?}");
    assert_eq!(cut.headers["x-weft-failure"], "fuel");
    // Every request's fuel reached the role's account, not just the first.
    let used = role.usage().counters.fuel_used;
    assert!(used > 4 * one_burn, "{used} for four burns of {one_burn}");
}

#[tokio::test]
async fn a_reused_instance_keeps_its_memory_and_its_cap() {
    let limits = SandboxLimits {
        memory_mib: 64,
        ..reusing(1000)
    };
    let role = web_role(PROBE, limits);
    let first = call(&role, "GET", "/grow/40", "").await;
    assert_eq!(first.body.trim(), "granted", "{first:?}");
    // The same instance already holds 40 MiB: 40 more would pass 64.
    let second = call(&role, "GET", "/grow/40", "").await;
    assert_eq!(second.body.trim(), "refused", "{second:?}");
    // A refusal is not a failure: the instance lives on.
    assert_eq!(visit(&role, "z").await, "visits=1 last=-");
    assert_eq!(visit(&role, "z2").await, "visits=2 last=z");
    assert!(role.usage().memory.bytes >= 40 << 20);

    // Without reuse every request has a fresh memory: both growths pass.
    let fresh = web_role(
        PROBE,
        SandboxLimits {
            memory_mib: 64,
            ..SandboxLimits::default()
        },
    );
    for _ in 0..2 {
        assert_eq!(
            call(&fresh, "GET", "/grow/40", "").await.body.trim(),
            "granted"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_instances_share_the_cpu_fairly_with_fresh_ones() {
    // Two slots; role A reuses its instances, role B does not; equal
    // weights, A with three times B's request loops. Equal fuel ±15%
    // proves reused instances are accounted and scheduled like fresh ones.
    let runtime = Runtime::new(EngineConfig {
        cache_dir: Some(cache_dir()),
        max_instances: 64,
        cpu_slots: 2,
        ..EngineConfig::default()
    })
    .unwrap();
    let make = |name: &str, reuse: u32| {
        let limits = SandboxLimits {
            fuel: u64::MAX / 2,
            deadline_ms: 30_000,
            requests_per_instance: reuse,
            ..SandboxLimits::default()
        };
        let (mut spec, _) = spec(name, &[], &[], limits);
        spec.cpu = CpuShare::default();
        Arc::new(runtime.web_role(Path::new(PROBE), spec).unwrap())
    };
    let (a, b) = (make("reusing", 1000), make("fresh", 1));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut loops = Vec::new();
    for (role, count) in [(&a, 6), (&b, 2)] {
        for _ in 0..count {
            let (role, stop) = (role.clone(), stop.clone());
            loops.push(tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    assert_eq!(call(&role, "GET", "/burn/20", "").await.status, 200);
                }
            }));
        }
    }
    let fuel = |role: &WebRole| role.usage().counters.fuel_used;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let start = (fuel(&a), fuel(&b));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let end = (fuel(&a), fuel(&b));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in loops {
        task.await.unwrap();
    }
    #[allow(clippy::cast_precision_loss)]
    let ratio = (end.0 - start.0) as f64 / (end.1 - start.1).max(1) as f64;
    eprintln!("reusing : fresh fuel = {ratio:.3}");
    assert!(
        (0.85..=1.15).contains(&ratio),
        "fuel ratio {ratio:.3}, want 1 ± 15%"
    );
    assert!(a.usage().counters.invocations > 6, "A's loops ran requests");
}

#[tokio::test]
async fn weft_up_reuses_instances_when_the_manifest_asks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weft.toml");
    std::fs::write(
        &path,
        format!(
            "[service]\nname = \"reuse\"\n\n[roles.web]\nkind = \"web\"\ncomponent = {PROBE:?}\nlisten = \"127.0.0.1:0\"\n[roles.web.limits]\nrequests-per-instance = 10\n\n[roles.plain]\nkind = \"web\"\ncomponent = {PROBE:?}\nlisten = \"127.0.0.1:0\"\n"
        ),
    )
    .unwrap();
    let weft = up(&path);
    let get = |base: String, token: &str| {
        let url = format!("{base}/visit/{token}");
        async move { http("GET", &url, "").await.unwrap().body.trim().to_owned() }
    };
    assert_eq!(get(weft.url("web"), "a").await, "visits=1 last=-");
    assert_eq!(get(weft.url("web"), "b").await, "visits=2 last=a");
    assert_eq!(get(weft.url("plain"), "c").await, "visits=1 last=-");
    assert_eq!(get(weft.url("plain"), "d").await, "visits=1 last=-");
}
