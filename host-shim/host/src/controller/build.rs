//! Building a role's version from a deployment record: the component's
//! blob is checked against its digest, then compiled (or loaded from the
//! cache) and pre-instantiated off the async threads, as a web version or
//! a worker version by the role's kind.

use super::context::HostContext;
use super::error::{ComponentError, ComponentFault, ControllerError};
use super::store::{DeploymentRecord, Digest};
use super::version::VersionInfo;
use super::web::WebVersion;
use super::workers::WorkerVersion;
use crate::backends::{Backends, role_spec};
use crate::manifest::{Manifest, RoleKind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use weft_sandbox::{RoleSpec, Runtime, RuntimeError, WebRole, WorkerRole};

/// A new version of one role, of either kind.
#[derive(Clone)]
pub(super) enum Version {
    /// A web role's.
    Web(Arc<WebVersion>),
    /// A worker role's.
    Worker(Arc<WorkerVersion>),
}

/// Builds the versions of a service's roles that one record describes.
pub(super) struct VersionBuilder<'a> {
    pub(super) host: &'a HostContext,
    pub(super) manifest: &'a Manifest,
    pub(super) record: &'a DeploymentRecord,
    pub(super) backends: &'a Backends,
}

/// What every version is built from, whatever its kind.
struct Ingredients {
    path: PathBuf,
    spec: RoleSpec,
    info: VersionInfo,
    health: Option<String>,
}

/// A role loaded into the engine, of either kind, before it is a version.
pub(crate) enum LoadedRole {
    /// A web role's.
    Web(WebRole),
    /// A worker role's.
    Worker(WorkerRole),
}

impl LoadedRole {
    /// Loads the component at `path` into `runtime` as a role of `kind`
    /// (blocking: it compiles, or loads from the cache, and
    /// pre-instantiates).
    pub(crate) fn load(
        runtime: &Runtime,
        kind: RoleKind,
        path: &Path,
        spec: RoleSpec,
    ) -> Result<Self, RuntimeError> {
        Ok(match kind {
            RoleKind::Web => Self::Web(runtime.web_role(path, spec)?),
            RoleKind::Worker => Self::Worker(runtime.worker_role(path, spec)?),
        })
    }
}

impl VersionBuilder<'_> {
    /// Role `name`'s version, of the kind the manifest declares.
    pub(super) async fn build(&self, name: &str) -> Result<Version, ControllerError> {
        let kind = self.role(name)?.kind();
        let (role, info, health) = self
            .load(name, move |runtime, path, spec| {
                LoadedRole::load(runtime, kind, path, spec)
            })
            .await?;
        Ok(match role {
            LoadedRole::Web(role) => Version::Web(Arc::new(WebVersion::new(info, role, health))),
            LoadedRole::Worker(role) => Version::Worker(Arc::new(WorkerVersion { info, role })),
        })
    }

    /// Web role `name`'s version, not yet started.
    pub(super) async fn web(&self, name: &str) -> Result<Arc<WebVersion>, ControllerError> {
        let (role, info, health) = self
            .load(name, |runtime, path, spec| runtime.web_role(path, spec))
            .await?;
        Ok(Arc::new(WebVersion::new(info, role, health)))
    }

    /// Worker role `name`'s version.
    pub(super) async fn worker(&self, name: &str) -> Result<Arc<WorkerVersion>, ControllerError> {
        let (role, info, _) = self
            .load(name, |runtime, path, spec| runtime.worker_role(path, spec))
            .await?;
        Ok(Arc::new(WorkerVersion { info, role }))
    }

    /// Checks role `name`'s component and loads it with `load`, off the
    /// async threads; returns what was loaded, the version's info and the
    /// role's health path.
    async fn load<R: Send + 'static>(
        &self,
        name: &str,
        load: impl FnOnce(&Runtime, &Path, RoleSpec) -> Result<R, RuntimeError> + Send + 'static,
    ) -> Result<(R, VersionInfo, Option<String>), ControllerError> {
        let Ingredients {
            path,
            spec,
            info,
            health,
        } = self.ingredients(name).await?;
        let runtime = self.host.runtime.clone();
        let build_path = path.clone();
        let built = tokio::task::spawn_blocking(move || load(&runtime, &build_path, spec))
            .await
            .map_err(|e| ControllerError::Internal(format!("building role '{name}': {e}")))?;
        match built {
            Ok(role) => Ok((role, info, health)),
            Err(e) => Err(describe(name, &info.digest, e, &path)),
        }
    }

    fn role(&self, name: &str) -> Result<&crate::manifest::Role, ControllerError> {
        self.manifest
            .roles
            .get(name)
            .ok_or_else(|| ControllerError::Invalid(format!("roles.{name}: no such role")))
    }

    /// Checks role `name`'s component and gathers what its version is
    /// built from.
    async fn ingredients(&self, name: &str) -> Result<Ingredients, ControllerError> {
        let invalid = |why: String| ControllerError::Invalid(why);
        let (host, manifest, record) = (self.host, self.manifest, self.record);
        let role = self.role(name)?;
        let digest: Digest = record
            .source
            .components
            .get(name)
            .cloned()
            .ok_or_else(|| invalid(format!("roles.{name}: no component given for the role")))?;
        // The bytes must still be the ones uploaded: a damaged or planted
        // blob is never compiled. (Between this check and the read that
        // compiles, only this user could change the file: the folder is
        // private.)
        let (state, blob) = (host.state.clone(), digest.clone());
        tokio::task::spawn_blocking(move || state.check_blob(&blob))
            .await
            .map_err(|e| ControllerError::Internal(format!("checking role '{name}': {e}")))?
            .map_err(|e| {
                ControllerError::Component(Box::new(ComponentError {
                    role: name.to_owned(),
                    digest: digest.clone(),
                    fault: ComponentFault::Blob(e),
                }))
            })?;
        let path = host.state.blob_path(&digest);
        let folder = host.state.service_dir(&manifest.service);
        let spec = role_spec(manifest, name, role, &folder, self.backends)
            .map_err(|e| invalid(format!("{e:#}")))?;
        Ok(Ingredients {
            path,
            spec,
            info: VersionInfo {
                generation: record.generation,
                digest,
                settings: role.settings.clone(),
            },
            health: role.health().map(str::to_owned),
        })
    }
}

/// A build failure, with the blob's digest and path as fields: the client
/// sees the digest, never the host's path.
fn describe(name: &str, digest: &Digest, e: RuntimeError, path: &Path) -> ControllerError {
    ControllerError::Component(Box::new(ComponentError {
        role: name.to_owned(),
        digest: digest.clone(),
        fault: ComponentFault::Build {
            path: path.to_path_buf(),
            error: e,
        },
    }))
}
