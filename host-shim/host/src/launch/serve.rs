//! `weft serve`'s one component: a web role with no manifest, no state
//! folder and in-memory backends, wired to its listener the way the
//! controller wires a deployed web role ([`WebVersion`], [`WebServer`]), with
//! one upgrade domain.

use super::error::LaunchError;
use crate::backends::Backends;
use crate::connections::Listening;
use crate::controller::VersionInfo;
use crate::controller::store::Digest;
use crate::controller::web::WebVersion;
use crate::http_server::WebServer;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use weft_sandbox::{CpuShare, Grants, RateLimits, RoleSpec, Runtime, SandboxLimits};

/// The service and role names `weft serve`'s component runs as (in logs,
/// metrics and its guests' grants).
const SERVICE: &str = "serve";
const ROLE: &str = "web";

/// A component compiled for `weft serve`, not yet started.
pub struct ServedComponent {
    version: Arc<WebVersion>,
}

impl ServedComponent {
    /// Compiles (or loads from the engine's cache) the wasi:http component
    /// at `component` into `runtime`, each sandbox bounded by `limits`, its
    /// queues and buckets in memory.
    pub fn load(
        runtime: &Runtime,
        component: &Path,
        limits: SandboxLimits,
    ) -> Result<Self, LaunchError> {
        let backends = Backends::memory();
        let spec = RoleSpec {
            grants: Grants {
                service: SERVICE.into(),
                role: ROLE.into(),
                ..Grants::default()
            },
            limits,
            rate_limits: RateLimits::default(),
            cpu: CpuShare::default(),
            queues: backends.queues.clone(),
            kv: backends.kv.clone(),
        };
        let role = runtime.web_role(component, spec)?;
        // No deployment made it: generation 1, and the digest of nothing.
        let info = VersionInfo {
            generation: 1,
            digest: Digest::of(&[]),
            settings: BTreeMap::new(),
        };
        Ok(Self {
            version: Arc::new(WebVersion::new(info, role, None)),
        })
    }

    /// Runs its start hook (within `start_timeout`), then serves it on
    /// `listener`, holding connections in the web pool `pool`; once
    /// stopped, in-flight requests get up to `grace` to finish.
    pub async fn serve(
        self,
        listener: TcpListener,
        start_timeout: Duration,
        pool: Arc<Listening>,
        grace: Duration,
    ) -> Result<WebServer, LaunchError> {
        self.version
            .start(start_timeout)
            .await
            .map_err(|why| LaunchError::NotStarted {
                role: ROLE.into(),
                why,
            })?;
        WebServer::start(listener, &self.version, 1, pool, ROLE, grace)
            .map_err(|reason| LaunchError::Serve { reason })
    }
}
