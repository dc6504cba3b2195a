//! Instance reuse: off by default (no request sees what another left in
//! the guest's memory); when a role turns it on, an instance serves up to
//! `requests-per-instance` requests of that role and no other, and every
//! limit still holds per request.
//!
//! The probe's `GET /visit/{token}` keeps a count and the last token in
//! the instance's memory: `visits=1 last=-` means a fresh instance.
//!
//! A reusing role that takes no more requests frees its idle instances at
//! once, so a shutdown or an upgrade never waits out the grace period for
//! sandboxes that serve nothing.

use crate::hosting::{Host, token_file};
use crate::support::{Weft, cache_dir, call, eventually, http, runtime, spec, up, web_role};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weft_sandbox::{CpuShare, EngineConfig, Runtime, SandboxLimits, WebRole};
use weft_test_artifacts::{PROBE, ROLLOUT_WEB};

fn reusing(requests_per_instance: u32) -> SandboxLimits {
    SandboxLimits {
        requests_per_instance,
        deadline_ms: 10_000,
        ..SandboxLimits::default()
    }
}

/// How long the instance that served a request may take, after the client
/// has read the reply, to be back among the role's idle ones or dropped.
///
/// The client has the whole body once the guest finishes writing it
/// (`outgoing-body.finish` ends the stream), but the guest's handler is
/// still returning then; only after that does the request's task keep the
/// instance or drop it (its store, and with it the live count). Holding the
/// body's end back until then would add the guest's return and the store's
/// teardown to every response (and a guest's work after its body to the
/// reply), so the count may lag the reply: well under a millisecond on an
/// idle machine, and within this bound on a loaded one.
const DROP_LAG: Duration = Duration::from_secs(2);

/// Waits (up to [`DROP_LAG`]) for `role` to hold `count` live instances.
async fn live_instances(role: &WebRole, count: u64, what: &str) {
    eventually(DROP_LAG, what, || {
        let reached = role.usage().counters.instances_live == count;
        async move { reached.then_some(()) }
    })
    .await;
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
    live_instances(&role, 0, "nothing to be kept").await;
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
            // Each loop also visits after every burn; it returns how many
            // of its visits found an instance that had served one before.
            loops.push((
                role.clone(),
                tokio::spawn(async move {
                    let (mut visits, mut reused) = (0u64, 0u64);
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        assert_eq!(call(&role, "GET", "/burn/20", "").await.status, 200);
                        visits += 1;
                        if visit(&role, "x").await != "visits=1 last=-" {
                            reused += 1;
                        }
                    }
                    (visits, reused)
                }),
            ));
        }
    }
    let fuel = |role: &WebRole| role.usage().counters.fuel_used;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let start = (fuel(&a), fuel(&b));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let end = (fuel(&a), fuel(&b));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut a_visits, mut a_reused, mut b_reused) = (0, 0, 0);
    for (role, task) in loops {
        let (visits, reused) = task.await.unwrap();
        if Arc::ptr_eq(&role, &a) {
            (a_visits, a_reused) = (a_visits + visits, a_reused + reused);
        } else {
            b_reused += reused;
        }
    }
    // A's instances were reused (most visits found one that had served
    // before), B's never: the fuel compared is that of reused instances.
    assert!(
        a_reused * 2 > a_visits,
        "only {a_reused} of A's {a_visits} visits found a reused instance"
    );
    assert_eq!(b_reused, 0, "B's instances are fresh");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn released_idle_instances_are_freed_and_a_busy_one_finishes_its_request() {
    let role = Arc::new(web_role(PROBE, reusing(10)));
    let live = |role: &WebRole| role.usage().counters.instances_live;
    // One instance busy, another idle beside it. The busy request sleeps
    // long enough to still be running on a loaded machine when released.
    let busy = {
        let role = role.clone();
        tokio::spawn(async move { call(&role, "GET", "/sleep/3000", "").await })
    };
    eventually(Duration::from_secs(10), "the slow request to start", || {
        let started = live(&role) == 1;
        async move { started.then_some(()) }
    })
    .await;
    assert_eq!(visit(&role, "a").await, "visits=1 last=-");
    assert_eq!(live(&role), 2);
    eventually(DROP_LAG, "the second instance to be idle", || {
        let idle = role.idle_instances() == 1;
        async move { idle.then_some(()) }
    })
    .await;
    // Released: the idle one is freed at once, the busy one goes on.
    assert_eq!(role.release_idle(), 1);
    assert_eq!(live(&role), 1);
    let reply = busy.await.unwrap();
    assert_eq!(
        (reply.status, reply.body.trim()),
        (200, "slept"),
        "{reply:?}"
    );
    // Done, it is dropped rather than kept (just after its reply: DROP_LAG).
    live_instances(&role, 0, "the busy instance to go").await;
    // Requests still served run in fresh instances, none kept.
    assert_eq!(visit(&role, "b").await, "visits=1 last=-");
    live_instances(&role, 0, "the fresh instance to go").await;
}

/// A `weft up` manifest: one web role of the rollout guest that reuses its
/// instances, with a health path and lifecycle hooks.
fn reusing_service(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("weft.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[service]
name = "reuse-drain"
upgrade-domains = 1
upgrade-settle-ms = 100

[roles.web]
kind = "web"
component = "{ROLLOUT_WEB}"
listen = "127.0.0.1:0"
health = "/health"
[roles.web.limits]
requests-per-instance = 10
[roles.web.settings]
version = "1"
healthy = "true"
start = "ok"
"#
        ),
    )
    .unwrap();
    path
}

