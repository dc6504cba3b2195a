//! `weft-bench`: Weft's benchmarks, run on demand (never in CI). Each
//! figure is measured beside its baseline in the same run, repeated and
//! interleaved, and printed as Markdown for `docs/benchmarks.md`.
//! `benches/run.sh` installs the baselines (wrk, `wasmtime-cli`), builds
//! once, runs every figure and writes the page; each figure also runs alone:
//!
//! ```sh
//! cargo run --release -p weft-bench -- cpu          # fair CPU: fairness, latency, overhead
//! cargo run --release -p weft-bench -- compute      # CPU-bound: native, wasm, metered
//! cargo run --release -p weft-bench -- instantiate  # starting guests in process
//! cargo run --release -p weft-bench -- density      # live guests and host RSS
//! cargo run --release -p weft-bench -- http --weft target/release/weft --wasmtime PATH
//! cargo run --release -p weft-bench -- start --weft target/release/weft --wasmtime PATH
//! cargo run --release -p weft-bench -- log-flood --weft target/release/weft
//! cargo run --release -p weft-bench -- host-calls   # one core's host calls, by kind
//! benches/polyglot.sh   # Python and JavaScript web roles beside wasmtime serve
//! ```

mod bare;
mod compute;
mod cpu;
mod density;
mod hostcalls;
mod http;
mod instantiate;
mod logflood;
mod native;
mod polyglot;
mod process;
mod report;
mod start;
mod stats;
mod svg;

