//! Host side of the standard `wasi:config/store`: the settings the role's
//! manifest gives it, read-only. No per-instance state: the settings are
//! the role's grants. Draws on the [`BUCKET`] bucket. With tracing on
//! ([`crate::trace`]), each call is a `weft.vmbus` span (`config.get`,
//! `config.get-all`).

use super::bindings::wasi::config::store::{self, Error, Host};
use super::caller::Caller;
use crate::rate_limit::{Interface, RoleLimiter};
use crate::trace::{CallError, CallSpan, SpanKind};
use std::sync::Arc;
use wasmtime::component::{HasData, Linker};

/// The rate-limit bucket this interface draws on.
pub const BUCKET: Interface = Interface::Config;

/// What a `wasi:config` call works on: its caller's grants.
pub struct ConfigView<'a> {
    /// Who calls.
    pub caller: &'a Caller,
}

/// Marks [`ConfigView`] as the data `wasi:config`'s host functions borrow.
struct Config;

impl HasData for Config {
    type Data<'a> = ConfigView<'a>;
}

/// Links `wasi:config/store` into `linker`, each call served on the view
/// `get` takes of the store's data.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> ConfigView<'_>,
) -> wasmtime::Result<()> {
    store::add_to_linker::<T, Config>(linker, get)
}

/// Admits one call, or says why not in `wasi:config`'s terms.
async fn admit(limiter: Arc<RoleLimiter>) -> Result<(), Error> {
    limiter
        .admit(BUCKET, 0)
        .await
        .map_err(|_| Error::Upstream(super::keyvalue::RATE_LIMITED.into()))
}

/// A config error's kind, as its call's span names it.
impl CallError for Error {
    fn kind(&self) -> &'static str {
        match self {
            Error::Upstream(why) if why == super::keyvalue::RATE_LIMITED => "rate-limited",
            Error::Upstream(_) => "upstream",
            Error::Io(_) => "io",
        }
    }
}

impl Host for ConfigView<'_> {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<String>, Error>> {
        let span = CallSpan::start(&self.caller.trace, "config.get", SpanKind::Internal);
        let result = admit(self.caller.limiter.clone())
            .await
            .map(|()| self.caller.grants.settings.get(&key).cloned());
        span.end(&result);
        Ok(result)
    }

    async fn get_all(&mut self) -> wasmtime::Result<Result<Vec<(String, String)>, Error>> {
        let span = CallSpan::start(&self.caller.trace, "config.get-all", SpanKind::Internal);
        let result = admit(self.caller.limiter.clone()).await.map(|()| {
            self.caller
                .grants
                .settings
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        });
        span.end(&result);
        Ok(result)
    }
}
