//! Host side of the standard `wasi:config/store`: the settings the role's
//! manifest gives it, read-only.

use super::VmBusView;
use super::bindings::wasi::config::store::{Error, Host};
use crate::rate_limit::{Interface, RoleLimiter};
use std::sync::Arc;

/// Admits one call, or says why not in `wasi:config`'s terms.
async fn admit(limiter: Arc<RoleLimiter>) -> Result<(), Error> {
    limiter
        .admit(Interface::Config, 0)
        .await
        .map_err(|_| Error::Upstream(super::keyvalue::RATE_LIMITED.into()))
}

impl Host for VmBusView<'_> {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<String>, Error>> {
        Ok(admit(self.ctx.limiter.clone())
            .await
            .map(|()| self.ctx.grants.settings.get(&key).cloned()))
    }

    async fn get_all(&mut self) -> wasmtime::Result<Result<Vec<(String, String)>, Error>> {
        Ok(admit(self.ctx.limiter.clone()).await.map(|()| {
            self.ctx
                .grants
                .settings
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }))
    }
}
