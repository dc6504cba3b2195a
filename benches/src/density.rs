//! Density: how many guests one host keeps alive at once, and the resident
//! memory each costs. Each measurement runs in a child process of its own
//! (`weft-bench density-one`), so one count's allocations never pollute the
//! next: the child builds Weft's runtime sized for the count, loads a role,
//! reads its RSS, starts the guests, waits until every one is alive, lets
//! them settle, and reads its RSS again.
//!
//! - **web**: the `probe` web role, each guest in a request waiting on a
//!   timer (`GET /sleep/600000`): an instance with its stack, memory and
//!   request resources, idle.
//! - **worker**: the `drain-worker` worker role, each instance long-polling
//!   an empty queue (a receive with a 1 s wait, again and again).

use crate::process::rss_bytes;
use crate::stats::{min_median_max, spread};
use crate::svg::{BarChart, Series};
use anyhow::Context;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weft_broker::MemoryBroker;
use weft_sandbox::rate_limit::{BucketConfig, Interface, InterfaceLimits};
use weft_sandbox::{CpuShare, EngineConfig, Grants, RateLimits, RoleSpec, Runtime, SandboxLimits};
use weft_test_artifacts::{DRAIN_WORKER, PROBE};

/// The kinds of guest counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Web instances, each in a request waiting on a timer.
    Web,
    /// Worker instances, each long-polling an empty queue.
    Worker,
}

/// What one child measured.
#[derive(Debug, Clone, Copy)]
struct Sample {
    before: f64,
    after: f64,
    seconds_to_start: f64,
}

/// The child: starts `count` guests of `kind` and prints
/// `rss-before rss-after seconds-to-start`.
pub async fn one(kind: Kind, count: u32) -> anyhow::Result<()> {
    let runtime = Runtime::new(EngineConfig {
        max_instances: count + 16,
        ..EngineConfig::default()
    })?;
    let broker = Arc::new(MemoryBroker::default());
    let unlimited = BucketConfig {
        size: 0,
        refill_ms: 0,
        burst: 0,
    };
    let spec = RoleSpec {
        grants: Grants {
            service: "density".into(),
            role: "guests".into(),
            queues: ["jobs".to_owned()].into(),
            ..Grants::default()
        },
        limits: SandboxLimits {
            deadline_ms: 900_000,
            max_in_flight: count,
            ..SandboxLimits::default()
        },
        // Thousands of workers polling must not be held back.
        rate_limits: RateLimits::default().with(
            Interface::Queue,
            InterfaceLimits {
                ops: Some(unlimited),
                bytes: None,
            },
        ),
        cpu: CpuShare::default(),
        queues: broker.clone(),
        kv: broker,
    };
    let started = Instant::now();
    let (before, live): (u64, Box<dyn Fn() -> u64>) = match kind {
        Kind::Web => {
            let role = Arc::new(runtime.web_role(Path::new(PROBE), spec)?);
            let before = rss_bytes("self")?;
            for _ in 0..count {
                let role = role.clone();
                tokio::spawn(async move {
                    crate::compute::call(&role, "GET", "/sleep/600000", bytes::Bytes::new()).await
                });
            }
            wait_until(count, || role.usage().counters.instances_live).await?;
            (
                before,
                Box::new(move || role.usage().counters.instances_live),
            )
        }
        Kind::Worker => {
            let role = Arc::new(runtime.worker_role(Path::new(DRAIN_WORKER), spec)?);
            let before = rss_bytes("self")?;
            for instance in 0..count {
                let role = role.clone();
                tokio::spawn(
                    async move { role.run_instance(instance, std::future::pending()).await },
                );
            }
            // Alive, and each has made its first receive (so it is
            // instantiated and in its loop).
            let calls = {
                let role = role.clone();
                move || role.usage().calls.iter().map(|c| c.admitted).sum::<u64>()
            };
            wait_until(count, || role.usage().counters.instances_live).await?;
            wait_until(count, &calls).await?;
            (
                before,
                Box::new(move || role.usage().counters.instances_live),
            )
        }
    };
    let seconds_to_start = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_bytes("self")?;
    let alive = live();
    anyhow::ensure!(alive >= u64::from(count), "only {alive} of {count} alive");
    println!("{before} {after} {seconds_to_start}");
    // Skip tearing thousands of guests down.
    std::process::exit(0);
}