use clap::{Parser, Subcommand};
use report::Aims;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "weft-bench", about = "Weft's benchmarks, run on demand")]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Fair CPU: Jain's fairness index for 2, 8 and 64 equal hogs, a light
    /// tenant's latency beside hogs, the scheduler's overhead, and the cost
    /// of fuel yields at several intervals.
    Cpu {
        /// Seconds each measurement window lasts.
        #[arg(long, default_value_t = 4.0)]
        window: f64,
        /// Times each configuration runs (interleaved with the others).
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Run only these parts (fairness, latency, yields); default all.
        #[arg(long, value_delimiter = ',')]
        only: Vec<cpu::Part>,
        /// Async executor threads [default: one more than the CPUs, as `weft`].
        #[arg(long)]
        threads: Option<usize>,
        /// The fuel yield interval for the fairness and latency parts
        /// [default: the engine's].
        #[arg(long)]
        fuel_yield: Option<u64>,
        /// Append the aims' lines to this file.
        #[arg(long)]
        aims: Option<PathBuf>,
    },
    /// CPU-bound work: native, wasm unmetered, wasm with fuel, and Weft.
    Compute {
        /// Runs of each (interleaved).
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        /// Append the aim's line to this file.
        #[arg(long)]
        aims: Option<PathBuf>,
    },
    /// Starting guests in process: instantiation, and whole requests.
    Instantiate {
        /// Rounds of each operation (interleaved).
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        /// Append the aim's line to this file.
        #[arg(long)]
        aims: Option<PathBuf>,
    },
    /// Live guests at once and host RSS per guest (a child process per count).
    Density {
        /// Guest counts.
        #[arg(long, value_delimiter = ',', default_value = "1000,5000,10000")]
        counts: Vec<u32>,
        /// Runs of each count and kind.
        #[arg(long, default_value_t = 2)]
        repeats: usize,
        /// Where the chart is written.
        #[arg(long, default_value = "docs/benchmarks")]
        charts: PathBuf,
        /// Append the aim's line to this file.
        #[arg(long)]
        aims: Option<PathBuf>,
    },
    /// One density measurement (run by `density` in a child process).
    DensityOne {
        #[arg(long)]
        kind: density::Kind,
        #[arg(long)]
        count: u32,
    },
    /// HTTP under wrk: weft up, wasmtime serve and native hyper.
    Http {
        /// The `weft` binary (a release build).
        #[arg(long)]
        weft: PathBuf,
        /// A `wasmtime` binary to compare with; repeat for several, the
        /// newest first (the aims' ratios are taken to it).
        #[arg(long, required = true)]
        wasmtime: Vec<PathBuf>,
        /// A scratch folder.
        #[arg(long, default_value = "target/bench-http")]
        work: PathBuf,
        /// Where the charts are written.
        #[arg(long, default_value = "docs/benchmarks")]
        charts: PathBuf,
        /// Seconds of each wrk run.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Rounds.
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Connection counts.
        #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
        connections: Vec<u32>,
        /// Requests per instance for the reusing servers.
        #[arg(long, default_value_t = 1000)]
        reuse: u32,
        /// Append the aims' lines to this file.
        #[arg(long)]
        aims: Option<PathBuf>,
    },
    /// Process start to first response, cold and warm cache, beside native.
    Start {
        /// The `weft` binary (a release build).
        #[arg(long)]
        weft: PathBuf,
        /// A `wasmtime` binary to compare with; repeat for several.
        #[arg(long, required = true)]
        wasmtime: Vec<PathBuf>,
        /// A scratch folder.
        #[arg(long, default_value = "target/bench-start")]
        work: PathBuf,
        /// Runs of each configuration (interleaved).
        #[arg(long, default_value_t = 10)]
        repeats: usize,
        /// Append the aim's line to this file.
        #[arg(long)]
        aims: Option<PathBuf>,
    },
    /// Host CPU while a guest floods its output with newlines, beside the
    /// same guest writing nothing.
    LogFlood {
        /// The `weft` binary.
        #[arg(long)]
        weft: PathBuf,
        /// A scratch folder.
        #[arg(long, default_value = "target/bench-log-flood")]
        work: PathBuf,
        /// Newlines each flooding request writes.
        #[arg(long, default_value_t = 100_000)]
        lines: u64,
        /// Seconds each kind's requests run per round.
        #[arg(long, default_value_t = 3.0)]
        window: f64,
        /// Rounds (interleaved).
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Append the aim's line to this file.
        #[arg(long)]
        aims: Option<PathBuf>,
    },
    /// Python and JavaScript hello-world web roles under `weft serve` beside
    /// `wasmtime serve`: component size, process start to first response
    /// (empty and warm compile cache), and wrk with fresh and reused
    /// instances. `benches/polyglot.sh` builds the components and runs it.
    Polyglot {
        /// The `weft` binary (a release build).
        #[arg(long)]
        weft: PathBuf,
        /// A `wasmtime` binary to compare with; repeat for several (Weft's
        /// ratio is given to each).
        #[arg(long, required = true)]
        wasmtime: Vec<PathBuf>,
        /// A component as `LABEL=COMPONENT`; repeat for several.
        #[arg(long = "guest", required = true)]
        guests: Vec<polyglot::Guest>,
        /// A scratch folder.
        #[arg(long, default_value = "target/bench-polyglot")]
        work: PathBuf,
        /// Starts with an empty compile cache, per server and component.
        #[arg(long, default_value_t = 3)]
        compile_repeats: usize,
        /// Starts with a warm compile cache, per server and component.
        #[arg(long, default_value_t = 10)]
        start_repeats: usize,
        /// Seconds of each wrk run.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Rounds of wrk runs.
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Connection counts.
        #[arg(long, value_delimiter = ',', default_value = "1,16")]
        connections: Vec<u32>,
        /// Requests per instance for the reusing servers.
        #[arg(long, default_value_t = 1000)]
        reuse: u32,
        /// The port the servers listen on, one at a time [default: a free one
        /// each start].
        #[arg(long)]
        port: Option<u16>,
        /// The port of `weft serve`'s admin listener [default: any free one].
        #[arg(long)]
        admin_port: Option<u16>,
        /// Append the aims' lines to this file.
        #[arg(long)]
        aims: Option<PathBuf>,
    },
    /// What one core does in queue and key-value host calls, by kind, on the
    /// embedded and memory backends: what the default rate limits are
    /// sized from.
    HostCalls {
        /// Where the embedded stores live while measured.
        #[arg(long, default_value = "target/bench-host-calls")]
        work: PathBuf,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// Calls in flight at once.
        #[arg(long, default_value_t = 16)]
        callers: usize,
        #[arg(long, default_value_t = 3)]
        repeats: usize,
    },
    /// The native baseline server: `GET /` and `POST /order`, natively.
    NativeServer {
        #[arg(long)]
        addr: SocketAddr,
    },
    /// Merges the Markdown reports of repeated runs of one benchmark (the
    /// queue benchmark's): each number of a table row becomes median (min–max).
    Merge {
        /// The reports, one per run.
        files: Vec<PathBuf>,
    },
    /// Appends one aim's line, for a figure a script measured (the queues,
    /// the pipeline).
    Aim {
        /// The file the aims' lines go to.
        #[arg(long)]
        aims: PathBuf,
        /// What the aim says.
        #[arg(long)]
        aim: String,
        /// What was measured.
        #[arg(long)]
        measured: String,
        /// Whether it was met (`true` or `false`).
        #[arg(long, action = clap::ArgAction::Set)]
        met: bool,
    },
    /// Writes `docs/benchmarks.md` from a template and the figures' results.
    Report {
        /// The page's template: prose, with `@include NAME.md` lines and one
        /// `@aims` line.
        #[arg(long, default_value = "benches/report.md")]
        template: PathBuf,
        /// The folder the figures were written to (and `aims.tsv`).
        #[arg(long)]
        results: PathBuf,
        /// The page to write.
        #[arg(long, default_value = "docs/benchmarks.md")]
        out: PathBuf,
    },
}

