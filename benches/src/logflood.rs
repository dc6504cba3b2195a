//! What a guest flooding its output costs the host: `weft up` runs the
//! probe as a web role in a child process; each round sends, one after
//! another for a fixed time, requests that write `lines` bare newlines to
//! the guest's stdout (`GET /lines/N/`), then for as long requests of the
//! same route writing nothing (`GET /lines/0/`). The figures are the host
//! process's CPU time per request (user + system, every thread, from
//! `/proc/PID/stat`), the guest's own work included, and how much the
//! host's log grew: the rate limit on guest output must keep what the host
//! spends on a flood close to what the guest itself spends writing it.

use crate::process::{Server, cpu_seconds, free_port, request};
use crate::stats::{machine, spread};
use anyhow::{Context, ensure};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use weft_test_artifacts::PROBE;

/// What to run.
pub struct Setup {
    /// The `weft` binary.
    pub weft: PathBuf,
    /// A scratch folder.
    pub work: PathBuf,
    /// Newlines each flooding request writes.
    pub lines: u64,
    /// How long each kind's requests run per round.
    pub window: Duration,
    /// Rounds (flood and quiet interleaved).
    pub repeats: usize,
}

/// One kind's measurements over the rounds.
#[derive(Default)]
struct Kind {
    /// Host CPU milliseconds per request, one value a round.
    cpu_ms: Vec<f64>,
    /// Wall milliseconds per request, one value a round.
    wall_ms: Vec<f64>,
    /// Host log bytes written per request, one value a round.
    log_bytes: Vec<f64>,
}

/// Runs the benchmark; the Markdown report and the median CPU ratio
/// (flooding over quiet, per request).
pub fn run(setup: &Setup) -> anyhow::Result<(String, f64)> {
    std::fs::create_dir_all(&setup.work)?;
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let manifest = setup.work.join("weft.toml");
    std::fs::write(
        &manifest,
        format!(
            "[service]\nname = \"flood\"\n\n[roles.web]\nkind = \"web\"\ncomponent = {PROBE:?}\nlisten = \"{addr}\"\n"
        ),
    )?;
    let log = setup.work.join("weft.log");
    let mut command = Command::new(&setup.weft);
    command
        // Guest lines are `info` events: the host's default level.
        .env("WEFT_LOG", "info")
        .args(["up", "--no-build", "--admin-addr", "127.0.0.1:0"])
        .arg("--state-dir")
        .arg(setup.work.join("state"))
        .arg("--cache-dir")
        .arg(setup.work.join("weft-cache"))
        .arg(&manifest);
    let server = Server::start(command, addr, &log, Duration::from_secs(120))?;
    let pid = server.pid();
    let flood_path = format!("/lines/{}/", setup.lines);
    let (mut flood, mut quiet) = (Kind::default(), Kind::default());
    // One of each first, unmeasured: the instance pool and caches warm up.
    for path in [flood_path.as_str(), "/lines/0/"] {
        ensure!(request(addr, "GET", path, "")? == 200, "GET {path} failed");
    }
    for _ in 0..setup.repeats {
        for (path, kind) in [(flood_path.as_str(), &mut flood), ("/lines/0/", &mut quiet)] {
            let log_before = std::fs::metadata(&log)?.len();
            let cpu_before = cpu_seconds(pid)?;
            let started = Instant::now();
            let mut requests = 0u32;
            while started.elapsed() < setup.window || requests == 0 {
                let status = request(addr, "GET", path, "")?;
                ensure!(status == 200, "GET {path} answered {status}");
                requests += 1;
            }
            let wall = started.elapsed().as_secs_f64();
            // The log is written by the host's own threads: let the last
            // lines land before the CPU and the log are read.
            std::thread::sleep(Duration::from_millis(50));
            let cpu = cpu_seconds(pid)? - cpu_before;
            let log_after = std::fs::metadata(&log)?.len();
            let n = f64::from(requests);
            kind.cpu_ms.push(cpu * 1000.0 / n);
            kind.wall_ms.push(wall * 1000.0 / n);
            #[allow(clippy::cast_precision_loss)]
            kind.log_bytes
                .push(log_after.saturating_sub(log_before) as f64 / n);
        }
    }
    drop(server);
    let dropped = std::fs::read_to_string(&log)
        .context("cannot read the host's log")?
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("dropped=")?.parse::<u64>().ok())
        })
        .sum::<u64>();

    let ratios: Vec<f64> = flood
        .cpu_ms
        .iter()
        .zip(&quiet.cpu_ms)
        .map(|(f, q)| f / q.max(f64::EPSILON))
        .collect();
    let ratio = crate::stats::min_median_max(&ratios).1;
    let mut out = String::new();
    writeln!(out, "## Guest output flood: host CPU\n")?;
    writeln!(out, "{}\n", machine())?;
    writeln!(
        out,
        "`{}` up, the probe as one web role with the default log limits; {} rounds of {:.1} s of requests of each kind, one at a time, interleaved; median (min–max) per request.\n",
        setup.weft.display(),
        setup.repeats,
        setup.window.as_secs_f64()
    )?;
    writeln!(
        out,
        "| request | host CPU ms | wall ms | host log bytes |\n|---|---|---|---|"
    )?;
    for (name, kind) in [
        (
            format!("`GET /lines/{}/` (floods newlines)", setup.lines),
            &flood,
        ),
        ("`GET /lines/0/` (writes nothing)".to_owned(), &quiet),
    ] {
        writeln!(
            out,
            "| {name} | {} | {} | {} |",
            spread(&kind.cpu_ms, 2),
            spread(&kind.wall_ms, 2),
            spread(&kind.log_bytes, 0)
        )?;
    }
    writeln!(
        out,
        "\nHost CPU, flooding over quiet: {} (per request). Lines reported dropped in all: {dropped}.",
        spread(&ratios, 2)
    )?;
    Ok((out, ratio))
}