async fn wait_until(count: u32, value: impl Fn() -> u64) -> anyhow::Result<()> {
    let give_up = Instant::now() + Duration::from_secs(300);
    while value() < u64::from(count) {
        anyhow::ensure!(
            Instant::now() < give_up,
            "{} of {count} after 300 s",
            value()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn child(me: &PathBuf, kind: Kind, count: u32) -> anyhow::Result<Sample> {
    let kind_arg = match kind {
        Kind::Web => "web",
        Kind::Worker => "worker",
    };
    let output = Command::new(me)
        .args([
            "density-one",
            "--kind",
            kind_arg,
            "--count",
            &count.to_string(),
        ])
        .output()
        .context("cannot run the density child")?;
    anyhow::ensure!(
        output.status.success(),
        "density-one {kind_arg} {count} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let numbers: Vec<f64> = text
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    match numbers[..] {
        [before, after, seconds_to_start] => Ok(Sample {
            before,
            after,
            seconds_to_start,
        }),
        _ => anyhow::bail!("unexpected density output: {text}"),
    }
}

/// Runs the figure; returns its Markdown, writes `density.svg` into
/// `charts`, and returns the RSS at the largest count (bytes).
pub fn run(
    me: &PathBuf,
    counts: &[u32],
    repeats: usize,
    charts: &Path,
) -> anyhow::Result<(String, f64)> {
    let kinds = [Kind::Web, Kind::Worker];
    let mut samples = vec![vec![Vec::<Sample>::new(); counts.len()]; kinds.len()];
    for _ in 0..repeats {
        for (k, &kind) in kinds.iter().enumerate() {
            for (c, &count) in counts.iter().enumerate() {
                let sample = child(me, kind, count)?;
                eprintln!(
                    "density {kind:?} {count}: {:.0} MiB -> {:.0} MiB",
                    sample.before / 1048576.0,
                    sample.after / 1048576.0
                );
                samples[k][c].push(sample);
            }
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Each row starts that many guests in a fresh process (`weft-bench density-one`) with Weft's runtime at its defaults but for the instance pool, sized to the count (`max_instances`), and the web role's `max-in-flight` set to the count. *Before* is the process's RSS with the role loaded, *after* with every guest alive and 2 s settled; per guest is (after − before) ÷ count. Median (min–max) of {repeats} runs.\n"
    );
    let _ = writeln!(
        out,
        "![host RSS by live guests](benchmarks/density.svg)\n\n| guests | kind | seconds to start them all | RSS before, MiB | RSS after, MiB | KiB per guest |\n|---:|---|---:|---:|---:|---:|"
    );
    let mut largest_rss: f64 = 0.0;
    for (k, kind) in kinds.iter().enumerate() {
        for (c, count) in counts.iter().enumerate() {
            let runs = &samples[k][c];
            let pick = |f: &dyn Fn(&Sample) -> f64| runs.iter().map(f).collect::<Vec<_>>();
            let after = pick(&|s| s.after / 1048576.0);
            if Some(count) == counts.iter().max() {
                largest_rss = largest_rss.max(min_median_max(&after).1 * 1048576.0);
            }
            let _ = writeln!(
                out,
                "| {count} | {} | {} | {} | {} | {} |",
                match kind {
                    Kind::Web => "web",
                    Kind::Worker => "worker",
                },
                spread(&pick(&|s| s.seconds_to_start), 1),
                spread(&pick(&|s| s.before / 1048576.0), 0),
                spread(&after, 0),
                spread(
                    &pick(&|s| (s.after - s.before) / 1024.0 / f64::from(*count)),
                    0
                ),
            );
        }
    }
    let chart = BarChart {
        title: "Host RSS with that many live guests (MiB)".into(),
        y_label: "RSS, MiB".into(),
        groups: counts.iter().map(|c| format!("{c} guests")).collect(),
        series: kinds
            .iter()
            .enumerate()
            .map(|(k, kind)| Series {
                name: match kind {
                    Kind::Web => "web instances (each in a request)".into(),
                    Kind::Worker => "worker instances (each polling)".into(),
                },
                values: samples[k]
                    .iter()
                    .map(|runs| {
                        min_median_max(
                            &runs.iter().map(|s| s.after / 1048576.0).collect::<Vec<_>>(),
                        )
                    })
                    .collect(),
            })
            .collect(),
    };
    std::fs::write(charts.join("density.svg"), chart.render())?;
    Ok((out, largest_rss))
}
