//! `weft`: the host process, and the client of its admin API.
//!
//! - `weft serve COMPONENT` serves one wasi:http component.
//! - `weft up DIR` starts a host and deploys the service in DIR into it.
//! - `weft host` runs a long-lived host that redeploys the services in its
//!   state folder and takes new ones through its admin API.
//! - `weft deploy`, `upgrade`, `status`, `scale`, `settings`, `logs` and
//!   `remove` drive a host through that API ([`client`]).
//! - `weft check DIR` and `weft queues DIR` work offline.
//!
//! The host itself is the `weft-host` library; this binary parses the
//! command line ([`args`], whose shared groups each command flattens),
//! starts logging and the async runtime, and hands each command to
//! [`local`] (the commands that run a host, through
//! [`weft_host::launch`]) or [`client`] (the commands that drive one).

mod args;
mod client;
mod local;

use args::{Cli, Command, LogFormat};
use clap::Parser as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use weft_host::guest_output::{GUEST_LOG_TARGET, GuestOutput, GuestOutputLayer};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let logs = Arc::new(GuestOutput::default());
    init_logging(cli.log_format, logs.clone());
    // One executor thread more than the CPU scheduler has slots: however
    // many guests are CPU-bound, a thread is free for I/O and short
    // requests, and the OS scheduler preempts a hog for it (see
    // docs/benchmarks.md, "A light tenant beside hogs").
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cpus + 1)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("weft: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(run(cli.command, logs));
    // Tasks still running after the graceful shutdown (a guest past the
    // grace period) are abandoned rather than waited for.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: each context joined with ": ".
            eprintln!("weft: error: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

/// Host logs go to stderr, filtered by `WEFT_LOG` (default `info`); guest
/// output is also kept, whatever the filter, for `weft logs`.
fn init_logging(format: LogFormat, logs: Arc<GuestOutput>) {
    use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::{Layer as _, fmt};
    let filter = EnvFilter::try_from_env("WEFT_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let printed = match format {
        LogFormat::Text => fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    let kept = GuestOutputLayer(logs)
        .with_filter(Targets::new().with_target(GUEST_LOG_TARGET, LevelFilter::INFO));
    tracing_subscriber::registry()
        .with(printed)
        .with(kept)
        .init();
}

async fn run(command: Command, logs: Arc<GuestOutput>) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => local::serve(args, logs).await,
        Command::Up(args) => local::up(args, logs).await,
        Command::Host(args) => local::host(args, logs).await,
        Command::Check(args) => local::check(args).await,
        Command::Queues(args) => local::queues(args).await,
        Command::Deploy(args) => client::deploy(args).await,
        Command::Upgrade(args) => client::upgrade(args).await,
        Command::Status(args) => client::status(args).await,
        Command::Scale(args) => client::scale(args).await,
        Command::Settings(args) => client::settings(args).await,
        Command::Logs(args) => client::logs(args).await,
        Command::Remove(args) => client::remove(args).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Extreme numbers on the command line are refused by name, never
    /// carried into a sum that overflows.
    #[test]
    fn extreme_durations_and_sizes_on_the_command_line_are_refused_by_name() {
        let extremes = [
            "0",
            "1",
            "86400",
            "86401",
            "4294967295",
            "4294967296",
            "18446744073709551615",
            "18446744073709551616",
            "-1",
            "1e308",
        ];
        for (flag, command) in [
            ("--grace-secs", "host"),
            ("--grace-secs", "up"),
            ("--max-instances", "host"),
            ("--max-component-mib", "host"),
        ] {
            for value in extremes {
                let given = format!("{flag}={value}");
                match Cli::try_parse_from(["weft", command, given.as_str()]) {
                    Ok(cli) => {
                        let grace = match cli.command {
                            Command::Host(args) => args.host.grace_secs,
                            Command::Up(args) => args.host.grace_secs,
                            _ => unreachable!("parsed as {command}"),
                        };
                        let _ = std::time::Instant::now() + Duration::from_secs(grace);
                    }
                    Err(e) => {
                        let message = e.to_string();
                        let first = message.lines().next().unwrap_or_default();
                        assert!(first.contains(flag), "{flag} {value}: {message}");
                    }
                }
            }
        }
        assert!(Cli::try_parse_from(["weft", "host", "--grace-secs", "86401"]).is_err());
        assert!(Cli::try_parse_from(["weft", "host", "--grace-secs", "86400"]).is_ok());
    }
}
