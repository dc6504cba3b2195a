//! The role's settings, through the standard `wasi:config/store` interface.
//!
//! Settings are the strings under `[roles.<name>.settings]` in the service's
//! `weft.toml`; a role sees only its own.

use std::fmt;

use crate::bindings::wasi::config::store as wit;

/// Why reading the settings failed, mirroring `wasi:config/store.error`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The configuration source failed, with its reason.
    Upstream(String),
    /// An I/O error reading the configuration, with its reason.
    Io(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Upstream(why) => write!(f, "configuration source error: {why}"),
            Error::Io(why) => write!(f, "configuration I/O error: {why}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<wit::Error> for Error {
    fn from(error: wit::Error) -> Self {
        match error {
            wit::Error::Upstream(why) => Error::Upstream(why),
            wit::Error::Io(why) => Error::Io(why),
        }
    }
}

/// The setting `key`, or `None` if it is not set.
pub fn get(key: &str) -> Result<Option<String>, Error> {
    Ok(wit::get(key)?)
}

/// Every setting, as `(key, value)` pairs in no particular order.
pub fn get_all() -> Result<Vec<(String, String)>, Error> {
    Ok(wit::get_all()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display() {
        assert_eq!(
            Error::Upstream("vault".into()).to_string(),
            "configuration source error: vault"
        );
        assert_eq!(
            Error::Io("eof".into()).to_string(),
            "configuration I/O error: eof"
        );
    }
}
