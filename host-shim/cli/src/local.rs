//! The commands that run a host in this process: `weft serve` (one
//! component), `weft up` (a host with one service, deployed from a folder),
//! `weft host` (a long-lived host that takes deployments through its admin
//! API and redeploys them when it starts again, or, with `--fabric`, runs
//! what a fabric of hosts assigns it), and the offline ones, `weft check`
//! and `weft queues`.
//!
//! What a host is made of comes from the library ([`weft_host::launch`]);
//! what is the process's own stays here: the signals it stops on, the
//! status lines scripts read on stdout, and the order of its shutdown.

use crate::args::{HostModeArgs, QueuesArgs, ServeArgs, UpArgs};
use anyhow::Context;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};
use weft_fabric::admin_view::FabricAdminView;
use weft_fabric::member::{Member, MemberOptions};
use weft_fabric::store::shown_url;
use weft_host::admin::fabric_view::FabricSlot;
use weft_host::admin::{Admin, auth};
use weft_host::builder;
use weft_host::connections::Listening;
use weft_host::controller::status::ServiceStatus;
use weft_host::controller::store::{Layout, StateDir};
use weft_host::controller::{Controller, ControllerError, Restore};
use weft_host::guest_output::GuestOutput;
use weft_host::launch::dirs;
use weft_host::launch::otlp::Exporter;
use weft_host::launch::{self, AdminServer, DEFAULT_MAX_COMPONENT_MIB, Pools, ServedComponent};
use weft_host::manifest::{Manifest, SandboxCount};
use weft_sandbox::limits::MIB;
use weft_sandbox::{Runtime, SandboxLimits, SpanSink};

/// `weft serve COMPONENT`: one wasi:http component, a fresh sandbox per request.
pub async fn serve(args: ServeArgs, logs: Arc<GuestOutput>) -> anyhow::Result<()> {
    let traces = args.host.traces()?;
    let sink = traces.as_ref().map(Exporter::sink);
    flushed(traces, serve_traced(args, logs, sink)).await
}

async fn serve_traced(
    args: ServeArgs,
    logs: Arc<GuestOutput>,
    spans: Option<Arc<dyn SpanSink>>,
) -> anyhow::Result<()> {
    let pools = Pools::new(&args.host.connections.options());
    let mut signals = StopSignals::watch()?;
    let limits = SandboxLimits {
        memory_mib: args.memory_mib,
        fuel: args.fuel,
        deadline_ms: args.deadline_ms,
        max_request_body_kib: args.max_request_body_kib,
        max_in_flight: args.max_in_flight,
        max_queued: args.max_queued,
        requests_per_instance: args.requests_per_instance,
        concurrent_requests_per_instance: args.concurrent_requests_per_instance,
        instance_idle_timeout_ms: args.instance_idle_timeout_ms,
        ..SandboxLimits::default()
    };
    let runtime = Arc::new(
        Runtime::new(launch::engine_config(
            std::iter::once((limits, SandboxCount::PerRequest)),
            args.host.cache_dir(),
        ))?
        .with_span_sink(spans),
    );
    let component = ServedComponent::load(&runtime, &args.component, limits)?;
    let listener = TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("role 'web': cannot listen on {}", args.addr))?;
    let admin = start_admin(
        args.host.admin_addr,
        pools.admin.clone(),
        runtime,
        None,
        logs,
        DEFAULT_MAX_COMPONENT_MIB,
        None,
    )
    .await?;
    let grace = args.host.grace();
    // A signal is heeded while the start hook runs, too.
    let start_timeout = grace.max(Duration::from_secs(1));
    let server = tokio::select! {
        served = component.serve(listener, start_timeout, pools.web.clone(), grace) => served?,
        () = signals.next() => {
            tracing::info!("shutting down before the role started");
            admin.stop().await;
            status_line("stopped");
            return Ok(());
        }
    };
    status_line(&format!("listening web {}", server.url));
    status_line("ready");
    signals.next().await;
    tracing::info!("shutting down: finishing in-flight requests");
    server.stop(grace).await;
    admin.stop().await;
    status_line("stopped");
    Ok(())
}

/// `weft check DIR`: validates the manifest (and overlay) and compiles its
/// components, without running anything.
pub async fn check(args: UpArgs) -> anyhow::Result<()> {
    let (manifest, _) = launch::load_manifest(&args.source.manifest, args.source.env.as_deref())?;
    launch::check_only_roles(&manifest, &args.roles)?;
    if !args.source.no_build {
        builder::build_roles(&manifest)?;
    }
    let loaded = launch::check(&manifest, &args.roles, args.host.cache_dir())?;
    println!("ok: service '{}' with {loaded} roles", manifest.service);
    Ok(())
}

/// `weft up DIR`: starts a host and deploys the service in DIR into it; the
/// admin API serves it until SIGINT or SIGTERM. Nothing is recorded: the
/// next `weft up` deploys DIR afresh.
pub async fn up(args: UpArgs, logs: Arc<GuestOutput>) -> anyhow::Result<()> {
    let traces = args.host.traces()?;
    let sink = traces.as_ref().map(Exporter::sink);
    flushed(traces, up_traced(args, logs, sink)).await
}

