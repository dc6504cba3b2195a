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
//! command line, starts logging and the async runtime, and hands each
//! command to [`local`] (the commands that run a host) or [`client`] (the
//! commands that drive one).

mod client;
mod local;

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use weft_host::logbook::{self, LogBook, LogLayer};
use weft_sandbox::SandboxLimits;

#[derive(Parser)]
#[command(
    name = "weft",
    version,
    about = "Runs Wasm web and worker roles in isolated, metered sandboxes"
)]
struct Cli {
    /// How host logs (and captured guest output) are written to stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve one wasi:http component over HTTP, a fresh sandbox per request.
    Serve(ServeArgs),
    /// Build a service from its manifest and run it on a host of its own
    /// (the admin API serves it too) until SIGINT or SIGTERM.
    Up(UpArgs),
    /// Run a long-lived host: it redeploys the services its state folder
    /// records and takes deployments through its admin API.
    Host(HostModeArgs),
    /// Check a manifest (and overlay) and compile its components, without running anything.
    Check(UpArgs),
    /// Show the length of each queue the manifest grants (and of its poison
    /// queue), and with --peek N its next messages. The embedded store can
    /// be read only while the service is stopped; NATS at any time.
    Queues(QueuesArgs),
    /// Build a service, upload its components and deploy it to a host.
    Deploy(DeployArgs),
    /// Build a service, upload its components and upgrade it on a host, one
    /// upgrade domain at a time (rolled back if a domain is not healthy).
    Upgrade(DeployArgs),
    /// Show a host's services, roles and instances.
    Status(StatusArgs),
    /// Set a worker role's instance count.
    Scale(ScaleArgs),
    /// Change settings a role declares (a rolling change).
    Settings(SettingsArgs),
    /// Show a role's recent guest output; -f follows it.
    Logs(LogsArgs),
    /// Stop and remove a service (its data folder stays).
    Remove(RemoveArgs),
}

#[derive(Args)]
struct QueuesArgs {
    /// The manifest, or the folder holding its weft.toml.
    #[arg(default_value = ".")]
    manifest: PathBuf,
    /// The service's state folder [default: as for `weft up`].
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Also show up to this many (at most 32) of each queue's next visible
    /// messages, without receiving them.
    #[arg(long, default_value_t = 0)]
    peek: u32,
}

#[derive(Args)]
struct ServeArgs {
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// The component to serve.
    component: PathBuf,
    /// Memory cap per request, in MiB.
    #[arg(long, default_value_t = SandboxLimits::default().memory_mib)]
    memory_mib: u64,
    /// Fuel budget per request.
    #[arg(long, default_value_t = SandboxLimits::default().fuel)]
    fuel: u64,
    /// Wall-clock deadline per request, in milliseconds.
    #[arg(long, default_value_t = SandboxLimits::default().deadline_ms)]
    deadline_ms: u64,
    /// Largest request body, in KiB.
    #[arg(long, default_value_t = SandboxLimits::default().max_request_body_kib)]
    max_request_body_kib: u64,
    /// Requests running at once.
    #[arg(long, default_value_t = SandboxLimits::default().max_in_flight)]
    max_in_flight: u32,
    /// Requests that may wait for a free slot before getting a 503.
    #[arg(long, default_value_t = SandboxLimits::default().max_queued)]
    max_queued: u32,
    /// Requests one instance may serve in sequence; 1 is a fresh instance
    /// per request. Above 1, what one request leaves in the guest's memory
    /// is visible to the next.
    #[arg(long, default_value_t = SandboxLimits::default().requests_per_instance)]
    requests_per_instance: u32,
    #[command(flatten)]
    host: HostArgs,
}

#[derive(Args)]
struct UpArgs {
    /// The manifest, or the folder holding its weft.toml.
    #[arg(default_value = ".")]
    manifest: PathBuf,
    /// Apply the environment overlay weft.ENV.toml beside the manifest.
    #[arg(long, value_name = "ENV")]
    env: Option<String>,
    /// Skip the roles' build commands and use the components as they are.
    #[arg(long)]
    no_build: bool,
    /// The service's state folder (the embedded queue store and scratch
    /// folders live there)
    /// [default: $XDG_STATE_HOME/weft/SERVICE or ~/.local/state/weft/SERVICE].
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Run only this role (repeatable); the default is every role. Hosts
    /// sharing a NATS server each run some of a service's roles.
    #[arg(long = "role", value_name = "NAME")]
    roles: Vec<String>,
    /// The admin API's token file [default: WEFT_ADMIN_TOKEN, else
    /// admin-token in the state folder, made on first start].
    #[arg(long)]
    token_file: Option<PathBuf>,
    #[command(flatten)]
    host: HostArgs,
}

