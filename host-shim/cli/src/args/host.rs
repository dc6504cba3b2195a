//! The arguments of the commands that run a host: `serve`, `up` (and
//! `check`), `host`, and the groups they share: [`HostArgs`] (cache, grace,
//! admin address, traces and [`ConnectionArgs`]), [`HostTokenArg`], and how
//! `weft host` joins a fabric ([`FabricArgs`]).

use super::ServiceSource;
use clap::Args;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;
use weft_host::launch::{self, ConnectionOptions, DEFAULT_MAX_COMPONENT_MIB};
use weft_sandbox::SandboxLimits;

/// The admin token a host serves (`up`, `host`).
#[derive(Args)]
pub struct HostTokenArg {
    /// The admin API's token file [default: WEFT_ADMIN_TOKEN, else
    /// admin-token in the state folder, made on first start].
    #[arg(long)]
    pub token_file: Option<PathBuf>,
}

#[derive(Args)]
pub struct ServeArgs {
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// The component to serve.
    pub component: PathBuf,
    /// Memory cap per request, in MiB.
    #[arg(long, default_value_t = SandboxLimits::default().memory_mib)]
    pub memory_mib: u64,
    /// Fuel budget per request.
    #[arg(long, default_value_t = SandboxLimits::default().fuel)]
    pub fuel: u64,
    /// Wall-clock deadline per request, in milliseconds.
    #[arg(long, default_value_t = SandboxLimits::default().deadline_ms)]
    pub deadline_ms: u64,
    /// Largest request body, in KiB.
    #[arg(long, default_value_t = SandboxLimits::default().max_request_body_kib)]
    pub max_request_body_kib: u64,
    /// Requests running at once.
    #[arg(long, default_value_t = SandboxLimits::default().max_in_flight)]
    pub max_in_flight: u32,
    /// Requests that may wait for a free slot before getting a 503.
    #[arg(long, default_value_t = SandboxLimits::default().max_queued)]
    pub max_queued: u32,
    /// Requests one instance may serve in sequence; 1 is a fresh instance
    /// per request. Above 1, what one request leaves in the guest's memory
    /// is visible to the next.
    #[arg(long, default_value_t = SandboxLimits::default().requests_per_instance)]
    pub requests_per_instance: u32,
    /// WASIp3 components only: requests one instance may serve at once
    /// (at most --requests-per-instance).
    #[arg(long, default_value_t = SandboxLimits::default().concurrent_requests_per_instance)]
    pub concurrent_requests_per_instance: u32,
    /// WASIp3 components only: how long an instance kept for later requests
    /// may wait idle before it ends, in milliseconds.
    #[arg(long, default_value_t = SandboxLimits::default().instance_idle_timeout_ms)]
    pub instance_idle_timeout_ms: u64,
    #[command(flatten)]
    pub host: HostArgs,
}

#[derive(Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub source: ServiceSource,
    /// The service's state folder (the embedded queue store and scratch
    /// folders live there)
    /// [default: $XDG_STATE_HOME/weft/SERVICE or ~/.local/state/weft/SERVICE].
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Run only this role (repeatable); the default is every role. Hosts
    /// sharing a NATS server each run some of a service's roles.
    #[arg(long = "role", value_name = "NAME")]
    pub roles: Vec<String>,
    #[command(flatten)]
    pub token: HostTokenArg,
    #[command(flatten)]
    pub host: HostArgs,
}

#[derive(Args)]
pub struct HostModeArgs {
    /// The host's state folder: component blobs, each service's record,
    /// queues and scratch folders
    /// [default: $XDG_STATE_HOME/weft/_host or ~/.local/state/weft/_host].
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    #[command(flatten)]
    pub token: HostTokenArg,
    /// Sandboxes alive at once across every service (pooling slots).
    #[arg(long, default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_instances: u32,
    /// The largest component the admin API accepts, in MiB.
    #[arg(long, default_value_t = DEFAULT_MAX_COMPONENT_MIB,
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub max_component_mib: u64,
    #[command(flatten)]
    pub host: HostArgs,
    #[command(flatten)]
    pub fabric: FabricArgs,
}

/// How `weft host` joins a fabric.
#[derive(Args)]
pub struct FabricArgs {
    /// Join the fabric on this NATS JetStream server (nats:// or tls://):
    /// the fabric's operators, not this host's state folder, say what it
    /// runs.
    #[arg(long, value_name = "URL", requires_all = ["advertise", "fabric_trust"])]
    pub fabric: Option<String>,
    /// This host's id in the fabric [default: the machine's host name].
    #[arg(long, value_name = "ID", requires = "fabric")]
    pub host_id: Option<String>,
    /// The address the fabric's web roles listen on here, and that load
    /// balancers reach (required with --fabric).
    #[arg(long, value_name = "IP", requires = "fabric")]
    pub advertise: Option<IpAddr>,
    /// The hosts that can fail together with this one (a rack, a zone):
    /// a role's instances are spread across fault domains.
    #[arg(
        long,
        value_name = "DOMAIN",
        default_value = "default",
        requires = "fabric"
    )]
    pub fault_domain: String,
    /// A label a role's `placement` may require (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE", requires = "fabric")]
    pub labels: Vec<String>,
    /// The fabric operators' public keys, one base64 key a line: only
    /// services signed by one of them run here (required with --fabric).
    #[arg(long, value_name = "FILE", requires = "fabric")]
    pub fabric_trust: Option<PathBuf>,
    #[command(flatten)]
    pub connect: FabricHostConnectArgs,
    /// How long a silent host may stay silent before its instances are
    /// placed elsewhere, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10, requires = "fabric",
          value_parser = clap::value_parser!(u64).range(2..=3600))]
    pub fabric_down_after: u64,
    /// Copies the fabric's server keeps of the fabric's buckets when this
    /// host is the first to make them: 1 for one server, 3 for a cluster.
    #[arg(long, value_name = "N", default_value_t = 1, requires = "fabric",
          value_parser = clap::value_parser!(u8).range(1..=5))]
    pub fabric_replicas: u8,
}

