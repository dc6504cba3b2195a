//! The commands that run a host in this process: `weft serve` (one
//! component), `weft up` (a host with one service, deployed from a folder),
//! `weft host` (a long-lived host that takes deployments through its admin
//! API and redeploys them when it starts again), and the offline ones,
//! `weft check` and `weft queues`.

use crate::{HostArgs, HostModeArgs, QueuesArgs, ServeArgs, UpArgs};
use anyhow::Context;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;
use weft_broker::{MAX_BATCH, POISON_SUFFIX};
use weft_host::admin::{self, Admin, auth};
use weft_host::builder;
use weft_host::connections::{self, ConnectionLimits, Listening};
use weft_host::controller::slots::SlotBook;
use weft_host::controller::status::ServiceStatus;
use weft_host::controller::store::{DeploymentSource, Digest, Layout, StateDir};
use weft_host::controller::web::{WebFront, WebVersion};
use weft_host::controller::{Controller, ControllerError, HostContext, Restore, VersionInfo};
use weft_host::environment::Environment;
use weft_host::lingering::MinRate;
use weft_host::logbook::LogBook;
use weft_host::manifest::{MAX_MEMORY_MIB, Manifest, RoleKind};
use weft_host::service::{self, Backends, SandboxCount};
use weft_sandbox::config::MIB;
use weft_sandbox::{CpuShare, EngineConfig, Grants, RateLimits, RoleSpec, Runtime, SandboxLimits};