async fn up_traced(
    args: UpArgs,
    logs: Arc<GuestOutput>,
    spans: Option<Arc<dyn SpanSink>>,
) -> anyhow::Result<()> {
    let pools = Pools::new(&args.host.connections.options());
    let mut signals = StopSignals::watch()?;
    let (manifest, environment) =
        launch::load_manifest(&args.source.manifest, args.source.env.as_deref())?;
    launch::check_only_roles(&manifest, &args.roles)?;
    if !args.source.no_build {
        builder::build_roles(&manifest)?;
    }
    let state_dir = match args.state_dir.clone() {
        Some(dir) => dir,
        None => dirs::default_state_dir(&manifest.service)
            .context("no home folder to keep state in: pass --state-dir")?,
    };
    let runtime = Arc::new(
        Runtime::new(launch::manifest_engine(&manifest, args.host.cache_dir()))?
            .with_span_sink(spans),
    );
    let state = StateDir::open(&state_dir, Layout::Single)?;
    let staged = launch::stage(&manifest, environment, &state, &args.roles)?;
    let controller = launch::controller(
        runtime.clone(),
        state,
        args.host.grace(),
        args.roles.clone(),
        pools.web.clone(),
    );
    let (token, _) = auth::host_token(args.token.token_file.as_deref(), &state_dir)?;
    let admin = start_admin(
        args.host.admin_addr,
        pools.admin.clone(),
        runtime,
        Some((controller.clone(), token)),
        logs,
        DEFAULT_MAX_COMPONENT_MIB,
        None,
    )
    .await?;
    record_admin_address(&state_dir, admin.addr);
    tracing::info!(service = %manifest.service, manifest = %manifest.path.display(), "starting");
    // A signal is heeded while the service builds or waits for its queue
    // server: shutdown cancels the deploy.
    let deployed = tokio::select! {
        deployed = controller.deploy(&manifest.service, staged.source) => deployed,
        () = signals.next() => {
            tracing::info!("shutting down before the service started");
            stop_host(&controller, admin).await;
            return Ok(());
        }
    };
    let status = match deployed {
        Ok(status) => status,
        Err(e) => {
            admin.stop().await;
            // Name the component file, not its copy in the state folder.
            if let ControllerError::Component(component) = &e
                && let Some(file) = staged.files.get(&component.digest)
            {
                let named = component.naming(&file.display().to_string());
                anyhow::bail!("roles.{}: {named}", component.role);
            }
            // Its message alone: a chain printed in full could say a
            // cause twice.
            anyhow::bail!("{e}");
        }
    };
    announce(&status, false);
    run_until_signalled(signals, &controller, admin).await;
    Ok(())
}

/// `weft host`: a long-lived host, redeploying what its state folder
/// records and taking deployments through its admin API; with `--fabric`,
/// a member of a fabric instead, running what the fabric assigns it.
pub async fn host(args: HostModeArgs, logs: Arc<GuestOutput>) -> anyhow::Result<()> {
    let traces = args.host.traces()?;
    let sink = traces.as_ref().map(Exporter::sink);
    flushed(traces, host_traced(args, logs, sink)).await
}

