//! Running a service: load every role's component (all before serving, so a
//! bad component stops the start with a clear error), then serve web roles,
//! supervise worker instances, and shut down gracefully on SIGINT/SIGTERM.

use crate::http_server;
use crate::manifest::{Manifest, RoleKind};
use crate::supervisor;
use anyhow::Context;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;
use weft_runtime::broker::{BackendKind, EmbeddedBroker, NatsBroker, QueuesConfig};
use weft_runtime::config::MIB;
use weft_runtime::{
    EngineConfig, Grants, KvStore, MemoryBroker, QueueBroker, RoleSpec, Runtime, SandboxLimits,
    WebRole, WorkerRole,
};

/// Pooling slots for a service's sandboxes: never fewer than this (a
/// modest reservation of address space), never more than the largest.
const MIN_INSTANCE_SLOTS: u32 = 64;
const MAX_INSTANCE_SLOTS: u32 = 10_000;
/// Extra time a worker gets, beyond its deadline, to wind down at shutdown.
const WORKER_STOP_SLACK: Duration = Duration::from_secs(5);

/// Where the host keeps its state.
#[derive(Debug, Clone)]
pub struct HostPaths {
    /// The state folder (scratch folders live here).
    pub state_dir: PathBuf,
    /// The compiled component cache, if any.
    pub cache_dir: Option<PathBuf>,
}

/// The queues and buckets a service's roles share.
#[derive(Clone)]
pub struct Backends {
    /// The queues.
    pub queues: Arc<dyn QueueBroker>,
    /// The key-value buckets.
    pub kv: Arc<dyn KvStore>,
    /// The embedded store, to flush and close at shutdown.
    store: Option<Arc<EmbeddedBroker>>,
}

impl Backends {
    /// In this process's memory (`weft serve`, `weft check`).
    pub fn memory() -> Self {
        let broker = Arc::new(MemoryBroker::default());
        Self {
            queues: broker.clone(),
            kv: broker,
            store: None,
        }
    }

    /// The backend the manifest's `[queues]` table names: the embedded store
    /// in `state_dir`, or a NATS server (retried with backoff while it
    /// cannot be reached, up to its connect timeout).
    pub async fn open(config: &QueuesConfig, state_dir: &Path) -> anyhow::Result<Self> {
        match config.backend {
            BackendKind::Embedded => {
                let store = Arc::new(EmbeddedBroker::open(state_dir, config.settings())?);
                Ok(Self {
                    queues: store.clone(),
                    kv: store.clone(),
                    store: Some(store),
                })
            }
            BackendKind::Nats => {
                let nats = Arc::new(NatsBroker::connect(config).await?);
                Ok(Self {
                    queues: nats.clone(),
                    kv: nats,
                    store: None,
                })
            }
        }
    }

    /// Writes what is still pending (settles ride on the next commit) and
    /// closes the store.
    pub async fn close(&self) {
        if let Some(store) = &self.store {
            if let Err(e) = store.flush().await {
                tracing::warn!(error = %e, "could not flush the queue store");
            }
            store.close();
        }
    }
}

/// A role loaded and ready to run.
pub enum LoadedRole {
    /// A web role and the address it will listen on.
    Web(Arc<WebRole>, SocketAddr),
    /// A worker role and its instance count.
    Worker(Arc<WorkerRole>, u32),
}

/// Builds the engine sized from the roles: memory slots as large as the
/// largest cap, and an instance slot for every sandbox that can be alive at
/// once (each web role's `max-in-flight`, each worker role's instances), so
/// a role's own limits bite before the shared pool runs out.
pub fn engine_config(
    roles: impl Iterator<Item = (SandboxLimits, SandboxCount)>,
    cache_dir: Option<PathBuf>,
) -> EngineConfig {
    let mut max_memory_bytes = 0;
    let mut slots: u32 = 0;
    for (limits, count) in roles {
        max_memory_bytes = limits.memory_bytes().max(max_memory_bytes);
        let sandboxes = match count {
            SandboxCount::PerRequest => limits.max_in_flight,
            SandboxCount::Instances(n) => n,
        };
        slots = slots.saturating_add(sandboxes);
    }
    if max_memory_bytes == 0 {
        max_memory_bytes = 128 * MIB;
    }
    EngineConfig {
        cache_dir,
        max_memory_bytes,
        max_instances: slots.clamp(MIN_INSTANCE_SLOTS, MAX_INSTANCE_SLOTS),
        ..EngineConfig::default()
    }
}

/// How many sandboxes of a role can be alive at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxCount {
    /// A web role: one per request in flight.
    PerRequest,
    /// A worker role: its instance count.
    Instances(u32),
}

