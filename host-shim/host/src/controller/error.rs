//! Why the controller refused or failed an operation. Every module of the
//! controller returns it; the admin API maps each kind to an HTTP status.

/// Why the controller refused or failed an operation; the admin API maps
/// each kind to an HTTP status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControllerError {
    /// No such service or role (404).
    #[error("{0}")]
    NotFound(String),
    /// The service exists already, or is changing (409).
    #[error("{0}")]
    Conflict(String),
    /// The request, manifest or component is not valid (400).
    #[error("{0}")]
    Invalid(String),
    /// The host is shutting down (503).
    #[error("{0}")]
    Unavailable(String),
    /// The service's backend could not be opened; its
    /// [`kind`](weft_broker::OpenError::kind) picks the status: a server
    /// that cannot be reached now 503, a refused `[queues]` table 400, the
    /// host's own state in the way 500.
    #[error(transparent)]
    Backend(weft_broker::OpenError),
    /// A role's component cannot be used (400).
    #[error(transparent)]
    Component(Box<ComponentError>),
    /// The host's state folder, or a record in it, cannot be used (500).
    #[error(transparent)]
    State(super::store::StoreError),
    /// Something failed on the host (500).
    #[error("{0}")]
    Internal(String),
}

/// A role's component the host cannot use. It carries the blob's digest
/// (and, for a build, the blob's path in the state folder) as fields: the
/// message names the component by its digest, never by the host's path,
/// and [`ComponentError::naming`] names it otherwise (`weft up`: the file
/// it came from).
#[derive(Debug, thiserror::Error)]
#[error("roles.{role}: {}", self.naming(&format!("component {}", self.digest)))]
pub struct ComponentError {
    /// The role.
    pub role: String,
    /// The component's digest.
    pub digest: super::store::Digest,
    /// What is wrong with it.
    pub fault: ComponentFault,
}

/// What is wrong with a role's component.
#[derive(Debug)]
#[non_exhaustive]
pub enum ComponentFault {
    /// The blob is missing or not the bytes uploaded.
    Blob(super::store::BlobError),
    /// The runtime refused the blob it loaded from `path`.
    Build {
        /// The blob's path in the state folder.
        path: std::path::PathBuf,
        /// Why.
        error: weft_sandbox::RuntimeError,
    },
}

impl ComponentError {
    /// The message after `roles.ROLE: `, naming the component `name`.
    pub fn naming(&self, name: &str) -> String {
        match &self.fault {
            ComponentFault::Blob(e) => format!("{name} {e}"),
            ComponentFault::Build { error, .. } => error.naming(name),
        }
    }
}

impl ControllerError {
    /// The answer to a change asked for once shutdown began.
    pub(super) fn shutting_down() -> Self {
        Self::Unavailable("the host is shutting down".into())
    }
}
