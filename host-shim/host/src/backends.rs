//! A service's backends, the queues and key-value buckets its roles share
//! ([`Backends`], opened from the manifest's `[queues]` table, its buckets
//! configured from its `[buckets.NAME]` tables), and the
//! [`RoleSpec`] each role is built from: its grants (with its scratch
//! folder), limits and those backends. The controller
//! ([`crate::controller`]) runs services from them; `weft check` only loads
//! them ([`crate::launch::check`]).
//!
//! Opening a backend fails with the broker's [`OpenError`], whose
//! [`kind`](OpenError::kind) tells a client what to do: a server that
//! cannot be reached now may be later (the admin API answers 503), a
//! `[queues]` table that is refused must change (400), and a host's own
//! state in the way needs an operator (500).

use crate::manifest::{Manifest, Role};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use weft_broker::{BackendKind, EmbeddedBroker, NatsBroker, QueuesConfig};
use weft_broker::{KvStore, MemoryBroker, OpenError, QueueBroker, StoreHealth, scoped};
use weft_sandbox::private_fs::PrivateFsError;
use weft_sandbox::{Grants, RoleSpec};

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
    /// cannot be reached, up to its connect timeout); its buckets
    /// configured ([`Backends::configure_buckets`]).
    pub async fn open(manifest: &Manifest, state_dir: &Path) -> Result<Self, OpenError> {
        let backends = Self::open_queues(&manifest.queues, state_dir).await?;
        backends.configure_buckets(manifest).await?;
        Ok(backends)
    }

    /// Applies the manifest's bucket settings to every bucket a role of
    /// it is granted: a `[buckets.NAME]` table's, or the default (no time
    /// to live) for a bucket without one, so a table removed by an upgrade
    /// stops applying.
    pub async fn configure_buckets(&self, manifest: &Manifest) -> Result<(), OpenError> {
        let granted: BTreeSet<&String> = manifest
            .roles
            .values()
            .flat_map(|role| &role.buckets)
            .collect();
        for name in granted {
            let settings = manifest.buckets.get(name).copied().unwrap_or_default();
            self.kv
                .configure_bucket(&scoped(&manifest.service, name), settings)
                .await
                .map_err(|error| OpenError::Bucket {
                    bucket: name.clone(),
                    error,
                })?;
        }
        Ok(())
    }

    async fn open_queues(config: &QueuesConfig, state_dir: &Path) -> Result<Self, OpenError> {
        config.validate()?;
        match config.kind() {
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

/// A role's scratch folder could not be made, or is not safe to hand to a
/// guest.
#[derive(Debug, thiserror::Error)]
#[error("role '{role}': cannot make its scratch folder: {reason}")]
pub struct ScratchError {
    /// The role.
    pub role: String,
    /// The folder that failed, and why. (Not a `source`: the message says
    /// it already, and a chain printed in full would say it twice.)
    pub reason: PrivateFsError,
}

/// Role `name`'s spec: its grants (with a scratch folder under `folder`,
/// made now, if it asks for one), limits and the service's backends.
pub fn role_spec(
    manifest: &Manifest,
    name: &str,
    role: &Role,
    folder: &Path,
    backends: &Backends,
) -> Result<RoleSpec, ScratchError> {
    let scratch_dir = if role.scratch {
        Some(scratch_dir(folder, &manifest.service, name)?)
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
            egress: role.egress(),
        },
        limits: role.limits,
        rate_limits: role.rate_limits,
        cpu: role.cpu,
        queues: backends.queues.clone(),
        kv: backends.kv.clone(),
    })
}

/// Makes `folder/scratch/SERVICE/ROLE`, private (a guest's files are its
/// own), each level checked: whoever could write to one could swap the
/// folder a guest writes to.
fn scratch_dir(folder: &Path, service: &str, role: &str) -> Result<PathBuf, ScratchError> {
    let scratch = folder.join("scratch");
    let service = scratch.join(service);
    let dir = service.join(role);
    for level in [&scratch, &service, &dir] {
        weft_sandbox::private_fs::create_private_dir(level).map_err(|reason| ScratchError {
            role: role.to_owned(),
            reason,
        })?;
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The manifest's tables reach the backend, under the service's scoped
    /// names: a declared TTL expires entries (by the paused clock); a bucket
    /// granted without a table keeps them.
    #[tokio::test(start_paused = true)]
    async fn a_declared_ttl_reaches_the_backend_and_an_undeclared_bucket_keeps_entries() {
        let text = r#"
[service]
name = "svc"
[roles.web]
kind = "web"
component = "web.wasm"
listen = "127.0.0.1:0"
buckets = ["jobs", "kept"]
[buckets.jobs]
ttl-seconds = 60
"#;
        let manifest = Manifest::parse(Path::new("dir/weft.toml"), text).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let backends = Backends::open(&manifest, dir.path()).await.unwrap();
        for bucket in ["svc/jobs", "svc/kept"] {
            backends.kv.set(bucket, "k", b"v".to_vec()).await.unwrap();
        }
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(backends.kv.exists("svc/jobs", "k").await.unwrap());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!backends.kv.exists("svc/jobs", "k").await.unwrap());
        assert!(backends.kv.exists("svc/kept", "k").await.unwrap());
        backends.close().await;

        // The in-memory backends take the same settings.
        let memory = Backends::memory();
        memory.configure_buckets(&manifest).await.unwrap();
        memory.kv.set("svc/jobs", "k", b"v".to_vec()).await.unwrap();
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(memory.kv.get("svc/jobs", "k").await.unwrap(), None);
    }
}