/// Loads every role of `manifest` into `runtime`.
pub fn load_roles(
    manifest: &Manifest,
    runtime: &Runtime,
    paths: &HostPaths,
    backends: &Backends,
    only: &[String],
) -> anyhow::Result<Vec<(String, LoadedRole)>> {
    let mut loaded = Vec::new();
    for (name, role) in &manifest.roles {
        if !only.is_empty() && !only.contains(name) {
            continue;
        }
        let scratch_dir = if role.scratch {
            let dir = paths
                .state_dir
                .join("scratch")
                .join(&manifest.service)
                .join(name);
            std::fs::create_dir_all(&dir).with_context(|| {
                format!(
                    "role '{name}': cannot create scratch folder {}",
                    dir.display()
                )
            })?;
            Some(dir)
        } else {
            None
        };
        let spec = RoleSpec {
            grants: Grants {
                service: manifest.service.clone(),
                role: name.clone(),
                queues: role.queues.clone(),
                buckets: role.buckets.clone(),
                settings: role.settings.clone(),
                scratch_dir,
                egress: role.egress.clone(),
            },
            limits: role.limits,
            rate_limits: role.rate_limits,
            cpu: role.cpu,
            queues: backends.queues.clone(),
            kv: backends.kv.clone(),
        };
        let entry = match role.kind {
            RoleKind::Web => {
                let addr = role.listen.context("web role without an address")?;
                LoadedRole::Web(Arc::new(runtime.web_role(&role.component, spec)?), addr)
            }
            RoleKind::Worker => LoadedRole::Worker(
                Arc::new(runtime.worker_role(&role.component, spec)?),
                role.instances,
            ),
        };
        loaded.push((name.clone(), entry));
    }
    Ok(loaded)
}

/// Runs loaded roles, and the admin endpoints on `admin_addr`, until SIGINT
/// or SIGTERM, then shuts down gracefully.
pub async fn run(
    roles: Vec<(String, LoadedRole)>,
    runtime: Arc<Runtime>,
    admin_addr: SocketAddr,
    grace: Duration,
) -> anyhow::Result<()> {
    let mut signals = StopSignals::watch()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut servers = Vec::new();
    let mut workers = Vec::new();
    let mut longest_deadline = Duration::ZERO;
    let mut listeners = Vec::new();
    // Bind every address before serving any, so a taken port fails the start.
    for (name, role) in &roles {
        if let LoadedRole::Web(_, addr) = role {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("role '{name}': cannot listen on {addr}"))?;
            listeners.push((name.clone(), listener));
        }
    }
    let admin = TcpListener::bind(admin_addr)
        .await
        .with_context(|| format!("admin: cannot listen on {admin_addr}"))?;
    status_line(&format!("admin http://{}", admin.local_addr()?));
    let admin = {
        let mut stop = stop_rx.clone();
        tokio::spawn(crate::admin::serve(admin, runtime, async move {
            let _ = stop.wait_for(|stopping| *stopping).await;
        }))
    };
    let mut listeners = listeners.into_iter();
    for (name, role) in roles {
        match role {
            LoadedRole::Web(web, _) => {
                let (_, listener) = listeners.next().context("listener missing")?;
                let local = listener.local_addr()?;
                status_line(&format!("listening {name} http://{local}"));
                let mut stop = stop_rx.clone();
                let shutdown = async move {
                    let _ = stop.wait_for(|stopping| *stopping).await;
                };
                servers.push(tokio::spawn(http_server::serve(
                    listener, web, name, shutdown, grace,
                )));
            }
            LoadedRole::Worker(worker, instances) => {
                longest_deadline = longest_deadline.max(worker.limits().deadline());
                for slot in 0..instances {
                    workers.push(tokio::spawn(supervisor::run_slot(
                        worker.clone(),
                        name.clone(),
                        slot,
                        stop_rx.clone(),
                    )));
                }
                status_line(&format!("running {name} instances={instances}"));
            }
        }
    }
    status_line("ready");

    signals.next().await;
    tracing::info!("shutting down: finishing in-flight requests and batches");
    let _ = stop_tx.send(true);
    for server in servers {
        let _ = server.await;
    }
    let worker_wait = longest_deadline + WORKER_STOP_SLACK;
    let aborts: Vec<_> = workers
        .iter()
        .map(tokio::task::JoinHandle::abort_handle)
        .collect();
    if tokio::time::timeout(worker_wait, futures_join(workers))
        .await
        .is_err()
    {
        tracing::warn!("some workers did not stop in time; stopping them now");
        for abort in aborts {
            abort.abort();
        }
    }
    let _ = admin.await;
    status_line("stopped");
    Ok(())
}

async fn futures_join(handles: Vec<tokio::task::JoinHandle<()>>) {
    for handle in handles {
        let _ = handle.await;
    }
}

/// A status line on stdout, for people and scripts (logs go to stderr).
fn status_line(line: &str) {
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
