//! The command line: each command's arguments, built from a few shared
//! groups flattened into them, so a flag is declared (and documented) once:
//!
//! - [`ServiceSource`]: the manifest, `--env` and `--no-build` (`up`,
//!   `check`, `deploy`, `upgrade`);
//! - [`HostArgs`]: what every host has, its cache, grace, admin address and
//!   [`ConnectionArgs`] (`serve`, `up`, `host`);
//! - [`HostTokenArg`]: the admin token a host serves (`up`, `host`);
//! - [`ClientArgs`]: the admin address and token a client uses (`deploy`,
//!   `upgrade`, `status`, `scale`, `settings`, `logs`, `remove`, `queue`,
//!   `bucket`);
//! - [`FabricArgs`]: how `weft host` joins a fabric;
//! - [`FabricConnectArgs`], [`FabricTarget`], [`FabricSigner`]: how a
//!   client reaches a fabric instead of one host (`deploy`, `upgrade`,
//!   `status`, `scale`, `settings`, `logs`, `remove`, `endpoints`,
//!   `fabric ...`).
//!
//! The host commands' arguments (`serve`, `up`, `host`) and the groups only
//! they use are in `args/host.rs`; the `queue` and `bucket` commands', on a
//! service's data, in `args/data.rs`; `new`'s in `args/new.rs`.
//!
//! Each group turns into the library's plain options
//! ([`weft_host::launch`]) here, so nothing past these files sees clap.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

mod data;
mod host;
mod new;

pub use data::*;
pub use host::*;
pub use new::{NewArgs, NewService};

#[derive(Parser)]
#[command(
    name = "weft",
    version,
    about = "Runs Wasm web and worker roles in isolated, metered sandboxes"
)]
pub struct Cli {
    /// How host logs (and captured guest output) are written to stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
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
    /// queue), and with --peek N its next messages, of a stopped service
    /// (the embedded store; NATS at any time); use `weft queue peek` while
    /// it runs.
    Queues(QueuesArgs),
    /// Send to, peek at, purge or redrive a running service's queue
    /// through a host's admin API.
    Queue(QueueCommandArgs),
    /// List, read, delete or purge the keys of a running service's bucket
    /// through a host's admin API.
    Bucket(BucketCommandArgs),
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
    /// Print where a web role of a fabric is served and ready, one IP:PORT
    /// a line, or as an HAProxy backend.
    Endpoints(EndpointsArgs),
    /// Manage a fabric of hosts: its operators' keys, its members.
    Fabric(FabricCommandArgs),
    /// Make a service folder from a template (`--list` shows them).
    New(NewArgs),
}

impl Command {
    /// The fabric this command drives (`--fabric URL`), if it drives one
    /// rather than a host or nothing: a client command given `--fabric`,
    /// `weft endpoints`, `weft fabric hosts|drain`.
    pub fn fabric_url(&self) -> Option<&str> {
        match self {
            Command::Deploy(args) | Command::Upgrade(args) => args.fabric.target.fabric.as_deref(),
            Command::Scale(args) => args.fabric.target.fabric.as_deref(),
            Command::Settings(args) => args.fabric.target.fabric.as_deref(),
            Command::Logs(args) => args.fabric.fabric.as_deref(),
            Command::Status(args) => args.fabric.fabric.as_deref(),
            Command::Remove(args) => args.fabric.fabric.as_deref(),
            Command::Endpoints(args) => Some(&args.fabric.fabric),
            Command::Fabric(args) => match &args.command {
                FabricCommand::Hosts(args) => Some(&args.fabric.fabric),
                FabricCommand::Drain(args) => Some(&args.fabric.fabric),
                FabricCommand::Keygen(_) => None,
            },
            Command::Serve(_)
            | Command::Up(_)
            | Command::Host(_)
            | Command::Check(_)
            | Command::Queues(_)
            | Command::Queue(_)
            | Command::Bucket(_)
            | Command::New(_) => None,
        }
    }
}

/// A service's source folder, as `up`, `check`, `deploy` and `upgrade` read it.
#[derive(Args)]
pub struct ServiceSource {
    /// The manifest, or the folder holding its weft.toml.
    #[arg(default_value = ".")]
    pub manifest: PathBuf,
    /// Apply the environment overlay weft.ENV.toml beside the manifest.
    #[arg(long, value_name = "ENV")]
    pub env: Option<String>,
    /// Skip the roles' build commands and use the components as they are.
    #[arg(long)]
    pub no_build: bool,
}

#[derive(Args)]
pub struct QueuesArgs {
    /// The manifest, or the folder holding its weft.toml.
    #[arg(default_value = ".")]
    pub manifest: PathBuf,
    /// The service's state folder [default: as for `weft up`].
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Also show up to this many (at most 32) of each queue's next visible
    /// messages, without receiving them.
    #[arg(long, default_value_t = 0)]
    pub peek: u32,
}

/// How a client reaches a fabric's server.
#[derive(Args)]
pub struct FabricConnectArgs {
    /// A NATS credentials file for the fabric's server.
    #[arg(long, value_name = "FILE")]
    pub fabric_creds: Option<PathBuf>,
    /// The CA certificate (PEM) the fabric's server must present a
    /// certificate from; TLS is then required.
    #[arg(long, value_name = "FILE")]
    pub fabric_tls_ca: Option<PathBuf>,
    /// How long to keep trying to reach the fabric's server, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub fabric_connect_timeout: u64,
}

