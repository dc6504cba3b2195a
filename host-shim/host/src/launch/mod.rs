//! Starting a host in this process, from plain options (the `weft` binary
//! turns its flags into them; nothing here knows the command line):
//!
//! - [`Pools`] sizes the listeners' connection pools from the descriptor
//!   limit ([`ConnectionOptions`]);
//! - [`engine_config`] sizes an engine for a set of roles (`weft up`,
//!   `weft serve`), [`host_engine`] one for any manifest (`weft host`);
//!   [`controller`] makes the controller that shares it among services;
//! - [`load_manifest`], [`check_only_roles`] and [`stage`] turn a folder
//!   into what the controller deploys; [`check`] loads it without running;
//! - [`ServedComponent`] runs `weft serve`'s one component;
//! - [`AdminServer`] serves the admin API in the background;
//! - [`queue_reports`] reads a stopped service's queues (`weft queues`);
//! - [`dirs`] says where state and caches live by default;
//! - [`export_traces`] exports traces for `--otlp-endpoint` ([`otlp`]).
//!
//! The commands' own flow (signals, status lines, the order of shutdown)
//! stays in the binary.

mod admin_server;
pub mod dirs;
mod error;
mod pools;
mod serve;

/// Traces' export, which [`export_traces`] starts.
pub use crate::otlp;
pub use admin_server::{AdminServer, DEFAULT_MAX_COMPONENT_MIB};
pub use error::LaunchError;
pub use pools::{ConnectionOptions, Pools};
pub use serve::ServedComponent;

use crate::backends::{self, Backends};
use crate::connections::Listening;
use crate::controller::slots::SlotPool;
use crate::controller::store::{DeploymentSource, Digest, StateDir};
use crate::controller::{Controller, HostContext, LoadedRole};
use crate::environment::Environment;
use crate::manifest::{MAX_MEMORY_MIB, Manifest, ManifestError, SandboxCount};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use weft_broker::{BrokerError, MAX_BATCH, POISON_SUFFIX, Peeked, scoped};
use weft_sandbox::limits::MIB;
use weft_sandbox::{EngineConfig, Runtime, SandboxLimits};

/// Pooling slots for a service's sandboxes: never fewer than this (a
/// modest reservation of address space), never more than the largest.
const MIN_INSTANCE_SLOTS: u32 = 64;
const MAX_INSTANCE_SLOTS: u32 = 10_000;

