//! Why a fabric operation failed, typed, each with a one-line message.

/// Why a fabric operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FabricError {
    /// The fabric's NATS server did not answer within the connect timeout.
    #[error("cannot reach the fabric at {url} (tried {attempts} times over {secs} s): {reason}")]
    Unreachable {
        /// The server's URL, without any user or password.
        url: String,
        /// Connection attempts made.
        attempts: u32,
        /// Seconds spent trying.
        secs: u64,
        /// The last attempt's error.
        reason: String,
    },
    /// The credentials or TLS files given cannot be used.
    #[error("{0}")]
    Credentials(String),
    /// The server answers, but the fabric's buckets cannot be opened (no
    /// JetStream, or no permission).
    #[error("the fabric's buckets at {url} cannot be opened: {reason}")]
    Buckets {
        /// The server's URL, without any user or password.
        url: String,
        /// Why.
        reason: String,
    },
    /// Someone else changed the same key first, or it exists already: the
    /// change was not made (409 Conflict).
    #[error("{0}")]
    Conflict(String),
    /// What was named does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The request cannot be met as asked (a placement no host satisfies, a
    /// backend a fabric cannot run, a bad name).
    #[error("{0}")]
    Refused(String),
    /// A signed entry does not verify, or a signing key cannot be used.
    #[error("{0}")]
    Signature(String),
    /// A component in the object store is missing or does not match its digest.
    #[error("{0}")]
    Blob(String),
    /// A KV or object store call failed (the server went away, a timeout).
    #[error("the fabric's store failed: {0}")]
    Store(String),
    /// An entry in the fabric's store is not the record its key holds.
    #[error("{key} in the fabric's store is malformed: {reason}")]
    Malformed {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
}

impl FabricError {
    /// A store failure from any error, on one line.
    pub fn store(error: impl std::fmt::Display) -> Self {
        Self::Store(one_line(&error.to_string()))
    }
}

/// `text` on one line: a server's multi-line error would break the log's
/// and the CLI's one-line promise.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
