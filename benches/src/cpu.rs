//! Fair CPU figures: Jain's fairness index for equal hogs, a light
//! tenant's latency beside hogs, the scheduler's overhead, and what fuel
//! yields cost. Every figure has its baseline in the same run (fairness
//! off, no hogs, no yields), and configurations are interleaved.

use crate::stats::{jain, quantile, spread};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weft_broker::MemoryBroker;
use weft_sandbox::{
    CpuShare, EngineConfig, Grants, RateLimits, RoleSpec, Runtime, SandboxLimits, WebRole,
};
use weft_test_artifacts::PROBE;

const WARM_UP: Duration = Duration::from_secs(1);

fn runtime(fair: bool, fuel_yield_interval: Option<u64>) -> anyhow::Result<Runtime> {
    Ok(Runtime::new(EngineConfig {
        max_instances: 256,
        fair_cpu: fair,
        fuel_yield_interval,
        ..EngineConfig::default()
    })?)
}

fn role(runtime: &Runtime, name: &str, deadline: Duration) -> anyhow::Result<Arc<WebRole>> {
    let broker = Arc::new(MemoryBroker::default());
    let spec = RoleSpec {
        grants: Grants {
            service: "bench".into(),
            role: name.into(),
            ..Grants::default()
        },
        limits: SandboxLimits {
            deadline_ms: u64::try_from(deadline.as_millis())?,
            fuel: u64::MAX / 2,
            ..SandboxLimits::default()
        },
        rate_limits: RateLimits::default(),
        cpu: CpuShare::default(),
        queues: broker.clone(),
        kv: broker,
    };
    Ok(Arc::new(runtime.web_role(Path::new(PROBE), spec)?))
}

async fn get(role: &WebRole, path: &str) -> u16 {
    let request = http::Request::builder()
        .uri(path)
        .header("host", "bench")
        .body(Full::new(Bytes::new()))
        .unwrap_or_default();
    let response = role.handle(request).await;
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    status
}

/// Starts one spinning request on each role, `per_role` times.
fn spin(roles: &[Arc<WebRole>], per_role: usize) -> Vec<tokio::task::JoinHandle<u16>> {
    roles
        .iter()
        .flat_map(|role| (0..per_role).map(move |_| role.clone()))
        .map(|role| tokio::spawn(async move { get(&role, "/spin").await }))
        .collect()
}

async fn join(tasks: Vec<tokio::task::JoinHandle<u16>>) {
    for task in tasks {
        let _ = task.await;
    }
}

fn fuel(role: &WebRole) -> f64 {
    role.usage().counters.fuel_used as f64
}

/// `hogs` roles of one spinning guest each: Jain's index of the fuel each
/// role burnt over the window, and the total fuel per second.
async fn hog_share(
    fair: bool,
    hogs: usize,
    window: Duration,
    interval: Option<u64>,
) -> anyhow::Result<(f64, f64)> {
    let runtime = runtime(fair, interval)?;
    let deadline = WARM_UP + window + Duration::from_millis(500);
    let roles = (0..hogs)
        .map(|i| role(&runtime, &format!("hog-{i}"), deadline))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let tasks = spin(&roles, 1);
    tokio::time::sleep(WARM_UP).await;
    let before: Vec<f64> = roles.iter().map(|r| fuel(r)).collect();
    tokio::time::sleep(window).await;
    let burnt: Vec<f64> = roles
        .iter()
        .zip(&before)
        .map(|(r, b)| fuel(r) - b)
        .collect();
    join(tasks).await;
    let total: f64 = burnt.iter().sum();
    Ok((jain(&burnt), total / window.as_secs_f64()))
}