/// Starts `weft up` on `manifest` with a grace period of `grace`.
fn up_with_grace(manifest: &Path, grace: Duration) -> Weft {
    let cache = cache_dir().display().to_string();
    let state = manifest.with_file_name("state");
    let grace = grace.as_secs().to_string();
    Weft::start(&[
        "up",
        "--no-build",
        "--cache-dir",
        &cache,
        "--state-dir",
        state.to_str().unwrap(),
        "--grace-secs",
        &grace,
        manifest.to_str().unwrap(),
    ])
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reusing_web_role_stops_without_waiting_its_grace() {
    let grace = Duration::from_secs(8);
    let dir = tempfile::tempdir().unwrap();
    let mut weft = up_with_grace(&reusing_service(dir.path()), grace);
    let url = weft.url("web");
    let reply = http("GET", &format!("{url}/"), "").await.unwrap();
    assert_eq!((reply.status, reply.body.as_str()), (200, "version=1"));
    // A request in flight at the signal is still answered, on the
    // instance the first request left idle.
    let slow = tokio::spawn(async move { http("GET", &format!("{url}/sleep/500"), "").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let signalled = Instant::now();
    let status = tokio::task::block_in_place(|| weft.terminate()).unwrap();
    let took = signalled.elapsed();
    assert!(status.success(), "{status}");
    let slow = slow.await.unwrap().unwrap();
    assert_eq!(
        (slow.status, slow.body.as_str()),
        (200, "slept version=1"),
        "{slow:?}"
    );
    // The drain ended with the request, not at the grace; the stop hook ran.
    assert!(
        took < grace / 4,
        "stopped after {took:?}, with a grace of {grace:?}"
    );
    let log = weft.log();
    assert!(log.contains("rollout-web: stop version=1"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_of_a_reusing_web_role_retires_the_old_version_without_waiting_its_grace() {
    // Hosts in these tests have a grace of 10 s.
    let grace = Duration::from_secs(10);
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(&dir.path().join("state"), &token_file(dir.path()));
    let v1 = dir.path().join("v1");
    std::fs::create_dir_all(&v1).unwrap();
    let manifest = reusing_service(&v1);
    let (ok, stdout, stderr) = host.cli(&["deploy", "--no-build", v1.to_str().unwrap()]);
    assert!(ok, "{stdout}{stderr}");
    let url = host.url("reuse-drain", "web").await;
    for _ in 0..3 {
        let reply = http("GET", &format!("{url}/"), "").await.unwrap();
        assert_eq!((reply.status, reply.body.as_str()), (200, "version=1"));
    }
    // A request the old version is still serving when the upgrade ends.
    let slow_url = format!("{url}/sleep/4000");
    let slow = tokio::spawn(async move {
        let reply = http("GET", &slow_url, "").await;
        (reply, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let v2 = dir.path().join("v2");
    std::fs::create_dir_all(&v2).unwrap();
    let text = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace("version = \"1\"", "version = \"2\"");
    std::fs::write(v2.join("weft.toml"), text).unwrap();
    let (ok, stdout, stderr) =
        tokio::task::block_in_place(|| host.cli(&["upgrade", "--no-build", v2.to_str().unwrap()]));
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("upgrade to generation 2 done"), "{stdout}");
    let upgraded = Instant::now();
    let reply = http("GET", &format!("{url}/"), "").await.unwrap();
    assert_eq!((reply.status, reply.body.as_str()), (200, "version=2"));

    let (slow, answered) = slow.await.unwrap();
    let slow = slow.unwrap();
    assert_eq!(
        (slow.status, slow.body.as_str()),
        (200, "slept version=1"),
        "{slow:?}"
    );
    assert!(
        answered > upgraded,
        "the slow request was still in flight when the old version was retired"
    );
    // The old version stops once that request is done, not at the grace.
    let stopped = eventually(grace, "the old version to stop", || {
        let stopped = host.weft.log().contains("rollout-web: stop version=1");
        async move { stopped.then(Instant::now) }
    })
    .await;
    let took = stopped.saturating_duration_since(answered);
    assert!(
        took < grace / 4,
        "stopped {took:?} after its last request, with a grace of {grace:?}"
    );
}

/// A reused instance whose handler returns without setting its response
/// (componentize-js 0.23's engine answers only an instance's first request,
/// and returns from the next without a word) fails that request at once,
/// and is dropped: the next request gets a fresh instance and its answer.
/// Before, the request waited for ever, past its deadline, on the sender the
/// kept instance still held.
#[tokio::test]
async fn a_reused_instance_that_returns_without_answering_fails_its_request_and_is_dropped() {
    let component = crate::guest_builds::pipeline_web_js();
    let (spec, _) = spec("web", &["jobs"], &["jobs"], reusing(10));
    let role = runtime().web_role(Path::new(component), spec).unwrap();
    let ask = || call(&role, "GET", "/jobs/none", "");
    assert_eq!(ask().await.status, 404, "a fresh instance answers");
    eventually(DROP_LAG, "the instance to be idle", || {
        let idle = role.idle_instances() == 1;
        async move { idle.then_some(()) }
    })
    .await;
    // Far past the 10 s deadline: a request that has not ended by then never will.
    let second = tokio::time::timeout(Duration::from_secs(60), ask())
        .await
        .expect("the request on the reused instance ends");
    assert!(
        (500..600).contains(&second.status),
        "a handler that returned without a response fails its request: {second:?}"
    );
    assert_eq!(role.idle_instances(), 0, "the instance was not kept");
    assert_eq!(ask().await.status, 404, "a fresh instance answers again");
}
