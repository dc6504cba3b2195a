//! `weft-bench`: Weft's benchmarks, run on demand (never in CI). Each
//! figure is measured beside its baseline in the same run, repeated and
//! interleaved, and printed as Markdown for `docs/benchmarks.md`.
//!
//! ```sh
//! cargo run --release -p weft-bench -- cpu     # fair CPU: fairness, latency, overhead
//! ```

mod cpu;
mod stats;

use clap::{Parser, Subcommand};

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
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let Bench::Cpu {
        window,
        repeats,
        only,
        threads,
        fuel_yield,
    } = cli.bench;
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let threads = threads.unwrap_or(cpus + 1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    let interval = fuel_yield.or(weft_runtime::EngineConfig::default().fuel_yield_interval);
    let report = runtime.block_on(cpu::run(window, repeats, &only, interval))?;
    println!("Async executor threads: {threads}.\n");
    println!("{}", stats::machine());
    println!("{report}");
    Ok(())
}