/// A light role's request latencies (ms) while `hogs` guests of another
/// role spin.
async fn light_latency(
    fair: bool,
    hogs: usize,
    window: Duration,
    interval: Option<u64>,
) -> anyhow::Result<Vec<f64>> {
    let runtime = runtime(fair, interval)?;
    let deadline = WARM_UP + window + Duration::from_millis(500);
    let hog = role(&runtime, "hog", deadline)?;
    let light = role(&runtime, "light", Duration::from_secs(10))?;
    let tasks = spin(std::slice::from_ref(&hog), hogs);
    tokio::time::sleep(WARM_UP).await;
    // The light client runs on the executor, as a connection's task does
    // under `weft serve`, not on the thread that blocks on the benchmark.
    let client = tokio::spawn(async move {
        let mut latencies = Vec::new();
        let until = Instant::now() + window;
        while Instant::now() < until {
            let started = Instant::now();
            let status = get(&light, "/ok").await;
            let took = started.elapsed();
            anyhow::ensure!(status == 200, "a light request failed with {status}");
            latencies.push(took.as_secs_f64() * 1e3);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(latencies)
    });
    let latencies = client.await??;
    join(tasks).await;
    Ok(latencies)
}

/// Seconds one CPU-bound request takes (`/burn/N`), alone on the host.
async fn burn_seconds(fair: bool, fuel_yield_interval: Option<u64>) -> anyhow::Result<f64> {
    let runtime = runtime(fair, fuel_yield_interval)?;
    let burner = role(&runtime, "burner", Duration::from_secs(120))?;
    // Warm the instance pool and caches once.
    get(&burner, "/ok").await;
    let started = Instant::now();
    let status = get(&burner, "/burn/150").await;
    anyhow::ensure!(status == 200, "the burn failed with {status}");
    Ok(started.elapsed().as_secs_f64())
}

/// The parts of the CPU benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// Jain's index and throughput for equal hogs, fairness off and on.
    Fairness,
    /// A light tenant's latency beside hogs.
    Latency,
    /// What fuel yields and the scheduler cost a lone CPU-bound guest.
    Yields,
}

/// The figures' Markdown, and the light tenant's p99 beside hogs over its
/// p99 alone (fairness on) for each hog count, if that part ran.
pub async fn run(
    window: f64,
    repeats: usize,
    only: &[Part],
    fuel_yield_interval: Option<u64>,
) -> anyhow::Result<(String, Option<Vec<(usize, f64)>>)> {
    let window = Duration::from_secs_f64(window);
    let mut out = String::new();
    let wanted = |part: Part| only.is_empty() || only.contains(&part);
    if wanted(Part::Fairness) {
        fairness(&mut out, window, repeats, fuel_yield_interval).await?;
    }
    let mut light = None;
    if wanted(Part::Latency) {
        light = Some(latency(&mut out, window, repeats, fuel_yield_interval).await?);
    }
    if wanted(Part::Yields) {
        yields(&mut out, repeats).await?;
    }
    Ok((out, light))
}

async fn fairness(
    out: &mut String,
    window: Duration,
    repeats: usize,
    interval: Option<u64>,
) -> anyhow::Result<()> {
    let _ = writeln!(
        out,
        "### Fairness between equal hogs\n\nEach hog is a role of its own with one request spinning; Jain's index of the fuel each role burnt over a {:.0} s window (1 = perfectly even), and the fuel all of them burnt per second. Median (min–max) of {repeats} interleaved runs.\n",
        window.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "| hogs | Jain, fairness off | Jain, fairness on | fuel/s off | fuel/s on | on ÷ off |\n|---:|---:|---:|---:|---:|---:|"
    );
    for hogs in [2, 8, 64] {
        let mut results: [Vec<(f64, f64)>; 2] = [Vec::new(), Vec::new()];
        for _ in 0..repeats {
            for (i, fair) in [false, true].into_iter().enumerate() {
                results[i].push(hog_share(fair, hogs, window, interval).await?);
            }
        }
        let jain_of = |i: usize| results[i].iter().map(|r| r.0).collect::<Vec<_>>();
        let rate_of = |i: usize| results[i].iter().map(|r| r.1 / 1e9).collect::<Vec<_>>();
        let ratio: Vec<f64> = results[1]
            .iter()
            .zip(&results[0])
            .map(|(on, off)| on.1 / off.1)
            .collect();
        let _ = writeln!(
            out,
            "| {hogs} | {} | {} | {} G | {} G | {} |",
            spread(&jain_of(0), 4),
            spread(&jain_of(1), 4),
            spread(&rate_of(0), 2),
            spread(&rate_of(1), 2),
            spread(&ratio, 3),
        );
    }

    Ok(())
}

