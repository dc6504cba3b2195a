//! `weft`: the host process, and the client of its admin API.
//!
//! - `weft serve COMPONENT` serves one wasi:http component.
//! - `weft up DIR` starts a host and deploys the service in DIR into it.
//! - `weft host` runs a long-lived host that redeploys the services in its
//!   state folder and takes new ones through its admin API.
//! - `weft deploy`, `upgrade`, `status`, `scale`, `settings`, `logs` and
//!   `remove` drive a host through that API ([`client`]); with `--fabric
//!   URL`, each drives a fabric of hosts instead, as do `weft endpoints`
//!   and `weft fabric` ([`fabric`]).
//! - `weft queue` and `weft bucket` send to, peek at, purge and redrive a
//!   running service's queues, and list, read and delete its buckets' keys,
//!   through the admin API ([`client`]).
//! - `weft check DIR` and `weft queues DIR` work offline.
//! - `weft new TEMPLATE NAME` makes a service folder from a template
//!   embedded in the binary ([`new`]).
//!
//! The host itself is the `weft-host` library; this binary parses the
//! command line ([`args`], whose shared groups each command flattens),
//! starts logging and the async runtime, and hands each command to
//! [`local`] (the commands that run a host, through
//! [`weft_host::launch`]) or [`client`] (the commands that drive one).

mod args;
mod client;
mod fabric;
mod local;
mod new;

use args::{Cli, Command, LogFormat};
use clap::Parser as _;
use fabric::SourceChange;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use weft_host::guest_output::{GUEST_LOG_TARGET, GuestOutput, GuestOutputLayer};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let logs = Arc::new(GuestOutput::default());
    // A command that drives a fabric is a short-lived client: the NATS
    // client's connection events are noise there.
    let default_filter = if cli.command.fabric_url().is_some() {
        "info,async_nats=warn"
    } else {
        "info"
    };
    init_logging(cli.log_format, default_filter, logs.clone());
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

/// Host logs go to stderr, filtered by `WEFT_LOG` (default
/// `default_filter`); guest output is also kept, whatever the filter, for
/// `weft logs`.
fn init_logging(format: LogFormat, default_filter: &str, logs: Arc<GuestOutput>) {
    use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::{Layer as _, fmt};
    let filter =
        EnvFilter::try_from_env("WEFT_LOG").unwrap_or_else(|_| EnvFilter::new(default_filter));
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
    let fabric = command.fabric_url().map(str::to_owned);
    match (command, fabric.as_deref()) {
        (Command::Serve(args), _) => local::serve(args, logs).await,
        (Command::Up(args), _) => local::up(args, logs).await,
        (Command::Host(args), _) => local::host(args, logs).await,
        (Command::Check(args), _) => local::check(args).await,
        (Command::Queues(args), _) => local::queues(args).await,
        (Command::Queue(args), _) => client::queue(args).await,
        (Command::Bucket(args), _) => client::bucket(args).await,
        (Command::Deploy(args), Some(url)) => {
            fabric::deploy_or_upgrade(url, args, SourceChange::Deploy).await
        }
        (Command::Deploy(args), None) => client::deploy(args).await,
        (Command::Upgrade(args), Some(url)) => {
            fabric::deploy_or_upgrade(url, args, SourceChange::Upgrade).await
        }
        (Command::Upgrade(args), None) => client::upgrade(args).await,
        (Command::Status(args), Some(url)) => fabric::status(url, args).await,
        (Command::Status(args), None) => client::status(args).await,
        (Command::Scale(args), Some(url)) => fabric::scale(url, args).await,
        (Command::Scale(args), None) => client::scale(args).await,
        (Command::Settings(args), Some(url)) => fabric::settings(url, args).await,
        (Command::Settings(args), None) => client::settings(args).await,
        (Command::Logs(args), Some(url)) => fabric::logs::logs(url, args).await,
        (Command::Logs(args), None) => client::logs(args).await,
        (Command::Remove(args), Some(url)) => fabric::remove(url, args).await,
        (Command::Remove(args), None) => client::remove(args).await,
        (Command::Endpoints(args), _) => fabric::endpoints(args).await,
        (Command::Fabric(args), _) => fabric::command(args.command).await,
        (Command::New(args), _) => new::run(args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--fabric` alone picks the fabric's client; a host's fabric flags
    /// mean nothing without it, and it needs the address and trust file.
    #[test]
    fn the_fabric_flag_decides_who_is_driven() {
        let url = "nats://192.0.2.1:4222";
        let parsed = |args: &[&str]| Cli::try_parse_from(args).map(|cli| cli.command);
        let command = parsed(&["weft", "scale", "shop/worker", "3", "--fabric", url]).unwrap();
        assert_eq!(command.fabric_url(), Some(url));
        let command = parsed(&["weft", "scale", "shop/worker", "3"]).unwrap();
        assert_eq!(command.fabric_url(), None);
        let command = parsed(&["weft", "fabric", "hosts", "--fabric", url]).unwrap();
        assert_eq!(command.fabric_url(), Some(url));
        let command = parsed(&["weft", "fabric", "keygen", "--out", "keys"]).unwrap();
        assert_eq!(command.fabric_url(), None);
        for flag in ["--fabric-down-after", "--fabric-connect-timeout"] {
            let refused = parsed(&["weft", "host", flag, "5"]).err().unwrap();
            assert!(
                refused.to_string().contains("--fabric <URL>"),
                "{flag}: {refused}"
            );
        }
        let refused = parsed(&["weft", "host", "--fabric", url]).err().unwrap();
        assert!(refused.to_string().contains("--advertise"), "{refused}");
    }

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
