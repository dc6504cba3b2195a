//! What a service needs from the host besides its roles: its queue and
//! key-value backends, each role's [`RoleSpec`] (grants, limits, scratch
//! folder), and an engine sized for it. The controller
//! ([`crate::controller`]) runs services; `weft check` only loads them.

use crate::manifest::{Manifest, Role, RoleKind};
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use weft_broker::{BackendKind, EmbeddedBroker, NatsBroker, QueuesConfig, StoreHealth};
use weft_broker::{KvStore, MemoryBroker, QueueBroker};
use weft_sandbox::config::MIB;
use weft_sandbox::{EngineConfig, Grants, RoleSpec, Runtime, SandboxLimits};

/// Pooling slots for a service's sandboxes: never fewer than this (a
/// modest reservation of address space), never more than the largest.
const MIN_INSTANCE_SLOTS: u32 = 64;
const MAX_INSTANCE_SLOTS: u32 = 10_000;

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

    /// Whether the embedded store can write now (`None`: not embedded).
    pub fn store_health(&self) -> Option<StoreHealth> {
        self.store.as_ref().map(|store| store.health())
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

/// Builds the engine sized from the roles (`weft up`, `weft serve`): memory
/// slots as large as the largest cap, and an instance slot for every
/// sandbox that can be alive at once (each web role's `max-in-flight`, each
/// worker role's instances), so a role's own limits bite before the shared
/// pool runs out. An upgrade asking for a larger memory cap than the largest
/// at start is refused; `weft host` sizes its engine for any manifest.
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
        // Twice over: a rolling upgrade runs two versions of a web role
        // side by side, each with its own `max-in-flight`.
        slots = slots.saturating_add(sandboxes.saturating_mul(2));
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

/// Role `name`'s spec: its grants (with a scratch folder under `folder`,
/// made now, if it asks for one), limits and the service's backends.
pub fn role_spec(
    manifest: &Manifest,
    name: &str,
    role: &Role,
    folder: &Path,
    backends: &Backends,
) -> anyhow::Result<RoleSpec> {
    let scratch_dir = if role.scratch {
        // Private (a guest's files are its own), and each level checked:
        // whoever could write to one could swap the folder a guest writes to.
        let scratch = folder.join("scratch");
        let service = scratch.join(&manifest.service);
        let dir = service.join(name);
        for level in [&scratch, &service, &dir] {
            weft_sandbox::private_fs::create_private_dir(level)
                .with_context(|| format!("role '{name}': cannot make its scratch folder"))?;
        }
        Some(dir)
    } else {
        None
    };
    Ok(RoleSpec {
        grants: Grants {
            service: manifest.service.clone(),
            role: name.to_owned(),
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
    })
}

/// Loads every role of `manifest` (or only those in `only`) into `runtime`,
/// without running anything: `weft check`. Returns how many it loaded.
pub fn check_roles(
    manifest: &Manifest,
    runtime: &Runtime,
    folder: &Path,
    only: &[String],
) -> anyhow::Result<usize> {
    let backends = Backends::memory();
    let mut loaded = 0;
    for (name, role) in &manifest.roles {
        if !only.is_empty() && !only.contains(name) {
            continue;
        }
        let spec = role_spec(manifest, name, role, folder, &backends)?;
        match role.kind {
            RoleKind::Web => drop(runtime.web_role(&role.component, spec)?),
            RoleKind::Worker => drop(runtime.worker_role(&role.component, spec)?),
        }
        loaded += 1;
    }
    Ok(loaded)
}
