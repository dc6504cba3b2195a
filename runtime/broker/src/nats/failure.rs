//! How the NATS backend answers when the server fails it: `unavailable`,
//! with the details logged and never passed to a guest.

use crate::error::{BrokerError, one_line};
use std::sync::Mutex;

/// Whether the client is connected now; calls made while it is not answer
/// `unavailable` at once instead of waiting out a timeout.
pub(super) fn check_connected(client: &async_nats::Client) -> Result<(), BrokerError> {
    match client.connection_state() {
        async_nats::connection::State::Connected => Ok(()),
        _ => Err(unreachable_now()),
    }
}

/// The answer to any call while the server cannot be reached.
pub(super) fn unreachable_now() -> BrokerError {
    BrokerError::Unavailable("the queue service cannot be reached now; retry later".into())
}

/// Logs a failed server call and answers `unavailable` without internals.
pub(super) fn unavailable(what: &str, error: &dyn std::fmt::Display) -> BrokerError {
    tracing::warn!(error = %one_line(error), "queues: NATS: cannot {what}");
    BrokerError::Unavailable(format!("the queue service cannot {what} now; retry later"))
}

/// A lock whose poisoning is ignored: no holder leaves a map half-changed.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
