//! Usage you can see: guests read their role's figures through
//! `weft:vmbus/usage`, operators scrape them from `/metrics`, and a flood of
//! throttled calls costs the host little CPU.

use crate::support::{call, eventually, http, runtime, spec, up};
use std::path::Path;
use std::time::{Duration, Instant};
use weft_sandbox::{CpuShare, SandboxLimits};
use weft_test_artifacts::PROBE;

/// `name=value` lines as pairs.
fn fields(body: &str) -> std::collections::HashMap<String, String> {
    body.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[tokio::test]
async fn a_guest_reads_its_roles_usage() {
    let limits = SandboxLimits {
        deadline_ms: 5000,
        role_memory_mib: Some(512),
        ..SandboxLimits::default()
    };
    let (mut spec, _) = spec("web", &[], &[], limits);
    spec.cpu = CpuShare {
        weight: 300,
        ..CpuShare::default()
    };
    let role = runtime().web_role(Path::new(PROBE), spec).unwrap();
    assert_eq!(call(&role, "GET", "/burn/1", "").await.status, 200);
    // The sandbox's fuel is charged as it ends, just after its response.
    let burnt = eventually(Duration::from_secs(10), "the burn's fuel", || {
        let fuel = role.usage().counters.fuel_used;
        async move { (fuel > 1_000_000).then_some(fuel) }
    })
    .await;
    let reply = call(&role, "GET", "/usage", "").await;
    let usage = fields(&reply.body);
    let number = |name: &str| -> u64 {
        usage[name]
            .parse()
            .unwrap_or_else(|_| panic!("{name} in {:?}", reply.body))
    };
    assert!(number("fuel-used") >= burnt, "{:?}", reply.body);
    assert!(number("fuel-left") > 0 && number("fuel-left") <= limits.fuel);
    assert_eq!(number("weight"), 300);
    assert!(number("memory-bytes") > 0);
    assert_eq!(number("memory-cap-bytes"), limits.memory_bytes());
    assert!(number("role-memory-bytes") >= number("memory-bytes"));
    assert_eq!(number("role-memory-cap-bytes"), 512 << 20);
    assert!(number("deadline-left-ms") <= 5000);
    assert_eq!(number("calls-rate-limited"), 0);
}

fn probe_manifest(extra: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weft.toml");
    let text = format!(
        "[service]\nname = \"usage\"\n\n[roles.web]\nkind = \"web\"\ncomponent = {PROBE:?}\nlisten = \"127.0.0.1:0\"\nqueues = [\"jobs\"]\n{extra}\n"
    );
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

#[tokio::test]
async fn metrics_report_each_roles_usage() {
    // A role memory cap, a CPU quota the spin below runs into, and a queue
    // bucket of two sends that waits at most 10 ms: every family has
    // something to show.
    let (_dir, path) = probe_manifest(
        "[roles.web.cpu]\nweight = 250\nmax-fuel-per-sec = 100000000\n[roles.web.limits]\nfuel = 200000000\nrole-memory-mib = 512\n[roles.web.rate-limits]\nmax-wait-ms = 10\n[roles.web.rate-limits.queue]\nops = { size = 2, refill-ms = 60000 }\n",
    );
    let weft = up(&path);
    let base = weft.url("web");
    assert_eq!(
        http("GET", &format!("{base}/burn/1"), "")
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        http("GET", &format!("{base}/spin"), "")
            .await
            .unwrap()
            .status,
        500
    );
    let flood = http("POST", &format!("{base}/flood/jobs?n=5"), "x")
        .await
        .unwrap();
    assert_eq!(flood.body.trim(), "sent=2 limited=3 other=0", "{flood:?}");
    let admin = weft.admin.clone().expect("weft printed its admin address");
    let labels = "service=\"usage\",role=\"web\",kind=\"web\"";
    // A sandbox gives its memory back just after its response is out.
    let idle = format!("weft_role_instances{{{labels}}} 0\n");
    let metrics = eventually(Duration::from_secs(10), "no sandbox alive", || async {
        let metrics = http("GET", &format!("{admin}/metrics"), "").await.unwrap();
        metrics.body.contains(&idle).then_some(metrics)
    })
    .await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let value = |name: &str, extra: &str| -> f64 {
        let prefix = format!("{name}{{{labels}{extra}}} ");
        metrics
            .body
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{}", metrics.body))
            .parse()
            .unwrap()
    };
    assert!(value("weft_role_fuel_used_total", "") > 2e8);
    assert_eq!(value("weft_role_cpu_weight", ""), 250.0);
    // The lone role burnt all the host's fuel in the last window, or none
    // if the window closed after the spin.
    let share = value("weft_role_cpu_share", "");
    assert!((0.0..=1.0).contains(&share), "{share}");
    assert_eq!(value("weft_role_invocations_total", ""), 3.0);
    assert_eq!(value("weft_role_failures_total", ",failure=\"fuel\""), 1.0);
    assert!(value("weft_role_http_body_bytes_total", ",direction=\"out\"") > 0.0);
    // The spin burnt 200 million fuel against a quota of 100 million a
    // second: it was held back for most of those two seconds.
    let throttled = value("weft_role_throttled_seconds_total", "");
    assert!((0.1..10.0).contains(&throttled), "{throttled}");
    // A lone role never waits for a slot.
    assert_eq!(value("weft_role_parked_seconds_total", ""), 0.0);
    // No request is in flight, and none is kept for reuse.
    assert_eq!(value("weft_role_instances", ""), 0.0);
    assert_eq!(value("weft_role_memory_bytes", ""), 0.0);
    let instance_high = value("weft_role_instance_memory_high_water_bytes", "");
    assert!(instance_high > 0.0);
    assert!(value("weft_role_memory_high_water_bytes", "") >= instance_high);
    assert_eq!(
        value("weft_role_instance_memory_cap_bytes", ""),
        f64::from(128u32 << 20),
        "the default memory-mib"
    );
    assert_eq!(
        value("weft_role_memory_cap_bytes", ""),
        f64::from(512u32 << 20)
    );
    // The flood: two sends of one byte admitted, three refused (their
    // token was a minute away: past the 10 ms they may wait).
    let queue = ",interface=\"queue\"";
    assert_eq!(value("weft_role_calls_total", queue), 2.0);
    assert_eq!(value("weft_role_calls_rate_limited_total", queue), 3.0);
    assert_eq!(value("weft_role_call_bytes_total", queue), 2.0);
    let waited = value("weft_role_call_wait_seconds_total", queue);
    assert!((0.0..0.5).contains(&waited), "{waited}");
    assert_eq!(value("weft_role_calls_total", ",interface=\"http\""), 3.0);
    // Every weft_role_ family has this role's series, and every sample is
    // a number no counter or gauge here can be below.
    for family in metrics
        .body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE weft_role_"))
    {
        let name = family.split_whitespace().next().unwrap();
        let series = format!("weft_role_{name}{{{labels}");
        assert!(
            metrics.body.lines().any(|l| l.starts_with(&series)),
            "no {series} in\n{}",
            metrics.body
        );
    }
    for line in metrics.body.lines().filter(|l| !l.starts_with('#')) {
        let (_, number) = line.rsplit_once(' ').unwrap();
        let number: f64 = number.parse().unwrap();
        assert!(number.is_finite() && number >= 0.0, "{line}");
    }
    let missing = http("GET", &format!("{admin}/nope"), "").await.unwrap();
    assert_eq!(missing.status, 404);
}

/// User plus system CPU time of process `pid`, from `/proc/PID/stat`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) start at ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    #[allow(unsafe_code)]
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Duration::from_secs_f64(ticks as f64 / per_second as f64)
}

#[tokio::test]
async fn a_throttled_flood_costs_the_host_little_cpu() {
    // 50 sends a second, each call waiting up to 100 ms for its token.
    let (_dir, path) = probe_manifest(
        "[roles.web.limits]\ndeadline-ms = 30000\n[roles.web.rate-limits]\nmax-wait-ms = 100\n[roles.web.rate-limits.queue]\nops = { size = 5, refill-ms = 100 }\n",
    );
    let weft = up(&path);
    let base = weft.url("web");
    let cpu_before = cpu_time(weft.pid());
    let started = Instant::now();
    let reply = http("POST", &format!("{base}/flood/jobs?n=200"), "x")
        .await
        .unwrap();
    let wall = started.elapsed();
    let cpu = cpu_time(weft.pid()) - cpu_before;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(
        reply.body.starts_with("sent=200 limited=0"),
        "{}",
        reply.body
    );
    // The guest spent most of its ~4 s waiting for tokens; the host must
    // not have spun meanwhile.
    let busy = cpu.as_secs_f64() / wall.as_secs_f64();
    assert!(
        busy < 0.2,
        "the host used {cpu:?} of CPU over {wall:?} ({busy:.2} of a core)"
    );
}
