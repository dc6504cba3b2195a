//! [`LaunchError`]: why a host could not be started, or a service staged,
//! checked or read, by the functions of [`crate::launch`].

use crate::backends::ScratchError;
use crate::manifest::ManifestError;
use std::net::SocketAddr;
use std::path::PathBuf;
use weft_broker::{BrokerError, OpenError};
use weft_sandbox::RuntimeError;
use weft_sandbox::private_fs::PrivateFsError;

/// Why a host could not be started, or a service staged, checked or read.
/// Each message is one line naming what failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LaunchError {
    /// The manifest or its overlay is not valid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A `--role` the manifest does not have.
    #[error("{}: --role {role}: no such role (the manifest has {known})", manifest.display())]
    UnknownRole {
        /// The manifest file.
        manifest: PathBuf,
        /// The role asked for.
        role: String,
        /// The roles it has, comma-separated.
        known: String,
    },
    /// A file could not be read.
    #[error("{}: cannot read: {reason}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        reason: std::io::Error,
    },
    /// A component could not be stored in the state folder.
    #[error("cannot store the component: {reason}")]
    StoreComponent {
        /// What failed.
        reason: PrivateFsError,
    },
    /// A check's throwaway folder could not be made.
    #[error("cannot make a scratch folder for the check: {reason}")]
    CheckFolder {
        /// What the OS said.
        reason: std::io::Error,
    },
    /// A listener could not be opened.
    #[error("{what}: cannot listen on {addr}: {reason}")]
    Listen {
        /// Whose (`admin`, `role 'web'`).
        what: String,
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        reason: std::io::Error,
    },
    /// A web role's start hook failed, or it did not become healthy.
    #[error("role '{role}' did not start: {why}")]
    NotStarted {
        /// The role.
        role: String,
        /// Why.
        why: String,
    },
    /// A started web role could not be served on its listener.
    #[error("{reason}")]
    Serve {
        /// What the OS said.
        reason: std::io::Error,
    },
    /// The engine, or a role in it, could not be set up.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// A role's scratch folder could not be made.
    #[error(transparent)]
    Scratch(#[from] ScratchError),
    /// The service's backend could not be opened.
    #[error(transparent)]
    Backend(#[from] OpenError),
    /// The backend refused a read.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}
