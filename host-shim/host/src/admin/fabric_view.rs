//! What the admin API reads of the fabric its host is a member of: the
//! members, the fabric-wide status and a web role's ready endpoints, asked
//! of a [`FabricView`] the fabric's crate provides once the host has joined
//! (this crate knows nothing of the fabric itself), and a web role's
//! endpoints on a host outside any fabric.

use crate::controller::{Controller, ControllerError};
use crate::manifest::RoleKind;
use serde::Serialize;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

/// The answer to `/v1/fabric/*` on a host that is not a member of a fabric.
pub const NOT_IN_A_FABRIC: &str = "this host is not in a fabric (start it with --fabric)";
/// The answer to `/v1/fabric/*` on a host still joining its fabric.
const JOINING: &str = "this host is still joining its fabric; try again shortly";

/// What one read of a [`FabricView`] gives: a JSON document, or why not.
pub type ViewFuture<'a> =
    Pin<Box<dyn Future<Output = Result<serde_json::Value, FabricViewError>> + Send + 'a>>;

/// Where the admin server finds the fabric's view: empty until the host has
/// joined its fabric, then set once. Made before the admin server starts,
/// so the server is up (and answers 503) while the host joins.
pub type FabricSlot = Arc<OnceLock<Arc<dyn FabricView>>>;

/// The fabric as the admin API reports it; the same reports as the
/// operator's `weft fabric hosts`, `weft status --fabric` and `weft
/// endpoints --fabric`, as JSON.
pub trait FabricView: Send + Sync {
    /// The members, and who leads.
    fn hosts(&self) -> ViewFuture<'_>;
    /// Every service's fabric-wide status, or service `service`'s
    /// (`NotFound` if it is not deployed in the fabric).
    fn status<'a>(&'a self, service: Option<&'a str>) -> ViewFuture<'a>;
    /// Where web role `role` of `service` is ready across the fabric, as an
    /// [`EndpointsReport`].
    fn endpoints<'a>(&'a self, service: &'a str, role: &'a str) -> ViewFuture<'a>;
}

/// Why the fabric's view could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FabricViewError {
    /// What was asked for is not there (404).
    #[error("{0}")]
    NotFound(String),
    /// What was asked for cannot be answered, such as the endpoints of a
    /// worker role (400).
    #[error("{0}")]
    Invalid(String),
    /// The fabric cannot be read now (503).
    #[error("{0}")]
    Unavailable(String),
}

/// A web role's addresses: where it is served and ready now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointsReport {
    /// The service.
    pub service: String,
    /// The web role.
    pub role: String,
    /// Where it listens, on each host that runs it ready, sorted.
    pub addrs: Vec<SocketAddr>,
    /// Its health path, if it has one.
    pub health: Option<String>,
}

/// The view in `slot`: `NotFound` outside a fabric (`slot` is `None`),
/// `Unavailable` while the host is still joining.
pub fn joined_view(slot: Option<&FabricSlot>) -> Result<Arc<dyn FabricView>, FabricViewError> {
    let slot = slot.ok_or_else(|| FabricViewError::NotFound(NOT_IN_A_FABRIC.into()))?;
    slot.get()
        .cloned()
        .ok_or_else(|| FabricViewError::Unavailable(JOINING.into()))
}

/// The endpoints of web role `role` of `service` on this host alone: its
/// listen address, if it runs it here and it is ready.
pub async fn local_endpoints(
    controller: &Controller,
    service: &str,
    role: &str,
) -> Result<EndpointsReport, ControllerError> {
    let mut status = controller.status(Some(service)).await?;
    let running = status
        .services
        .pop()
        .and_then(|s| s.roles.into_iter().find(|r| r.name == role))
        .ok_or_else(|| {
            ControllerError::NotFound(format!(
                "service '{service}' has no role '{role}' on this host"
            ))
        })?;
    if running.kind != RoleKind::Web {
        return Err(ControllerError::Invalid(format!(
            "{service}/{role} is a worker role: only a web role has endpoints"
        )));
    }
    // Only while it is ready here, as across a fabric.
    let addrs = running
        .listen()
        .filter(|_| running.ready > 0)
        .into_iter()
        .collect();
    Ok(EndpointsReport {
        service: service.to_owned(),
        role: role.to_owned(),
        addrs,
        health: running.health,
    })
}
