//! [`BrokerError`]: why a backend call failed, as the VMBus maps it to the
//! WIT errors a guest sees (its messages never name host paths or servers);
//! and [`OpenErrorKind`]: what a failure to open a backend means for the
//! caller (see `OpenError`); and [`one_line`], how every backend shortens
//! an error for a log line or a report.

/// Why a backend call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// A body or batch over its limit.
    #[error("too large: {0}")]
    TooLarge(String),
    /// No such receipt (unknown, completed, or from an earlier delivery).
    #[error("not found: {0}")]
    NotFound(String),
    /// A malformed argument.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The backend cannot serve the call now; it may later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The bucket holds [`MAX_BUCKET_BYTES`](crate::MAX_BUCKET_BYTES) already: a write that would grow
    /// it is refused until entries are deleted or expire. Unlike
    /// `Unavailable`, retrying soon does not help by itself.
    #[error("bucket full: {0}")]
    BucketFull(String),
}

/// What a failure to open a backend means for its caller: the one thing an
/// API needs to pick a status, whatever the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpenErrorKind {
    /// The backend cannot be reached or used now (a NATS server down or
    /// without JetStream, a store another process holds, an I/O error);
    /// the same configuration may work later. An API answers 503.
    Unavailable,
    /// The configuration is refused (the manifest's `[queues]` table) and
    /// must change. An API answers 400.
    InvalidConfig,
    /// This host's own state stands in the way (a damaged store, a state
    /// folder other users can write to): an operator must act. An API
    /// answers 500.
    HostState,
}

/// The first line of an error, for one-line logs and reports (of the
/// backends beyond memory, which the sandbox's build leaves out).
#[cfg(any(feature = "embedded", feature = "nats"))]
pub(crate) fn one_line(error: &dyn std::fmt::Display) -> String {
    error
        .to_string()
        .lines()
        .next()
        .unwrap_or("unknown error")
        .to_owned()
}