/// Builds the engine sized from the roles (`weft up`, `weft serve`): memory
/// slots as large as the largest cap, and an instance slot for every
/// sandbox that can be alive at once ([`SandboxCount::slots`]: each web
/// role's `max-in-flight` twice over, each worker role's instances), so a
/// role's own limits bite before the shared pool runs out. An upgrade
/// asking for a larger memory cap than the largest at start is refused;
/// `weft host` sizes its engine for any manifest ([`host_engine`]).
pub fn engine_config(
    roles: impl Iterator<Item = (SandboxLimits, SandboxCount)>,
    cache_dir: Option<PathBuf>,
) -> EngineConfig {
    let mut max_memory_bytes = 0;
    let mut slots: u32 = 0;
    for (limits, count) in roles {
        max_memory_bytes = limits.memory_bytes().max(max_memory_bytes);
        slots = slots.saturating_add(count.slots(&limits));
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

/// The engine for `manifest`'s roles ([`engine_config`]).
pub fn manifest_engine(manifest: &Manifest, cache_dir: Option<PathBuf>) -> EngineConfig {
    engine_config(
        manifest.roles.values().map(|r| (r.limits, r.sandboxes())),
        cache_dir,
    )
}

/// The engine of a long-lived host (`weft host`): memory slots as large as
/// any manifest may ask for, and `max_instances` sandboxes across every
/// service.
pub fn host_engine(max_instances: u32, cache_dir: Option<PathBuf>) -> EngineConfig {
    EngineConfig {
        cache_dir,
        max_memory_bytes: MAX_MEMORY_MIB * MIB,
        max_instances,
        ..EngineConfig::default()
    }
}

/// Starts exporting traces to the OTLP/HTTP collector at `endpoint`
/// (`--otlp-endpoint`), at most `queue_spans` spans waiting: its sink goes
/// on the engine ([`Runtime::with_span_sink`]), and it is flushed when the
/// host stops ([`otlp::Exporter::flush`]). Call it within the tokio
/// runtime the host runs on.
pub fn export_traces(endpoint: &str, queue_spans: u64) -> Result<otlp::Exporter, otlp::OtlpError> {
    otlp::start(&otlp::OtlpSettings {
        endpoint: endpoint.to_owned(),
        host_name: otlp::host_name(),
        queue_spans,
    })
}

/// The controller of a host whose engine is `runtime`: the engine's
/// instance slots are shared by every service it runs, its services keep
/// their state in `state`, and its web roles' listeners draw on `web_pool`.
/// It runs only the roles in `only_roles` (none: every role).
pub fn controller(
    runtime: Arc<Runtime>,
    state: StateDir,
    grace: Duration,
    only_roles: Vec<String>,
    web_pool: Arc<Listening>,
) -> Arc<Controller> {
    Controller::new(HostContext {
        slots: Arc::new(SlotPool::new(runtime.config().max_instances)),
        runtime,
        state,
        grace,
        only_roles,
        web_pool,
    })
}

/// Reads the manifest at `path` and applies environment `env`, if any.
pub fn load_manifest(
    path: &Path,
    env: Option<&str>,
) -> Result<(Manifest, Option<Environment>), ManifestError> {
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
pub fn check_only_roles(manifest: &Manifest, roles: &[String]) -> Result<(), LaunchError> {
    match roles.iter().find(|r| !manifest.roles.contains_key(*r)) {
        Some(unknown) => Err(LaunchError::UnknownRole {
            manifest: manifest.path.clone(),
            role: unknown.clone(),
            known: manifest
                .roles
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
        }),
        None => Ok(()),
    }
}

/// Loads every role of `manifest` (or only those in `only`) into an engine
/// sized for them, without running anything (`weft check`); their scratch
/// folders go to a throwaway folder, never near the store a running
/// service holds. Returns how many roles it loaded.
pub fn check(
    manifest: &Manifest,
    only: &[String],
    cache_dir: Option<PathBuf>,
) -> Result<usize, LaunchError> {
    let runtime = Runtime::new(manifest_engine(manifest, cache_dir))?;
    let scratch = tempfile::tempdir().map_err(|reason| LaunchError::CheckFolder { reason })?;
    let backends = Backends::memory();
    let mut loaded = 0;
    for (name, role) in &manifest.roles {
        if !only.is_empty() && !only.contains(name) {
            continue;
        }
        let spec = backends::role_spec(manifest, name, role, scratch.path(), &backends)?;
        drop(LoadedRole::load(
            &runtime,
            role.kind(),
            &role.component,
            spec,
        )?);
        loaded += 1;
    }
    Ok(loaded)
}

/// A service from a folder, ready to deploy: its source, whose components
/// are stored in the state folder by content like an upload's.
#[derive(Debug)]
pub struct Staged {
    /// What the controller deploys.
    pub source: DeploymentSource,
    /// Each stored component and the file it came from.
    pub files: BTreeMap<Digest, PathBuf>,
}

/// Stores the components of `manifest`'s roles (only those in `only`, if
/// any) in `state` and makes the deployment source for them (`weft up`).
pub fn stage(
    manifest: &Manifest,
    environment: Option<Environment>,
    state: &StateDir,
    only: &[String],
) -> Result<Staged, LaunchError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|reason| LaunchError::Read {
            path: path.to_path_buf(),
            reason,
        })
    };
    let mut components = BTreeMap::new();
    let mut files = BTreeMap::new();
    for (name, role) in &manifest.roles {
        if !only.is_empty() && !only.contains(name) {
            continue;
        }
        let bytes = read(&role.component)?;
        let digest = state
            .put_blob(&bytes)
            .map_err(|reason| LaunchError::StoreComponent { reason })?;
        // Two roles may ship the same bytes: name the first file.
        files
            .entry(digest.clone())
            .or_insert_with(|| role.component.clone());
        components.insert(name.clone(), digest);
    }
    let text = std::fs::read_to_string(&manifest.path).map_err(|reason| LaunchError::Read {
        path: manifest.path.clone(),
        reason,
    })?;
    Ok(Staged {
        source: DeploymentSource {
            manifest_file: manifest.path.display().to_string(),
            manifest: text,
            environment,
            components,
        },
        files,
    })
}

/// One queue's length and its next messages (`weft queues`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueReport {
    /// The queue, as the manifest names it.
    pub queue: String,
    /// Messages it holds.
    pub length: usize,
    /// Its next visible messages, up to the number asked for.
    pub next: Vec<Peeked>,
}

/// Each queue `manifest` grants, and its poison queue, with its length and
/// up to `peek` (at most [`MAX_BATCH`]) of its next visible messages, read
/// from the service's backend in `state_dir` without receiving them.
pub async fn queue_reports(
    manifest: &Manifest,
    state_dir: &Path,
    peek: u32,
) -> Result<Vec<QueueReport>, LaunchError> {
    let backends = Backends::open(manifest, state_dir).await?;
    // Each granted queue and its poison queue, once (a poison queue has none).
    let mut names = BTreeSet::new();
    for name in manifest.roles.values().flat_map(|r| &r.queues) {
        names.insert(name.clone());
        if !name.ends_with(POISON_SUFFIX) {
            names.insert(weft_broker::poison_queue(name));
        }
    }
    let read = async {
        let mut reports = Vec::new();
        for queue in names {
            let scoped = scoped(&manifest.service, &queue);
            let length = backends.queues.len(&scoped).await?;
            let next = if peek == 0 || length == 0 {
                Vec::new()
            } else {
                backends.queues.peek(&scoped, peek.min(MAX_BATCH)).await?
            };
            reports.push(QueueReport {
                queue,
                length,
                next,
            });
        }
        Ok::<_, BrokerError>(reports)
    };
    let reports = read.await;
    backends.close().await;
    Ok(reports?)
}