/// A fabric a client command may drive instead of one host's admin API.
#[derive(Args)]
pub struct FabricTarget {
    /// Drive the fabric on this NATS server (nats:// or tls://) instead
    /// of one host's admin API.
    #[arg(long, value_name = "URL", conflicts_with_all = ["admin", "token_file"])]
    pub fabric: Option<String>,
    #[command(flatten)]
    pub connect: FabricConnectArgs,
}

/// A fabric, and the operator's key that signs a change to it.
#[derive(Args)]
pub struct FabricSigner {
    #[command(flatten)]
    pub target: FabricTarget,
    /// With --fabric: the operator's signing key (made by `weft fabric
    /// keygen`).
    #[arg(long, value_name = "FILE", requires = "fabric")]
    pub fabric_key: Option<PathBuf>,
    /// With --fabric: the operators' public keys (one base64 key a line)
    /// the service's current desired state may be signed by, checked before
    /// a change builds on it [default: only --fabric-key's own].
    #[arg(long, value_name = "FILE", requires = "fabric_key")]
    pub fabric_trust: Option<PathBuf>,
}

/// A fabric a command must be given.
#[derive(Args)]
pub struct FabricRequired {
    /// The fabric's NATS server (nats:// or tls://).
    #[arg(long, value_name = "URL")]
    pub fabric: String,
    #[command(flatten)]
    pub connect: FabricConnectArgs,
}

#[derive(Args)]
pub struct EndpointsArgs {
    /// The web role, as SERVICE/ROLE.
    pub role: String,
    /// Print an HAProxy backend of this name instead of the addresses.
    #[arg(long, value_name = "BACKEND")]
    pub haproxy: Option<String>,
    #[command(flatten)]
    pub fabric: FabricRequired,
}

#[derive(Args)]
pub struct FabricCommandArgs {
    #[command(subcommand)]
    pub command: FabricCommand,
}

#[derive(Subcommand)]
pub enum FabricCommand {
    /// Make an operator's signing key: DIR/fabric.key (keep it private)
    /// and DIR/fabric.pub (for every host's --fabric-trust).
    Keygen(KeygenArgs),
    /// List the fabric's members: state, fault domain, labels, slots,
    /// what each runs, and who leads.
    Hosts(FabricHostsArgs),
    /// Empty a host before maintenance: its instances move to other hosts
    /// and nothing new is placed on it until it joins again.
    Drain(DrainArgs),
}

#[derive(Args)]
pub struct KeygenArgs {
    /// The folder to write the key pair into.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Args)]
pub struct FabricHostsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub fabric: FabricRequired,
}

#[derive(Args)]
pub struct DrainArgs {
    /// The host's id.
    pub host: String,
    #[command(flatten)]
    pub fabric: FabricRequired,
}

/// How a client reaches a host's admin API.
#[derive(Args)]
pub struct ClientArgs {
    /// The host's admin address [default: $WEFT_ADMIN, else http://127.0.0.1:9070].
    #[arg(long, value_name = "URL")]
    pub admin: Option<String>,
    /// The admin token's file [default: $WEFT_ADMIN_TOKEN, else the default
    /// host state folder's admin-token].
    #[arg(long)]
    pub token_file: Option<PathBuf>,
}

#[derive(Args)]
pub struct DeployArgs {
    #[command(flatten)]
    pub source: ServiceSource,
    /// Return once the host has accepted the deployment (with --fabric:
    /// once the signed change is written to the fabric), without waiting
    /// for instances to be ready (deploy) or for the rollout to end (upgrade).
    #[arg(long)]
    pub no_wait: bool,
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub fabric: FabricSigner,
    /// With --fabric: how long to wait for every host to run it, ready, in
    /// seconds.
    #[arg(long, value_name = "N", default_value_t = 60, requires = "fabric",
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub wait_secs: u64,
}

#[derive(Args)]
pub struct StatusArgs {
    /// Only this service.
    pub service: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub fabric: FabricTarget,
}

#[derive(Args)]
pub struct ScaleArgs {
    /// The worker role: SERVICE/ROLE, or ROLE when one service has it.
    pub role: String,
    /// Its new instance count (with --fabric: the total across the
    /// fabric's hosts).
    pub count: u32,
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub fabric: FabricSigner,
}

#[derive(Args)]
pub struct SettingsArgs {
    /// The role: SERVICE/ROLE, or ROLE when one service has it.
    pub role: String,
    /// KEY=VALUE pairs; each key must be a setting the role declares.
    #[arg(required = true)]
    pub settings: Vec<String>,
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub fabric: FabricSigner,
}

#[derive(Args)]
pub struct LogsArgs {
    /// The role: SERVICE/ROLE, or ROLE when one service has it; with
    /// --fabric, SERVICE (every role) or SERVICE/ROLE.
    pub role: String,
    /// Keep printing new lines as they come.
    #[arg(short, long)]
    pub follow: bool,
    /// How many of the latest lines to show first.
    #[arg(long, default_value_t = 100)]
    pub lines: usize,
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub fabric: FabricTarget,
}

#[derive(Args)]
pub struct RemoveArgs {
    /// The service.
    pub service: String,
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub fabric: FabricTarget,
}
