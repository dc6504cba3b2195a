//! [`OpenError`]: why a backend could not be opened, whichever it is, with
//! its [`OpenErrorKind`] so a host can answer an unreachable server with
//! 503 and a refused `[queues]` table with 400.

use crate::backend::QueuesConfigError;
use crate::error::{BrokerError, OpenErrorKind};
#[cfg(feature = "nats")]
use crate::nats::NatsError;
#[cfg(feature = "embedded")]
use crate::store::StoreError;

/// Why a backend could not be opened. Each message is one line, with no
/// password or token in it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The `[queues]` table is refused.
    #[error("queues: {0}")]
    Config(#[from] QueuesConfigError),
    /// The embedded store could not be opened.
    #[cfg(feature = "embedded")]
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The NATS server could not be used.
    #[cfg(feature = "nats")]
    #[error(transparent)]
    Nats(#[from] NatsError),
    /// A bucket's settings (the manifest's `[buckets.NAME]`) could not be
    /// applied: the backend cannot be used now.
    #[error("bucket '{bucket}': cannot apply its settings: {error}")]
    Bucket {
        /// The bucket, as the service names it.
        bucket: String,
        /// What the backend answered.
        error: BrokerError,
    },
}

impl OpenError {
    /// What the failure means for the caller.
    pub fn kind(&self) -> OpenErrorKind {
        match self {
            Self::Config(_) => OpenErrorKind::InvalidConfig,
            #[cfg(feature = "embedded")]
            Self::Store(e) => e.kind(),
            #[cfg(feature = "nats")]
            Self::Nats(e) => e.kind(),
            Self::Bucket { .. } => OpenErrorKind::Unavailable,
        }
    }
}