async fn host_traced(
    args: HostModeArgs,
    logs: Arc<GuestOutput>,
    spans: Option<Arc<dyn SpanSink>>,
) -> anyhow::Result<()> {
    let pools = Pools::new(&args.host.connections.options());
    let mut signals = StopSignals::watch()?;
    anyhow::ensure!(args.max_instances > 0, "--max-instances must be at least 1");
    let fabric = crate::fabric::member_options(&args.fabric, args.max_instances, logs.clone())?;
    let state_dir = match args.state_dir.clone() {
        Some(dir) => dir,
        None => dirs::default_host_state_dir()
            .context("no home folder to keep state in: pass --state-dir")?,
    };
    let runtime = Arc::new(
        Runtime::new(launch::host_engine(
            args.max_instances,
            args.host.cache_dir(),
        ))?
        .with_span_sink(spans),
    );
    // In a fabric, the fabric records what runs here: the folder keeps no
    // record of its own, and none is restored.
    let layout = if fabric.is_some() {
        Layout::Fabric
    } else {
        Layout::Host
    };
    let state = StateDir::open(&state_dir, layout)?;
    let controller = launch::controller(
        runtime.clone(),
        state,
        args.host.grace(),
        Vec::new(),
        pools.web.clone(),
    );
    let (token, source) = auth::host_token(args.token.token_file.as_deref(), &state_dir)?;
    tracing::info!(?source, "admin token");
    // Filled once the host has joined, so the admin API reads the fabric.
    let fabric_slot = fabric.as_ref().map(|_| FabricSlot::default());
    let admin = start_admin(
        args.host.admin_addr,
        pools.admin.clone(),
        runtime,
        Some((controller.clone(), token)),
        logs,
        args.max_component_mib,
        fabric_slot.clone(),
    )
    .await?;
    record_admin_address(&state_dir, admin.addr);
    if let (Some(mut options), Some(slot)) = (fabric, fabric_slot) {
        options.admin = Some(admin.addr);
        return run_in_fabric(options, signals, controller, admin, slot).await;
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

/// Runs a host command (given the sink of `traces`, if any), then sends
/// the spans still queued, however it ended: a stopped host's last
/// requests and deliveries are exported too, and stopping waits for the
/// collector at most [`weft_host::otlp::FLUSH_TIMEOUT`].
async fn flushed(
    traces: Option<Exporter>,
    command: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let outcome = command.await;
    if let Some(traces) = traces {
        traces.flush().await;
    }
    outcome
}

/// Joins the fabric with `controller` (its admin server already up, and
/// reading the fabric through `admin_view` once joined), says
/// `fabric URL host ID` and `ready`, and runs until SIGINT or SIGTERM;
/// then leaves the fabric (so another host leads and the leader moves
/// this host's instances at once) before the services drain.
async fn run_in_fabric(
    options: MemberOptions,
    mut signals: StopSignals,
    controller: Arc<Controller>,
    admin: AdminServer,
    admin_view: FabricSlot,
) -> anyhow::Result<()> {
    let url = shown_url(&options.connect.url);
    let id = options.host_id.clone();
    let joined = tokio::select! {
        joined = Member::join(options, controller.clone()) => joined,
        () = signals.next() => {
            tracing::info!("shutting down while joining the fabric");
            stop_host(&controller, admin).await;
            return Ok(());
        }
    };
    let member = match joined {
        Ok(member) => member,
        Err(e) => {
            controller.shutdown().await;
            admin.stop().await;
            anyhow::bail!("{e}");
        }
    };
    // Set once, here: nothing else fills the slot.
    let _ = admin_view.set(Arc::new(FabricAdminView::new(member.store().clone())));
    status_line(&format!("fabric {url} host {id}"));
    status_line("ready");
    // A member whose task died has already stepped down and stopped
    // beating: the process ends too (non-zero), so a supervisor restarts it
    // rather than leaving a host that serves but is no longer in the fabric.
    let failure = tokio::select! {
        () = signals.next() => None,
        why = member.failed() => Some(why),
    };
    tracing::info!(
        "shutting down: leaving the fabric, then finishing in-flight requests and batches"
    );
    member.leave().await;
    stop_host(&controller, admin).await;
    match failure {
        Some(why) => anyhow::bail!("left the fabric: {why}"),
        None => Ok(()),
    }
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

/// Starts the admin server, its API (`api`: the controller, and the token
/// it requires) taking components of up to `max_component_mib` MiB and
/// reading the fabric through `fabric` (a member's; `None` outside a
/// fabric), and says `admin URL`.
async fn start_admin(
    addr: SocketAddr,
    pool: Arc<Listening>,
    runtime: Arc<Runtime>,
    api: Option<(Arc<Controller>, auth::Token)>,
    logs: Arc<GuestOutput>,
    max_component_mib: u64,
    fabric: Option<FabricSlot>,
) -> anyhow::Result<AdminServer> {
    let (controller, token) = api.unzip();
    let admin = Admin {
        runtime,
        controller,
        token,
        logs,
        max_blob_bytes: usize::try_from(max_component_mib.saturating_mul(MIB))
            .unwrap_or(usize::MAX),
        fabric,
        sessions: weft_host::admin::session::Sessions::default(),
        queue_history: Arc::default(),
    };
    let server = AdminServer::start(addr, pool, admin).await?;
    status_line(&format!("admin http://{}", server.addr));
    Ok(server)
}

/// Writes the admin address beside the token: a client finding the token
/// in this state folder sends it only to this address (see `client`), never
/// to whatever `--admin` names.
fn record_admin_address(state_dir: &Path, addr: SocketAddr) {
    let recorded = state_dir.join(auth::ADMIN_ADDRESS_FILE);
    if let Err(e) =
        weft_sandbox::private_fs::write_private_file(&recorded, addr.to_string().as_bytes())
    {
        tracing::warn!(file = %recorded.display(), error = %e, "cannot record the admin address; clients must be given the token");
    }
}

/// `weft queues DIR`: each queue the manifest grants, and its poison queue,
/// with its length and, with `--peek N`, its next N visible messages.
pub async fn queues(args: QueuesArgs) -> anyhow::Result<()> {
    let manifest = Manifest::load(&args.manifest)?;
    let state_dir = match args.state_dir.clone() {
        Some(dir) => dir,
        None => dirs::default_state_dir(&manifest.service)
            .context("no home folder to keep state in: pass --state-dir")?,
    };
    let reports = launch::queue_reports(&manifest, &state_dir, args.peek).await?;
    let mut out = std::io::stdout().lock();
    for report in reports {
        writeln!(out, "{} length={}", report.queue, report.length)?;
        for message in report.next {
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
