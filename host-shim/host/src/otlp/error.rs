//! Why traces cannot be exported as asked: the one error of `otlp`, in a
//! leaf module so that `http.rs` (which checks the endpoint) imports it
//! without importing its parent.

/// Why traces cannot be exported as asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OtlpError {
    /// The endpoint is not an `http://host[:port][/path]` URL.
    #[error("--otlp-endpoint '{url}' is not an http://HOST[:PORT] URL: {reason}")]
    BadEndpoint {
        /// What was given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The endpoint is `https://`, which is not supported.
    #[error(
        "--otlp-endpoint '{0}': https is not supported; export to a collector on this host or a sidecar over http://"
    )]
    Https(String),
    /// The queue was asked to hold no span.
    #[error("the span queue must hold at least 1 span")]
    EmptyQueue,
}