/// The light tenant's p99 beside each count of hogs over its p99 alone,
/// fairness on.
async fn latency(
    out: &mut String,
    window: Duration,
    repeats: usize,
    interval: Option<u64>,
) -> anyhow::Result<Vec<(usize, f64)>> {
    let _ = writeln!(
        out,
        "\n### A light tenant beside hogs\n\nA light role's requests (`GET /ok`, one at a time, 2 ms apart, in-process, sent by a task on the host's executor as a connection's task is under `weft serve`) over a {:.0} s window while another role's requests spin. Latency in ms, p50 and p99 of all requests of {repeats} interleaved runs.\n",
        window.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "| hogs | p50 off | p99 off | p50 on | p99 on | p99 on ÷ p99 alone |\n|---:|---:|---:|---:|---:|---:|"
    );
    let mut alone_p99 = f64::NAN;
    let mut ratios = Vec::new();
    for hogs in [0, 8, 64] {
        let mut latencies: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        for _ in 0..repeats {
            for (i, fair) in [false, true].into_iter().enumerate() {
                latencies[i].extend(light_latency(fair, hogs, window, interval).await?);
            }
        }
        let [mut off, mut on] = latencies;
        let p99_on = quantile(&mut on, 0.99);
        if hogs == 0 {
            alone_p99 = p99_on;
        } else {
            ratios.push((hogs, p99_on / alone_p99));
        }
        let _ = writeln!(
            out,
            "| {hogs} | {:.3} | {:.3} | {:.3} | {:.3} | {:.2} |",
            quantile(&mut off, 0.5),
            quantile(&mut off, 0.99),
            quantile(&mut on, 0.5),
            p99_on,
            p99_on / alone_p99,
        );
    }

    Ok(ratios)
}

async fn yields(out: &mut String, repeats: usize) -> anyhow::Result<()> {
    let _ = writeln!(
        out,
        "\n### What fuel yields and the scheduler cost\n\nOne CPU-bound request (`GET /burn/150`, about 1.2 billion fuel) alone on the host, in seconds; the ratio is to the same request with fuel yields too far apart ever to happen (an interval of `u64::MAX`: they cannot be turned off), fairness on. Median (min–max) of {repeats} interleaved runs.\n"
    );
    let _ = writeln!(
        out,
        "| fuel yield interval | fairness | seconds | ÷ no yields |\n|---:|---|---:|---:|"
    );
    let configs: [(Option<u64>, bool); 7] = [
        (Some(u64::MAX), true),
        (Some(10_000), true),
        (Some(100_000), true),
        (Some(1_000_000), true),
        (Some(2_000_000), true),
        (Some(10_000_000), true),
        (Some(2_000_000), false),
    ];
    let mut seconds: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    for _ in 0..repeats {
        for (i, (interval, fair)) in configs.iter().enumerate() {
            seconds[i].push(burn_seconds(*fair, *interval).await?);
        }
    }
    let (_, base, _) = crate::stats::min_median_max(&seconds[0]);
    for ((interval, fair), runs) in configs.iter().zip(&seconds) {
        let (_, median, _) = crate::stats::min_median_max(runs);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.3} |",
            match interval {
                Some(u64::MAX) => "never (`u64::MAX`)".to_owned(),
                Some(n) => n.to_string(),
                None => "none".to_owned(),
            },
            if *fair { "on" } else { "off" },
            spread(runs, 3),
            median / base,
        );
    }
    Ok(())
}
