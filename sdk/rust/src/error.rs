//! [`Error`]: why a call to one of Weft's own VMBus interfaces (the queue)
//! failed, mirroring the WIT `weft:vmbus/types.error` variant.
//!
//! Key-value and configuration calls use the standard `wasi:keyvalue` and
//! `wasi:config` interfaces and so have their own error types,
//! [`kv::Error`](crate::kv::Error) and [`config::Error`](crate::config::Error).

use std::fmt;

use crate::bindings::weft::vmbus::types::Error as WitError;

/// A `Result` whose error defaults to the VMBus [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a VMBus call failed. The host's messages never carry host paths or
/// internals; they are safe to show to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The role used up its rate limit for this interface; retry later.
    RateLimited,
    /// An argument exceeded a limit (a body over 64 KiB, a batch over 32...).
    TooLarge(String),
    /// The role's manifest does not grant this (a queue it does not list...).
    Denied(String),
    /// No such thing: an unknown or stale receipt, an empty name...
    NotFound(String),
    /// The backend cannot serve the call now; the same call may succeed later.
    Unavailable(String),
    /// An argument is malformed (a zero batch size, a timeout out of range...).
    Invalid(String),
}

impl Error {
    /// Whether the same call may succeed if retried later
    /// ([`RateLimited`](Error::RateLimited) or [`Unavailable`](Error::Unavailable)).
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::RateLimited | Error::Unavailable(_))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::RateLimited => f.write_str("rate limited; retry later"),
            Error::TooLarge(why) => write!(f, "too large: {why}"),
            Error::Denied(why) => write!(f, "denied: {why}"),
            Error::NotFound(why) => write!(f, "not found: {why}"),
            Error::Unavailable(why) => write!(f, "unavailable: {why}"),
            Error::Invalid(why) => write!(f, "invalid: {why}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<WitError> for Error {
    fn from(error: WitError) -> Self {
        match error {
            WitError::RateLimited => Error::RateLimited,
            WitError::TooLarge(why) => Error::TooLarge(why),
            WitError::Denied(why) => Error::Denied(why),
            WitError::NotFound(why) => Error::NotFound(why),
            WitError::Unavailable(why) => Error::Unavailable(why),
            WitError::Invalid(why) => Error::Invalid(why),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_carries_the_hosts_reason() {
        assert_eq!(Error::RateLimited.to_string(), "rate limited; retry later");
        assert_eq!(
            Error::Denied("queue `x` is not granted".into()).to_string(),
            "denied: queue `x` is not granted"
        );
        assert_eq!(
            Error::TooLarge("body".into()).to_string(),
            "too large: body"
        );
        assert_eq!(
            Error::NotFound("receipt".into()).to_string(),
            "not found: receipt"
        );
        assert_eq!(
            Error::Unavailable("busy".into()).to_string(),
            "unavailable: busy"
        );
        assert_eq!(Error::Invalid("zero".into()).to_string(), "invalid: zero");
    }

    #[test]
    fn only_rate_limits_and_outages_are_transient() {
        assert!(Error::RateLimited.is_transient());
        assert!(Error::Unavailable(String::new()).is_transient());
        assert!(!Error::Denied(String::new()).is_transient());
        assert!(!Error::NotFound(String::new()).is_transient());
        assert!(!Error::Invalid(String::new()).is_transient());
        assert!(!Error::TooLarge(String::new()).is_transient());
    }

    #[test]
    fn converts_every_wit_variant() {
        assert_eq!(Error::from(WitError::RateLimited), Error::RateLimited);
        assert_eq!(
            Error::from(WitError::TooLarge("a".into())),
            Error::TooLarge("a".into())
        );
        assert_eq!(
            Error::from(WitError::Denied("b".into())),
            Error::Denied("b".into())
        );
        assert_eq!(
            Error::from(WitError::NotFound("c".into())),
            Error::NotFound("c".into())
        );
        assert_eq!(
            Error::from(WitError::Unavailable("d".into())),
            Error::Unavailable("d".into())
        );
        assert_eq!(
            Error::from(WitError::Invalid("e".into())),
            Error::Invalid("e".into())
        );
    }
}