/// How a host reaches the fabric's server.
#[derive(Args)]
pub struct FabricHostConnectArgs {
    /// A NATS credentials file for the fabric's server.
    #[arg(long, value_name = "FILE", requires = "fabric")]
    pub fabric_creds: Option<PathBuf>,
    /// The CA certificate (PEM) the fabric's server must present a
    /// certificate from; TLS is then required.
    #[arg(long, value_name = "FILE", requires = "fabric")]
    pub fabric_tls_ca: Option<PathBuf>,
    /// How long to keep trying to reach the fabric's server at start, in
    /// seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30, requires = "fabric",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub fabric_connect_timeout: u64,
}

/// What every host has (`serve`, `up`, `host`).
#[derive(Args)]
pub struct HostArgs {
    /// Where compiled components are cached; it must be private to this user
    /// [default: $XDG_CACHE_HOME/weft/components or ~/.cache/weft/components].
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// How long in-flight requests may take to finish at shutdown, and a
    /// retired version to drain, in seconds (at most a day).
    #[arg(long, default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub grace_secs: u64,
    /// The admin address: the admin API under /v1 (bearer token), and
    /// `/metrics` (Prometheus) and `/healthz`. Keep it on loopback or a
    /// private network.
    #[arg(long, default_value = "127.0.0.1:9070")]
    pub admin_addr: SocketAddr,
    /// Export traces (a span per web request, VMBus call and message
    /// delivery) over OTLP/HTTP to this collector, `http://HOST[:PORT]`
    /// (spans go to its /v1/traces); what is queued is sent when the host
    /// stops, waiting for the collector at most 2 s. Off without it.
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// Spans kept waiting for the collector; past this they are dropped
    /// (and counted in /metrics).
    #[arg(long, default_value_t = launch::otlp::DEFAULT_QUEUE_SPANS,
          value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub otlp_queue_spans: u64,
    #[command(flatten)]
    pub connections: ConnectionArgs,
}

impl HostArgs {
    /// `--cache-dir`, else the per-user default.
    pub fn cache_dir(&self) -> Option<PathBuf> {
        self.cache_dir
            .clone()
            .or_else(launch::dirs::default_cache_dir)
    }

    /// `--grace-secs`.
    pub fn grace(&self) -> Duration {
        Duration::from_secs(self.grace_secs)
    }

    /// The export of spans with `--otlp-endpoint` (`None`: tracing is
    /// off). Starts the export task: call it within the runtime.
    pub fn traces(&self) -> anyhow::Result<Option<launch::otlp::Exporter>> {
        let Some(endpoint) = &self.otlp_endpoint else {
            return Ok(None);
        };
        Ok(Some(launch::export_traces(
            endpoint,
            self.otlp_queue_spans,
        )?))
    }
}

/// What bounds the connections clients hold of a host.
#[derive(Args)]
pub struct ConnectionArgs {
    /// Connections the web roles' listeners hold open at once, all together;
    /// more wait in the kernel's backlog [default: from the descriptor limit,
    /// after the admin's share and a quarter kept for the host; at most 16384].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_web_connections: Option<u64>,
    /// Connections the admin address holds open at once, apart from the web
    /// roles' [default: a sixteenth of the descriptor limit, from 8 to 64].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_admin_connections: Option<u64>,
    /// How long a connection may go without sending a complete request head,
    /// idle keep-alive connections included, in seconds (the admin address
    /// waits 10 at most).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub idle_timeout_secs: u64,
    /// The slowest a request body may come once its grace is spent, in bytes
    /// a second on average; slower bodies are cut. 0 turns the bound off.
    #[arg(long, default_value_t = 1024)]
    pub min_body_rate: u64,
    /// How long a request body may take before the minimum rate applies, in
    /// seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub body_grace_secs: u64,
}

impl ConnectionArgs {
    /// The library's options.
    pub fn options(&self) -> ConnectionOptions {
        ConnectionOptions {
            max_web: self.max_web_connections,
            max_admin: self.max_admin_connections,
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            min_body_rate: self.min_body_rate,
            body_grace: Duration::from_secs(self.body_grace_secs),
        }
    }
}
