//! `weft`: the host process. Serves a single wasi:http component
//! (`weft serve`), or runs a whole service from its manifest (`weft up`).

mod admin;
mod builder;
mod http_server;
mod manifest;
mod metrics;
mod service;
mod supervisor;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use manifest::Manifest;
use service::{Backends, HostPaths, LoadedRole};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use weft_runtime::broker::{MAX_BATCH, POISON_SUFFIX};
use weft_runtime::{CpuShare, Grants, RateLimits, RoleSpec, Runtime, SandboxLimits};

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
    /// Build and run a service from its manifest (a weft.toml, or a folder holding one).
    Up(UpArgs),
    /// Check a manifest and compile its components, without running anything.
    Check(UpArgs),
    /// Show the length of each queue the manifest grants (and of its poison
    /// queue), and with --peek N its next messages. The embedded store can
    /// be read only while the service is stopped; NATS at any time.
    Queues(QueuesArgs),
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
    #[command(flatten)]
    host: HostArgs,
}

#[derive(Args)]
struct HostArgs {
    /// Where compiled components are cached; it must be private to this user
    /// [default: $XDG_CACHE_HOME/weft/components or ~/.cache/weft/components].
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// How long in-flight requests may take to finish at shutdown, in seconds.
    #[arg(long, default_value_t = 30)]
    grace_secs: u64,
    /// The admin address: `/metrics` (Prometheus) and `/healthz`. Keep it
    /// on loopback or a private network.
    #[arg(long, default_value = "127.0.0.1:9070")]
    admin_addr: SocketAddr,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
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
    let outcome = runtime.block_on(run(cli.command));
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

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("WEFT_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => serve(args).await,
        Command::Up(args) => up(args, false).await,
        Command::Check(args) => up(args, true).await,
        Command::Queues(args) => queues(args).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let limits = SandboxLimits {
        memory_mib: args.memory_mib,
        fuel: args.fuel,
        deadline_ms: args.deadline_ms,
        max_request_body_kib: args.max_request_body_kib,
        max_in_flight: args.max_in_flight,
        max_queued: args.max_queued,
        role_memory_mib: None,
        requests_per_instance: args.requests_per_instance,
    };
    let cache_dir = args.host.cache_dir.clone().or_else(default_cache_dir);
    let runtime = Arc::new(Runtime::new(service::engine_config(
        std::iter::once((limits, service::SandboxCount::PerRequest)),
        cache_dir,
    ))?);
    let backends = Backends::memory();
    let spec = RoleSpec {
        grants: Grants {
            service: "serve".into(),
            role: "web".into(),
            ..Grants::default()
        },
        limits,
        rate_limits: RateLimits::default(),
        cpu: CpuShare::default(),
        queues: backends.queues.clone(),
        kv: backends.kv.clone(),
    };
    let role = runtime.web_role(&args.component, spec)?;
    let roles = vec![("web".to_owned(), LoadedRole::Web(Arc::new(role), args.addr))];
    let grace = Duration::from_secs(args.host.grace_secs);
    service::run(roles, runtime, args.host.admin_addr, grace).await?;
    backends.close().await;
    Ok(())
}

async fn up(args: UpArgs, check_only: bool) -> anyhow::Result<()> {
    let manifest = Manifest::load(&args.manifest)?;
    if let Some(unknown) = args.roles.iter().find(|r| !manifest.roles.contains_key(*r)) {
        anyhow::bail!(
            "{}: --role {unknown}: no such role (the manifest has {})",
            manifest.path.display(),
            manifest
                .roles
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if !args.no_build {
        builder::build_roles(&manifest)?;
    }
    let state_dir = match args.state_dir.clone() {
        Some(dir) => dir,
        None => default_state_dir(&manifest.service)
            .context("no home folder to keep state in: pass --state-dir")?,
    };
    let cache_dir = args.host.cache_dir.clone().or_else(default_cache_dir);
    let paths = HostPaths {
        state_dir,
        cache_dir,
    };
    let engine = service::engine_config(
        manifest.roles.values().map(|r| {
            let count = match r.kind {
                manifest::RoleKind::Web => service::SandboxCount::PerRequest,
                manifest::RoleKind::Worker => service::SandboxCount::Instances(r.instances),
            };
            (r.limits, count)
        }),
        paths.cache_dir.clone(),
    );
    let runtime = Arc::new(Runtime::new(engine)?);
    if check_only {
        // A check must not take the store a running service holds.
        let roles = service::load_roles(
            &manifest,
            &runtime,
            &paths,
            &Backends::memory(),
            &args.roles,
        )?;
        println!(
            "ok: service '{}' with {} roles",
            manifest.service,
            roles.len()
        );
        return Ok(());
    }
    let backends = Backends::open(&manifest.queues, &paths.state_dir).await?;
    let roles = service::load_roles(&manifest, &runtime, &paths, &backends, &args.roles)?;
    tracing::info!(service = %manifest.service, manifest = %manifest.path.display(), "starting");
    let grace = Duration::from_secs(args.host.grace_secs);
    let outcome = service::run(roles, runtime, args.host.admin_addr, grace).await;
    backends.close().await;
    outcome
}

/// `weft queues DIR`: each queue the manifest grants, and its poison queue,
/// with its length and, with `--peek N`, its next N visible messages.
async fn queues(args: QueuesArgs) -> anyhow::Result<()> {
    let manifest = Manifest::load(&args.manifest)?;
    let state_dir = match args.state_dir.clone() {
        Some(dir) => dir,
        None => default_state_dir(&manifest.service)
            .context("no home folder to keep state in: pass --state-dir")?,
    };
    let backends = Backends::open(&manifest.queues, &state_dir).await?;
    // Each granted queue and its poison queue, once (a poison queue has none).
    let mut names = std::collections::BTreeSet::new();
    for name in manifest.roles.values().flat_map(|r| &r.queues) {
        names.insert(name.clone());
        if !name.ends_with(POISON_SUFFIX) {
            names.insert(format!("{name}{POISON_SUFFIX}"));
        }
    }
    let mut out = std::io::stdout().lock();
    for queue in names {
        let scoped = format!("{}/{queue}", manifest.service);
        let length = backends.queues.len(&scoped).await?;
        writeln!(out, "{queue} length={length}")?;
        if args.peek == 0 || length == 0 {
            continue;
        }
        for message in backends
            .queues
            .peek(&scoped, args.peek.min(MAX_BATCH))
            .await?
        {
            let body = String::from_utf8_lossy(&message.body);
            let body: String = body.chars().take(80).collect();
            write!(
                out,
                "  id={} dequeue-count={} sent-ms={}",
                message.id, message.dequeue_count, message.inserted_at_ms
            )?;
            if let Some(reason) = &message.poison_reason {
                write!(out, " reason={reason:?}")?;
            }
            writeln!(out, " body={body:?}")?;
        }
    }
    drop(out);
    backends.close().await;
    Ok(())
}

/// A per-user folder: `$XDG_VAR/weft` or `~/FALLBACK/weft`. Never the
/// manifest's folder: a repository could ship "cached" native code there.
fn user_dir(xdg_var: &str, fallback: &str) -> Option<PathBuf> {
    let base = std::env::var_os(xdg_var)
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(fallback)))?;
    Some(base.join("weft"))
}

/// Where compiled components are cached unless `--cache-dir` says otherwise.
fn default_cache_dir() -> Option<PathBuf> {
    user_dir("XDG_CACHE_HOME", ".cache").map(|dir| dir.join("components"))
}

/// Where a service keeps its state unless `--state-dir` says otherwise.
fn default_state_dir(service: &str) -> Option<PathBuf> {
    user_dir("XDG_STATE_HOME", ".local/state").map(|dir| dir.join(service))
}