/// `weft serve COMPONENT`: one wasi:http component, a fresh sandbox per request.
pub async fn serve(args: ServeArgs, logs: Arc<LogBook>) -> anyhow::Result<()> {
    let pools = Pools::new(&args.host);
    let mut signals = StopSignals::watch()?;
    let limits = SandboxLimits {
        memory_mib: args.memory_mib,
        fuel: args.fuel,
        deadline_ms: args.deadline_ms,
        max_request_body_kib: args.max_request_body_kib,
        max_in_flight: args.max_in_flight,
        max_queued: args.max_queued,
        requests_per_instance: args.requests_per_instance,
        ..SandboxLimits::default()
    };
    let cache_dir = args.host.cache_dir.clone().or_else(default_cache_dir);
    let runtime = Arc::new(Runtime::new(service::engine_config(
        std::iter::once((limits, SandboxCount::PerRequest)),
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
    let listener = TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("role 'web': cannot listen on {}", args.addr))?;
    let admin = start_admin(
        args.host.admin_addr,
        pools.admin.clone(),
        runtime,
        None,
        None,
        logs,
    )
    .await?;
    let info = VersionInfo {
        generation: 1,
        digest: Digest::of(&[]),
        settings: BTreeMap::new(),
    };
    let version = Arc::new(WebVersion::new(info, role, None));
    // A signal is heeded while the start hook runs, too.
    tokio::select! {
        started = version.start(Duration::from_secs(args.host.grace_secs.max(1))) => {
            started.map_err(|why| anyhow::anyhow!("role 'web' did not start: {why}"))?;
        }
        () = signals.next() => {
            tracing::info!("shutting down before the role started");
            admin.stop().await;
            status_line("stopped");
            return Ok(());
        }
    }
    let front = Arc::new(WebFront::default());
    front.route_all(&version, 1);
    status_line(&format!("listening web http://{}", listener.local_addr()?));
    let (stop, mut stopped) = watch::channel(false);
    let grace = Duration::from_secs(args.host.grace_secs);
    let server = tokio::spawn(weft_host::http_server::serve(
        listener,
        pools.web.clone(),
        front.clone(),
        "web".into(),
        async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        },
        grace,
    ));
    status_line("ready");
    signals.next().await;
    tracing::info!("shutting down: finishing in-flight requests");
    let _ = stop.send(true);
    let _ = server.await;
    for version in front.close() {
        version.drain_and_stop(grace).await;
    }
    admin.stop().await;
    status_line("stopped");
    Ok(())
}

/// Reads the manifest at `path` and applies environment `env`, if any.
pub fn load_manifest(
    path: &Path,
    env: Option<&str>,
) -> anyhow::Result<(Manifest, Option<Environment>)> {
    let mut manifest = Manifest::load(path)?;
    let environment = match env {
        Some(name) => {
            let environment = Environment::load(&manifest.path, name)?;
            environment.apply(&mut manifest)?;
            Some(environment)
        }
        None => None,
    };
    Ok((manifest, environment))
}

/// Checks `--role` names against the manifest.
fn check_only_roles(manifest: &Manifest, roles: &[String]) -> anyhow::Result<()> {
    if let Some(unknown) = roles.iter().find(|r| !manifest.roles.contains_key(*r)) {
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
    Ok(())
}

/// `weft check DIR`: validates the manifest (and overlay) and compiles its
/// components, without running anything.
pub async fn check(args: UpArgs) -> anyhow::Result<()> {
    let (manifest, _) = load_manifest(&args.manifest, args.env.as_deref())?;
    check_only_roles(&manifest, &args.roles)?;
    if !args.no_build {
        builder::build_roles(&manifest)?;
    }
    let runtime = Runtime::new(up_engine(&manifest, &args.host))?;
    // A check must not take the store a running service holds.
    let scratch = tempfile::tempdir().context("cannot make a scratch folder for the check")?;
    let loaded = service::check_roles(&manifest, &runtime, scratch.path(), &args.roles)?;
    println!("ok: service '{}' with {loaded} roles", manifest.service);
    Ok(())
}

fn up_engine(manifest: &Manifest, host: &HostArgs) -> EngineConfig {
    service::engine_config(
        manifest.roles.values().map(|r| {
            let count = match r.kind {
                RoleKind::Web => SandboxCount::PerRequest,
                RoleKind::Worker => SandboxCount::Instances(r.instances),
            };
            (r.limits, count)
        }),
        host.cache_dir.clone().or_else(default_cache_dir),
    )
}

/// `weft up DIR`: starts a host and deploys the service in DIR into it; the
/// admin API serves it until SIGINT or SIGTERM. Nothing is recorded: the
/// next `weft up` deploys DIR afresh.
pub async fn up(args: UpArgs, logs: Arc<LogBook>) -> anyhow::Result<()> {
    let pools = Pools::new(&args.host);
    let mut signals = StopSignals::watch()?;
    let (manifest, environment) = load_manifest(&args.manifest, args.env.as_deref())?;
    check_only_roles(&manifest, &args.roles)?;
    if !args.no_build {
        builder::build_roles(&manifest)?;
    }
    let state_dir = match args.state_dir.clone() {
        Some(dir) => dir,
        None => default_state_dir(&manifest.service)
            .context("no home folder to keep state in: pass --state-dir")?,
    };
    let runtime = Arc::new(Runtime::new(up_engine(&manifest, &args.host))?);
    let state = StateDir::open(&state_dir, Layout::Single)?;
    // Each selected role's component, stored by content like a deploy's.
    let mut components = BTreeMap::new();
    let mut files = Vec::new();
    for (name, role) in &manifest.roles {
        if !args.roles.is_empty() && !args.roles.contains(name) {
            continue;
        }
        let bytes = std::fs::read(&role.component)
            .with_context(|| format!("{}: cannot read", role.component.display()))?;
        let digest = state
            .put_blob(&bytes)
            .context("cannot store the component")?;
        files.push((digest.to_string(), role.component.display().to_string()));
        components.insert(name.clone(), digest);
    }
    let text = std::fs::read_to_string(&manifest.path)
        .with_context(|| format!("{}: cannot read", manifest.path.display()))?;
    let source = DeploymentSource {
        manifest_file: manifest.path.display().to_string(),
        manifest: text,
        environment,
        components,
    };
    let controller = Controller::new(HostContext {
        slots: Arc::new(SlotBook::new(runtime.config().max_instances)),
        runtime: runtime.clone(),
        state,
        grace: Duration::from_secs(args.host.grace_secs),
        only_roles: args.roles.clone(),
        web_pool: pools.web.clone(),
    });
    let (token, _) = auth::host_token(args.token_file.as_deref(), &state_dir)?;
    let admin = start_admin(
        args.host.admin_addr,
        pools.admin.clone(),
        runtime,
        Some(controller.clone()),
        Some(token),
        logs,
    )
    .await?;
    tracing::info!(service = %manifest.service, manifest = %manifest.path.display(), "starting");
    // A signal is heeded while the service builds or waits for its queue
    // server: shutdown cancels the deploy.
    let deployed = tokio::select! {
        deployed = controller.deploy(&manifest.service, source) => deployed,
        () = signals.next() => {
            tracing::info!("shutting down before the service started");
            stop_host(&controller, admin).await;
            return Ok(());
        }
    };
    let status = match deployed {
        Ok(status) => status,
        Err(e) => {
            // Name the component files, not their copies in the state folder.
            let mut message = e.to_string();
            for (digest, file) in &files {
                message = message.replace(&format!("component {digest}"), file);
            }
            admin.stop().await;
            anyhow::bail!(message);
        }
    };
    announce(&status, false);
    run_until_signalled(signals, &controller, admin).await;
    Ok(())
}

/// `weft host`: a long-lived host, redeploying what its state folder
/// records and taking deployments through its admin API.
pub async fn host(args: HostModeArgs, logs: Arc<LogBook>) -> anyhow::Result<()> {
    let pools = Pools::new(&args.host);
    let mut signals = StopSignals::watch()?;
    anyhow::ensure!(args.max_instances > 0, "--max-instances must be at least 1");
    let state_dir = match args.state_dir.clone() {
        Some(dir) => dir,
        None => {
            default_host_state_dir().context("no home folder to keep state in: pass --state-dir")?
        }
    };
    let runtime = Arc::new(Runtime::new(EngineConfig {
        cache_dir: args.host.cache_dir.clone().or_else(default_cache_dir),
        max_memory_bytes: MAX_MEMORY_MIB * MIB,
        max_instances: args.max_instances,
        ..EngineConfig::default()
    })?);
    let state = StateDir::open(&state_dir, Layout::Host)?;
    let controller = Controller::new(HostContext {
        slots: Arc::new(SlotBook::new(runtime.config().max_instances)),
        runtime: runtime.clone(),
        state,
        grace: Duration::from_secs(args.host.grace_secs),
        only_roles: Vec::new(),
        web_pool: pools.web.clone(),
    });
    let (token, source) = auth::host_token(args.token_file.as_deref(), &state_dir)?;
    tracing::info!(?source, "admin token");
    let max_blob_bytes =
        usize::try_from(args.max_component_mib.saturating_mul(MIB)).unwrap_or(usize::MAX);
    let admin = start_admin_with(
        args.host.admin_addr,
        pools.admin.clone(),
        Admin {
            runtime,
            controller: Some(controller.clone()),
            token: Some(token),
            logs,
            max_blob_bytes,
        },
    )
    .await?;
    // Beside the token: a client finding the token here sends it only to
    // this address (see `client`), never to whatever `--admin` names.
    let recorded = state_dir.join(auth::ADMIN_ADDRESS_FILE);
    if let Err(e) =
        weft_sandbox::private_fs::write_private_file(&recorded, admin.addr.to_string().as_bytes())
    {
        tracing::warn!(file = %recorded.display(), error = %e, "cannot record the admin address; clients must be given the token");
    }
    // Every recorded service restores at once, each on its own. `ready`
    // waits for those that need nothing outside the host; those whose
    // queues live on a server (which may be down, and is retried up to its
    // connect timeout) come up in the background, announced when they do.
    // A signal is heeded throughout.
    let (remote, local): (Vec<Restore>, Vec<Restore>) =
        controller.restore().into_iter().partition(|r| r.remote);
    let background: Vec<String> = remote.iter().map(|r| r.name.clone()).collect();
    let restored = async {
        for restore in local {
            report_failure(&restore.name, restore.task.await);
        }
    };
    tokio::select! {
        () = restored => {}
        () = signals.next() => {
            tracing::info!("shutting down while services were being restored");
            stop_host(&controller, admin).await;
            return Ok(());
        }
    }
    for service in controller
        .status(None)
        .await
        .map(|s| s.services)
        .unwrap_or_default()
    {
        if !background.contains(&service.name) {
            announce(&service, true);
        }
    }
    for restore in remote {
        let controller = controller.clone();
        tokio::spawn(async move {
            let outcome = restore.task.await;
            if matches!(outcome, Ok(Ok(()))) {
                if let Ok(status) = controller.status(Some(&restore.name)).await {
                    status.services.iter().for_each(|s| announce(s, true));
                }
            } else {
                report_failure(&restore.name, outcome);
            }
        });
    }
    run_until_signalled(signals, &controller, admin).await;
    Ok(())
}

/// `failed NAME` for a restore that failed (not one shutdown cancelled).
fn report_failure(
    name: &str,
    outcome: Result<Result<(), ControllerError>, tokio::task::JoinError>,
) {
    match outcome {
        Ok(Ok(()) | Err(ControllerError::Unavailable(_))) => {}
        Ok(Err(_)) | Err(_) => status_line(&format!("failed {name}")),
    }
}

/// Status lines for a deployed service's roles: `listening ROLE URL` and
/// `running ROLE instances=N` (`SERVICE/ROLE` when `qualified`).
fn announce(status: &ServiceStatus, qualified: bool) {
    for role in &status.roles {
        let name = if qualified {
            format!("{}/{}", status.name, role.name)
        } else {
            role.name.clone()
        };
        match &role.url {
            Some(url) => status_line(&format!("listening {name} {url}")),
            None => status_line(&format!("running {name} instances={}", role.declared)),
        }
    }
}

/// Says `ready`, runs until SIGINT or SIGTERM, then shuts the host down
/// gracefully: services drained, then the admin server, then `stopped`.
async fn run_until_signalled(
    mut signals: StopSignals,
    controller: &Controller,
    admin: AdminServer,
) {
    status_line("ready");
    signals.next().await;
    tracing::info!("shutting down: finishing in-flight requests and batches");
    stop_host(controller, admin).await;
}

/// Cancels what is starting, drains and stops every service, then the
/// admin server; says `stopped`.
async fn stop_host(controller: &Controller, admin: AdminServer) {
    controller.shutdown().await;
    admin.stop().await;
    status_line("stopped");
}

/// The connection pools of a host's listeners: the web roles' and the
/// admin address's, each capped apart ([`crate::connections`]).
struct Pools {
    web: Arc<Listening>,
    admin: Arc<Listening>,
}

impl Pools {
    /// Raises the descriptor limit, the first thing a host does, and sizes
    /// the pools from it unless `host` names their caps.
    fn new(host: &HostArgs) -> Self {
        let descriptors = match connections::raise_descriptor_limit() {
            Ok(descriptors) => descriptors,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read or raise the descriptor limit; assuming 1024");
                1024
            }
        };
        let (web_cap, admin_cap) = connections::default_caps(descriptors);
        let cap = |flag: Option<u64>, default: usize| {
            flag.map_or(default, |n| usize::try_from(n).unwrap_or(usize::MAX))
        };
        let web = ConnectionLimits {
            max_connections: cap(host.max_web_connections, web_cap),
            idle_timeout: Duration::from_secs(host.idle_timeout_secs),
            min_body_rate: (host.min_body_rate > 0).then(|| MinRate {
                bytes_per_sec: host.min_body_rate,
                grace: Duration::from_secs(host.body_grace_secs),
            }),
        };
        let admin = ConnectionLimits::admin(&web, cap(host.max_admin_connections, admin_cap));
        tracing::info!(
            descriptors,
            web = web.max_connections,
            admin = admin.max_connections,
            "connection caps"
        );
        Self {
            web: Listening::new(web),
            admin: Listening::new(admin),
        }
    }
}

/// The admin server running in the background.
struct AdminServer {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    /// The address it listens on.
    addr: SocketAddr,
}

impl AdminServer {
    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn start_admin(
    addr: SocketAddr,
    pool: Arc<Listening>,
    runtime: Arc<Runtime>,
    controller: Option<Arc<Controller>>,
    token: Option<auth::Token>,
    logs: Arc<LogBook>,
) -> anyhow::Result<AdminServer> {
    start_admin_with(
        addr,
        pool,
        Admin {
            runtime,
            controller,
            token,
            logs,
            max_blob_bytes: usize::try_from(DEFAULT_MAX_COMPONENT_MIB * MIB).unwrap_or(usize::MAX),
        },
    )
    .await
}

/// The largest component the admin API accepts unless told otherwise, in MiB.
pub const DEFAULT_MAX_COMPONENT_MIB: u64 = 64;

async fn start_admin_with(
    addr: SocketAddr,
    pool: Arc<Listening>,
    admin: Admin,
) -> anyhow::Result<AdminServer> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("admin: cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    status_line(&format!("admin http://{local}"));
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(admin::serve(listener, pool, Arc::new(admin), async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    }));
    Ok(AdminServer {
        stop,
        task,
        addr: local,
    })
}

/// `weft queues DIR`: each queue the manifest grants, and its poison queue,
/// with its length and, with `--peek N`, its next N visible messages.
pub async fn queues(args: QueuesArgs) -> anyhow::Result<()> {
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

/// A status line on stdout, for people and scripts (logs go to stderr).
pub fn status_line(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

/// SIGINT and SIGTERM, watched from the moment this is made (so a signal
/// sent right after `ready` still shuts down gracefully).
struct StopSignals {
    interrupt: Signal,
    terminate: Signal,
}

impl StopSignals {
    fn watch() -> anyhow::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("cannot watch SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("cannot watch SIGTERM")?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
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
pub fn default_cache_dir() -> Option<PathBuf> {
    user_dir("XDG_CACHE_HOME", ".cache").map(|dir| dir.join("components"))
}

/// Where `weft up` keeps a service's state unless `--state-dir` says otherwise.
pub fn default_state_dir(service: &str) -> Option<PathBuf> {
    user_dir("XDG_STATE_HOME", ".local/state").map(|dir| dir.join(service))
}

/// Where `weft host` keeps its state unless `--state-dir` says otherwise
/// (`_host` cannot be a service's name, so it never meets `weft up`'s).
pub fn default_host_state_dir() -> Option<PathBuf> {
    user_dir("XDG_STATE_HOME", ".local/state").map(|dir| dir.join("_host"))
}