fn executor(threads: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.unwrap_or(cpus + 1))
        .enable_all()
        .build()?)
}

fn me() -> anyhow::Result<PathBuf> {
    Ok(std::env::current_exe()?)
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().bench {
        Bench::Cpu {
            window,
            repeats,
            only,
            threads,
            fuel_yield,
            aims,
        } => {
            let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
            let threads = threads.unwrap_or(cpus + 1);
            let interval = fuel_yield.or(weft_sandbox::EngineConfig::default().fuel_yield_interval);
            let (report, light) =
                executor(Some(threads))?.block_on(cpu::run(window, repeats, &only, interval))?;
            println!("Async executor threads: {threads}.\n");
            println!("{}", stats::machine());
            println!("{report}");
            if let Some(ratios) = light {
                Aims::open(aims).add(
                    "A light tenant's p99 beside 8 and 64 hogs ≤ 3× its p99 alone (fairness on)",
                    ratios
                        .iter()
                        .map(|(hogs, ratio)| format!("{ratio:.2}× beside {hogs}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    ratios.iter().all(|(_, ratio)| *ratio <= 3.0),
                )?;
            }
        }
        Bench::HostCalls {
            work,
            seconds,
            callers,
            repeats,
        } => {
            let setup = hostcalls::Setup {
                work,
                seconds,
                callers,
                repeats,
            };
            println!("{}", hostcalls::run(&setup)?);
        }
        Bench::Compute { repeats, aims } => {
            let (report, ratio) = executor(None)?.block_on(compute::run(repeats))?;
            println!("{report}");
            Aims::open(aims).add(
                "Metered (fuel, fair yields, no epoch checks) ≤ 1.10× unmetered wasm on CPU-bound work",
                format!("{ratio:.2}×"),
                ratio <= 1.10,
            )?;
        }
        Bench::Instantiate { repeats, aims } => {
            let (report, micros) = executor(None)?.block_on(instantiate::run(repeats))?;
            println!("{report}");
            Aims::open(aims).add(
                "Instantiation ≤ 10 µs",
                format!("{micros:.1} µs"),
                micros <= 10.0,
            )?;
        }
        Bench::Density {
            counts,
            repeats,
            charts,
            aims,
        } => {
            std::fs::create_dir_all(&charts)?;
            let (report, rss) = density::run(&me()?, &counts, repeats, &charts)?;
            println!("{report}");
            let most = counts.iter().max().copied().unwrap_or(0);
            let gib = rss / (1u64 << 30) as f64;
            Aims::open(aims).add(
                "≥ 10,000 live guests within 4 GiB of host RSS",
                format!("{most} live guests in {gib:.2} GiB (the larger of web and worker)"),
                most >= 10_000 && gib <= 4.0,
            )?;
        }
        Bench::DensityOne { kind, count } => {
            executor(None)?.block_on(density::one(kind, count))?;
        }
        Bench::Http {
            weft,
            wasmtime,
            work,
            charts,
            seconds,
            repeats,
            connections,
            reuse,
            aims,
        } => {
            std::fs::create_dir_all(&charts)?;
            let setup = http::Setup {
                weft,
                wasmtime,
                me: me()?,
                work,
                seconds,
                repeats,
                connections,
                reuse,
            };
            let (report, ratios) = http::run(&setup, &charts)?;
            println!("{report}");
            let list = |pick: fn(&(u32, f64, f64)) -> f64| {
                ratios
                    .iter()
                    .map(|r| format!("{:.2}× at {}", pick(r), r.0))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let mut aims = Aims::open(aims);
            aims.add(
                "Fresh instance per request ≥ 2× the newest `wasmtime serve` req/s (hello world, connections as listed)",
                list(|r| r.1),
                ratios.iter().all(|r| r.1 >= 2.0),
            )?;
            aims.add(
                &format!("With reuse ({reuse} requests per instance) ≥ 0.5× native hyper"),
                list(|r| r.2),
                ratios.iter().all(|r| r.2 >= 0.5),
            )?;
        }
        Bench::Start {
            weft,
            wasmtime,
            work,
            repeats,
            aims,
        } => {
            let setup = start::Setup {
                weft,
                wasmtime,
                me: me()?,
                work,
                repeats,
            };
            let (report, ratio) = start::run(&setup)?;
            println!("{report}");
            Aims::open(aims).add(
                "Process start to first response ≤ 1.15× the native server, warm cache",
                format!("{ratio:.2}×"),
                ratio <= 1.15,
            )?;
        }
        Bench::LogFlood {
            weft,
            work,
            lines,
            window,
            repeats,
            aims,
        } => {
            let setup = logflood::Setup {
                weft,
                work,
                lines,
                window: std::time::Duration::from_secs_f64(window),
                repeats,
            };
            let (report, ratio) = logflood::run(&setup)?;
            println!("{report}");
            Aims::open(aims).add(
                "A request flooding 100,000 newlines costs the host ≤ 10× the CPU of one writing nothing",
                format!("{ratio:.2}×"),
                ratio <= 10.0,
            )?;
        }
        Bench::Polyglot {
            weft,
            wasmtime,
            guests,
            work,
            compile_repeats,
            start_repeats,
            seconds,
            repeats,
            connections,
            reuse,
            port,
            admin_port,
            aims,
        } => {
            let setup = polyglot::Setup {
                weft,
                wasmtime,
                guests,
                work,
                compile_repeats,
                start_repeats,
                seconds,
                repeats,
                connections,
                reuse,
                port,
                admin_port,
            };
            let (report, lines) = polyglot::run(&setup)?;
            println!("{report}");
            let mut aims = Aims::open(aims);
            for (aim, measured, met) in lines {
                aims.add(&aim, measured, met)?;
            }
        }
        Bench::NativeServer { addr } => native::serve(addr)?,
        Bench::Aim {
            aims,
            aim,
            measured,
            met,
        } => Aims::open(Some(aims)).add(&aim, measured, met)?,
        Bench::Merge { files } => {
            let runs = files
                .iter()
                .map(std::fs::read_to_string)
                .collect::<Result<Vec<_>, _>>()?;
            print!("{}", report::merge(&runs));
        }
        Bench::Report {
            template,
            results,
            out,
        } => report::write(&template, &results, &out)?,
    }
    Ok(())
}