#[derive(Args)]
struct HostModeArgs {
    /// The host's state folder: component blobs, each service's record,
    /// queues and scratch folders
    /// [default: $XDG_STATE_HOME/weft/_host or ~/.local/state/weft/_host].
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// The admin API's token file [default: WEFT_ADMIN_TOKEN, else
    /// admin-token in the state folder, made on first start].
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Sandboxes alive at once across every service (pooling slots).
    #[arg(long, default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    max_instances: u32,
    /// The largest component the admin API accepts, in MiB.
    #[arg(long, default_value_t = local::DEFAULT_MAX_COMPONENT_MIB,
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    max_component_mib: u64,
    #[command(flatten)]
    host: HostArgs,
}

#[derive(Args)]
struct HostArgs {
    /// Where compiled components are cached; it must be private to this user
    /// [default: $XDG_CACHE_HOME/weft/components or ~/.cache/weft/components].
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// How long in-flight requests may take to finish at shutdown, and a
    /// retired version to drain, in seconds (at most a day).
    #[arg(long, default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(0..=86_400))]
    grace_secs: u64,
    /// The admin address: the admin API under /v1 (bearer token), and
    /// `/metrics` (Prometheus) and `/healthz`. Keep it on loopback or a
    /// private network.
    #[arg(long, default_value = "127.0.0.1:9070")]
    admin_addr: SocketAddr,
    /// Connections the web roles' listeners hold open at once, all together;
    /// more wait in the kernel's backlog [default: from the descriptor limit,
    /// after the admin's share and a quarter kept for the host; at most 16384].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_web_connections: Option<u64>,
    /// Connections the admin address holds open at once, apart from the web
    /// roles' [default: a sixteenth of the descriptor limit, from 8 to 64].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_admin_connections: Option<u64>,
    /// How long a connection may go without sending a complete request head,
    /// idle keep-alive connections included, in seconds (the admin address
    /// waits 10 at most).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    idle_timeout_secs: u64,
    /// The slowest a request body may come once its grace is spent, in bytes
    /// a second on average; slower bodies are cut. 0 turns the bound off.
    #[arg(long, default_value_t = 1024)]
    min_body_rate: u64,
    /// How long a request body may take before the minimum rate applies, in
    /// seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    body_grace_secs: u64,
}

#[derive(Args)]
struct ClientArgs {
    /// The host's admin address [default: $WEFT_ADMIN, else http://127.0.0.1:9070].
    #[arg(long, value_name = "URL")]
    admin: Option<String>,
    /// The admin token's file [default: $WEFT_ADMIN_TOKEN, else the default
    /// host state folder's admin-token].
    #[arg(long)]
    token_file: Option<PathBuf>,
}

#[derive(Args)]
struct DeployArgs {
    /// The manifest, or the folder holding its weft.toml.
    #[arg(default_value = ".")]
    manifest: PathBuf,
    /// Apply the environment overlay weft.ENV.toml beside the manifest.
    #[arg(long, value_name = "ENV")]
    env: Option<String>,
    /// Skip the roles' build commands and use the components as they are.
    #[arg(long)]
    no_build: bool,
    /// Return once the host has accepted the deployment, without waiting
    /// for instances to be ready (deploy) or for the rollout to end (upgrade).
    #[arg(long)]
    no_wait: bool,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
struct StatusArgs {
    /// Only this service.
    service: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
struct ScaleArgs {
    /// The worker role: SERVICE/ROLE, or ROLE when one service has it.
    role: String,
    /// Its new instance count.
    count: u32,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
struct SettingsArgs {
    /// The role: SERVICE/ROLE, or ROLE when one service has it.
    role: String,
    /// KEY=VALUE pairs; each key must be a setting the role declares.
    #[arg(required = true)]
    settings: Vec<String>,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
struct LogsArgs {
    /// The role: SERVICE/ROLE, or ROLE when one service has it.
    role: String,
    /// Keep printing new lines as they come.
    #[arg(short, long)]
    follow: bool,
    /// How many of the latest lines to show first.
    #[arg(long, default_value_t = 100)]
    lines: usize,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
struct RemoveArgs {
    /// The service.
    service: String,
    #[command(flatten)]
    client: ClientArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let logs = Arc::new(LogBook::default());
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
fn init_logging(format: LogFormat, logs: Arc<LogBook>) {
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
    let kept = LogLayer(logs)
        .with_filter(Targets::new().with_target(logbook::GUEST_TARGET, LevelFilter::INFO));
    tracing_subscriber::registry()
        .with(printed)
        .with(kept)
        .init();
}

async fn run(command: Command, logs: Arc<LogBook>) -> anyhow::Result<()> {
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
